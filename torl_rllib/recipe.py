"""YAML recipes: load, apply ``dotted.key=value`` overrides, validate everything, build the config.

A recipe has one section per builder method of ``GRPOConfig`` (plus ``run`` and
``tracking``)::

    name: tiny_cpu            # MLflow run name
    seed: 0
    model:     {path, dtype, gradient_checkpointing, trust_remote_code, logits_chunk_size,
                lora: {r, alpha, dropout, target_modules}}
    data:      {train: PATH | {path, format, problem_field, ...}, template, split_metrics_by,
                grade_timeout_s, trajectories_to_log}
    reward:    {correct, incorrect, truncation_penalty, ...}
    training:  GRPOConfig.training(...)   (GRPO + lr, grad_clip, num_epochs)
    rollout:   GRPOConfig.rollout(...)
    sandbox:   sandbox.SandboxConfig fields
    resources: {num_env_runners, num_cpus_per_env_runner, num_gpus_per_env_runner,
                num_learners, num_cpus_per_learner, num_gpus_per_learner,
                learner_strategy: ddp | fsdp, fsdp: {param_dtype, reduce_dtype, cpu_offload},
                colocate}
    run:       {steps, checkpoint_every, output_dir, export_final, preemption_grace_s,
                max_failed_fraction, failure_patience}
    tracking:  torl_rllib.tracking.TrackingConfig fields
    evaluation: {interval, benchmarks, benchmarks_dir, num_env_runners, protocol}
               held-out evaluation every ``interval`` steps (GRPOConfig.evaluation)
    fault_tolerance: RLlib's AlgorithmConfig.fault_tolerance(...) for the EnvRunners

Which builder argument and config attribute each key is: ``algorithms.grpo.config_keys`` (the
one table ``build_config``, the schemas and the problems' recipe keys are read from). ``run``'s
keys are ``RunSettings``' (the driver's), but for ``max_failed_fraction`` and ``failure_patience``.

Relative paths (model, data, output_dir) are resolved against the recipe file's directory.
Validation happens before Ray starts and reports every problem at once: unknown keys (with
the closest valid key), wrong types, out-of-range values (with the valid choices), missing
files.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from torl_rllib.utils.suggest import did_you_mean

__all__ = ["Recipe", "RecipeError", "RunSettings", "load_recipe", "parse_override",
           "recipe_from_dict", "read_yaml_mapping", "apply_overrides", "set_override", "section_schemas"]

MODEL_DTYPES = ("float32", "bfloat16", "float16")
TOP_LEVEL = ("name", "seed", "model", "data", "reward", "training", "rollout", "sandbox",
             "resources", "run", "tracking", "evaluation", "fault_tolerance")


class RecipeError(ValueError):
    """Every problem found in a recipe, one per line."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        super().__init__(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


@dataclass
class RunSettings:
    """How long to train and where to write."""

    steps: int = 40
    checkpoint_every: int = 10  # 0: only at the end
    output_dir: str = "runs/{name}"
    export_final: bool = True  # write the final policy as a Hugging Face model directory
    # After SIGTERM/SIGHUP/Ctrl-C, how long the step in flight may take before it is abandoned.
    preemption_grace_s: float = 30.0
    # A run stops when failure_patience steps in a row each had at least max_failed_fraction of
    # their trajectories failed (or none trainable). None: GRPOConfig's defaults (0.5, 3), which
    # live there so that Tune trials and notebooks stop alike (GRPOConfig.fault_tolerance).
    max_failed_fraction: float | None = None
    failure_patience: int | None = None


@dataclass
class Recipe:
    """A validated recipe: the resolved dict and what it builds."""

    name: str
    data: dict[str, Any]  # resolved sections (paths absolute)
    source: Path | None = None

    @property
    def run(self) -> RunSettings:
        return RunSettings(**self.data.get("run", {}))

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir.format(name=self.name))

    def tracking_config(self):
        from torl_rllib.tracking import TrackingConfig

        return TrackingConfig(**self.data.get("tracking", {}))

    def build_config(self):
        """The ``GRPOConfig`` this recipe describes (``config_keys.apply_recipe``): the
        evaluation section counts once its interval is set; tracking is on unless turned off,
        and the run is named after the recipe."""
        from torl_rllib.algorithms.grpo import GRPOConfig
        from torl_rllib.algorithms.grpo.config_keys import apply_recipe

        sections = {k: v for k, v in self.data.items() if k not in ("evaluation", "tracking")}
        if (self.data.get("evaluation") or {}).get("interval"):
            sections["evaluation"] = self.data["evaluation"]
        tracking = self.data.get("tracking", {})
        if tracking.get("enabled", True):
            sections["tracking"] = {"run_name": self.name, **tracking}
        return apply_recipe(GRPOConfig().debugging(seed=0, log_level="WARN"), sections)

class _Loader(yaml.SafeLoader):
    """PyYAML implements YAML 1.1, where ``1e-3`` (an exponent, no dot) is a string; recipes
    and overrides read it as the float YAML 1.2 (and every user) means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.lr=1e-5`` → (["training", "lr"], 1e-05); values are parsed as YAML."""
    if "=" not in text:
        raise RecipeError([f"override {text!r} must look like section.key=value"], "command line")
    key, value = text.split("=", 1)
    return key.strip().split("."), load_yaml(value) if value.strip() else None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override, validate; raises ``RecipeError`` listing every problem."""
    path = Path(path)
    return recipe_from_dict(read_yaml_mapping(path), path.parent, overrides, source=path)


def read_yaml_mapping(path: Path, what: str = "recipe file") -> dict:
    """The top-level mapping of a YAML file; ``RecipeError`` if it is missing or not one."""
    if not path.is_file():
        raise RecipeError([f"{what} {str(path)!r} does not exist"], "command line")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError([f"not valid YAML: {exc}"], str(path)) from None
    if not isinstance(raw, dict):
        raise RecipeError(["the top level must be a mapping of sections"], str(path))
    return raw


def apply_overrides(raw: dict, overrides: list[str] = ()) -> dict:
    """``raw`` with ``section.key=value`` overrides set (a copy)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        set_override(raw, *parse_override(text))
    return raw


def set_override(tree: dict, keys: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]...`` = ``value``, creating sections; ``RecipeError`` when a key on
    the way is a value, not a section."""
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise RecipeError([f"override {'.'.join(keys)}: {k!r} is not a section"], "command line")
    node[keys[-1]] = value


def recipe_from_dict(raw: dict, base: Path, overrides: list[str] = (), source: Path | None = None,
                     name: str | None = None) -> Recipe:
    """A validated recipe from its sections (relative paths resolved against ``base``)."""
    data = _resolve_paths(apply_overrides(raw, overrides), base)
    problems = validate_sections(data)
    if problems:
        raise RecipeError(problems, str(source or "recipe"))
    default_name = name or (source.stem if source else "recipe")
    return Recipe(name=str(data.get("name") or default_name), data=data, source=source)


def _resolve_paths(raw: dict, base: Path) -> dict:
    data = copy.deepcopy(raw)

    def resolve(value):
        if isinstance(value, str) and value and not Path(value).is_absolute():
            candidate = (base / value).resolve()
            return str(candidate) if candidate.exists() or value.startswith(".") else value
        return value

    model = data.get("model")
    if isinstance(model, dict) and "path" in model:
        model["path"] = resolve(model["path"])  # hub ids (no such local path) stay as they are
    train = (data.get("data") or {}).get("train") if isinstance(data.get("data"), dict) else None
    if isinstance(train, str):
        data["data"]["train"] = resolve(train)
    elif isinstance(train, dict) and "path" in train:
        train["path"] = resolve(train["path"])
    evaluation = data.get("evaluation")
    if isinstance(evaluation, dict):
        from torl_rllib.evaluation.benchmarks import REGISTRY

        if isinstance(evaluation.get("benchmarks_dir"), str):
            evaluation["benchmarks_dir"] = str((base / evaluation["benchmarks_dir"]).resolve())
        if isinstance(evaluation.get("benchmarks"), list):  # dataset paths; names stay names
            evaluation["benchmarks"] = [b if not isinstance(b, str) or b in REGISTRY else resolve(b)
                                        for b in evaluation["benchmarks"]]
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("output_dir"), str) and not Path(run["output_dir"]).is_absolute():
        run["output_dir"] = str((Path.cwd() / run["output_dir"]).resolve())
    return data


# ---- validation ------------------------------------------------------------------------------
def key_problem(section: str, key: str, valid) -> str:
    """Why ``section.key`` is not a valid key: a training key GRPO refuses (renamed to RLlib's
    spelling, naming the new key; or an RLlib key GRPO never reads, naming what it uses
    instead), else unknown, with the closest valid key."""
    if section == "training":
        from torl_rllib.algorithms.grpo.config_keys import refused_training_key

        refused = refused_training_key(key, prefix="training.")
        if refused:
            return refused
    return f"unknown key{did_you_mean(key, valid)}"


def _type_ok(value, expected) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is Any:
        return True
    return isinstance(value, expected)


def check_keys(section: str, values, schema: dict[str, Any], problems: list[str]) -> dict:
    """Report unknown keys and wrong types; return the section without them."""
    if not isinstance(values, dict):
        problems.append(f"{section}: must be a mapping, got {type(values).__name__}")
        return {}
    clean = {}
    for key, value in values.items():
        if key not in schema:
            problems.append(f"{section}.{key}: {key_problem(section, key, schema)}")
        elif value is not None and not _type_ok(value, schema[key]):
            want = getattr(schema[key], "__name__", str(schema[key]))
            problems.append(f"{section}.{key}: expected {want}, got {type(value).__name__} {value!r}")
        else:
            clean[key] = value
    return clean


def section_schemas() -> dict[str, dict[str, Any]]:
    """Each mapping section's keys and their types: the config keys' (``config_keys``), and
    the run's (``RunSettings``, two of them config keys)."""
    from torl_rllib.algorithms.grpo.config_keys import dataclass_schema
    from torl_rllib.algorithms.grpo.config_keys import section_schemas as config_schemas

    schemas = config_schemas()
    return {**schemas, "run": {**dataclass_schema(RunSettings), **schemas["run"]}}


def validate_sections(data: dict) -> list[str]:
    """Every problem of a recipe dict (keys, types, ranges, files)."""
    from torl_rllib.algorithms.grpo.config_keys import KEYS, recipe_key_of

    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(f"{key}: unknown section{did_you_mean(key, TOP_LEVEL)}")
    sections = section_schemas()
    # Range checks run on what is left once bad keys and types are set aside, so every
    # problem is reported in one go.
    data = {k: v for k, v in data.items() if k in TOP_LEVEL}
    for name, schema in sections.items():
        if name in data:
            data[name] = check_keys(name, data[name], schema, problems)

    model = data.get("model") or {}
    if not model.get("path"):
        problems.append("model.path: required (a local model directory or a hub id)")
    elif str(model["path"]).startswith((".", "/")) and not Path(model["path"]).exists():
        problems.append(f"model.path: {model['path']!r} does not exist")
    elif not Path(model["path"]).exists() and (problem := hub_model_problem(model["path"])):
        problems.append(problem)
    if model.get("dtype", "float32") not in MODEL_DTYPES:
        problems.append(f"model.dtype: {model['dtype']!r} is not one of {list(MODEL_DTYPES)}")
    if model.get("lora"):
        from torl_rllib.modules.lora import lora_problems

        problems += [f"model.{problem}" for problem in lora_problems(model["lora"])]
    train = (data.get("data") or {}).get("train")
    train_path = train.get("path") if isinstance(train, dict) else train
    if not train_path:
        problems.append("data.train: required (a dataset file or directory)")
    elif not Path(train_path).exists():
        problems.append(f"data.train: {train_path!r} does not exist")
    from torl_rllib.tasks import template_names

    template = (data.get("data") or {}).get("template", "tir_base_0309")
    if template not in template_names():
        problems.append(f"data.template: {template!r} is not one of {template_names()}")
    mappings = [(key.keys, key.recipe_key) for key in KEYS if is_dataclass(key.keys)]
    for cls, section in (*mappings, (RunSettings, "run")):  # reward, sandbox, tracking: their own checks
        try:
            cls(**data.get(section, {}))
        except (TypeError, ValueError) as exc:
            problems.append(f"{section}: {exc}")
    run = RunSettings(**data.get("run", {}))
    if run.steps < 1:
        problems.append(f"run.steps: must be >= 1, got {run.steps}")
    if run.preemption_grace_s < 0:
        problems.append(f"run.preemption_grace_s: must be >= 0, got {run.preemption_grace_s}")
    if run.checkpoint_every < 0:
        problems.append(f"run.checkpoint_every: must be >= 0, got {run.checkpoint_every}")
    problems += _evaluation_problems(data.get("evaluation") or {})
    try:
        config = Recipe(name="check", data=data).build_config()
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))
    else:
        if not problems and not config.problems():
            problems += _overlong_prompt_problems(config) + _split_column_problems(config)
        # Everything GRPOConfig.validate() would reject, in the recipe's words, except a
        # problem of a key the sections above already reported (in the recipe's own terms).
        reported = list(problems)
        for problem in config.problems():
            key = recipe_key_of(problem.attribute)
            if not any(p.startswith((f"{key}.", f"{key}:", f"{key} ")) for p in reported):
                problems.append(problem.in_recipe_words())
    return problems


@functools.lru_cache(maxsize=None)
def hub_model_problem(model_id: str) -> str | None:
    """Why a hub id cannot be loaded (None: its config and tokenizer are cached or downloadable):
    a run needs both before it starts, so ``check`` says so instead of the run's traceback. Asked
    once per process (a sweep validates its recipe once per searched value; offline, the Hub
    client retries for ~40 s)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(model_id)
        AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"model.path: {model_id!r} is not a local folder and cannot be loaded from the Hugging Face "
                f"Hub or its cache ({cause})")
    return None


def _overlong_prompt_problems(config) -> list[str]:
    """Prompts that do not fit, when the training data refuses bad rows (``on_error: raise``);
    otherwise the run skips them, and ``overlong_prompt_notice`` tells ``check``."""
    from torl_rllib.execution.data import refuses_bad_rows

    if not refuses_bad_rows(config):
        return []
    notice = overlong_prompt_notice(config)
    return [f"data.train: {notice} (on_error: raise)"] if notice else []


def _split_column_problems(config) -> list[str]:
    """``data.split_metrics_by`` naming no column of the training data."""
    from torl_rllib.execution.data import split_column_problem
    from torl_rllib.tasks import load_dataset

    if not config.split_metrics_by:
        return []
    try:
        problems = load_dataset(config.train_data).problems
    except (OSError, ValueError):  # reported by the file checks above, or when the run loads it
        return []
    problem = split_column_problem(config, problems)
    return [problem] if problem else []


def overlong_prompt_notice(config) -> str | None:
    """One line naming the training prompts too long for the run (None when all fit)."""
    from torl_rllib.execution.data import overlong_prompts_of
    from torl_rllib.tasks import load_dataset

    try:
        problems = load_dataset(config.train_data).problems
    except (OSError, ValueError):  # reported by the file checks above, or when the run loads it
        return None
    return overlong_prompts_of(config, problems)[1]


def _evaluation_problems(evaluation: dict) -> list[str]:
    """Problems of the ``evaluation`` section: benchmarks that do not resolve, a bad protocol."""
    from torl_rllib.evaluation import BenchmarkError, EvalProtocol, resolve_benchmarks

    problems = []
    if not evaluation.get("interval"):
        return problems
    if evaluation["interval"] < 0:
        problems.append(f"evaluation.interval: must be >= 0 (0 = off), got {evaluation['interval']}")
    try:
        resolve_benchmarks(evaluation.get("benchmarks") or [], evaluation.get("benchmarks_dir"))
    except BenchmarkError as exc:
        problems += [f"evaluation.benchmarks: {p}" for p in exc.problems]
    try:
        EvalProtocol(**(evaluation.get("protocol") or {}))
    except (TypeError, ValueError) as exc:
        problems.append(f"evaluation.protocol: {exc}")
    return problems
