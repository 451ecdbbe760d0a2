"""The sweep's parent MLflow run: its params, and at the end the results table, the best trial,
plots of the metric and of seconds per step against each searched key (e.g. ToRL's C
trade-off), one plot per tracked curve with every trial's line, and tags on every trial's
child run.

Trials track themselves (``MlflowTrackingCallback``, as children via ``mlflow.parentRunId``);
this module only writes what needs every trial's outcome. Like all tracking, a failure here
is reported once and never fails the sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow import MlflowClient

from torl_rllib.sweep.report import RANK_WINDOW, TrialRow
from torl_rllib.sweep.spec import SweepSpec
from torl_rllib.tracking import MlflowTracker, TrackingConfig
from torl_rllib.tracking.callback import CHECKPOINT_TAG, TRIAL_ID_TAG

__all__ = ["start_parent_run", "record_results"]

logger = logging.getLogger(__name__)


def start_parent_run(spec: SweepSpec, resume_run_id: str | None) -> MlflowTracker | None:
    """The parent run (continued when resuming), or None when the recipe turns tracking off."""
    settings = dict(spec.recipe.data.get("tracking", {}))
    if not settings.get("enabled", True):
        return None
    settings.update(run_name=spec.name, parent_run_id=None, log_model=True)
    tracker = MlflowTracker(TrackingConfig(**settings), run_name=spec.name)
    if resume_run_id and tracker.resume(resume_run_id):
        return tracker
    t = spec.tune
    params = {
        "search_space": {k: d.describe() for k, d in spec.search_space.items()},
        "tune": {"metric": t.metric, "mode": t.mode, "num_samples": t.num_samples,
                 "max_concurrent_trials": t.max_concurrent_trials, "scheduler": t.scheduler,
                 "scheduler_args": {k: str(v) for k, v in t.scheduler_args.items()},
                 "search_alg": t.search_alg, "steps": t.steps,
                 "checkpoint_every": t.checkpoint_every, "max_failures": t.max_failures},
        "recipe": str(spec.recipe_file or "inline"),
    }
    tracker.start(params, tags={"torl.sweep": spec.name})
    tracker.log_artifact(spec.source)
    return tracker


def _scatter(key: str, points: list[tuple[Any, float]], ylabel: str) -> Figure:
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    xs = [x if numeric else str(x) for x, _ in points]
    ax.scatter(xs, [y for _, y in points])
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig


def _curves(name: str, rows: list[TrialRow]) -> Figure | None:
    """One metric over training, one line per trial (labelled by its searched values)."""
    lines = [(r, r.curves.get(name)) for r in rows if r.curves.get(name)]
    if not lines:
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for row, points in lines:
        label = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.values.items())
        ax.plot(*zip(*points), label=label or row.trial_id)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def record_results(tracker: MlflowTracker, spec: SweepSpec, rows: list[TrialRow],
                   best_model: Path | None) -> None:
    """Results table, best trial, plots and child-run tags on the parent run (rows best first)."""
    metric = spec.tune.metric
    children = _child_runs(tracker)
    for row in rows:
        row.mlflow_run_id = children.get(row.trial_id)
    tracker.log_table_rows([r.as_dict(metric) for r in rows], "sweep_results.json")
    best = rows[0] if rows and rows[0].ranked is not None else None
    if best is not None:
        tracker.set_tags({"torl.best_trial": best.trial_id, "torl.best_run_id": best.mlflow_run_id or "",
                          CHECKPOINT_TAG: best.checkpoint or "",
                          **{f"best.{k}": v for k, v in best.values.items()}})
        tracker.log_metrics(0, {f"best_{metric}": best.ranked})
    for key in spec.search_space:
        points = [(r.values[key], r.ranked) for r in rows if r.ranked is not None]
        if points:
            tracker.log_figure(_scatter(key, points, f"{metric} (last-{RANK_WINDOW} mean)"),
                               f"plots/{metric}_vs_{key}.png")
        times = [(r.values[key], r.step_s) for r in rows if r.step_s is not None]
        if times:
            tracker.log_figure(_scatter(key, times, "seconds per step (mean)"), f"plots/step_s_vs_{key}.png")
    for name in sorted({name for row in rows for name in row.curves}):
        figure = _curves(name, rows)
        if figure is not None:
            tracker.log_figure(figure, f"plots/curves/{name.replace('/', '_')}.png")
    _tag_children(tracker, rows, best)
    if best_model is not None:
        tracker.log_model(best_model, registered_model_name=tracker.cfg.register_model)


def _child_runs(tracker: MlflowTracker) -> dict[str, str]:
    """{trial id: child run id}."""
    try:
        client = MlflowClient(tracker.tracking_uri)
        experiment = client.get_run(tracker.run_id).info.experiment_id
        runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tracker.run_id}'")
    except Exception as exc:  # noqa: BLE001 - tracking never fails the sweep
        logger.warning("could not list the trials' MLflow runs: %s", exc)
        return {}
    return {r.data.tags[TRIAL_ID_TAG]: r.info.run_id for r in runs if TRIAL_ID_TAG in r.data.tags}


def _tag_children(tracker: MlflowTracker, rows: list[TrialRow], best: TrialRow | None) -> None:
    client = MlflowClient(tracker.tracking_uri)
    for row in rows:
        if not row.mlflow_run_id:
            continue
        try:
            client.set_tag(row.mlflow_run_id, "torl.sweep_status", row.status)
            if row.checkpoint:
                client.set_tag(row.mlflow_run_id, CHECKPOINT_TAG, row.checkpoint)
            client.set_tag(row.mlflow_run_id, "torl.best_trial", str(row is best).lower())
            if row.status in ("failed", "unfinished"):
                status = "FAILED" if row.status == "failed" else "KILLED"
                if client.get_run(row.mlflow_run_id).info.status == "RUNNING":
                    client.set_terminated(row.mlflow_run_id, status=status)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the sweep
            logger.warning("could not tag trial run %s: %s", row.mlflow_run_id, exc)
