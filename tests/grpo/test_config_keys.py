"""The one table of recipe keys (``config_keys``): every builder argument of ``GRPOConfig``
is in it, every entry names a real builder argument and attribute, and a config read back
as a recipe builds the same config."""

from __future__ import annotations

import inspect

import pytest
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from tests.conftest import REPO
from torl_rllib.algorithms.grpo import GRPOConfig
from torl_rllib.algorithms.grpo.config_keys import KEYS, apply_recipe, config_path


def own_arguments(builder: str) -> list[str]:
    return [n for n in inspect.signature(getattr(GRPOConfig, builder)).parameters if n not in ("self", "kwargs")]


@pytest.mark.parametrize("builder", ["training", "rollout", "task", "learners", "fault_tolerance", "evaluation"])
def test_every_grpo_builder_argument_is_a_recipe_key(builder):
    """A new argument of a GRPOConfig builder cannot be forgotten by recipes, sweeps and tracking."""
    in_table = {key.argument for key in KEYS if key.builder == builder}
    assert not set(own_arguments(builder)) - in_table


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.recipe_key)
def test_every_entry_names_a_builder_argument_and_the_attribute_that_holds_it(key):
    method = getattr(GRPOConfig, key.builder)
    params = inspect.signature(method).parameters
    rllib = getattr(AlgorithmConfig, key.builder, None)
    assert key.argument in params or key.spread or (rllib and key.argument in inspect.signature(rllib).parameters)
    assert key.attr in GRPOConfig().to_dict(), "the attribute is the key in the config dict (what Tune hands a trial)"
    assert config_path(key.recipe_key) == (key.attr,)


def test_a_config_read_back_as_a_recipe_builds_the_same_config():
    from torl_rllib.recipe import load_recipe

    config = load_recipe(REPO / "experiments" / "tiny_cpu.yaml", ["run.failure_patience=5"]).build_config()
    params = config.tracked_params()
    assert params["run"]["failure_patience"] == 5 and params["evaluation"]["benchmarks"] == ["tiny_test"]
    assert apply_recipe(GRPOConfig(), params).tracked_params() == params
