import math

import pytest

from torl_rllib.tasks import GradeResult, RewardConfig, compute_reward

MATCH = GradeResult(True, "5", "5", "match")
WRONG = [
    GradeResult(False, "6", "5", "mismatch"),
    GradeResult(False, None, None, "no_box"),
    GradeResult(False, "((", None, "parse_error"),
    GradeResult(False, "9^{9^9}", None, "timeout"),
]


def test_torl_default_is_plus_minus_one():
    assert compute_reward(MATCH, truncated=False, config=RewardConfig()) == 1.0
    assert [compute_reward(r, False, RewardConfig()) for r in WRONG] == [-1.0] * 4
    assert compute_reward(MATCH, truncated=True, config=RewardConfig()) == 1.0  # no penalty by default


def test_one_zero_option():
    config = RewardConfig(incorrect=0.0)
    assert compute_reward(MATCH, False, config) == 1.0
    assert [compute_reward(r, False, config) for r in WRONG] == [0.0] * 4


def test_no_box_can_score_differently():
    config = RewardConfig(no_box=-0.5)
    assert [compute_reward(r, False, config) for r in WRONG] == [-1.0, -0.5, -1.0, -1.0]


def test_truncation_penalty_is_subtracted():
    config = RewardConfig(truncation_penalty=0.5)
    assert compute_reward(MATCH, True, config) == 0.5
    assert compute_reward(WRONG[0], True, config) == -1.5
    assert compute_reward(MATCH, False, config) == 1.0


def test_reward_is_a_float():
    assert type(compute_reward(MATCH, False, RewardConfig(correct=1, incorrect=0))) is float


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"correct": 0.0, "incorrect": 0.0}, r"correct \(0.0\) must exceed incorrect \(0.0\)"),
        ({"correct": math.inf}, "correct must be a finite number"),
        ({"incorrect": math.nan}, "incorrect must be a finite number"),
        ({"correct": True}, "correct must be a finite number"),
        ({"incorrect": "-1"}, "incorrect must be a finite number"),
        ({"no_box": 1.0}, r"no_box \(1.0\) must be below correct"),
        ({"truncation_penalty": -0.5}, "truncation_penalty must be >= 0"),
    ],
)
def test_invalid_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)
