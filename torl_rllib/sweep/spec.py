"""Sweep files: load, apply ``key=value`` overrides, validate everything before Ray starts.

    name: tiny_cpu_sweep                 # parent MLflow run and output folder (default: file name)
    recipe: ../tiny_cpu.yaml             # the base recipe: a path, or its sections inline
    overrides:                           # dotted recipe keys fixed for every trial
      resources.num_env_runners: 0
    search_space:                        # dotted recipe keys → distributions (Tune runs a
                                         # grid in value order, the key whose config name
                                         # sorts first varying fastest)
      training.lr: {grid: [3.0e-5, 1.0e-4, 3.0e-4]}
      rollout.max_tool_calls: {grid: [0, 1]}
    tune:
      metric: accuracy                   # a per-step metric name (Tune sees torl/accuracy)
      mode: max
      num_samples: 1                     # repeats of the grid / samples of the distributions
      max_concurrent_trials: 2           # null: as many as the cluster's CPUs/GPUs allow
      scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # fifo | asha | pbt
      search_alg: random                 # random | grid (both Tune's basic variants) | optuna
      stop: {steps: 10}                  # default: the recipe's run.steps
      checkpoint_every: 5                # default: the recipe's run.checkpoint_every
      max_failures: 1                    # retries of a failed trial, from its last checkpoint
    output_dir: runs/sweeps/{name}

Overrides on the command line address the sweep file (``tune.num_samples=2``,
``search_space.training.lr={grid: [1e-4]}``) or, for any other first key, the base recipe
(``training.group_size=4``). Every problem is reported at once as a ``RecipeError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from torl_rllib.recipe import (
    TOP_LEVEL, Recipe, RecipeError, apply_overrides, parse_override, read_yaml_mapping,
    recipe_from_dict, section_schemas, set_override, validate_sections,
)
from torl_rllib.sweep.search_space import UNSEARCHABLE, Distribution, parse_distribution
from torl_rllib.utils.suggest import did_you_mean

__all__ = ["SweepSpec", "TuneSettings", "load_sweep", "metric_names", "SCHEDULERS", "SEARCH_ALGS"]

SWEEP_KEYS = ("name", "recipe", "overrides", "search_space", "tune", "output_dir")
TUNE_KEYS = ("metric", "mode", "num_samples", "max_concurrent_trials", "scheduler", "search_alg",
             "stop", "checkpoint_every", "max_failures")
SCHEDULERS = {
    "fifo": {},
    "asha": {"grace_period": 1, "reduction_factor": 2, "brackets": 1},
    "pbt": {"perturbation_interval": None, "quantile_fraction": 0.25, "resample_probability": 0.25,
            "synch": False, "mutations": None},
}
SEARCH_ALGS = ("random", "grid", "optuna")
# What PBT may change in a running trial: the optimizer's and the loss's knobs.
PBT_MUTABLE = ("training.lr", "training.clip_eps_low", "training.clip_eps_high", "training.entropy_coeff")
# Recipe keys a trial cannot vary beyond the unsearchable sections, and why.
FIXED_KEYS = {"model.path": "one base model per sweep", "data.train": "one training set per sweep"}


def metric_names() -> list[str]:
    """The per-step metric names a sweep can optimize (``grade/*`` and ``failed/*`` too)."""
    from torl_rllib.rollout import metrics as rollout_metrics
    from torl_rllib.tracking.step_metrics import LEARNER_METRICS, TIMERS

    names = [v for k, v in vars(rollout_metrics).items()
             if k.isupper() and isinstance(v, str) and v != rollout_metrics.SPLIT_PREFIX]
    names += ["trajectories", "tool_timeouts", "dataset_rows_skipped", *LEARNER_METRICS.values()]
    return sorted({*names, *(f"time/{t}_s" for t in TIMERS)})


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune:`` section, resolved."""

    metric: str = "accuracy"
    mode: str = "max"
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    scheduler: str = "fifo"
    scheduler_args: dict = field(default_factory=dict)
    search_alg: str = "random"
    steps: int = 40
    checkpoint_every: int = 10
    max_failures: int = 1


@dataclass
class SweepSpec:
    """A validated sweep: the base recipe, the search space and how Tune runs it."""

    name: str
    recipe: Recipe
    search_space: dict[str, Distribution]
    tune: TuneSettings
    output_dir: Path
    source: Path
    recipe_file: Path | None  # the base recipe's file (None: inline sections)
    recipe_overrides: list[str] = field(default_factory=list)  # applied to the base recipe

    @property
    def num_trials(self) -> int:
        """How many trials the sweep runs: every grid combination, ``num_samples`` times."""
        combinations = 1
        for dist in self.search_space.values():
            combinations *= len(dist.args) if dist.kind == "grid" else 1
        return combinations * self.tune.num_samples


def _split_overrides(overrides: list[str]) -> tuple[list[tuple[list[str], Any]], list[str]]:
    """(sweep-file overrides as (keys, value), base-recipe overrides as text)."""
    sweep, recipe = [], []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "search_space" and len(keys) > 1:
            sweep.append((["search_space", ".".join(keys[1:])], value))
        elif keys[0] in SWEEP_KEYS:
            sweep.append((keys, value))
        else:
            recipe.append(text)
    return sweep, recipe


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepSpec:
    """Read, override, validate; raises ``RecipeError`` listing every problem."""
    path = Path(path)
    raw = read_yaml_mapping(path, what="sweep file")
    sweep_overrides, recipe_overrides = _split_overrides(list(overrides))
    for keys, value in sweep_overrides:
        set_override(raw, keys, value)

    problems: list[str] = []
    for key in raw:
        if key not in SWEEP_KEYS:
            problems.append(f"{key}: unknown key{did_you_mean(key, SWEEP_KEYS)}")
    name = str(raw.get("name") or path.stem)
    fixed = raw.get("overrides") or {}
    if not isinstance(fixed, dict):
        problems.append(f"overrides: must map dotted recipe keys to values, got {type(fixed).__name__}")
        fixed = {}
    recipe_overrides = [override_text(k, v) for k, v in fixed.items()] + recipe_overrides
    recipe, recipe_file = _base_recipe(raw.get("recipe"), path, recipe_overrides, problems)
    search_space = _search_space(raw.get("search_space"), recipe, problems)
    tune = _tune_settings(raw.get("tune"), recipe, search_space, problems)
    output_dir = raw.get("output_dir", "runs/sweeps/{name}")
    if not isinstance(output_dir, str) or not output_dir:
        problems.append(f"output_dir: expected a path, got {output_dir!r}")
        output_dir = "runs/sweeps/{name}"
    if problems:
        raise RecipeError(problems, str(path))
    return SweepSpec(
        name=name, recipe=recipe, search_space=search_space, tune=tune,
        output_dir=(Path.cwd() / output_dir.format(name=name)).resolve(), source=path.resolve(),
        recipe_file=recipe_file, recipe_overrides=recipe_overrides,
    )


def _base_recipe(ref, sweep_path: Path, overrides: list[str], problems: list[str]):
    """The base recipe (validated) and its file, or (None, None) with the problems recorded."""
    if ref is None:
        problems.append("recipe: required (a recipe file path, or the recipe's sections inline)")
        return None, None
    try:
        if isinstance(ref, str):
            file = (sweep_path.parent / ref).resolve()
            raw = read_yaml_mapping(file)
            return recipe_from_dict(raw, file.parent, overrides, source=file), file
        if isinstance(ref, dict):
            return recipe_from_dict(ref, sweep_path.parent, overrides, name=sweep_path.stem), None
        problems.append(f"recipe: expected a path or a mapping of sections, got {type(ref).__name__}")
    except RecipeError as exc:
        problems.extend(f"recipe: {p}" for p in exc.problems)
    return None, None


def _search_space(raw, recipe: Recipe | None, problems: list[str]) -> dict[str, Distribution]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"search_space: must map dotted recipe keys to distributions, got {type(raw).__name__}")
        return {}
    schemas = section_schemas()
    space = {}
    for key, spec in raw.items():
        where = f"search_space.{key}"
        problem = _searchable(str(key), schemas)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        dist, problem = parse_distribution(spec)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if recipe is not None:
            problems.extend(_check_values(key, dist, recipe))
        space[key] = dist
    return space


def _searchable(key: str, schemas: dict) -> str | None:
    """Why ``key`` cannot be searched, or None."""
    section, _, name = key.partition(".")
    if key == "seed":
        return None
    if section in UNSEARCHABLE:
        return f"not searchable: {UNSEARCHABLE[section]}"
    if section not in schemas:
        return f"{section!r} is not a recipe section{did_you_mean(section, TOP_LEVEL)}"
    if not name:
        return f"name a key of the {section!r} section, e.g. {section}.{next(iter(schemas[section]))}"
    if name not in schemas[section]:
        from torl_rllib.algorithms.grpo.config_keys import refused_training_key

        refused = refused_training_key(name, prefix="training.") if section == "training" else None
        return refused or f"{name!r} is not a key of {section!r}{did_you_mean(name, schemas[section])}"
    if key in FIXED_KEYS:
        return f"not searchable: {FIXED_KEYS[key]}"
    return None


def override_text(key: str, value: Any) -> str:
    """``key=value`` as ``parse_override`` reads it back (the value as inline YAML)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _check_values(key: str, dist: Distribution, recipe: Recipe) -> list[str]:
    """Each value the distribution can produce, validated as the recipe would validate it."""
    found = []
    for value in dist.example_values:
        data = apply_overrides(recipe.data, [override_text(key, value)])
        found += [f"search_space.{key}: value {value!r}: {p}" for p in validate_sections(data)]
    return found


def _tune_settings(raw, recipe: Recipe | None, space: dict, problems: list[str]) -> TuneSettings:
    run = recipe.run if recipe is not None else None
    defaults = {"steps": run.steps if run else 40,
                "checkpoint_every": max(1, run.checkpoint_every) if run else 10}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"tune: must be a mapping, got {type(raw).__name__}")
        return TuneSettings(**defaults)
    for key in raw:
        if key not in TUNE_KEYS:
            problems.append(f"tune.{key}: unknown key{did_you_mean(key, TUNE_KEYS)}")
    out: dict[str, Any] = dict(defaults)

    def integer(key, minimum, allow_none=False):
        if key not in raw:
            return
        value = raw[key]
        if value is None and allow_none:
            out[key] = None
        elif not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            problems.append(f"tune.{key}: expected an integer >= {minimum}, got {value!r}")
        else:
            out[key] = value

    integer("num_samples", 1)
    integer("max_concurrent_trials", 1, allow_none=True)
    integer("checkpoint_every", 1)
    integer("max_failures", 0)
    metric = raw.get("metric", "accuracy")
    known = metric_names()
    if not isinstance(metric, str) or not (metric in known or metric.startswith(("grade/", "failed/"))):
        problems.append(f"tune.metric: {metric!r} is not a per-step metric{did_you_mean(metric, known)}")
    out["metric"] = metric
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        problems.append(f"tune.mode: must be 'max' or 'min', got {mode!r}")
    out["mode"] = mode
    stop = raw.get("stop", {})
    if not isinstance(stop, dict) or set(stop) - {"steps"}:
        problems.append(f"tune.stop: expected {{steps: N}}, got {stop!r}")
    elif "steps" in stop:
        if not isinstance(stop["steps"], int) or isinstance(stop["steps"], bool) or stop["steps"] < 1:
            problems.append(f"tune.stop.steps: expected an integer >= 1, got {stop['steps']!r}")
        else:
            out["steps"] = stop["steps"]
    search_alg = raw.get("search_alg", "random")
    if search_alg not in SEARCH_ALGS:
        problems.append(f"tune.search_alg: {search_alg!r} is not one of {list(SEARCH_ALGS)}{did_you_mean(search_alg, SEARCH_ALGS)}")
    elif search_alg == "optuna":
        problems.extend(_optuna_problems(space))
    out["search_alg"] = search_alg
    out["scheduler"], out["scheduler_args"] = _scheduler(raw.get("scheduler", "fifo"), space, out, problems)
    if not space and out.get("num_samples", 1) == 1:
        problems.append("search_space: empty; name at least one recipe key to search "
                        "(or set tune.num_samples > 1 to repeat the base recipe)")
    return TuneSettings(**out)


def _optuna_problems(space: dict) -> list[str]:
    found = []
    try:
        import optuna  # noqa: F401
    except ImportError:
        found.append("tune.search_alg: optuna is not installed (pip install 'torl-rllib[optuna]')")
    grid = [k for k, d in space.items() if d.kind == "grid"]
    if grid:
        found.append(f"tune.search_alg: optuna cannot search grids; use choice for {grid}")
    return found


def _scheduler(raw, space: dict, tune: dict, problems: list[str]) -> tuple[str, dict]:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or raw.get("type") not in SCHEDULERS:
        kind = raw.get("type") if isinstance(raw, dict) else raw
        problems.append(f"tune.scheduler: {kind!r} is not one of {list(SCHEDULERS)}{did_you_mean(str(kind), SCHEDULERS)}")
        return "fifo", {}
    kind = raw["type"]
    args = dict(SCHEDULERS[kind])
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in args:
            problems.append(f"tune.scheduler.{key}: unknown {kind} parameter{did_you_mean(key, args) if args else ''}")
        else:
            args[key] = value
    if kind == "asha":
        for key, minimum in (("grace_period", 1), ("brackets", 1)):
            if not isinstance(args[key], int) or args[key] < minimum:
                problems.append(f"tune.scheduler.{key}: expected an integer >= {minimum}, got {args[key]!r}")
        if not isinstance(args["reduction_factor"], (int, float)) or args["reduction_factor"] <= 1:
            problems.append(f"tune.scheduler.reduction_factor: must be > 1, got {args['reduction_factor']!r}")
        if isinstance(args["grace_period"], int) and args["grace_period"] > tune["steps"]:
            problems.append(f"tune.scheduler.grace_period: {args['grace_period']} exceeds the "
                            f"{tune['steps']} steps of a trial: ASHA could never stop one early")
    if kind == "pbt":
        args["perturbation_interval"] = args["perturbation_interval"] or tune["checkpoint_every"]
        if not isinstance(args["perturbation_interval"], int) or args["perturbation_interval"] < 1:
            problems.append(f"tune.scheduler.perturbation_interval: expected an integer >= 1, "
                            f"got {args['perturbation_interval']!r}")
        mutations = args["mutations"]
        if mutations is None:
            mutations = {k: {d.kind: list(d.args)} for k, d in space.items() if k in PBT_MUTABLE}
        parsed = {}
        for key, spec in (mutations.items() if isinstance(mutations, dict) else ()):
            if key not in PBT_MUTABLE:
                problems.append(f"tune.scheduler.mutations.{key}: PBT can change only {list(PBT_MUTABLE)} in a running trial")
                continue
            dist, problem = parse_distribution(spec)
            if problem:
                problems.append(f"tune.scheduler.mutations.{key}: {problem}")
            else:
                parsed[key] = dist
        if not parsed:
            problems.append(f"tune.scheduler: pbt needs mutations of at least one of {list(PBT_MUTABLE)} "
                            "(search one of them, or list them under scheduler.mutations)")
        args["mutations"] = parsed
    return kind, args
