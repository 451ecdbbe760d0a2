"""The sweep driver behind ``torl-rllib sweep``: Ray Tune runs ``GRPO`` itself as the trainable,
one trial per configuration of the search space, each tracked as a child MLflow run.

Output directory (``output_dir``): ``tune/`` (Tune's experiment: trial dirs, checkpoints,
state for ``--resume``), ``sweep_state.json`` (the parent MLflow run), ``results.md`` and
``results.json`` (every trial), ``best_recipe.yaml`` and ``best_model/`` (the best trial's
configuration and exported policy), ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torl_rllib.recipe import RecipeError, apply_overrides
from torl_rllib.sweep.parent_run import record_results, start_parent_run
from torl_rllib.sweep.report import TrialConsole, format_table, rank, trial_rows
from torl_rllib.sweep.search_space import config_path
from torl_rllib.sweep.spec import SweepSpec, override_text
from torl_rllib.tracking.config import DEFAULT_PLOT_METRICS
from torl_rllib.utils.cluster import init_ray

__all__ = ["run_sweep", "SweepOutcome", "EXPERIMENT_DIR"]

logger = logging.getLogger("torl_rllib")

EXPERIMENT_DIR = "tune"
STATE_FILE = "sweep_state.json"


@dataclass
class SweepOutcome:
    """What a sweep ended with."""

    status: str  # FINISHED | KILLED | FAILED (no trial produced a result)
    table: str
    best_command: str | None
    summary: dict[str, Any]


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def param_space(spec: SweepSpec, parent_run_id: str | None, tracking_uri: str | None) -> dict:
    """``GRPOConfig.to_dict()`` of the base recipe, with Tune domains at the searched keys and
    trial tracking pointed at the parent run."""
    config = spec.recipe.build_config()
    if config.tracking_enabled:
        # Trials are named by Tune; the sweep logs the best trial's model on the parent.
        config.tracking(run_name=None, parent_run_id=parent_run_id, tracking_uri=tracking_uri,
                        log_model=False, register_model=None)
    space = config.to_dict()
    for key, dist in spec.search_space.items():
        _set(space, config_path(key), dist.to_tune())
    return space


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    t, args = spec.tune, spec.tune.scheduler_args
    if t.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=t.steps, grace_period=args["grace_period"],
                             reduction_factor=args["reduction_factor"], brackets=args["brackets"])
    if t.scheduler == "pbt":
        mutations = {config_path(k)[0]: (list(d.args) if d.kind == "grid" else d.to_tune())
                     for k, d in args["mutations"].items()}
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=args["perturbation_interval"],
            hyperparam_mutations=mutations, quantile_fraction=args["quantile_fraction"],
            resample_probability=args["resample_probability"], synch=bool(args["synch"]),
        )
    return FIFOScheduler()


def _search_alg(spec: SweepSpec):
    if spec.tune.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.recipe.data.get("seed", 0))
    from ray.tune.search import BasicVariantGenerator

    # Grids are expanded, distributions sampled, from a fixed seed (reproducible sweeps). Tune
    # ignores TuneConfig.max_concurrent_trials for a search algorithm given as an object: the
    # generator must limit the trials itself.
    return BasicVariantGenerator(random_state=spec.recipe.data.get("seed", 0),
                                 max_concurrent=spec.tune.max_concurrent_trials or 0)


def check_fits(spec: SweepSpec) -> None:
    """Fail at once, with the numbers, when one trial needs more than the cluster has (Tune
    would otherwise wait forever for the resources). Resources are the same for every trial."""
    import ray

    from torl_rllib.algorithms.grpo import GRPO

    need = GRPO.default_resource_request(spec.recipe.build_config()).required_resources
    have = ray.cluster_resources()
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if short:
        raise RecipeError([
            f"one trial needs {need.get(k, 0):g} {k} but the cluster has {have.get(k, 0):g}: lower "
            "the recipe's resources (fractional CPUs work, e.g. resources.num_cpus_for_main_process=0.5)"
            for k in short], "resources")


def trial_name(trial) -> str:
    """``trial_<id>``: the trial's directory and its MLflow run's name."""
    return f"trial_{trial.trial_id}"


def _tuner(spec: SweepSpec, space: dict, resume: bool):
    from ray import tune

    from torl_rllib.algorithms.grpo import GRPO

    experiment = spec.output_dir / EXPERIMENT_DIR
    if resume:
        # The same param_space again: Tune saved its classes and objects as placeholders.
        return tune.Tuner.restore(str(experiment), trainable=GRPO, param_space=space,
                                  resume_unfinished=True, resume_errored=True)
    t = spec.tune
    return tune.Tuner(
        GRPO,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=f"torl/{t.metric}", mode=t.mode, num_samples=t.num_samples,
            # Optuna is a Searcher, which Tune wraps in a ConcurrencyLimiter; see _search_alg.
            max_concurrent_trials=t.max_concurrent_trials if t.search_alg == "optuna" else None,
            scheduler=_scheduler(spec),
            search_alg=_search_alg(spec), reuse_actors=False,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR, storage_path=str(spec.output_dir),
            stop={"training_iteration": t.steps},
            # PBT copies other trials' checkpoints: keep more of them around for it.
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=t.checkpoint_every, checkpoint_at_end=True,
                                                    num_to_keep=4 if t.scheduler == "pbt" else 2),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            callbacks=[TrialConsole(t.metric, list(spec.search_space), t.steps)],
            verbose=0,
        ),
    )


def check_output_dir(spec: SweepSpec, resume: bool) -> str | None:
    """The parent MLflow run id to continue; ``RecipeError`` when ``--resume`` has nothing to
    resume or a fresh sweep would overwrite an earlier one."""
    from ray import tune

    experiment = spec.output_dir / EXPERIMENT_DIR
    state = spec.output_dir / STATE_FILE
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise RecipeError([f"--resume: no sweep to resume in {spec.output_dir}"], "command line")
        return json.loads(state.read_text()).get("parent_run_id") if state.is_file() else None
    if experiment.exists():
        raise RecipeError([
            f"{spec.output_dir} already holds a sweep: continue it with --resume, or start a new "
            f"one elsewhere with output_dir=DIR"], "command line")
    return None


def run_sweep(spec: SweepSpec, resume: bool = False, verbose: bool = False) -> SweepOutcome:
    """Run (or resume) the sweep; returns its outcome and writes the output directory."""
    from ray.tune import ExperimentAnalysis

    from sandbox import SandboxPool

    resume_run_id = check_output_dir(spec, resume)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's banners off: TrialConsole reports
    init_ray(verbose)
    if not verbose:  # trial errors: one line each from TrialConsole, tracebacks in error.txt
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    check_fits(spec)
    # Tune stops gracefully on SIGINT (trials keep their checkpoints, the experiment state is
    # saved for --resume); give SIGTERM (Slurm, Kubernetes, spot preemption) the same path.
    previous_term = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    parent = start_parent_run(spec, resume_run_id)
    parent_id = parent.run_id if parent else None
    (spec.output_dir / STATE_FILE).write_text(json.dumps({"parent_run_id": parent_id}))
    start = time.perf_counter()
    try:
        space = param_space(spec, parent_id, parent.tracking_uri if parent else None)
        _tuner(spec, space, resume).fit()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        SandboxPool.shutdown_all()  # the trials' shared, detached pools
    t = spec.tune
    analysis = ExperimentAnalysis(str(spec.output_dir / EXPERIMENT_DIR),
                                  default_metric=f"torl/{t.metric}", default_mode=t.mode)
    curves = spec.recipe.data.get("tracking", {}).get("plot_metrics", DEFAULT_PLOT_METRICS)
    rows = rank(trial_rows(analysis, t.metric, list(spec.search_space), t.steps, curves), t.mode)
    # Trials not started yet are not in Tune's state at all (the search creates them lazily).
    interrupted = len(rows) < spec.num_trials or any(r.status == "unfinished" for r in rows)
    best = rows[0] if rows and rows[0].ranked is not None else None
    best_command, best_model = None, None
    if best is not None:
        best_command = _write_best_recipe(spec, best.values)
        if best.checkpoint:
            from torl_rllib.export import export_policy

            best_model = export_policy(best.checkpoint, spec.output_dir / "best_model")
    status = "KILLED" if interrupted else ("FINISHED" if best is not None else "FAILED")
    if parent:
        record_results(parent, spec, rows, best_model)
    table = format_table(rows, t.metric)
    summary = {
        "name": spec.name, "status": status, "wall_time_s": round(time.perf_counter() - start, 1),
        "metric": t.metric, "mode": t.mode, "trials": len(rows), "planned_trials": spec.num_trials,
        "stopped_early": sum(r.status == "stopped early" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "best": best.as_dict(t.metric) if best else None, "best_command": best_command,
        "best_model": str(best_model) if best_model else None, "mlflow_parent_run_id": parent_id,
        "results": [r.as_dict(t.metric) for r in rows],
    }
    (spec.output_dir / "results.md").write_text(table + "\n")
    (spec.output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if parent:
        parent.log_artifact(spec.output_dir / "summary.json")
        parent.finish(status)
    return SweepOutcome(status=status, table=table, best_command=best_command, summary=summary)


def _write_best_recipe(spec: SweepSpec, values: dict[str, Any]) -> str:
    """Write ``best_recipe.yaml`` and return the ``torl-rllib train`` command for the best
    configuration (the base recipe file plus overrides, when there is one)."""
    overrides = [*spec.recipe_overrides, *(override_text(k, v) for k, v in values.items()),
                 f"run.steps={spec.tune.steps}"]
    best = apply_overrides(spec.recipe.data, overrides)
    best["name"] = f"{spec.name}_best"
    path = spec.output_dir / "best_recipe.yaml"
    path.write_text(yaml.safe_dump(best, sort_keys=False))
    if spec.recipe_file is None:
        return f"torl-rllib train {path}"
    return " ".join(["torl-rllib train", _relative(spec.recipe_file), *overrides])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
