"""The CPU demo, shortened: from the shipped tiny base model, GRPO with the real nsjail tool
raises both accuracy and the code ratio within a few steps (the full demo: 40 steps); so does
the demo training LoRA adapters only (README: ``model.lora.r=16 ... training.lr=1e-3``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO
from torl_rllib.recipe import load_recipe
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
STEPS = 12


@pytest.fixture(scope="module")
def curve(ray_cluster):
    recipe = load_recipe(REPO / "experiments" / "tiny_cpu.yaml")
    algo = recipe.build_config().build_algo()
    try:
        results = [algo.train()[RESULT_KEY] for _ in range(STEPS)]
    finally:
        algo.stop()
    curve = {k: np.array([r[k] for r in results]) for k in ("accuracy", "code_ratio", "failed_trajectory_fraction")}
    curve["held_out"] = [r.get("eval/tiny_test/accuracy") for r in results]
    return curve


def test_starts_from_a_base_model_that_rarely_uses_the_tool(curve):
    assert curve["code_ratio"][0] <= 0.6 and curve["accuracy"][0] <= 0.55, curve


def test_accuracy_and_code_ratio_rise(curve):
    first, last = slice(0, 2), slice(-3, None)
    assert curve["code_ratio"][last].mean() > curve["code_ratio"][first].mean() + 0.15, curve
    assert curve["accuracy"][last].mean() > curve["accuracy"][first].mean() + 0.15, curve


def test_no_trajectory_failed(curve):
    assert not curve["failed_trajectory_fraction"].any(), curve


def test_the_recipe_evaluates_the_test_split_greedily_every_10_steps(curve):
    held_out = curve["held_out"]
    assert [i + 1 for i, value in enumerate(held_out) if value is not None] == [10], held_out
    assert held_out[9] > 0.2, "10 steps should lift greedy test accuracy well above the base model's ~0.02"


LORA_DEMO = ["model.lora.r=16", "model.lora.alpha=32", "training.lr=1e-3", "evaluation.interval=0"]


def test_the_lora_demo_learns_tool_use_too(ray_cluster):
    algo = load_recipe(REPO / "experiments" / "tiny_cpu.yaml", LORA_DEMO).build_config().build_algo()
    try:
        results = [algo.train()[RESULT_KEY] for _ in range(8)]
    finally:
        algo.stop()
    accuracy, code = (np.array([r[k] for r in results]) for k in ("accuracy", "code_ratio"))
    assert accuracy[-3:].mean() > accuracy[:2].mean() + 0.2, accuracy
    assert code[-3:].mean() > code[:2].mean() + 0.2, code
