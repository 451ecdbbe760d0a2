"""MLflow run tracking: params, per-step metrics, trajectory tables and traces, plots and artifacts."""

from torl_rllib.tracking.config import DEFAULT_PLOT_METRICS, TrackingConfig
from torl_rllib.tracking.params import flatten_params
from torl_rllib.tracking.tracker import MlflowTracker

__all__ = ["MlflowTracker", "TrackingConfig", "flatten_params", "DEFAULT_PLOT_METRICS"]
