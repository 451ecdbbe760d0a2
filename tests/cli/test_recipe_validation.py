"""Recipe validation: every problem reported at once, each precise and actionable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, TINY_BASE_MODEL, run_cli
from torl_rllib.recipe import RecipeError, load_recipe

RECIPE = REPO / "experiments" / "tiny_cpu.yaml"


def problems(*overrides) -> list[str]:
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, list(overrides))
    return err.value.problems


def test_shipped_recipes_are_valid():
    for path in (REPO / "experiments").glob("tiny_cpu*.yaml"):
        assert load_recipe(path).name
    for path in (REPO / "experiments").glob("qwen*.yaml"):  # GPU recipes: the dataset is the user's,
        # and the hub model is swapped for a local one (this machine cannot download it)
        config = load_recipe(path, [f"data.train={RECIPE}", f"model.path={TINY_BASE_MODEL}"]).build_config()
        assert not config.problems() and config.colocate and config.learner_strategy == "fsdp", path


def test_unknown_key_suggests_the_closest_valid_one():
    assert problems("training.lrr=1e-4") == ["training.lrr: unknown key (did you mean 'lr'?)"]
    assert problems("trainig.lr=1") == ["trainig: unknown section (did you mean 'training'?)"]


def test_wrong_type_names_expected_and_given():
    assert problems("rollout.top_p=abc") == ["rollout.top_p: expected float, got str 'abc'"]
    assert problems("training.group_size=2.5") == ["training.group_size: expected int, got float 2.5"]


def test_out_of_range_values_list_the_valid_choices():
    found = problems("training.loss_agg_mode=mean", "rollout.temperature=0", "sandbox.timeout_s=-1")
    assert any("training.loss_agg_mode 'mean' is not one of ['token-mean'" in p for p in found)
    assert any(p.startswith("rollout.temperature must be > 0") for p in found)
    assert any(p.startswith("sandbox:") and "timeout_s" in p for p in found)


@pytest.mark.parametrize("overrides", [
    ["rollout.rollout_engine=vllm", "rollout.top_p=0.9"],
    ["rollout.rollout_engine=vllm", "rollout.top_k=5"],
    ["resources.colocate=true", "training.max_staleness=1"],
    ["resources.learner_strategy=fsdp"],
    ["resources.fsdp={cpu_offload: true}", "resources.num_learners=1"],
    ["training.minibatches_per_step=1000"],
    ["training.minibatch_size=4"],  # RLlib keys GRPO never reads: refused, naming what it uses instead
    ["training.train_batch_size_per_learner=64"],
    ["training.train_batch_size=64"],
    ["training.shuffle_batch_per_epoch=true"],
    ["training.gamma=0.99"],  # RLlib's default value, but given
    ["training.optimizer={type: sgd}"],
    ["training.kl_coeff=-0.1"],
    ["training.kl_coeff=0.1", "training.entropy_coeff=0.01", "training.num_epochs=2"],  # valid
    ["rollout.rollout_engine=vllm"],  # valid: both layers accept it
    [],
])
def test_check_rejects_exactly_what_the_config_rejects(overrides):
    """`torl-rllib check` (the recipe layer) and GRPOConfig.validate() agree on every setting."""
    raw = load_recipe(RECIPE).data
    from torl_rllib.recipe import apply_overrides, recipe_from_dict

    try:
        recipe_from_dict(raw, RECIPE.parent, overrides)
        check_error = None
    except RecipeError as exc:
        check_error = exc
    from torl_rllib.recipe import Recipe

    config_errors = Recipe(name="x", data=apply_overrides(raw, overrides)).build_config().problems()
    assert (check_error is None) == (not config_errors), (check_error, config_errors)
    for message in config_errors:  # each of the config's messages, in the recipe's report
        assert any(message in problem for problem in check_error.problems), (message, check_error.problems)


def test_old_key_names_name_rllibs_spelling():
    assert problems("training.kl_coef=0.1", "training.entropy_coef=0.01") == [
        "training.kl_coef: renamed to training.kl_coeff (RLlib's name)",
        "training.entropy_coef: renamed to training.entropy_coeff (RLlib's name)",
    ]


def test_rllib_keys_grpo_ignores_name_what_it_uses_instead():
    assert problems("training.minibatch_size=4") == [
        "training.minibatch_size: GRPO does not use it; set minibatches_per_step (a step's trajectories "
        "are split into that many mini-batches, one optimizer step each, every epoch)"]
    assert problems("training.train_batch_size_per_learner=64")[0].startswith(
        "training.train_batch_size_per_learner: GRPO does not use it; set prompts_per_step")


@pytest.mark.parametrize("command", ["check", "train"])
def test_old_keys_in_a_recipe_file_or_on_the_command_line_stop_check_and_train(tmp_path, command):
    """Before Ray starts: exit 2, one line per refused key, naming the new key (or what GRPO uses)."""
    recipe = load_recipe(RECIPE).data  # paths resolved: the copy may live anywhere
    recipe["training"]["kl_coef"] = 0.1
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(command, old, "training.entropy_coef=0.01", "training.minibatch_size=8", cwd=tmp_path)
    assert code == 2, err
    for line in ["training.kl_coef: renamed to training.kl_coeff (RLlib's name)",
                 "training.entropy_coef: renamed to training.entropy_coeff (RLlib's name)",
                 "training.minibatch_size: GRPO does not use it; set minibatches_per_step"]:
        assert line in err, err


def test_missing_files_are_named(tmp_path):
    found = problems(f"model.path={tmp_path / 'no-model'}", f"data.train={tmp_path / 'no.jsonl'}")
    assert f"model.path: '{tmp_path / 'no-model'}' does not exist" in found
    assert f"data.train: '{tmp_path / 'no.jsonl'}' does not exist" in found


def test_all_problems_are_reported_together():
    found = problems("training.lrr=1", "rollout.top_p=abc", "training.group_size=1", "rollout.max_tool_calls=-1")
    assert len(found) == 4, found


def test_cli_exits_2_with_the_problems_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "check", str(RECIPE), "training.lrr=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean 'lr'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # a CLI subprocess and the Hub client's start-up: ~12 s
def test_a_hub_model_that_cannot_be_loaded_is_a_problem_not_a_traceback():
    """A hub id neither cached nor downloadable (offline here, as on an air-gapped cluster)."""
    proc = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "check", str(RECIPE), "model.path=Qwen/No-Such-Model"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.path: 'Qwen/No-Such-Model' is not a local folder and cannot be loaded from the Hugging Face Hub" \
        in proc.stderr and "Traceback" not in proc.stderr


def test_override_must_be_key_value():
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe(RECIPE, ["training.lr"])


def test_exponent_floats_without_a_dot_are_floats():
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; recipes read it as YAML 1.2 does."""
    assert load_recipe(RECIPE, ["training.lr=1e-3"]).data["training"]["lr"] == 1e-3
    assert load_recipe(RECIPE, ["rollout.top_p=+5E-1"]).data["rollout"]["top_p"] == 0.5


def test_learner_strategy_fsdp_and_lora_settings_are_checked():
    found = problems("resources.learner_strategy=zero3", "resources.fsdp.param_dtype=fp8",
                     "resources.fsdp.offload=true", "model.lora.r=0", "model.lora.rank=8")
    assert "resources.learner_strategy 'zero3' is not one of ['ddp', 'fsdp']" in found
    assert any("fsdp.param_dtype 'fp8' is not one of" in p for p in found), found
    assert any("fsdp has unknown keys ['offload']" in p for p in found), found
    assert "model.lora.r: must be an integer >= 1, got 0" in found
    assert any(p.startswith("model.lora.rank: unknown key") for p in found), found
    assert any("set num_learners >= 1" in p for p in problems("resources.learner_strategy=fsdp"))
    combined = problems("resources.learner_strategy=fsdp", "resources.num_learners=2", "model.lora.r=8")
    assert any("'fsdp' with model.lora is not supported" in p for p in combined), combined
    offload = problems("resources.learner_strategy=fsdp", "resources.num_learners=2", "resources.fsdp.cpu_offload=true")
    assert any("fsdp.cpu_offload moves the Learners' GPU shards" in p for p in offload), offload
    recipe = load_recipe(RECIPE, ["resources.learner_strategy=fsdp", "resources.num_learners=2",
                                  "resources.fsdp.cpu_offload=true", "resources.num_gpus_per_learner=1"])
    config = recipe.build_config()
    assert config.learner_strategy == "fsdp" and config.fsdp_policy()["cpu_offload"] is True


def test_prompts_too_long_for_the_run_are_named_by_row(tmp_path):
    """Found when the data loads, with row ids: refused under data.train.on_error=raise, else
    skipped by the run (and `check` says so)."""
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"id": "short", "problem": "What is 1 + 1?", "answer": "2"}\n'
                    '{"id": "long", "problem": "' + "What is 1 + 1? " * 40 + '", "answer": "2"}\n')
    refused = problems("rollout.max_prompt_tokens=300", f"data.train={{path: {data}, on_error: raise}}")
    assert len(refused) == 1 and "1 prompt(s) longer than 300 tokens" in refused[0] and "long (" in refused[0]
    assert "short" not in refused[0]
    code, _, stderr = run_cli("check", RECIPE, "rollout.max_prompt_tokens=300", f"data.train={data}")
    assert code == 0 and "warning: 1 prompt(s) longer than 300 tokens" in stderr, stderr
    assert "long (" in stderr and "a run skips them" in stderr


def test_a_split_column_no_training_row_has_is_named_with_the_closest_column():
    """A typo in data.split_metrics_by would otherwise split nothing, silently."""
    emergent = REPO / "experiments" / "emergent_cpu.yaml"
    assert load_recipe(emergent).data["data"]["split_metrics_by"] == "kind"
    with pytest.raises(RecipeError) as typo:
        load_recipe(emergent, ["data.split_metrics_by=knd"])
    assert "data.split_metrics_by: no training row has a column 'knd' (did you mean 'kind'?)" in str(typo.value)
    with pytest.raises(RecipeError) as absent:
        load_recipe(REPO / "experiments" / "tiny_cpu.yaml", ["data.split_metrics_by=difficulty"])
    assert "no training row has a column 'difficulty'" in str(absent.value)


@pytest.mark.parametrize("key, overrides", [
    ("rollout.top_p", ["rollout.rollout_engine=vllm", "rollout.top_p=0.9"]),
    ("rollout.top_k", ["rollout.rollout_engine=vllm", "rollout.top_k=5"]),
    ("rollout.top_k", ["rollout.top_k=-1"]),
    ("rollout.num_threads", ["rollout.num_threads=0"]),
    ("rollout.rollout_engine", ["rollout.rollout_engine=no_such_package.engine:Engine"]),
    ("training.group_size", ["training.group_size=1"]),
    ("training.kl_coeff", ["training.kl_coeff=-1"]),
    ("training.lr", ["training.lr=0"]),
    ("training.minibatch_size", ["training.minibatch_size=4"]),
    ("training.minibatches_per_step", ["training.minibatches_per_step=1000"]),
    ("training.micro_batch_size", ["training.micro_batch_size=0"]),
    ("resources.learner_strategy", ["resources.learner_strategy=fsdp"]),
    ("resources.colocate", ["resources.colocate=true", "training.max_staleness=1"]),
    ("resources.fsdp", ["resources.fsdp={cpu_offload: true}", "resources.num_learners=1"]),
    ("run.failure_patience", ["run.failure_patience=0"]),
    ("run.max_failed_fraction", ["run.max_failed_fraction=1.5"]),
    ("evaluation.benchmarks", ["evaluation.benchmarks=[]"]),  # `check` words it: no benchmarks given
    ("evaluation.protocol", ["evaluation.protocol={k: 0}"]),
])
def test_check_and_a_run_reject_a_setting_under_its_recipe_key_in_the_same_words(key, overrides):
    """The issue's acceptance check: `check` (the recipe) and `GRPOConfig.validate()` (a run,
    the recipe's config built unchecked) reject the same setting, with the same message, under
    the key the table gives the attribute the problem is about."""
    from torl_rllib.algorithms.grpo.config_keys import recipe_key_of
    from torl_rllib.recipe import Recipe, apply_overrides

    found = problems(*overrides)
    assert any(p.startswith((f"{key} ", f"{key}:", f"{key}.")) for p in found), found
    config = Recipe(name="x", data=apply_overrides(load_recipe(RECIPE).data, overrides)).build_config()
    config_problems = config.problems()
    assert config_problems, "a run would accept it"
    with pytest.raises(ValueError) as run:
        config.validate()
    for problem in config_problems:
        assert problem in str(run.value)
        assert recipe_key_of(problem.attribute), f"{problem.attribute!r} has no recipe key: {problem}"
    in_recipe = [p.in_recipe_words() for p in config_problems if recipe_key_of(p.attribute) == key]
    assert in_recipe, config_problems
    if key != "evaluation.benchmarks":  # `check` says which benchmark does not resolve, or that none is given
        assert set(in_recipe) <= set(found), (in_recipe, found)


def test_every_problem_of_a_config_lands_under_a_recipe_key():
    """No problem of ``GRPOConfig.problems()`` is left without a section."""
    from torl_rllib.algorithms.grpo import GRPOConfig
    from torl_rllib.algorithms.grpo.config_keys import recipe_key_of

    config = (
        GRPOConfig()
        .training(group_size=1, prompts_per_step=0, minibatches_per_step=0, clip_eps_low=1.5, clip_eps_high=-1,
                  loss_agg_mode="mean", kl_coeff=-1, max_staleness=2, micro_batch_size=0, importance_clip=0.5,
                  lr=0, minibatch_size=8)
        .rollout(rollout_engine="nope", max_prompt_tokens=0, max_response_tokens=0, temperature=0, top_p=2,
                 top_k=-1, num_threads=0, max_tool_calls=-1, infra_retries=-1, observation_style="verbose")
        .fault_tolerance(max_failed_fraction=0, failure_patience=0)
        .learners(learner_strategy="zero3", colocate=True, fsdp={"offload": True, "param_dtype": "fp8",
                                                                 "cpu_offload": True})
        .tracking(plots=3, no_such_field=1)
        .evaluation(evaluation_interval=1, evaluation_protocol={"k": 0})
    )
    config.kl_coef = 0.1  # an old run's config dict
    found = config.problems()
    assert len(found) >= 30, found
    assert not [(p.attribute, p) for p in found if not recipe_key_of(p.attribute)]
