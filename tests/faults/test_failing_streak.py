"""``FailingStreak``: when a run's steps count as failing, and the ``RunUnhealthy`` that ends it."""

from torl_rllib.execution.faults import RunUnhealthy
from torl_rllib.execution.run_health import FailingStreak
from torl_rllib.rollout.metrics import FAILED_FRACTION


def summary(failed: float, trajectories: int = 8, dropped: int = 0) -> dict:
    return {FAILED_FRACTION: failed, "trajectories": trajectories, "dropped_by_dynamic_sampling": dropped}


SANDBOX = [{"kind": "sandbox_failed", "count": 6, "example": "jail killed"}]
ENGINE = [{"kind": "engine_error", "count": 2, "example": "OOM"}]


def test_patience_failing_steps_in_a_row_end_the_run_naming_the_dominant_cause():
    streak = FailingStreak(max_failed_fraction=0.5, failure_patience=3)
    assert streak.record(4, summary(0.75), True, SANDBOX, "pos-4") == (1, None)
    assert streak.record(5, summary(0.5), True, ENGINE, "pos-5") == (2, None)
    count, unhealthy = streak.record(6, summary(1.0), False, SANDBOX, "pos-6")
    assert count == 3 and isinstance(unhealthy, RunUnhealthy)
    assert "steps 4-6 failed in a row" in str(unhealthy)
    assert "dominant cause: sandbox_failed (12 failed trajectories), e.g. jail killed" in str(unhealthy)
    assert streak.data_position == "pos-4", "a resume must redo the streak's problems from its first step"
    assert streak.record(7, summary(1.0), True, ENGINE, "pos-7") == (1, None), "the streak starts over"


def test_a_healthy_step_resets_the_streak():
    streak = FailingStreak(max_failed_fraction=0.5, failure_patience=2)
    assert streak.record(1, summary(0.9), True, ENGINE, "a")[0] == 1
    assert streak.record(2, summary(0.49), True, [], "b") == (0, None)
    assert streak.data_position is None
    assert streak.record(3, summary(0.9), True, ENGINE, "c") == (1, None)


def test_nothing_trainable_fails_unless_dynamic_sampling_dropped_every_group():
    streak = FailingStreak(max_failed_fraction=0.5, failure_patience=1)
    assert streak.record(1, summary(0.0, dropped=8), False, [], "a") == (0, None)  # every group had one reward
    count, unhealthy = streak.record(2, summary(0.0, dropped=4), False, [], "b")
    assert count == 1 and "no trainable trajectory" in str(unhealthy)
