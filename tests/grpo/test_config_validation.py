"""``GRPOConfig.validate()`` reports every problem at once, each in one readable line; and a
config the Ray cluster cannot host fails fast in ``build_algo()`` with a message saying what
it needs, instead of hanging."""

from __future__ import annotations

import time

import pytest

from torl_rllib.algorithms.grpo import GRPOConfig
from torl_rllib.execution.cluster import check_schedulable

from .conftest import grpo_config


def problems_of(config) -> str:
    with pytest.raises(ValueError, match="invalid GRPO config") as info:
        config.validate()
    return str(info.value)


def test_valid_config_passes(random_model_dir, arithmetic_jsonl):
    config = grpo_config(random_model_dir, arithmetic_jsonl)
    assert config.problems() == []
    config.validate()


def test_all_problems_are_reported_at_once():
    config = (
        GRPOConfig()
        .training(group_size=1, loss_agg_mode="mean", clip_eps_low=1.5, minibatches_per_step=64, prompts_per_step=2,
                  max_staleness=2, importance_clip=0.5, minibatch_size=8)
        .rollout(rollout_engine="vllm", top_p=0.9, temperature=0.0, observation_style="verbose", num_threads=0)
    )
    message = problems_of(config)
    expected = [
        "group_size must be >= 2",
        "loss_agg_mode 'mean' is not one of ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum-norm']",
        "clip_eps_low must be in [0, 1), got 1.5",
        "minibatches_per_step (64) exceeds the trajectories per step (2)",
        "use top_p=1.0 and top_k=0 with rollout_engine='vllm'",
        "temperature must be > 0",
        "observation_style 'verbose' is not one of ['torl', 'full']",
        "max_staleness must be 0 (on-policy) or 1 (one step off-policy), got 2",
        "importance_clip must be null (off) or a number >= 1, got 0.5",
        "minibatch_size: GRPO does not use it; set minibatches_per_step",
        "num_threads must be null (the EnvRunner's CPUs) or an integer >= 1, got 0",
        "train_data is required",
        "model_config: the policy model path is required (.rl_module(model_config={'path': ...}))",
    ]
    missing = [line for line in expected if line not in message]
    assert not missing, f"not reported: {missing}\nin:\n{message}"
    assert message.count("\n  - ") == len(expected), "one line per problem, nothing else"


@pytest.mark.parametrize("old, new", [("kl_coef", "kl_coeff"), ("entropy_coef", "entropy_coeff")])
def test_old_key_names_are_refused_naming_rllibs_spelling(random_model_dir, arithmetic_jsonl, old, new):
    with pytest.raises(TypeError, match=rf"{old}: renamed to {new} \(RLlib's name\)"):
        GRPOConfig().training(**{old: 0.1})
    config = grpo_config(random_model_dir, arithmetic_jsonl, **{new: 0.1})
    assert getattr(config, new) == 0.1 and not hasattr(config, old) and config.problems() == []
    assert config.tracked_params()["training"][new] == 0.1
    setattr(config, old, 0.1)  # set as an attribute (or from an older run's config dict): not silently dead
    assert f"{old}: renamed to {new} (RLlib's name)" in problems_of(config)


def test_the_kl_coefficient_reaches_the_module_under_rllibs_name():
    config = GRPOConfig().training(kl_coeff=0.1)
    assert config.model_config["kl_coeff"] == 0.1 and "kl_coef" not in config.model_config


@pytest.mark.parametrize("key, value, instead", [
    ("minibatch_size", 64, "set minibatches_per_step"),
    ("train_batch_size_per_learner", 256, "set prompts_per_step"),
    ("train_batch_size", 256, "set prompts_per_step"),
    ("shuffle_batch_per_epoch", True, "every epoch shuffles"),
    ("gamma", 0.99, "no discounting"),  # RLlib's default, but given: the user expects discounting
    ("optimizer", {"type": "sgd"}, "the Learners use Adam"),
])
def test_inherited_rllib_keys_grpo_ignores_are_refused(random_model_dir, arithmetic_jsonl, key, value, instead):
    """``AlgorithmConfig.training()`` takes them, GRPO never reads them: ``validate()`` says
    so, naming what GRPO uses instead, whether given to ``training()`` or set directly, and
    after the round trip through a config dict (what Tune hands a trial)."""
    base = grpo_config(random_model_dir, arithmetic_jsonl)
    given = base.copy(copy_frozen=False).training(**{key: value})
    assert refused(given, key, instead), given.problems()
    assert f"{key}: GRPO does not use it; " in problems_of(given)
    assert refused(GRPOConfig.from_dict(given.to_dict()), key, instead), "lost in the config dict"
    direct = base.copy(copy_frozen=False)
    setattr(direct, key, 0.5 if key == "gamma" else value)
    assert refused(direct, key, instead), direct.problems()


def refused(config, key: str, instead: str) -> bool:
    """The config's one problem is ``key``'s refusal, naming what GRPO uses instead."""
    found = config.problems()
    return len(found) == 1 and found[0].startswith(f"{key}: GRPO does not use it; ") and instead in found[0]


def test_rllib_keys_grpo_honours_are_accepted(random_model_dir, arithmetic_jsonl):
    config = grpo_config(random_model_dir, arithmetic_jsonl).training(num_epochs=2, grad_clip_by="norm", grad_clip=0.5)
    assert config.problems() == []
    assert GRPOConfig.from_dict(config.to_dict()).problems() == [], "a plain config dict must stay valid"


def test_top_p_is_fine_with_the_hf_engine(random_model_dir, arithmetic_jsonl):
    assert grpo_config(random_model_dir, arithmetic_jsonl).rollout(top_p=0.9, top_k=20).problems() == []


@pytest.mark.timeout(60)  # without the check, build_algo() waits for the CPUs forever
def test_unschedulable_config_fails_fast_with_a_clear_message(ray_cluster, random_model_dir, arithmetic_jsonl):
    config = (
        grpo_config(random_model_dir, arithmetic_jsonl)
        .env_runners(num_env_runners=2)
        .learners(num_learners=2)
    )
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        config.build_algo()
    assert time.monotonic() - start < 10, "must fail before creating any actor"
    message = str(info.value)
    for part in ["needs 4 CPUs", "2 EnvRunners x 1", "2 Learners x 1", "the Ray cluster has 2",
                 "num_cpus_per_env_runner=0.5", "num_cpus_per_learner=0.5"]:
        assert part in message, f"{part!r} missing from: {message}"


def test_fractional_cpus_fit(ray_cluster, random_model_dir, arithmetic_jsonl):
    config = (
        grpo_config(random_model_dir, arithmetic_jsonl)
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
        .learners(num_learners=2, num_cpus_per_learner=0.5)
    )
    check_schedulable(config)
    with pytest.raises(ValueError, match="needs 2.5 CPUs"):
        check_schedulable(config.copy(copy_frozen=False).env_runners(num_env_runners=3))


@pytest.mark.timeout(60)  # without the check, build_algo() waits for the GPUs forever
def test_gpus_the_cluster_lacks_fail_fast(ray_cluster, random_model_dir, arithmetic_jsonl):
    gpus = int(ray_cluster.cluster_resources().get("GPU", 0))
    config = grpo_config(random_model_dir, arithmetic_jsonl).learners(num_learners=gpus + 1, num_gpus_per_learner=1)
    expected = rf"needs {gpus + 1} GPUs \(0 EnvRunners x 0 \+ {gpus + 1} Learners x 1\) but the Ray cluster has {gpus}\."
    with pytest.raises(ValueError, match=expected):
        config.build_algo()
