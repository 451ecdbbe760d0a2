"""``MlflowTrackingCallback``: MLflow tracking as an RLlib callback.

The same run record (params, dataset input, one ``log_batch`` of metrics per step, trajectory
tables and traces, checkpoint path, plots, the final policy as a logged model) appears wherever the
algorithm runs: ``torl-rllib train``, a Ray Tune trial (a child run of the sweep's run), or
``config.build_algo(); algo.train()`` in a notebook. ``GRPOConfig.tracking(...)`` turns it on.

Besides RLlib's hooks (``on_algorithm_init``, ``on_train_result``) it answers two that the
algorithm calls itself, because RLlib has no hook for them: ``on_checkpoint_saved`` and
``on_algorithm_stop``. The algorithm also carries the run's id in its checkpoints
(``get_state``/``set_state``), and a Tune trial also finds its run by its trial-id tag, so a
resumed training (``--resume``, Tune's retry or restore, PBT's exploit) continues its run
instead of starting a new one.

The algorithm is duck-typed (``config.tracking_config``, ``config.tracked_params()``,
``train_problems``, ``last_samples``, ``last_failures``, ``last_traces``, ``last_eval_traces``,
``export_policy()``) so this layer does not import the algorithm package that uses it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from torl_rllib.tracking.config import TrackingConfig
from torl_rllib.tracking.step_metrics import RESULT_KEY
from torl_rllib.tracking.tracker import MlflowTracker

__all__ = ["MlflowTrackingCallback", "tracking_callback", "DEFAULT_RUN_NAME"]

logger = logging.getLogger(__name__)

DEFAULT_RUN_NAME = "grpo"
TRIAL_ID_TAG = "tune.trial_id"
TRIAL_NAME_TAG = "tune.trial_name"
CHECKPOINT_TAG = "torl.checkpoint_path"
FAILURES_TABLE = "failures.json"  # one row per step and failure kind: step, kind, count, example


def _trial(algorithm) -> tuple[str, str] | None:
    """(trial id, trial name) inside a Ray Tune trial, else None."""
    trial_id = getattr(algorithm, "trial_id", "default")
    return None if trial_id == "default" else (trial_id, algorithm.trial_name)


class MlflowTrackingCallback(RLlibCallback):
    """Tracks one algorithm's training as one MLflow run (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.tracker: MlflowTracker | None = None
        self._continue_run_id: str | None = None
        self._started = False

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id if self.tracker else None

    # ---- RLlib hooks ----------------------------------------------------------------------
    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        cfg = TrackingConfig(**algorithm.config.tracking_config)
        self.tracker = MlflowTracker(cfg, run_name=cfg.run_name or DEFAULT_RUN_NAME)
        # The run itself is created with the first result: a restore that comes before it
        # (``--resume``, a Tune retry) names the run to continue instead; and a Tune trial's
        # identity is known only once the algorithm is built.

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        self._ensure_started(algorithm)
        step = algorithm.iteration
        self.tracker.log_metrics(step, result.get(RESULT_KEY) or {})
        failures = getattr(algorithm, "last_failures", None)
        if failures:  # kind, count and an example message (the cause), per step
            self.tracker.log_table_rows([{"step": step, **row} for row in failures], FAILURES_TABLE)
        if self.tracker.wants_trajectories(step):
            self.tracker.log_trajectories(step, algorithm.last_samples)
        self.tracker.log_traces(step, getattr(algorithm, "last_traces", None) or [])
        for benchmark, records in getattr(algorithm, "last_eval_traces", None) or []:
            self.tracker.log_traces(step, records, benchmark=benchmark)

    # ---- hooks the algorithm calls --------------------------------------------------------
    def on_checkpoint_saved(self, *, algorithm, path: str) -> None:
        """Record where the newest checkpoint is. Inside a Tune trial the directory given is
        a staging directory that Tune moves afterwards, so the sweep records the path."""
        if _trial(algorithm) is None:
            self._ensure_started(algorithm)
            self.tracker.set_tags({CHECKPOINT_TAG: path})
            self.tracker.log_text(path, "checkpoint_path.txt")

    def on_algorithm_stop(self, *, algorithm, status: str) -> None:
        """End the run as ``status``; a FINISHED run first logs the final policy as a model."""
        if self.tracker is None or not self.tracker.active:
            return
        self._ensure_started(algorithm)
        cfg = self.tracker.cfg
        if status == "FINISHED" and cfg.log_model:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    # Reuse an export of these very weights (the CLI's final_model/) if any.
                    done = getattr(algorithm, "last_export", None)
                    model_dir = (done[1] if done and done[0] == algorithm.iteration
                                 else algorithm.export_policy(Path(tmp) / "model"))
                    self.tracker.log_model(model_dir, registered_model_name=cfg.register_model)
            except Exception as exc:  # noqa: BLE001 - an export failure must not lose the run
                logger.warning("could not export the policy for MLflow: %s: %s", type(exc).__name__, exc)
        self.tracker.finish(status)

    # ---- checkpoint state -----------------------------------------------------------------
    def get_state(self, algorithm) -> dict[str, Any]:
        trial = _trial(algorithm)
        return {"mlflow_run_id": self.run_id, "trial_id": trial[0] if trial else None}

    def set_state(self, algorithm, state: dict[str, Any]) -> None:
        """Continue the checkpoint's run when it is this training's own (not, e.g., the run of
        another trial whose checkpoint PBT copied into this one)."""
        trial = _trial(algorithm)
        same_owner = state.get("trial_id") == (trial[0] if trial else None)
        if not self._started and same_owner and state.get("mlflow_run_id"):
            self._continue_run_id = state["mlflow_run_id"]

    # ---- helpers --------------------------------------------------------------------------
    def _ensure_started(self, algorithm) -> None:
        if self._started:
            return
        self._started = True
        cfg = self.tracker.cfg
        tags = {}
        if cfg.parent_run_id:
            tags["mlflow.parentRunId"] = cfg.parent_run_id
        trial = _trial(algorithm)
        if trial and not self._continue_run_id:
            # A trial restarted without its own checkpoint (a retry before the first one, or
            # PBT restoring another trial's) continues the run it already has.
            self._continue_run_id = self.tracker.find_run({**tags, TRIAL_ID_TAG: trial[0]})
        if self._continue_run_id and self.tracker.resume(self._continue_run_id):
            return
        if trial:
            tags[TRIAL_ID_TAG], tags[TRIAL_NAME_TAG] = trial
            self.tracker.run_name = cfg.run_name or trial[1]
        self.tracker.start(algorithm.config.tracked_params(), tags=tags)
        problems = algorithm.train_problems
        source = algorithm.config.train_data
        source = source.get("path") if isinstance(source, dict) else source
        self.tracker.log_dataset(
            [{"id": p.id, "source": p.source, "problem": p.problem, "answer": p.answer} for p in problems],
            source=str(source), name=Path(str(source)).stem or "train",
        )


def tracking_callback(algorithm) -> MlflowTrackingCallback | None:
    """The algorithm's tracking callback, or None when tracking is off."""
    for callback in getattr(algorithm, "callbacks", None) or []:
        if isinstance(callback, MlflowTrackingCallback):
            return callback
    return None
