"""Settings of MLflow run tracking (the ``tracking:`` section of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["TrackingConfig", "DEFAULT_PLOT_METRICS", "traces_per_step"]

# The curves of the ToRL paper's training-dynamics figure, under the trainer's metric names.
DEFAULT_PLOT_METRICS = (
    "accuracy",
    "code_ratio",
    "response_length/model_tokens",
    "tool_calls_per_response",
    "executable_code_rate",
    "tool_grounded_answer_rate",
)


@dataclass(frozen=True)
class TrackingConfig:
    """Where and what to track; ``enabled=False`` turns every tracker call into a no-op."""

    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI, else ``sqlite:///<cwd>/mlflow.db``. Any MLflow URI works
    # (sqlite:, file:, http(s): to a tracking server).
    tracking_uri: str | None = None
    experiment: str = "torl-rllib"
    # None: the recipe's name.
    run_name: str | None = None
    # Log a table of sample trajectories every N steps (0: never).
    trajectories_every: int = 10
    # Log trajectories as MLflow traces (one per trajectory, a span per generation segment, tool
    # call and grading; docs/traces.md): every failed one, and this many others, per training
    # step and per evaluated benchmark.
    traces: bool = True
    traces_per_step: int = 4
    # Log PNG plots of ``plot_metrics`` against step when the run finishes.
    plots: bool = True
    plot_metrics: tuple[str, ...] = DEFAULT_PLOT_METRICS
    # Log the final policy as a logged model of the run (MLflow's transformers flavor) when
    # the run finishes; and register it in the Model Registry under this name (None: don't).
    log_model: bool = True
    register_model: str | None = None
    # Make the run a child of this run (``mlflow.parentRunId``); a sweep sets it per trial.
    parent_run_id: str | None = None
    # Bounds on one HTTP call to a tracking server, so a server that is down costs a step
    # milliseconds (refused) or at most this timeout (unreachable) instead of MLflow's default
    # of 7 retries with exponential backoff (about 4 minutes). No retries by default: the
    # tracker retries on its next call anyway, and urllib3 warns on every retry. Applied only
    # where the MLFLOW_HTTP_REQUEST_* environment variables are not set.
    http_timeout_s: int = 10
    http_max_retries: int = 0

    def __post_init__(self):
        if not self.experiment:
            raise ValueError("experiment must be a non-empty name")
        if self.trajectories_every < 0:
            raise ValueError(
                f"trajectories_every must be >= 0 (0 = never), got {self.trajectories_every}"
            )
        if self.traces_per_step < 0:
            raise ValueError(
                f"traces_per_step must be >= 0 (0 = the failed trajectories only), got {self.traces_per_step}"
            )
        if self.register_model is not None and not (
            isinstance(self.register_model, str) and self.register_model.strip()
        ):
            raise ValueError(f"register_model must be a non-empty model name, got {self.register_model!r}")
        if self.register_model and not self.log_model:
            raise ValueError("register_model needs log_model: true (only a logged model can be registered)")
        if self.http_timeout_s < 1:
            raise ValueError(f"http_timeout_s must be >= 1, got {self.http_timeout_s}")
        if self.http_max_retries < 0:
            raise ValueError(f"http_max_retries must be >= 0, got {self.http_max_retries}")
        # YAML gives lists; keep the config hashable and immutable.
        object.__setattr__(self, "plot_metrics", tuple(self.plot_metrics))


def traces_per_step(tracking_config: Mapping[str, Any]) -> int | None:
    """How many trajectories besides the failed ones a training step (or an evaluated benchmark)
    logs as traces, from an algorithm's ``tracking_config`` dict; None: no traces."""
    if not tracking_config.get("enabled"):
        return None
    tracking = TrackingConfig(**tracking_config)
    return tracking.traces_per_step if tracking.traces else None
