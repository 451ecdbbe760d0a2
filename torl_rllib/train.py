"""The training driver behind ``torl-rllib train``: Ray → GRPO → progress bar, MLflow,
checkpoints, summary.

Nothing is lost on an interruption: Ctrl-C, SIGTERM or SIGHUP finishes the step in flight
(or abandons it after ``run.preemption_grace_s``), saves a checkpoint of the last completed
step, marks the MLflow run KILLED, shuts Ray down and exits with 128 + the signal (a second
signal aborts at once); a crash leaves the last periodic checkpoint and marks the run FAILED.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import threading
import time
import _thread
from pathlib import Path
from typing import Any

import yaml

from torl_rllib.rollout import metrics as rm
from torl_rllib.execution.faults import LearnersLost, RunCannotContinue
from torl_rllib.utils.checkpoint_manifest import MANIFEST_NAME, DamagedCheckpoint, verify_checkpoint
from torl_rllib.recipe import Recipe
from torl_rllib.tracking.callback import tracking_callback
from torl_rllib.tracking.step_metrics import RESULT_KEY
from torl_rllib.utils.cluster import available_cpus, init_ray

logger = logging.getLogger("torl_rllib")

PROGRESS_FIELDS = {"reward": rm.REWARD_MEAN, "acc": rm.ACCURACY, "code": rm.CODE_RATIO}
HEADLINE = (rm.REWARD_MEAN, rm.ACCURACY, rm.CODE_RATIO)


class _GracefulInterrupt:
    """First Ctrl-C, SIGTERM or SIGHUP (what Slurm, Kubernetes and spot preemption send):
    finish the step in flight, checkpoint, exit. A step still running ``grace_s`` later is
    abandoned (interrupted; if it was still sampling, nothing of it is kept, so the last completed
    step is checkpointed). A second signal: abort now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.signum: int | None = None
        self._previous = {}
        self._timer: threading.Timer | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)  # the shell's convention: 130, 143, 129

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("%s: finishing this step (at most %.0fs), then saving a checkpoint (again to abort)",
                       signal.Signals(signum).name, self.grace_s)
        self._timer = threading.Timer(self.grace_s, _thread.interrupt_main)  # abandons the step
        self._timer.daemon = True
        self._timer.start()

    def __exit__(self, *exc):
        if self._timer is not None:
            self._timer.cancel()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def _driver_threads() -> int:
    """Torch threads for the driver (it hosts the local Learner when num_learners=0): every
    CPU of its machine. On-policy the EnvRunners are idle while it updates; with
    max_staleness=1 they sample meanwhile, and on 2 cores an update with 2 threads next to a
    1-thread rollout still took 0.6x the time of a 1-thread update (measured, tiny demo)."""
    return available_cpus()


class CheckpointsFailing(RunCannotContinue):
    """Checkpoints could not be saved twice in a row: going on would risk all progress."""


class Checkpoints:
    """The run directory's checkpoints, ``checkpoints/step_NNNNNN`` and ``checkpoints/latest``.

    Saves are atomic (``GRPO.save_to_path``), and so is the update of ``latest``. A save that
    fails (disk full, permissions) leaves the previous checkpoint and ``latest`` as they were;
    the run reports it and goes on, and stops (``CheckpointsFailing``) when saving fails
    ``MAX_FAILURES`` times in a row, rather than run on with nothing to resume from.
    """

    MAX_FAILURES = 2

    def __init__(self, output_dir: Path):
        self.folder = output_dir / "checkpoints"
        self.newest: Path | None = None
        self.failures = 0

    def save(self, algo, may_stop: bool = True) -> Path | None:
        final = self.folder / f"step_{algo.iteration:06d}"
        if final == self.newest:
            return final
        try:
            algo.save_to_path(str(final))
            staged = self.folder / "latest.tmp"
            staged.write_text(final.name + "\n")
            staged.replace(self.folder / "latest")
        except OSError as exc:
            self.failures += 1
            logger.error("could not save the checkpoint of step %d (%s: %s); the newest stays %s",
                         algo.iteration, type(exc).__name__, exc, self.newest)
            if may_stop and self.failures >= self.MAX_FAILURES:
                raise CheckpointsFailing(f"{self.failures} checkpoint saves in a row failed, the last with "
                                         f"{type(exc).__name__}: {exc}") from exc
            return None
        self.failures, self.newest = 0, final
        return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """A run directory's complete checkpoints, newest first: the one ``checkpoints/latest``
    names (if it is complete), then every complete ``step_N`` of an earlier step, highest first.
    Without a usable ``latest``, every complete ``step_N``, highest first."""
    folder = output_dir / "checkpoints"
    # Complete: renamed from .partial, so RLlib's metadata or our manifest is there (both, unless damaged).
    complete = lambda path: (path / "rllib_checkpoint.json").is_file() or (path / MANIFEST_NAME).is_file()  # noqa: E731
    steps = sorted((p for p in folder.glob("step_*") if p.name[5:].isdigit() and complete(p)),
                   key=lambda p: int(p.name[5:]), reverse=True)
    named = folder / "latest"
    name = named.read_text().strip() if named.is_file() else ""
    if name and complete(folder / name):
        newest = int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else float("inf")
        return [folder / name, *(p for p in steps if int(p.name[5:]) < newest)]
    return steps


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory (``checkpoints/latest`` if it names a
    complete one, else the highest ``step_N`` that is complete), or None."""
    found = complete_checkpoints(output_dir)
    return found[0] if found else None


def newest_intact_checkpoint(output_dir: Path) -> tuple[Path | None, list[DamagedCheckpoint]]:
    """The newest complete checkpoint (``complete_checkpoints`` order) that passes
    ``verify_checkpoint``, or None; and the damaged ones skipped on the way, newest first."""
    skipped = []
    for checkpoint in complete_checkpoints(output_dir):
        try:
            verify_checkpoint(checkpoint)
        except DamagedCheckpoint as damage:
            skipped.append(damage)
        else:
            return checkpoint, skipped
    return None, skipped


def truncate_metrics_log(path: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (logged before a crash, redone after the resume),
    and a line cut short (a crash or a full disk mid-write)."""
    def kept(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except ValueError:
            return False

    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines if kept(line)))


def run_training(recipe: Recipe, output_dir: Path, resume: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Train per ``recipe``; returns (and writes to ``output_dir/summary.json``) the outcome.

    MLflow tracking is the algorithm's own callback (``MlflowTrackingCallback``); this driver
    adds the run directory's files (config, ``metrics.jsonl``, checkpoints, final model,
    summary) and logs the config and summary to the same run."""
    import torch
    from tqdm.auto import tqdm

    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(recipe.data, sort_keys=False))
    run = recipe.run

    import ray

    owns_ray = not ray.is_initialized()
    init_ray(verbose)
    torch.set_num_threads(_driver_threads())
    algo = recipe.build_config().build_algo()
    checkpoints = Checkpoints(output_dir)
    if resume:
        algo.restore_from_path(str(Path(resume).resolve()))  # continues its MLflow run too
        logger.info("resumed from %s at step %d", resume, algo.iteration)
        truncate_metrics_log(output_dir / "metrics.jsonl", algo.iteration)
        checkpoints.newest = Path(resume).resolve()
    tracking = tracking_callback(algo)
    tracker = tracking.tracker if tracking else None

    history: list[dict[str, float]] = []
    metrics_log = (output_dir / "metrics.jsonl").open("a")  # one line per step, for scripts
    error: str | None = None
    interrupted_by: int | None = None  # the exit code an interrupting signal asks for
    seen_failures: set[str] = set()  # failure kinds already printed in this run
    start = time.perf_counter()
    try:
        with _GracefulInterrupt(run.preemption_grace_s) as interrupt, tqdm(
            total=run.steps, initial=algo.iteration, desc=recipe.name, unit="step", dynamic_ncols=True
        ) as bar:
            while algo.iteration < run.steps and not interrupt.requested:
                try:
                    result = algo.train()
                except KeyboardInterrupt:
                    if not (interrupt.requested and algo.step_rewound):
                        raise  # a second signal, or a step abandoned after its data was used
                    logger.warning("abandoned the step in flight; the checkpoint is of step %d", algo.iteration)
                    break
                metrics = dict(result[RESULT_KEY])  # also logged to MLflow by the callback
                step = algo.iteration
                metrics["step"] = step
                # Which prompts the step sampled (metrics.jsonl only): resumed and undisturbed
                # runs can be compared step by step (``python benchmarks/chaos.py``).
                metrics["problems_digest"] = hashlib.blake2b(
                    "\n".join(algo.last_problem_ids).encode(), digest_size=8).hexdigest()
                history.append(metrics)
                metrics_log.write(json.dumps(metrics) + "\n")
                metrics_log.flush()
                _report_new_failures(algo.last_failures, step, seen_failures)
                if run.checkpoint_every and step % run.checkpoint_every == 0:
                    checkpoints.save(algo)
                failed = metrics.get(rm.FAILED_FRACTION, 0.0)
                bar.set_postfix(
                    {k: f"{metrics.get(v, float('nan')):.2f}" for k, v in PROGRESS_FIELDS.items()}
                    | ({"failed": f"{failed:.0%}"} if failed else {})
                    | {"s/step": f"{metrics.get('time/step_s', 0):.1f}"}
                )
                bar.update(1)
                if algo.unhealthy is not None:  # logged above; stop with the cause named
                    raise algo.unhealthy
            if interrupt.requested:
                algo.run_status = "KILLED"
                interrupted_by = interrupt.exit_code
        checkpoints.save(algo, may_stop=False)
        if run.export_final and algo.run_status == "FINISHED":
            export_dir = output_dir / "final_model"
            shutil.rmtree(export_dir, ignore_errors=True)
            try:
                algo.export_policy(export_dir)
            except OSError as exc:  # the checkpoint holds the policy: `torl-rllib export` later
                logger.error("could not export the final model (%s: %s); export it from %s later",
                             type(exc).__name__, exc, checkpoints.newest)
                shutil.rmtree(export_dir, ignore_errors=True)
    except RunCannotContinue as exc:
        # The step in flight never happened (its data position is rewound): checkpoint the last
        # completed step, so that --resume redoes it once the cluster is healthy again.
        algo.run_status = "FAILED"
        error = str(exc)
        if isinstance(exc, LearnersLost):  # the Learners' state died with them
            checkpoints.newest = checkpoints.newest or latest_checkpoint(output_dir)
            logger.error("%s; the newest checkpoint is %s", error, checkpoints.newest)
        elif not isinstance(exc, CheckpointsFailing):
            logger.error("%s; saving the last completed step (%d)", error, algo.iteration)
            checkpoints.save(algo, may_stop=False)
    except KeyboardInterrupt:  # aborted: the last periodic checkpoint stays the newest
        algo.run_status = "KILLED"
        interrupted_by = interrupted_by or 130
        raise
    except BaseException:
        algo.run_status = "FAILED"
        raise
    finally:
        metrics_log.close()
        wall = time.perf_counter() - start
        run_id = tracker.run_id if tracker else None
        summary = summarize(recipe, history, wall, checkpoints.newest, run_id, algo.run_status)
        if error:
            summary["error"] = error
        if interrupted_by:
            summary["exit_code"] = interrupted_by
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if tracker:
            tracker.log_artifact(config_path)
            tracker.log_artifact(output_dir / "summary.json")
        algo.stop()  # the tracking callback logs the final model and ends the MLflow run
        if owns_ray:  # leave no process of this run behind (Ray's agents included)
            ray.shutdown()
    return summary


def _report_new_failures(failures: list[dict], step: int, seen: set[str]) -> None:
    """Print each failure kind the first time it occurs in the run, with its cause."""
    for failure in failures:
        if failure["kind"] not in seen:
            seen.add(failure["kind"])
            logger.error("step %d: %d trajectories failed: %s (counted as failed/%s from now on)",
                         step, failure["count"], failure["example"], failure["kind"])


def summarize(recipe, history, wall_s, checkpoint, run_id, status) -> dict[str, Any]:
    """First/final/best of the headline metrics, and the failed trajectories, for scripts to read."""
    failed = sum(h.get(rm.FAILED, 0.0) for h in history)
    trajectories = sum(h.get("trajectories", 0.0) for h in history)
    summary: dict[str, Any] = {
        "name": recipe.name, "status": status, "steps": int(history[-1]["step"]) if history else 0,
        "wall_time_s": round(wall_s, 2), "checkpoint": str(checkpoint) if checkpoint else None,
        "mlflow_run_id": run_id,
        "failed_trajectories": {"total": int(failed), "fraction": failed / trajectories if trajectories else 0.0},
    }
    for key in HEADLINE:
        values = [h[key] for h in history if key in h]
        summary[key] = (
            {"first": values[0], "final": values[-1], "best": max(values)} if values else None
        )
    return summary
