"""The one table of recipe keys: for every ``section.key`` of a recipe (and the top-level
``seed``), the ``GRPOConfig`` builder method that sets it, under which argument, the attribute
that holds it (its key in ``GRPOConfig.to_dict()``, what Tune hands a trial) and its type.

Everything that maps a recipe to a config reads this table: ``Recipe.build_config`` and the
eval recipe (``apply_recipe``), ``GRPOConfig.tracked_params`` (``recipe_of``), the sweep's
search space and a trial's or a checkpoint's config dict (``config_path``, ``config_value``),
``check``'s section schemas (``section_schemas``) and the recipe words of
``GRPOConfig.problems()`` (``recipe_key_of``).

A whole mapping is one entry: ``model`` (``rl_module(model_config=...)``), ``reward``,
``sandbox``, ``tracking`` and ``evaluation.protocol``; its keys live under its attribute
(``sandbox.timeout_s`` → ``sandbox_config["timeout_s"]``). The ``run`` section is the driver's
(``recipe.RunSettings``: steps, checkpoints, output): only ``run.max_failed_fraction`` and
``run.failure_patience`` are config keys, set through ``fault_tolerance()``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from sandbox import SandboxConfig
from torl_rllib.tasks import RewardConfig
from torl_rllib.tracking import TrackingConfig

__all__ = ["BY_ATTRIBUTE", "BY_RECIPE_KEY", "ConfigKey", "KEYS", "MODEL_KEYS", "RENAMED_TRAINING_KEYS",
           "UNUSED_RLLIB_TRAINING_KEYS", "apply_recipe", "config_path", "config_value", "dataclass_schema",
           "recipe_key_of", "recipe_of", "refused_training_key", "section_schemas"]

# ``model_config`` keys (``torl_rllib.modules.causal_lm_module``) a recipe may set.
MODEL_KEYS = {"path": str, "dtype": str, "gradient_checkpointing": bool, "trust_remote_code": bool,
              "logits_chunk_size": int, "lora": dict}
# Training keys GRPO refuses (``training()``, ``validate()``, recipes): old GRPO names → RLlib's
# spelling of the same setting (PPOConfig's) ...
RENAMED_TRAINING_KEYS = {"kl_coef": "kl_coeff", "entropy_coef": "entropy_coeff"}
# ... and keys ``AlgorithmConfig.training()`` accepts that GRPO never reads → what GRPO uses
# instead. (RLlib's ``lr``, ``grad_clip``, ``grad_clip_by`` and ``num_epochs`` are honoured;
# ``model`` draws RLlib's own new-API-stack warning.)
UNUSED_RLLIB_TRAINING_KEYS = {
    "minibatch_size": "set minibatches_per_step (a step's trajectories are split into that many "
                      "mini-batches, one optimizer step each, every epoch)",
    "train_batch_size_per_learner": "set prompts_per_step (a step trains on prompts_per_step x "
                                    "group_size trajectories, split evenly across the Learners)",
    "train_batch_size": "set prompts_per_step (a step trains on prompts_per_step x group_size "
                        "trajectories)",
    "shuffle_batch_per_epoch": "every epoch shuffles a step's trajectories into minibatches_per_step "
                               "mini-batches",
    "gamma": "a response's one reward is compared with its group's rewards (no returns, no discounting)",
    "optimizer": "the Learners use Adam, set by lr and grad_clip (an old-API-stack setting)",
}


@dataclass(frozen=True)
class ConfigKey:
    """One recipe key: ``GRPOConfig.<builder>(<argument>=value)`` sets ``config.<attribute>``."""

    recipe_key: str  # "training.lr"; a whole mapping: "model", "evaluation.protocol"
    builder: str
    argument: str
    attribute: str = ""  # default: the argument
    type: Any = None  # None: the type of GRPOConfig's default (Any when that is not a scalar)
    keys: Any = None  # a whole mapping's keys: a {key: type} dict or a dataclass
    spread: bool = False  # the builder takes the mapping's keys as keyword arguments

    @property
    def attr(self) -> str:
        return self.attribute or self.argument


def _keys(section: str, builder: str, *names: str, **typed) -> tuple[ConfigKey, ...]:
    """Keys of ``section`` named as their builder argument (``typed``: with an explicit type)."""
    return (*(ConfigKey(f"{section}.{n}", builder, n) for n in names),
            *(ConfigKey(f"{section}.{n}", builder, n, type=t) for n, t in typed.items()))


KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("seed", "debugging", "seed", type=int),
    ConfigKey("model", "rl_module", "model_config", "_model_config", keys=MODEL_KEYS),
    ConfigKey("data.train", "task", "train_data", type=Any),  # a path or DatasetSpec fields
    ConfigKey("data.template", "task", "prompt_template"),
    ConfigKey("data.split_metrics_by", "task", "split_metrics_by", type=str),
    *_keys("data", "task", "grade_timeout_s", "trajectories_to_log"),
    ConfigKey("reward", "task", "reward", keys=RewardConfig),
    *_keys("training", "training", "group_size", "prompts_per_step", "minibatches_per_step", "clip_eps_low",
           "clip_eps_high", "loss_agg_mode", "scale_advantages", "kl_coeff", "entropy_coeff", "dynamic_sampling",
           "overlong_mask", "max_staleness", "importance_clip", "micro_batch_size",
           lr=float, grad_clip=float, num_epochs=int),  # the RLlib training keys GRPO honours
    *_keys("rollout", "rollout", "rollout_engine", "engine_max_batch_size", "vllm_kwargs", "max_prompt_tokens",
           "max_response_tokens", "temperature", "top_p", "top_k", "max_tool_calls", "budget_counts_tool_output",
           "observation_style", "num_threads", "infra_retries"),
    ConfigKey("sandbox", "sandbox", "sandbox_config", keys=SandboxConfig, spread=True),
    *_keys("resources", "env_runners", num_env_runners=int, num_cpus_per_env_runner=float,
           num_gpus_per_env_runner=float),
    *_keys("resources", "learners", "learner_strategy", "colocate", num_learners=int, num_cpus_per_learner=float,
           num_gpus_per_learner=float, fsdp=dict),
    *_keys("resources", "resources", num_cpus_for_main_process=float),  # the driver (a Tune trial's own CPUs)
    ConfigKey("tracking", "tracking", "tracking_config", keys=TrackingConfig, spread=True),
    ConfigKey("evaluation.interval", "evaluation", "evaluation_interval", type=int),
    ConfigKey("evaluation.benchmarks", "evaluation", "evaluation_benchmarks", type=list),
    ConfigKey("evaluation.benchmarks_dir", "evaluation", "benchmarks_dir", type=str),
    ConfigKey("evaluation.num_env_runners", "evaluation", "evaluation_num_env_runners", type=int),
    ConfigKey("evaluation.protocol", "evaluation", "evaluation_protocol", type=dict),  # EvalProtocol fields
    *_keys("fault_tolerance", "fault_tolerance", restart_failed_env_runners=bool, ignore_env_runner_failures=bool,
           max_num_env_runner_restarts=int, delay_between_env_runner_restarts_s=float,
           env_runner_health_probe_timeout_s=float, env_runner_restore_timeout_s=float),
    *_keys("run", "fault_tolerance", "max_failed_fraction", "failure_patience"),
)
BY_RECIPE_KEY = {key.recipe_key: key for key in KEYS}
BY_ATTRIBUTE = {key.attr: key for key in KEYS}


def _section_builders() -> dict[str, str]:
    """Sections set by one builder (``run``'s other keys are the driver's): a key of theirs that
    is no config key (refused, unknown) still reaches that builder, so the config refuses it as
    a run would."""
    builders: dict[str, set[str]] = {}
    for key in KEYS:
        section, _, name = key.recipe_key.partition(".")
        if name:
            builders.setdefault(section, set()).add(key.builder)
    return {section: found.pop() for section, found in builders.items() if len(found) == 1 and section != "run"}


SECTION_BUILDERS = _section_builders()


def refused_training_key(key: str, prefix: str = "") -> str | None:
    """Why ``training(key=...)`` is refused (None: it is not): renamed to RLlib's spelling
    (naming the new key, after ``prefix``, e.g. ``"training."`` in a recipe), or an inherited
    RLlib key GRPO never reads (naming what GRPO uses instead)."""
    if key in RENAMED_TRAINING_KEYS:
        return f"renamed to {prefix}{RENAMED_TRAINING_KEYS[key]} (RLlib's name)"
    if key in UNUSED_RLLIB_TRAINING_KEYS:
        return f"GRPO does not use it; {UNUSED_RLLIB_TRAINING_KEYS[key]}"
    return None


def _scalar_type(value) -> Any:
    return type(value) if isinstance(value, (bool, int, float, str)) else Any


def dataclass_schema(cls) -> dict[str, Any]:
    """A dataclass's fields as recipe keys, typed by their defaults (ints of float fields: float)."""
    hints = {}
    for f in dataclasses.fields(cls):
        hints[f.name] = _scalar_type(f.default if f.default is not dataclasses.MISSING else None)
        if hints[f.name] is int and f.type in ("float", float, "float | None"):
            hints[f.name] = float
    return hints


def section_schemas() -> dict[str, dict[str, Any]]:
    """Each section's config keys and their types (the ``run`` section: only its config keys)."""
    from torl_rllib.algorithms.grpo.grpo import GRPOConfig

    defaults = GRPOConfig()
    schemas: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        section, _, name = key.recipe_key.partition(".")
        if not name:
            if key.keys is not None:  # a whole-mapping section: its keys
                schemas[section] = key.keys if isinstance(key.keys, dict) else dataclass_schema(key.keys)
            continue
        schemas.setdefault(section, {})[name] = key.type or _scalar_type(getattr(defaults, key.attr))
    return schemas


def _lookup(tree: dict, recipe_key: str):
    node = tree
    for part in recipe_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_recipe(config, recipe: dict):
    """Call ``config``'s builders with the recipe's values (None: the config's default; the
    sections and ``run`` keys that are no config keys are left out); returns ``config``."""
    calls: dict[str, dict[str, Any]] = {}
    for section, builder in SECTION_BUILDERS.items():
        values = recipe.get(section)
        if isinstance(values, dict):
            calls[builder] = {k: copy.deepcopy(v) for k, v in values.items()
                              if f"{section}.{k}" not in BY_RECIPE_KEY and v is not None}
    for key in KEYS:
        value = _lookup(recipe, key.recipe_key)
        if value is None:
            continue
        args = calls.setdefault(key.builder, {})
        if key.spread:
            args.update(copy.deepcopy(value))
        else:
            args[key.argument] = copy.deepcopy(value)
    for builder, args in calls.items():
        getattr(config, builder)(**args)
    return config


def recipe_of(config) -> dict[str, Any]:
    """``config``'s settings as a recipe (the sections of its config keys)."""
    recipe: dict[str, Any] = {}
    for key in KEYS:
        value = getattr(config, key.attr)
        section, _, name = key.recipe_key.partition(".")
        if not name:
            recipe[section] = dict(value or {}) if key.keys is not None else value
        else:
            recipe.setdefault(section, {})[name] = dict(value) if isinstance(value, dict) else value
    return recipe


def config_path(recipe_key: str) -> tuple[str, ...]:
    """Where a recipe key lives in ``GRPOConfig.to_dict()``: ``training.lr`` → ``("lr",)``;
    inside a whole mapping, ``sandbox.timeout_s`` → ``("sandbox_config", "timeout_s")``."""
    parts = recipe_key.split(".")
    for end in range(len(parts), 0, -1):
        key = BY_RECIPE_KEY.get(".".join(parts[:end]))
        if key is not None:
            return (key.attr, *parts[end:])
    raise KeyError(f"{recipe_key!r} is not a config key")


def config_value(config_dict: dict, recipe_key: str):
    """The value of a recipe key in a ``GRPOConfig.to_dict()`` (a checkpoint's, a trial's);
    None when it has none."""
    node = config_dict
    for part in config_path(recipe_key):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def recipe_key_of(attribute: str) -> str | None:
    """The recipe key of a config attribute (a refused training key: ``training.<key>``)."""
    if attribute in BY_ATTRIBUTE:
        return BY_ATTRIBUTE[attribute].recipe_key
    if refused_training_key(attribute):
        return f"training.{attribute}"
    return None
