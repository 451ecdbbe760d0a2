"""Sweep-file validation: every problem at once, each precise, before Ray starts (exit 2)."""

from __future__ import annotations


import pytest
import yaml

from tests.conftest import REPO, TINY_BASE_MODEL, run_cli
from torl_rllib.algorithms.grpo import GRPOConfig
from torl_rllib.recipe import RecipeError, load_recipe
from torl_rllib.sweep import load_sweep
from torl_rllib.sweep.search_space import config_path

SWEEP = REPO / "experiments" / "sweeps" / "tiny_cpu.yaml"


def problems(*overrides, path=SWEEP) -> list[str]:
    with pytest.raises(RecipeError) as err:
        load_sweep(path, list(overrides))
    return err.value.problems


def test_shipped_sweeps_are_valid(tmp_path):
    spec = load_sweep(SWEEP)
    assert spec.tune.scheduler == "asha" and spec.tune.steps == 10
    assert set(spec.search_space) == {"training.lr", "rollout.max_tool_calls"}
    assert spec.recipe.data["resources"]["num_env_runners"] == 0  # the file's overrides
    assert spec.num_trials == 6
    assert load_sweep(SWEEP, ["tune.num_samples=2", "search_space.seed={uniform: [0, 1]}"]).num_trials == 12
    data = tmp_path / "train.parquet"
    data.touch()
    # (the model, a hub id, is swapped for a local one: this machine cannot download it)
    gpu = load_sweep(REPO / "experiments" / "sweeps" / "qwen2.5_math_1.5b.yaml",
                     [f"data.train={data}", f"model.path={TINY_BASE_MODEL}"])
    assert gpu.tune.max_concurrent_trials == 2 and len(gpu.search_space) == 3


def test_every_problem_is_reported_at_once():
    found = problems(
        "search_space.training.lrr={grid: [1]}", "search_space.training.lr={loguniform: [0, 1]}",
        "search_space.run.steps={grid: [1]}", "tune.metric=acuracy", "tune.scheduler.type=ashaa",
        "tune.num_samples=0", "tune.stpo={steps: 3}",
    )
    assert sorted(found) == sorted([
        "search_space.training.lrr: 'lrr' is not a key of 'training' (did you mean 'lr'?)",
        "search_space.training.lr: loguniform bounds must be > 0; got [0, 1]",
        "search_space.run.steps: not searchable: the sweep's tune section sets steps and checkpoints",
        "tune.stpo: unknown key (did you mean 'stop'?)",
        "tune.num_samples: expected an integer >= 1, got 0",
        "tune.metric: 'acuracy' is not a per-step metric (did you mean 'accuracy'?)",
        "tune.scheduler: 'ashaa' is not one of ['fifo', 'asha', 'pbt'] (did you mean 'asha'?)",
    ])


def test_distribution_shapes_and_bounds():
    found = problems(
        "search_space.training.lr={uniform: [0.1, 0.01]}", "search_space.training.group_size={randint: [2.5, 8]}",
        "search_space.seed={gird: [0, 1]}", "search_space.rollout.top_p=0.9",
        "search_space.training.kl_coeff={choice: []}",
        "search_space.training.entropy_coef={grid: [0.0, 0.01]}",
    )
    assert found == [
        "search_space.training.lr: uniform bounds must have low < high; got [0.1, 0.01]",
        "search_space.training.group_size: randint bounds must be integers; got [2.5, 8]",
        "search_space.seed: unknown distribution 'gird' (did you mean 'grid'?)",
        "search_space.rollout.top_p: must be one of {grid, choice, uniform, loguniform, randint} "
        "mapped to its values, e.g. {grid: [0, 1]}; got 0.9",
        "search_space.training.kl_coeff: choice takes a list of values, one sampled per trial; got []",
        "search_space.training.entropy_coef: renamed to training.entropy_coeff (RLlib's name)",
    ]


def test_searched_values_are_validated_like_the_recipe():
    found = problems("search_space.rollout.temperature={choice: [0, 1.0]}",
                     "search_space.rollout.max_tool_calls={grid: [1, '2']}")
    assert sorted(found) == [
        "search_space.rollout.max_tool_calls: value '2': rollout.max_tool_calls: expected int, got str '2'",
        "search_space.rollout.temperature: value 0: rollout.temperature must be > 0, got 0",
    ]


def test_base_recipe_problems_and_unknown_top_level_keys(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": str(REPO / "experiments" / "tiny_cpu.yaml"),
                                     "serach_space": {}, "overrides": {"training.lrr": 1}}))
    assert problems(path=sweep) == [
        "serach_space: unknown key (did you mean 'search_space'?)",
        "recipe: training.lrr: unknown key (did you mean 'lr'?)",
        "search_space: empty; name at least one recipe key to search (or set tune.num_samples > 1 to "
        "repeat the base recipe)",
    ]
    assert problems("recipe=no_such.yaml")[0].startswith("recipe: recipe file '")


def test_inline_recipe_sections_resolve_paths_against_the_sweep_file(tmp_path):
    recipe = yaml.safe_load((REPO / "experiments" / "tiny_cpu.yaml").read_text())
    recipe["model"]["path"] = str(REPO / "assets" / "tiny-math-base")
    recipe["data"]["train"] = str(REPO / "assets" / "data" / "tiny_arithmetic_train.jsonl")
    sweep = tmp_path / "inline.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": recipe, "search_space": {"seed": {"grid": [0, 1]}}}))
    spec = load_sweep(sweep)
    assert spec.recipe_file is None and spec.search_space["seed"].kind == "grid"


def test_pbt_mutates_only_optimizer_and_clip_settings():
    found = problems("tune.scheduler={type: pbt}", "search_space={rollout.max_tool_calls: {grid: [0, 1]}}")
    assert found == ["tune.scheduler: pbt needs mutations of at least one of ['training.lr', "
                     "'training.clip_eps_low', 'training.clip_eps_high', 'training.entropy_coeff'] "
                     "(search one of them, or list them under scheduler.mutations)"]
    spec = load_sweep(SWEEP, ["tune.scheduler={type: pbt, perturbation_interval: 2}"])
    assert set(spec.tune.scheduler_args["mutations"]) == {"training.lr"}


def test_recipe_keys_map_to_the_config_dict_that_tune_hands_each_trial():
    recipe = load_recipe(REPO / "experiments" / "tiny_cpu.yaml")
    values = {"training.lr": 3e-4, "rollout.max_tool_calls": 2, "sandbox.timeout_s": 7.0,
              "reward.incorrect": 0.0, "model.dtype": "bfloat16", "data.template": "no_tool_base",
              "seed": 5, "training.clip_eps_high": 0.28}
    space = recipe.build_config().to_dict()
    for key, value in values.items():
        node = space
        *parents, last = config_path(key)
        for part in parents:
            node = node[part]
        assert last in node, key
        node[last] = value
    config = GRPOConfig.from_dict(space)
    assert (config.lr, config.max_tool_calls, config.sandbox_config["timeout_s"]) == (3e-4, 2, 7.0)
    assert (config.reward["incorrect"], config.model_config["dtype"], config.prompt_template) == (0.0, "bfloat16", "no_tool_base")
    assert (config.seed, config.clip_eps_high) == (5, 0.28)


def test_cli_exit_code_2_before_ray_starts():
    code, stdout, stderr = run_cli("sweep", SWEEP, "tune.mode=maximize")
    assert code == 2
    assert "tune.mode: must be 'max' or 'min', got 'maximize'" in stderr
    assert "ray" not in stdout.lower()


def test_param_space_puts_domains_at_the_config_keys_and_points_trials_at_the_parent_run():
    from ray.tune.search.sample import Float

    from torl_rllib.sweep.driver import _scheduler, param_space

    spec = load_sweep(SWEEP, ["search_space.sandbox.timeout_s={uniform: [1.0, 5.0]}"])
    space = param_space(spec, parent_run_id="abc", tracking_uri="sqlite:////tmp/x.db")
    assert space["max_tool_calls"] == {"grid_search": [1, 0]}
    assert isinstance(space["sandbox_config"]["timeout_s"], Float)
    assert space["tracking_config"]["parent_run_id"] == "abc"
    assert space["tracking_config"]["run_name"] is None and space["tracking_config"]["log_model"] is False
    pbt = _scheduler(load_sweep(SWEEP, ["tune.scheduler={type: pbt, perturbation_interval: 2}"]))
    assert set(pbt._hyperparam_mutations) == {"lr"} and pbt._perturbation_interval == 2
