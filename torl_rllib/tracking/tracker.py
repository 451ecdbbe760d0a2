"""``MlflowTracker``: one MLflow run per training, fed by the trainer once per step.

Every public method is safe to call from the training loop: a tracking failure (server down,
disk full, permission denied, bad URI) is reported once as a warning, that call becomes a
no-op, and the next call tries again. Metrics are never dropped: those a failed call could
not send are sent by the next call that gets through (and by ``finish``). The tracker talks to MLflow only through its own
``MlflowClient`` (never the global ``mlflow`` run state), so trackers do not interfere.

Trajectory traces (``log_traces``) are written by one background thread, so they never hold up
a step; traces a failed write could not send are sent by the next ``log_traces`` (and by
``finish``), like metrics.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TypeVar

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Param, RunTag
from mlflow.exceptions import MlflowException

from torl_rllib.tracking.config import TrackingConfig
from torl_rllib.tracking.metrics import MetricHistory, to_metrics
from torl_rllib.tracking.names import sanitize_key, truncate
from torl_rllib.tracking.params import flatten_params, library_versions, to_params
from torl_rllib.tracking.plots import dynamics_figure, metric_figure
from torl_rllib.tracking.store import prepare_store, resolve_tracking_uri
from torl_rllib.tracking.traces import build_trace, write_traces

__all__ = ["MlflowTracker"]

logger = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's limits on one log_batch call
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_TAG_VALUE_LENGTH = 8000
MAX_UNSENT_METRICS = 1_000_000  # ~100 MB: days of steps at ~100 metrics each
MAX_UNSENT_TRACES = 10_000  # ~100 MB at ~10 kB each: keep the newest
TRACES_PER_WRITE = 50

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cell(value: Any) -> Any:
    """A table cell the MLflow UI shows as-is: scalars stay, the rest becomes JSON text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _table(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return {column: [_cell(row.get(column)) for row in rows] for column in columns}


def _tracked(method):
    """Run ``method`` only while tracking is active; on failure report it and return None."""

    @functools.wraps(method)
    def guarded(self: MlflowTracker, *args, **kwargs):
        if not self.active:
            return None
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._report_failure(method.__name__.strip("_"), exc)
            return None
        self._report_recovery()
        return result

    return guarded


class MlflowTracker:
    """One MLflow run: params, per-step metrics, trajectory tables, plots and artifacts."""

    def __init__(self, cfg: TrackingConfig, run_name: str, output_dir: Path | None = None):
        self.cfg = cfg
        self.run_name = cfg.run_name or run_name
        self.tracking_uri = resolve_tracking_uri(cfg.tracking_uri, output_dir)
        self.run_id: str | None = None
        self.history = MetricHistory()
        self.logged_through = -1  # the last step already in the run (when it was resumed)
        self._unsent: list = []  # metrics a failed call could not send, retried on the next
        self._client: MlflowClient | None = None
        self._pending_params: list[Param] = []
        self._failing = False
        self._finished = False
        self.experiment_id: str | None = None
        self._new_traces: list[tuple] = []  # (step, record, benchmark) handed to the sender thread
        self._unsent_traces: list = []  # built traces not yet in the store (sender thread only)
        self._traces_lock = threading.Lock()
        self._trace_sender: ThreadPoolExecutor | None = None
        self._trace_sending: Future | None = None

    @property
    def active(self) -> bool:
        """Whether calls still reach MLflow: tracking is enabled and the run not finished."""
        return self.cfg.enabled and not self._finished

    # -- the run ------------------------------------------------------------------------------

    @_tracked
    def start(
        self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        """Create the run (with ``tags``, e.g. ``mlflow.parentRunId``) and log ``params`` (a
        nested config, flattened to dotted keys) plus library versions. Returns the run id."""
        self._pending_params = to_params({**flatten_params(params or {}), **library_versions()})
        self._ensure_run(tags)
        return self.run_id

    @_tracked
    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The id of a run of this experiment that carries all of ``tags``, if one exists."""
        prepare_store(self.tracking_uri, self.cfg)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.cfg.experiment)
        if experiment is None:
            return None
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        found = client.search_runs([experiment.experiment_id], query, max_results=1)
        return found[0].info.run_id if found else None

    @_tracked
    def resume(self, run_id: str) -> str:
        """Continue the existing run ``run_id`` (a resumed training): mark it RUNNING again and
        reload its metric history so the final plots cover the whole run."""
        prepare_store(self.tracking_uri, self.cfg)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        run = client.get_run(run_id)
        self._client, self.run_id, self._pending_params = client, run_id, []
        self.experiment_id = run.info.experiment_id
        client.update_run(run_id, status="RUNNING")
        for key in run.data.metrics:
            history = client.get_metric_history(run_id, key)
            self.history.add(history)
            self.logged_through = max([self.logged_through, *(m.step for m in history)])
        logger.info("MLflow run %s continued in %s", run_id, self.tracking_uri)
        return run_id

    def finish(self, status: str = "FINISHED") -> None:
        """Log the plots (when enabled) and end the run as FINISHED, FAILED or KILLED. Later
        calls to the tracker do nothing."""
        if self._unsent:
            self._flush_metrics()
        self._flush_traces()
        self.log_plots()
        self._end_run(status)
        self._finished = True

    @_tracked
    def _flush_metrics(self) -> None:
        self._send_unsent()

    @_tracked
    def _end_run(self, status: str) -> None:
        self._ensure_run().set_terminated(self.run_id, status=status)

    def _ensure_run(self, tags: Mapping[str, Any] | None = None) -> MlflowClient:
        """The client of a run that exists (``self.run_id``), creating the run first if no
        earlier call could, and sending params still pending."""
        if self.run_id is None:
            artifact_location = prepare_store(self.tracking_uri, self.cfg)
            client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = self._experiment_id(client, artifact_location)
            run = client.create_run(
                experiment_id, run_name=self.run_name,
                tags={k: truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in (tags or {}).items()},
            )
            self._client, self.run_id, self.experiment_id = client, run.info.run_id, experiment_id
            logger.info("MLflow run %r (%s) in %s", self.run_name, self.run_id, self.tracking_uri)
        while self._pending_params:
            batch = self._pending_params[:MAX_PARAMS_TAGS_PER_BATCH]
            self._client.log_batch(self.run_id, params=batch, synchronous=True)
            del self._pending_params[: len(batch)]
        return self._client

    def _experiment_id(self, client: MlflowClient, artifact_location: str | None) -> str:
        experiment = client.get_experiment_by_name(self.cfg.experiment)
        if experiment is None:
            try:
                return client.create_experiment(
                    self.cfg.experiment, artifact_location=artifact_location
                )
            except MlflowException:
                # Another process may have created it since; if not, re-raise.
                experiment = client.get_experiment_by_name(self.cfg.experiment)
                if experiment is None:
                    raise
        return experiment.experiment_id

    # -- per step -----------------------------------------------------------------------------

    @_tracked
    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log one step's metrics in one ``log_batch`` call (more only beyond MLflow's 1000 per
        batch). Non-numeric and non-finite values are dropped; names are sanitized."""
        if step <= self.logged_through:
            # A resumed run redoes the steps after its checkpoint; those logged before the
            # interruption stay (an exact resume gives them the same values): no duplicates.
            return
        entities = to_metrics(step, metrics, timestamp_ms=int(time.time() * 1000))
        self.history.add(entities)
        self._unsent.extend(entities)
        if len(self._unsent) > MAX_UNSENT_METRICS:  # a store down for very long: keep the newest
            del self._unsent[: len(self._unsent) - MAX_UNSENT_METRICS]
        self._send_unsent()

    def _send_unsent(self) -> None:
        """Send every metric not yet in the store, oldest first: what a store outage held back
        is backfilled, at its own steps and timestamps, by the first call that gets through."""
        client = self._ensure_run()
        backlog = len(self._unsent)
        while self._unsent:
            batch = self._unsent[:MAX_METRICS_PER_BATCH]
            client.log_batch(self.run_id, metrics=batch, synchronous=True)
            del self._unsent[: len(batch)]
        if backlog > MAX_METRICS_PER_BATCH:
            logger.info("backfilled %d metric values held back while MLflow was unreachable", backlog)

    def wants_trajectories(self, step: int) -> bool:
        """Whether ``step`` is one whose sample trajectories should be logged."""
        every = self.cfg.trajectories_every
        return self.active and every > 0 and step % every == 0

    def log_trajectories(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log sample trajectories (prompt, response with tool calls and outputs, answer, gold,
        reward, ...) as the MLflow table ``trajectories/step_NNNNNN.json``."""
        self.log_table_rows(rows, f"trajectories/step_{step:06d}.json")

    def log_traces(self, step: int, records: Sequence[Any], benchmark: str | None = None) -> None:
        """Log trajectory records (``torl_rllib.rollout.trace_records``) as MLflow traces of this
        run at ``step`` (``benchmark``: those of an evaluation), in the background: this returns
        at once. Traces a failed write held back are sent with the next call, and by ``finish``."""
        if not self.active or not self.cfg.traces or not records:
            return
        with self._traces_lock:
            self._new_traces.extend((step, record, benchmark) for record in records)
            del self._new_traces[:-MAX_UNSENT_TRACES]
        if self._trace_sender is None:
            self._trace_sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-traces")
        self._trace_sending = self._trace_sender.submit(self._send_traces)  # after those before it

    @_tracked
    def _send_traces(self) -> None:
        """Build the traces handed over since the last call and send every trace not yet in the
        store, oldest first (the sender thread's job; ``finish`` calls it once more itself)."""
        if self.run_id is None:  # the training loop's next call creates the run
            return
        with self._traces_lock:
            new, self._new_traces = self._new_traces, []
        held_back = len(self._unsent_traces)
        self._unsent_traces.extend(
            build_trace(record, experiment_id=self.experiment_id, run_id=self.run_id, step=step, benchmark=benchmark)
            for step, record, benchmark in new)
        del self._unsent_traces[:-MAX_UNSENT_TRACES]
        while self._unsent_traces:
            batch = self._unsent_traces[:TRACES_PER_WRITE]
            write_traces(self._client, batch)
            del self._unsent_traces[: len(batch)]
        if held_back:
            logger.info("backfilled %d traces held back while MLflow was unreachable", held_back)

    def _flush_traces(self) -> None:
        """Wait for the sender thread, then send what is still held back (one last try)."""
        if self._trace_sender is None:
            return
        self._trace_sender.shutdown(wait=True)
        self._trace_sender = self._trace_sending = None
        if self._new_traces or self._unsent_traces:
            self._send_traces()

    @_tracked
    def log_table_rows(self, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
        """Log rows (dicts, columns in first-seen order) as an MLflow table artifact."""
        if rows:
            self._ensure_run().log_table(self.run_id, data=_table(rows), artifact_file=artifact_file)

    @_tracked
    def log_figure(self, figure, artifact_file: str) -> None:
        """Log a matplotlib figure as an image artifact."""
        self._ensure_run().log_figure(self.run_id, figure, artifact_file)

    # -- artifacts and tags -------------------------------------------------------------------

    @_tracked
    def log_plots(self) -> list[str]:
        """Log PNGs of the configured metrics against step, one per metric plus all of them
        side by side (``plots/training_dynamics.png``). Metrics never logged are skipped.
        Returns the artifact paths."""
        if not self.cfg.plots:
            return []
        series = {}
        for name in self.cfg.plot_metrics:
            key = sanitize_key(name)
            points = self.history.series(key) if key else []
            if points:
                series[key] = points
            else:
                logger.debug("no values of %r to plot", name)
        if not series:
            return []
        client = self._ensure_run()
        figures = {
            f"plots/{key.replace('/', '_')}.png": metric_figure(key, points)
            for key, points in series.items()
        }
        figures["plots/training_dynamics.png"] = dynamics_figure(series)
        for artifact_file, figure in figures.items():
            client.log_figure(self.run_id, figure, artifact_file)
        return list(figures)

    @_tracked
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file or directory into the run's artifacts."""
        self._ensure_run().log_artifact(self.run_id, str(path), artifact_path)

    @_tracked
    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """Log a dict as a JSON or YAML artifact (chosen by ``artifact_file``'s extension)."""
        self._ensure_run().log_dict(self.run_id, dict(dictionary), artifact_file)

    @_tracked
    def log_text(self, text: str, artifact_file: str) -> None:
        """Log a string as a text artifact."""
        self._ensure_run().log_text(self.run_id, text, artifact_file)

    @_tracked
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (keys sanitized, values cut to MLflow's length limit)."""
        entities = [
            RunTag(key, truncate(str(value), MAX_TAG_VALUE_LENGTH))
            for name, value in tags.items()
            if (key := sanitize_key(name)) is not None
        ]
        client = self._ensure_run()
        for batch in _chunks(entities, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self.run_id, tags=batch, synchronous=True)

    @_tracked
    def log_dataset(self, records: Sequence[Mapping[str, Any]], source: str, name: str,
                    context: str = "training") -> str:
        """Record ``records`` (the rows actually used) as the run's dataset input, with its
        source path and MLflow's content digest. Returns the digest."""
        import mlflow.data
        import pandas as pd

        with warnings.catch_warnings():  # MLflow registers its local source class twice and warns
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(pd.DataFrame(list(records)), source=source, name=name)
        tags = [InputTag(key="mlflow.data.context", value=context)]
        self._ensure_run().log_inputs(
            self.run_id, datasets=[DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)]
        )
        return dataset.digest

    @_tracked
    def log_model(self, model_dir: str | Path, name: str = "model",
                  registered_model_name: str | None = None) -> str:
        """Log a Hugging Face model directory as a *logged model* of the run (MLflow's
        ``transformers`` flavor, task text-generation), optionally registering it in the Model
        Registry under ``registered_model_name``. Returns the model URI (``models:/<id>``)."""
        import mlflow
        import mlflow.transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Loaded objects, not the directory: MLflow's local-checkpoint path breaks on
        # transformers 5 task metadata. Requirements pinned from what is installed: MLflow's
        # inference imports torchvision, which a text model does not need.
        components = {"model": AutoModelForCausalLM.from_pretrained(model_dir),
                      "tokenizer": AutoTokenizer.from_pretrained(model_dir)}
        requirements = [f"{lib}=={metadata.version(lib)}" for lib in ("torch", "transformers")]
        # The flavor logs through MLflow's global ("fluent") run state only: point it at this
        # run for the duration of the call. MLflow's own scoped setter puts the global URI and
        # $MLFLOW_TRACKING_URI (which set_tracking_uri exports) back as they were.
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        self._ensure_run()
        with _use_tracking_uri(self.tracking_uri), mlflow.start_run(run_id=self.run_id):
            info = mlflow.transformers.log_model(
                components, name=name, task="text-generation", pip_requirements=requirements,
                registered_model_name=registered_model_name,
            )
        self._client.update_run(self.run_id, status="RUNNING")  # start_run's exit ended it
        return info.model_uri

    # -- failure reporting --------------------------------------------------------------------

    def _report_failure(self, operation: str, exc: Exception) -> None:
        if self._failing:
            logger.debug("MLflow %s failed again: %s: %s", operation, type(exc).__name__, exc)
            return
        self._failing = True
        logger.warning(
            "MLflow tracking failed in %s (%s: %s); training continues, tracking retries on "
            "the next call and stays quiet until it works again",
            operation,
            type(exc).__name__,
            exc,
        )

    def _report_recovery(self) -> None:
        if self._failing:
            self._failing = False
            logger.warning("MLflow tracking works again (run %s)", self.run_id)
