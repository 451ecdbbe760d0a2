"""``GRPOConfig.problems()``: every invalid setting, each naming the config attribute it is
about, so a recipe reports it under its own key (``config_keys``) in the same words."""

from __future__ import annotations

import importlib.util

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from torl_rllib.algorithms.grpo.config_keys import (
    BY_ATTRIBUTE, RENAMED_TRAINING_KEYS, UNUSED_RLLIB_TRAINING_KEYS, recipe_key_of, refused_training_key,
)
from torl_rllib.algorithms.grpo.grpo_learner import LOSS_AGG_MODES
from torl_rllib.evaluation import EvalProtocol
from torl_rllib.modules.causal_lm_module import DTYPES
from torl_rllib.rollout.observation import OBSERVATION_STYLES
from torl_rllib.tracking import TrackingConfig

__all__ = ["ConfigProblem", "config_problems", "ROLLOUT_ENGINES", "LEARNER_STRATEGIES", "FSDP_KEYS"]

ROLLOUT_ENGINES = ("hf", "vllm")
LEARNER_STRATEGIES = ("ddp", "fsdp")
FSDP_KEYS = {"param_dtype": "bfloat16", "reduce_dtype": "float32", "cpu_offload": False}


class ConfigProblem(str):
    """One invalid setting: the message (the string itself) and the attribute it is about."""

    attribute: str

    def __new__(cls, attribute: str, message: str):
        problem = super().__new__(cls, message)
        problem.attribute = attribute
        return problem

    def in_recipe_words(self) -> str:
        """The message under the attribute's recipe key: ``top_k must be >= 0`` → ``rollout.top_k
        must be >= 0``; a message that does not start with the attribute's name gets the key
        in front (``training.minibatch_size: ...``)."""
        key = recipe_key_of(self.attribute) or self.attribute
        entry = BY_ATTRIBUTE.get(self.attribute)
        names = {self.attribute, key, *((entry.argument,) if entry else ())}
        for name in sorted(names, key=len, reverse=True):
            if self.startswith(name) and self[len(name):][:1] in ("", " ", ".", ":"):
                return key + self[len(name):]
        return f"{key}: {self}"


class _Found(list):
    """The problems found so far."""

    def check(self, ok, attribute: str, message: str) -> None:
        if not ok:
            self.append(ConfigProblem(attribute, message))


def config_problems(config) -> list[ConfigProblem]:
    """Every invalid setting of a ``GRPOConfig``, each one readable line (empty when valid)."""
    c, errors = config, _Found()
    check = errors.check
    check(c.group_size >= 2, "group_size", f"group_size must be >= 2 (GRPO compares samples), got {c.group_size}")
    check(c.prompts_per_step >= 1, "prompts_per_step", f"prompts_per_step must be >= 1, got {c.prompts_per_step}")
    check(c.minibatches_per_step >= 1, "minibatches_per_step",
          f"minibatches_per_step must be >= 1, got {c.minibatches_per_step}")
    check(c.minibatches_per_step <= c.train_batch_trajectories, "minibatches_per_step",
          f"minibatches_per_step ({c.minibatches_per_step}) exceeds the trajectories per step "
          f"({c.train_batch_trajectories})")
    check(0 <= c.clip_eps_low < 1, "clip_eps_low", f"clip_eps_low must be in [0, 1), got {c.clip_eps_low}")
    check(c.clip_eps_high >= 0, "clip_eps_high", f"clip_eps_high must be >= 0, got {c.clip_eps_high}")
    check(c.loss_agg_mode in LOSS_AGG_MODES, "loss_agg_mode",
          f"loss_agg_mode {c.loss_agg_mode!r} is not one of {list(LOSS_AGG_MODES)}")
    check(c.kl_coeff >= 0, "kl_coeff", f"kl_coeff must be >= 0, got {c.kl_coeff}")
    rllib_defaults = AlgorithmConfig()
    for key in UNUSED_RLLIB_TRAINING_KEYS:
        attr = "_train_batch_size_per_learner" if key == "train_batch_size_per_learner" else key
        check(key not in c._unused_training_keys and getattr(c, attr) == getattr(rllib_defaults, attr),
              key, f"{key}: {refused_training_key(key)}")
    for key in RENAMED_TRAINING_KEYS:  # set as an attribute, or from an older run's config dict
        check(key not in vars(c), key, f"{key}: {refused_training_key(key)}")
    check(c.max_staleness in (0, 1), "max_staleness",
          f"max_staleness must be 0 (on-policy) or 1 (one step off-policy), got {c.max_staleness!r}")
    check(c.micro_batch_size is None or (isinstance(c.micro_batch_size, int) and c.micro_batch_size >= 1),
          "micro_batch_size",
          f"micro_batch_size must be null (whole mini-batch) or an integer >= 1, got {c.micro_batch_size!r}")
    check(c.importance_clip is None or (isinstance(c.importance_clip, (int, float)) and c.importance_clip >= 1),
          "importance_clip", f"importance_clip must be null (off) or a number >= 1, got {c.importance_clip!r}")
    _rollout_problems(c, errors)
    check(0 < c.max_failed_fraction <= 1, "max_failed_fraction",
          f"max_failed_fraction must be in (0, 1], got {c.max_failed_fraction}")
    check(isinstance(c.failure_patience, int) and c.failure_patience >= 1, "failure_patience",
          f"failure_patience must be an integer >= 1, got {c.failure_patience!r}")
    check(c.train_data is not None, "train_data", "train_data is required (.task(train_data=...))")
    check(bool((c._model_config or {}).get("path")), "_model_config",
          "model_config: the policy model path is required (.rl_module(model_config={'path': ...}))")
    check(c.lr > 0, "lr", f"lr must be > 0, got {c.lr}")
    _learner_problems(c, errors)
    try:
        TrackingConfig(**c.tracking_config)
    except (TypeError, ValueError) as exc:
        check(False, "tracking_config", f"tracking: {exc}")
    if c.evaluation_interval:
        check(bool(c.evaluation_benchmarks), "evaluation_benchmarks",
              "evaluation_interval needs evaluation_benchmarks (.evaluation(evaluation_benchmarks=[...]))")
        try:
            EvalProtocol(**c.evaluation_protocol)
        except (TypeError, ValueError) as exc:
            check(False, "evaluation_protocol", f"evaluation_protocol: {exc}")
    return list(errors)


def _rollout_problems(c, errors: _Found) -> None:
    """Problems of the ``rollout()`` settings."""
    check = errors.check
    check(c.rollout_engine in ROLLOUT_ENGINES or ":" in c.rollout_engine, "rollout_engine",
          f"rollout_engine {c.rollout_engine!r} is not one of {list(ROLLOUT_ENGINES)} "
          "(or a 'package.module:EngineClass')")
    if ":" in c.rollout_engine:
        module = c.rollout_engine.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        check(found, "rollout_engine",
              f"rollout_engine {c.rollout_engine!r}: module {module!r} cannot be imported here")
    check(c.max_prompt_tokens >= 1, "max_prompt_tokens", f"max_prompt_tokens must be >= 1, got {c.max_prompt_tokens}")
    check(c.max_response_tokens >= 1, "max_response_tokens",
          f"max_response_tokens must be >= 1, got {c.max_response_tokens}")
    check(c.temperature > 0, "temperature", f"temperature must be > 0, got {c.temperature}")
    check(0 < c.top_p <= 1, "top_p", f"top_p must be in (0, 1], got {c.top_p}")
    check(c.top_k >= 0, "top_k", f"top_k must be >= 0 (0 = off), got {c.top_k}")
    check(c.rollout_engine != "vllm" or (c.top_p == 1.0 and c.top_k == 0), "top_p" if c.top_p != 1.0 else "top_k",
          f"top_p {c.top_p} / top_k {c.top_k}: the vllm engine reports logprobs after "
          "top-p/top-k truncation, which the learner does not recompute: use top_p=1.0 and "
          "top_k=0 with rollout_engine='vllm'")
    check(c.num_threads is None or (isinstance(c.num_threads, int) and c.num_threads >= 1), "num_threads",
          f"num_threads must be null (the EnvRunner's CPUs) or an integer >= 1, got {c.num_threads!r}")
    check(c.max_tool_calls >= 0, "max_tool_calls", f"max_tool_calls must be >= 0, got {c.max_tool_calls}")
    check(isinstance(c.infra_retries, int) and c.infra_retries >= 0, "infra_retries",
          f"infra_retries must be an integer >= 0, got {c.infra_retries!r}")
    check(c.observation_style in OBSERVATION_STYLES, "observation_style",
          f"observation_style {c.observation_style!r} is not one of {list(OBSERVATION_STYLES)}")


def _learner_problems(c, errors: _Found) -> None:
    """Problems of how the Learners hold the model (``learners()``)."""
    check = errors.check
    check(c.learner_strategy in LEARNER_STRATEGIES, "learner_strategy",
          f"learner_strategy {c.learner_strategy!r} is not one of {list(LEARNER_STRATEGIES)}")
    check(c.learner_strategy != "fsdp" or c.num_learners >= 1, "learner_strategy",
          "learner_strategy 'fsdp' shards over the Learners' process group: set num_learners >= 1")
    check(c.learner_strategy != "fsdp" or not (c._model_config or {}).get("lora"), "learner_strategy",
          "learner_strategy 'fsdp' with model.lora is not supported: LoRA adapters are small, "
          "train them with learner_strategy 'ddp'")
    check(not c.colocate or c.max_staleness == 0, "colocate",
          "colocate needs max_staleness 0: a colocated EnvRunner sleeps while its Learner updates")
    gpus_runner, gpus_learner = c.num_gpus_per_env_runner, c.num_gpus_per_learner
    check(not (c.colocate and (gpus_runner or gpus_learner)) or (
        c.num_env_runners == c.num_learners and gpus_runner > 0.5 and 0 < gpus_learner <= 1 - gpus_runner),
          "colocate",
          "colocate on GPUs pairs EnvRunner i with Learner i: set num_env_runners == num_learners, "
          "num_gpus_per_env_runner > 0.5 and num_gpus_per_learner <= 1 - num_gpus_per_env_runner "
          f"(got {c.num_env_runners} x {gpus_runner:g} and {c.num_learners} x {gpus_learner:g})")
    check(not c.fsdp.get("cpu_offload") or c.num_gpus_per_learner > 0, "fsdp",
          "fsdp.cpu_offload moves the Learners' GPU shards to host memory: it needs "
          "num_gpus_per_learner > 0 (CPU Learners hold them in host memory already)")
    unknown = sorted(set(c.fsdp) - set(FSDP_KEYS))
    check(not unknown, "fsdp", f"fsdp has unknown keys {unknown}; valid: {sorted(FSDP_KEYS)}")
    for key in ("param_dtype", "reduce_dtype"):
        check(c.fsdp.get(key, FSDP_KEYS[key]) in DTYPES, "fsdp",
              f"fsdp.{key} {c.fsdp.get(key)!r} is not one of {sorted(DTYPES)}")
