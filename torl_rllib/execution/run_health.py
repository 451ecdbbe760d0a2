"""Run health: a step is failing when too many of its trajectories failed; ``failure_patience``
failing steps in a row end the run (``RunUnhealthy``, naming the dominant cause)."""

from __future__ import annotations

from typing import Any

from torl_rllib.execution.faults import RunUnhealthy
from torl_rllib.rollout.metrics import FAILED_FRACTION

__all__ = ["FailingStreak"]


class FailingStreak:
    """The current streak of failing steps. A step fails when its failed fraction is at least
    ``max_failed_fraction`` or nothing is trainable for a reason other than dynamic sampling."""

    def __init__(self, max_failed_fraction: float, failure_patience: int):
        self.max_failed_fraction = max_failed_fraction
        self.failure_patience = failure_patience
        self._steps: list[tuple[int, list[dict]]] = []  # (step, its failures) of the streak
        self.data_position: Any = None  # the data position before the streak's first step

    def record(self, step: int, summary: dict, trainable: bool, failures: list[dict],
               data_position: Any) -> tuple[int, RunUnhealthy | None]:
        """(steps in a row that failed, this one included: 0 when it is healthy; the
        ``RunUnhealthy`` that ends the run once ``failure_patience`` did, else None). On the
        latter, ``self.data_position`` is where the streak began (a resume redoes its problems;
        the failing steps made no update) and the streak starts over."""
        starved = not trainable and summary["dropped_by_dynamic_sampling"] < summary["trajectories"]
        if not (starved or summary[FAILED_FRACTION] >= self.max_failed_fraction):
            self._steps, self.data_position = [], None
            return 0, None
        if not self._steps:
            self.data_position = data_position
        self._steps.append((step, failures))
        streak = len(self._steps)
        if streak < self.failure_patience:
            return streak, None
        unhealthy = RunUnhealthy(
            f"steps {self._steps[0][0]}-{self._steps[-1][0]} failed in a row (at least "
            f"{self.max_failed_fraction:.0%} of the trajectories failed, or none was trainable); "
            f"{self._dominant_cause()}")
        self._steps = []
        return streak, unhealthy

    def _dominant_cause(self) -> str:
        counts, examples = {}, {}
        for _, failures in self._steps:
            for f in failures:
                counts[f["kind"]] = counts.get(f["kind"], 0) + f["count"]
                examples.setdefault(f["kind"], f["example"])
        if not counts:
            return "no trainable trajectory"
        kind = max(counts, key=counts.get)
        return f"dominant cause: {kind} ({counts[kind]} failed trajectories), e.g. {examples[kind]}"
