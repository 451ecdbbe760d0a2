"""The training driver behind ``torl-rllib train``: Ray → GRPO → progress bar, MLflow,
checkpoints, summary.

Nothing is lost on an interruption: Ctrl-C finishes the step in flight, saves a checkpoint
and exits cleanly (a second Ctrl-C aborts at once); a crash leaves the last periodic
checkpoint and marks the MLflow run FAILED.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from torl_rllib.algorithms.grpo import rollout_metrics as rm
from torl_rllib.recipe import Recipe

logger = logging.getLogger("torl_rllib")

# Learner metrics under RLlib's names → the names we show.
LEARNER_METRICS = {
    "policy_loss": "policy_loss",
    "entropy": "entropy",
    "clip_fraction": "clip_fraction",
    "approx_kl": "approx_kl",
    "kl_to_ref": "kl_to_ref",
    "gradients_default_optimizer_global_norm": "grad_norm",
    "default_optimizer_learning_rate": "learning_rate",
}
PROGRESS_FIELDS = {"reward": rm.REWARD_MEAN, "acc": rm.ACCURACY, "code": rm.CODE_RATIO}
HEADLINE = (rm.REWARD_MEAN, rm.ACCURACY, rm.CODE_RATIO)


def step_metrics(result: dict) -> dict[str, float]:
    """The per-step metrics of one ``algo.train()`` result, flat, numeric and finite (a count
    that did not occur this step, e.g. ``grade/no_box``, is absent rather than NaN)."""
    picked: dict[str, Any] = dict(result.get("env_runners") or {})
    learner = (result.get("learners") or {}).get("default_policy") or {}
    picked.update({name: learner.get(key) for key, name in LEARNER_METRICS.items()})
    timers = result.get("timers") or {}
    picked.update({f"time/{key}_s": timers.get(key) for key in ("rollout", "learner_update", "weight_sync", "step")})
    return {
        key: float(value) for key, value in picked.items()
        if isinstance(value, (int, float)) and math.isfinite(value)
    }


class _GracefulInterrupt:
    """First Ctrl-C: finish the current step, checkpoint, exit. Second: abort now."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


def init_ray(verbose: bool = False) -> None:
    """Start (or join) Ray with its console noise kept out unless ``verbose``."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
            configure_logging=True,
        )
    for name in ("ray", "ray.rllib", "ray.tune", "ray.data"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def _driver_threads(recipe: Recipe) -> int:
    """Torch threads for the driver (it hosts the local Learner when num_learners=0)."""
    import ray

    total = ray.cluster_resources().get("CPU", 1)
    res = recipe.data.get("resources", {})
    busy = res.get("num_env_runners", 0) * res.get("num_cpus_per_env_runner", 1)
    return max(1, math.floor(total - busy))


def save_checkpoint(algo, output_dir: Path) -> Path:
    """Save to ``checkpoints/step_NNNNNN`` atomically (a crash mid-save leaves no half checkpoint)."""
    final = output_dir / "checkpoints" / f"step_{algo.iteration:06d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    algo.save_to_path(str(partial))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    (output_dir / "checkpoints" / "latest").write_text(final.name + "\n")
    return final


def run_training(recipe: Recipe, output_dir: Path, resume: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Train per ``recipe``; returns (and writes to ``output_dir/summary.json``) the outcome."""
    import torch
    from tqdm.auto import tqdm

    from torl_rllib.export import export_policy
    from torl_rllib.tracking import MlflowTracker, flatten_params

    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(recipe.data, sort_keys=False))
    run = recipe.run

    init_ray(verbose)
    torch.set_num_threads(_driver_threads(recipe))
    algo = recipe.build_config().build_algo()
    if resume:
        algo.restore_from_path(str(Path(resume).resolve()))
        logger.info("resumed from %s at step %d", resume, algo.iteration)

    # Default store: ./mlflow.db in the working directory, shared by every run (one MLflow UI).
    tracker = MlflowTracker(recipe.tracking_config(), run_name=recipe.name, output_dir=Path.cwd())
    tracker.start(flatten_params(recipe.data))
    tracker.log_artifact(config_path)

    history: list[dict[str, float]] = []
    metrics_log = (output_dir / "metrics.jsonl").open("a")  # one line per step, for scripts
    checkpoint: Path | None = None
    status = "FINISHED"
    start = time.perf_counter()
    try:
        with _GracefulInterrupt() as interrupt, tqdm(
            total=run.steps, initial=algo.iteration, desc=recipe.name, unit="step", dynamic_ncols=True
        ) as bar:
            while algo.iteration < run.steps and not interrupt.requested:
                metrics = step_metrics(algo.train())
                step = algo.iteration
                metrics["step"] = step
                history.append(metrics)
                metrics_log.write(json.dumps(metrics) + "\n")
                metrics_log.flush()
                tracker.log_metrics(step, metrics)
                if tracker.wants_trajectories(step):
                    tracker.log_trajectories(step, algo.last_samples)
                if run.checkpoint_every and step % run.checkpoint_every == 0:
                    checkpoint = save_checkpoint(algo, output_dir)
                bar.set_postfix(
                    {k: f"{metrics.get(v, float('nan')):.2f}" for k, v in PROGRESS_FIELDS.items()}
                    | {"s/step": f"{metrics.get('time/step_s', 0):.1f}"}
                )
                bar.update(1)
            if interrupt.requested:
                status = "KILLED"
        if checkpoint is None or not checkpoint.name.endswith(f"{algo.iteration:06d}"):
            checkpoint = save_checkpoint(algo, output_dir)
        tracker.log_text(str(checkpoint), "checkpoint_path.txt")
        if run.export_final and status == "FINISHED":
            exported = export_policy(checkpoint, output_dir / "final_model")
            tracker.log_artifact(exported, "final_model")
    except BaseException:
        status = "FAILED"
        raise
    finally:
        metrics_log.close()
        wall = time.perf_counter() - start
        summary = summarize(recipe, history, wall, checkpoint, tracker.run_id, status)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        tracker.log_artifact(output_dir / "summary.json")
        tracker.finish(status)
        algo.stop()
    return summary


def summarize(recipe, history, wall_s, checkpoint, run_id, status) -> dict[str, Any]:
    """First/final/best of the headline metrics, for scripts to read."""
    summary: dict[str, Any] = {
        "name": recipe.name, "status": status, "steps": int(history[-1]["step"]) if history else 0,
        "wall_time_s": round(wall_s, 2), "checkpoint": str(checkpoint) if checkpoint else None,
        "mlflow_run_id": run_id,
    }
    for key in HEADLINE:
        values = [h[key] for h in history if key in h]
        summary[key] = (
            {"first": values[0], "final": values[-1], "best": max(values)} if values else None
        )
    return summary
