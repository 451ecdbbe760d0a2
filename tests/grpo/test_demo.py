"""The CPU demo, shortened: from the shipped tiny base model, GRPO with the real nsjail tool
raises both accuracy and the code ratio within a few steps (the full demo: 40 steps)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO
from torl_rllib.recipe import load_recipe

pytestmark = pytest.mark.slow
STEPS = 12


@pytest.fixture(scope="module")
def curve(ray_cluster):
    recipe = load_recipe(REPO / "experiments" / "tiny_cpu.yaml")
    algo = recipe.build_config().build_algo()
    try:
        results = [algo.train()["env_runners"] for _ in range(STEPS)]
    finally:
        algo.stop()
    return {k: np.array([r[k] for r in results]) for k in ("accuracy", "code_ratio", "failed_trajectory_fraction")}


def test_starts_from_a_base_model_that_rarely_uses_the_tool(curve):
    assert curve["code_ratio"][0] <= 0.6 and curve["accuracy"][0] <= 0.55, curve


def test_accuracy_and_code_ratio_rise(curve):
    first, last = slice(0, 2), slice(-3, None)
    assert curve["code_ratio"][last].mean() > curve["code_ratio"][first].mean() + 0.15, curve
    assert curve["accuracy"][last].mean() > curve["accuracy"][first].mean() + 0.15, curve


def test_no_trajectory_failed(curve):
    assert not curve["failed_trajectory_fraction"].any(), curve
