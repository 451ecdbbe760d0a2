"""Per-step metrics: validation into MLflow entities, and the in-memory history for plots."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any, Mapping

from mlflow.entities import Metric

from torl_rllib.tracking.names import sanitize_key

__all__ = ["to_metrics", "MetricHistory"]

logger = logging.getLogger(__name__)


def _as_finite_float(value: Any) -> float | None:
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)  # floats, ints, bools, numpy scalars, 0-d tensors
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_metrics(step: int, metrics: Mapping[str, Any], timestamp_ms: int) -> list[Metric]:
    """MLflow metrics for one step; non-numeric and non-finite values and unusable names are
    dropped with a debug log."""
    entities = {}
    for name, value in metrics.items():
        key, number = sanitize_key(name), _as_finite_float(value)
        if key is None or number is None:
            logger.debug("step %d: dropping metric %r = %r", step, name, value)
            continue
        entities[key] = Metric(key, number, timestamp_ms, int(step))
    return list(entities.values())


class MetricHistory:
    """Every (step, value) the tracker has seen, per metric key."""

    def __init__(self):
        self._points: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, metrics: list[Metric]) -> None:
        for metric in metrics:
            self._points[metric.key].append((metric.step, metric.value))

    def series(self, key: str) -> list[tuple[int, float]]:
        """The points of ``key`` in the order logged; empty when never logged."""
        return list(self._points.get(key, ()))
