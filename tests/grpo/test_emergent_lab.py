"""The emergent-behaviours lab, shortened: from tiny-emergent-base, a few GRPO steps with the
real nsjail tool move the per-kind code ratios apart (code where computation is needed, plain
reasoning where it suffices) and raise error recovery (the full lab: docs/emergent.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO
from torl_rllib.recipe import load_recipe
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
STEPS = 10
SHORT = ["evaluation.interval=0", "tracking.enabled=false"]
CURVES = ("code_ratio/two_digit", "code_ratio/times_table", "error_recovery_rate/two_digit",
          "failed_trajectory_fraction")
# The seeded run's first 2 steps against its last 5 (measured: code ratio 0.50 -> 0.83 on
# two-digit products, 0.48 -> 0.27 on the times table; recovery 0.00 -> 0.53); the margins
# are about half of what it moves.
FIRST, LAST = slice(0, 2), slice(-5, None)
MARGIN_UP, MARGIN_DOWN, MARGIN_RECOVERY = 0.15, 0.1, 0.2


@pytest.fixture(scope="module")
def curve(ray_cluster):
    algo = load_recipe(REPO / "experiments" / "emergent_cpu.yaml", SHORT).build_config().build_algo()
    try:
        results = [algo.train()[RESULT_KEY] for _ in range(STEPS)]
    finally:
        algo.stop()
    return {k: np.array([r.get(k, np.nan) for r in results]) for k in CURVES}


def mean(values) -> float:
    return float(np.nanmean(values))


def test_code_use_moves_toward_the_kind_it_helps(curve):
    two_digit, table = curve["code_ratio/two_digit"], curve["code_ratio/times_table"]
    assert mean(two_digit[LAST]) > mean(two_digit[FIRST]) + MARGIN_UP, curve
    assert mean(table[LAST]) < mean(table[FIRST]) - MARGIN_DOWN, curve


def test_error_recovery_rises(curve):
    recovery = curve["error_recovery_rate/two_digit"]  # NaN at a step without a failed call
    assert mean(recovery[LAST]) > mean(recovery[FIRST]) + MARGIN_RECOVERY, curve


def test_no_trajectory_failed(curve):
    assert not curve["failed_trajectory_fraction"].any(), curve
