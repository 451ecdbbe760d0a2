"""Eval recipes: what ``torl-rllib eval`` measures and how, validated before Ray starts.

An eval recipe (YAML; every key optional) holds what the command-line flags override::

    name: torl_table3                 # MLflow run name and output folder name
    benchmarks: [aime24, math500, ../my/olympiad.jsonl]   # or {name: spec | null, ...}
    benchmarks_dir: ../../shared/data/benchmarks          # where registry names are looked up
    max_problems: null                # first N problems of each benchmark (smoke runs)
    protocol:  {k, temperature, top_p, top_k, seed}        # EvalProtocol; default greedy
    model:     {dtype, trust_remote_code}                  # the path is the command's argument
    data:      {template, split_metrics_by, grade_timeout_s}
    rollout:   GRPOConfig.rollout(...) without the sampling keys (C = max_tool_calls, budget, ...)
    sandbox:   sandbox.SandboxConfig fields
    resources: {num_env_runners, num_cpus_per_env_runner, num_gpus_per_env_runner}
    tracking:  torl_rllib.tracking.TrackingConfig fields
    output_dir: runs/eval/{name}

Evaluating one of our checkpoints, the defaults of ``rollout``, ``data.template``, ``sandbox``
and ``model.dtype`` are the training run's own, so the held-out numbers come from the same tool
loop, budget, prompt template and sandbox as training; anything set here or on the command
line wins. Otherwise the defaults are ToRL's evaluation settings (greedy, C = 1, 3072 tokens).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torl_rllib.utils.checkpoint_manifest import MANIFEST_NAME, verify_checkpoint
from torl_rllib.utils.suggest import did_you_mean
from torl_rllib.recipe import (RecipeError, check_keys, apply_overrides, read_yaml_mapping, section_schemas,
                               set_override)

__all__ = ["EvalSpec", "ModelSource", "load_eval_spec", "resolve_model"]

SAMPLING_KEYS = ("temperature", "top_p", "top_k")
TOP_LEVEL = ("name", "seed", "benchmarks", "benchmarks_dir", "max_problems", "protocol", "model", "data",
             "rollout", "sandbox", "resources", "tracking", "output_dir")
EVAL_DATA_KEYS = ("template", "split_metrics_by", "grade_timeout_s")
CHECKPOINT_MARKER = "rllib_checkpoint.json"
# The training run's recipe keys a checkpoint's evaluation inherits (read from its config dict).
INHERITED = ("seed", "model.dtype", "model.trust_remote_code", "data.template", "data.split_metrics_by",
             "data.grade_timeout_s", "sandbox", *(f"rollout.{key}" for key in (
                 "max_tool_calls", "max_response_tokens", "max_prompt_tokens", "budget_counts_tool_output",
                 "observation_style", "engine_max_batch_size", "rollout_engine", "vllm_kwargs")))


@dataclass
class ModelSource:
    """What is evaluated: a Hugging Face model (directory or hub id), or one of our checkpoints
    (``checkpoint`` set; the model is exported from it before evaluation)."""

    model: str
    checkpoint: Path | None = None
    training_config: dict | None = None  # the checkpoint's GRPOConfig as a dict
    training_run_id: str | None = None  # the checkpoint's MLflow run
    step: int | None = None

    @property
    def label(self) -> str:
        if self.checkpoint is not None:
            return f"{self.checkpoint.parent.parent.name}-step{self.step}"
        return Path(self.model).name or self.model


@dataclass
class EvalSpec:
    """A validated eval recipe, ready to run."""

    name: str
    source: ModelSource
    data: dict[str, Any]
    output_dir: Path

    @property
    def protocol(self):
        from torl_rllib.evaluation import EvalProtocol

        return EvalProtocol(**self.data.get("protocol", {}))

    def benchmarks(self):
        from torl_rllib.evaluation import resolve_benchmarks

        return resolve_benchmarks(self.data["benchmarks"], self.data.get("benchmarks_dir"),
                                  self.data.get("declared"), self.data.get("max_problems"))

    def build_config(self, model_path: str):
        """The ``GRPOConfig`` the evaluation EnvRunners are built from (``config_keys.apply_recipe``)."""
        from torl_rllib.algorithms.grpo import GRPOConfig
        from torl_rllib.algorithms.grpo.config_keys import apply_recipe

        d = self.data
        sections = {k: d[k] for k in ("seed", "data", "rollout", "sandbox", "resources") if k in d}
        sections["model"] = {**d.get("model", {}), "path": model_path}
        return apply_recipe(GRPOConfig().debugging(seed=0, log_level="WARN"), sections)


def resolve_model(target: str) -> ModelSource:
    """MODEL_OR_CHECKPOINT → what to evaluate; ``RecipeError`` when it is neither, ``DamagedCheckpoint``
    when it is a checkpoint that fails verification."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / "checkpoints" / "latest").is_file():  # a run directory
        path = path / "checkpoints" / (path / "checkpoints" / "latest").read_text().strip()
    if path.is_dir() and ((path / CHECKPOINT_MARKER).is_file() or (path / MANIFEST_NAME).is_file()):
        return _checkpoint_source(path.resolve())
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(str(path.resolve()))
    if path.exists() or target.startswith((".", "/", "~")):
        raise RecipeError([f"{target!r} is neither a Hugging Face model directory (no config.json) nor a "
                           f"torl-rllib checkpoint (no {CHECKPOINT_MARKER}) nor a run directory"], "command line")
    try:  # a hub id, usable where it is cached (nothing is downloaded on our machines)
        from transformers import AutoConfig

        AutoConfig.from_pretrained(target)
    except Exception as exc:  # noqa: BLE001 - any failure means: not a usable model
        raise RecipeError([f"{target!r} is not a local path, and loading it as a hub model failed: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0]}"], "command line") from None
    return ModelSource(target)


def _checkpoint_source(checkpoint: Path) -> ModelSource:
    verify_checkpoint(checkpoint)  # DamagedCheckpoint (one line, naming the file): reported by the CLI
    try:
        with open(checkpoint / "class_and_ctor_args.pkl", "rb") as f:
            config = pickle.load(f)["ctor_args_and_kwargs"][0][0]
        with open(checkpoint / "algorithm_state.pkl", "rb") as f:
            state = pickle.load(f)
    except (OSError, pickle.UnpicklingError, KeyError, IndexError, EOFError) as exc:
        raise RecipeError([f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc})"],
                          "command line") from None
    if not isinstance(config, dict) or "max_tool_calls" not in config:
        raise RecipeError([f"{checkpoint} is an RLlib checkpoint, but not of a torl-rllib GRPO run"],
                          "command line")
    return ModelSource(str(checkpoint), checkpoint=checkpoint, training_config=config,
                       training_run_id=(state.get("grpo_tracking") or {}).get("mlflow_run_id"),
                       step=int(state.get("training_iteration", 0)))


def _defaults(source: ModelSource) -> dict[str, Any]:
    defaults: dict[str, Any] = {"benchmarks": ["aime24", "aime25", "math500", "olympiadbench", "amc23"],
                                "protocol": {}, "rollout": {"max_tool_calls": 1}, "tracking": {"plots": False}}
    cfg = source.training_config
    if cfg:
        from torl_rllib.algorithms.grpo.config_keys import config_value

        defaults["rollout"] = {}
        for key in INHERITED:
            value = config_value(cfg, key)
            if value is not None:
                set_override(defaults, key.split("."), value)
    return defaults


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            and key != "benchmarks" else value
    return out


def load_eval_spec(
    target: str, config_path: str | None = None, overrides: list[str] = (), *, benchmarks: str | None = None,
    k: int | None = None, temperature: float | None = None, output_dir: str | None = None,
) -> EvalSpec:
    """Resolve the model, read the recipe, apply flags and overrides, validate everything;
    ``RecipeError`` lists every problem at once."""
    source = resolve_model(target)
    base = Path.cwd()
    raw: dict[str, Any] = {}
    if config_path:
        raw = read_yaml_mapping(Path(config_path), "eval recipe")
        base = Path(config_path).resolve().parent
    raw = apply_overrides(raw, overrides)
    if k is not None:
        raw.setdefault("protocol", {})["k"] = k
    if temperature is not None:
        raw.setdefault("protocol", {})["temperature"] = temperature
    problems = [f"{key}: unknown section{did_you_mean(key, TOP_LEVEL)}" for key in raw if key not in TOP_LEVEL]
    data = _merge(_defaults(source), {key: value for key, value in raw.items() if key in TOP_LEVEL})
    _resolve_benchmark_entries(data, raw, base, benchmarks, problems)
    problems += _validate(data)
    if problems:
        raise RecipeError(problems, config_path or "eval settings")
    name = str(data.get("name") or source.label)
    if output_dir:
        out = Path(output_dir)
    elif data.get("output_dir"):
        out = Path(str(data["output_dir"]).format(name=name))
    else:  # a new folder per evaluation: an earlier one is never overwritten
        out = Path("runs/eval") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return EvalSpec(name=name, source=source, data=data, output_dir=out.expanduser().resolve())


def _resolve_benchmark_entries(data: dict, raw: dict, base: Path, flag: str | None, problems: list[str]) -> None:
    """``benchmarks`` as a list of entries (a mapping declares names), paths made absolute
    against the recipe's folder, and the ``--benchmarks`` selection applied."""
    from torl_rllib.evaluation.benchmarks import REGISTRY

    listed = data.get("benchmarks")
    declared = {}
    if isinstance(listed, dict):
        declared = {name: spec for name, spec in listed.items() if spec is not None}
        listed = list(listed)
    elif not isinstance(listed, list):
        problems.append(f"benchmarks: expected a list or a mapping, got {type(listed).__name__}")
        listed = []
    if flag:
        listed = [entry.strip() for entry in flag.split(",") if entry.strip()]

    def absolute(entry):
        if isinstance(entry, str) and entry not in REGISTRY and entry not in declared:
            return str((base / entry).resolve()) if not Path(entry).is_absolute() and (base / entry).exists() else entry
        return entry

    for spec in declared.values():
        if isinstance(spec, dict) and isinstance(spec.get("path"), str) and not Path(spec["path"]).is_absolute():
            spec["path"] = str((base / spec["path"]).resolve())
    data["benchmarks"], data["declared"] = [absolute(e) for e in listed], declared
    if isinstance(raw.get("benchmarks_dir"), str):
        data["benchmarks_dir"] = str((base / raw["benchmarks_dir"]).resolve())


def _validate(data: dict) -> list[str]:
    from sandbox import SandboxConfig
    from torl_rllib.algorithms.grpo.config_keys import BY_RECIPE_KEY
    from torl_rllib.evaluation import BenchmarkError, EvalProtocol, load_benchmark, resolve_benchmarks
    from torl_rllib.tasks import template_names
    from torl_rllib.tracking import TrackingConfig

    problems: list[str] = []
    schemas = section_schemas()
    runner_resources = {k: t for k, t in schemas["resources"].items()  # what sizes the EnvRunners
                        if BY_RECIPE_KEY[f"resources.{k}"].builder == "env_runners"}
    rollout_schema = {k: v for k, v in schemas["rollout"].items() if k not in SAMPLING_KEYS}
    for key in SAMPLING_KEYS:
        if isinstance(data.get("rollout"), dict) and key in data["rollout"]:
            data["rollout"].pop(key)
            problems.append(f"rollout.{key}: set it under protocol (the evaluation protocol decides sampling)")
    for section, schema in (("model", {k: v for k, v in schemas["model"].items() if k != "path"}),
                            ("rollout", rollout_schema), ("sandbox", schemas["sandbox"]),
                            ("resources", runner_resources),
                            ("tracking", schemas["tracking"]),
                            ("data", {k: schemas["data"][k] for k in EVAL_DATA_KEYS})):
        if section in data:
            data[section] = check_keys(section, data[section], schema, problems)
    try:
        EvalProtocol(**data.get("protocol", {}))
    except (TypeError, ValueError) as exc:
        problems.append(f"protocol: {exc}")
    max_problems = data.get("max_problems")
    if max_problems is not None and (isinstance(max_problems, bool) or not isinstance(max_problems, int)
                                     or max_problems < 1):
        problems.append(f"max_problems: must be an integer >= 1, got {max_problems!r}")
        data["max_problems"] = None
    try:
        for benchmark in resolve_benchmarks(data["benchmarks"], data.get("benchmarks_dir"), data.get("declared")):
            try:  # read now, so an unreadable file stops the evaluation before anything starts
                load_benchmark(benchmark)
            except (OSError, ValueError) as exc:
                problems.append(f"benchmark {benchmark.name!r}: {exc}")
    except BenchmarkError as exc:
        problems += exc.problems
    template = data.get("data", {}).get("template", "tir_base_0309")
    if template not in template_names():
        problems.append(f"data.template: {template!r} is not one of {template_names()}")
    for cls, section in ((SandboxConfig, "sandbox"), (TrackingConfig, "tracking")):
        try:
            cls(**data.get(section, {}))
        except (TypeError, ValueError) as exc:
            problems.append(f"{section}: {exc}")
    rollout = data.get("rollout", {})
    for key in ("max_tool_calls", "max_response_tokens", "max_prompt_tokens"):
        value = rollout.get(key)
        if isinstance(value, int) and value < (0 if key == "max_tool_calls" else 1):
            problems.append(f"rollout.{key}: must be >= {0 if key == 'max_tool_calls' else 1}, got {value}")
    return problems
