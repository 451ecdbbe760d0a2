"""Group-relative advantages: each group's advantages have mean 0 and, std-scaled, unit
population std; ``scale=False`` leaves the centered rewards (Dr. GRPO); a group whose rewards
are all equal gets exactly zero advantage."""

from __future__ import annotations

import numpy as np
import pytest

from torl_rllib.core.advantages import group_advantages

GROUPS = [
    [1.0, -1.0],
    [1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0],
    [0.5, 0.2, -0.3, 1.0, 0.0, -1.0],
    [3.0, 3.0, 3.0, 2.999],
]


@pytest.mark.parametrize("rewards", GROUPS)
def test_scaled_advantages_have_zero_mean_and_unit_std(rewards):
    adv = group_advantages(rewards)
    assert adv.shape == (len(rewards),)
    assert abs(adv.mean()) < 1e-9, f"mean {adv.mean()}"
    assert adv.std() == pytest.approx(1.0, abs=1e-6), f"population std {adv.std()}"
    assert np.array_equal(np.argsort(adv, kind="stable"), np.argsort(rewards, kind="stable")), "order is kept"


@pytest.mark.parametrize("rewards", GROUPS)
def test_unscaled_advantages_are_the_centered_rewards(rewards):
    adv = group_advantages(rewards, scale=False)
    np.testing.assert_allclose(adv, np.asarray(rewards) - np.mean(rewards), atol=1e-12)


def test_one_correct_of_eight_by_hand():
    # mean -0.75, population std sqrt(7)/4: the correct sample gets 1.75 / (sqrt(7)/4).
    adv = group_advantages([1.0] + [-1.0] * 7)
    assert adv[0] == pytest.approx(7 / np.sqrt(7))
    assert adv[1:] == pytest.approx([-0.25 * 4 / np.sqrt(7)] * 7)


@pytest.mark.parametrize("rewards", [[1.0] * 8, [-1.0] * 4, [0.3, 0.3], [5.0]])
@pytest.mark.parametrize("scale", [True, False])
def test_zero_variance_groups_get_exactly_zero(rewards, scale):
    adv = group_advantages(rewards, scale=scale)
    assert adv.tolist() == [0.0] * len(rewards)


def test_empty_group():
    assert group_advantages([]).shape == (0,)
