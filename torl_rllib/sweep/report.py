"""What a sweep shows: one console line per trial result, the final table of every trial, the
best configuration as a ready ``torl-rllib train`` command."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from torl_rllib.algorithms.grpo.config_keys import config_value
from torl_rllib.rollout.metrics import FAILED_FRACTION
from torl_rllib.tracking.step_metrics import RESULT_KEY

__all__ = ["TrialConsole", "TrialRow", "trial_rows", "format_table", "rank", "RANK_WINDOW"]

RANK_WINDOW = 5  # trials are ranked by the mean of their last 5 steps (Tune's "last-5-avg")
STEP_S = "time/step_s"


def searched_values(config: dict, keys) -> dict[str, Any]:
    """The value each searched recipe key took in a trial's config dict."""
    return {key: config_value(config, key) for key in keys}


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class TrialConsole(tune.Callback):
    """Prints one line per trial result and per trial end (Tune's own reporter is off)."""

    def __init__(self, metric: str, searched: list[str], steps: int):
        self.metric, self.searched, self.steps = metric, list(searched), steps

    def _label(self, trial) -> str:
        values = searched_values(trial.config, self.searched)
        return f"{trial.trial_id} " + " ".join(f"{_short(k)}={_fmt(v)}" for k, v in values.items())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = result.get(RESULT_KEY) or {}
        # The failed fraction always stands beside accuracy: an accuracy over a few surviving
        # trajectories is not the policy's.
        shown = dict.fromkeys((self.metric, "accuracy", FAILED_FRACTION, "code_ratio"))
        parts = [f"{k} {metrics[k]:.3f}" for k in shown if isinstance(metrics.get(k), float)]
        step_s = metrics.get("time/step_s")
        print(f"[{self._label(trial)}] step {result.get('training_iteration')}/{self.steps}  "
              + "  ".join(parts) + (f"  {step_s:.1f} s/step" if step_s else ""), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        steps = (trial.last_result or {}).get("training_iteration", 0)
        how = "finished" if steps >= self.steps else "stopped early by the scheduler"
        print(f"[{self._label(trial)}] {how} after {steps} steps", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"[{self._label(trial)}] failed ({_last_error_line(trial)}); retrying from its last "
              "checkpoint", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[{self._label(trial)}] failed for good: {_last_error_line(trial)}", file=sys.stderr, flush=True)


def _last_error_line(trial) -> str:
    """The exception line of a trial's latest error (Tune appends each failure's traceback to
    the trial's error.txt, written locally before it reaches the trial's storage)."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


@dataclass
class TrialRow:
    """One trial's outcome."""

    trial_id: str
    values: dict[str, Any]
    status: str  # finished | stopped early | failed | unfinished
    steps: int
    final: float | None
    ranked: float | None  # mean of the last RANK_WINDOW steps
    best: float | None
    checkpoint: str | None
    mlflow_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # final step's metrics
    error: str | None = None  # a failed trial's exception line
    step_s: float | None = None  # mean seconds per training step
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> (step, value)

    def as_dict(self, metric: str) -> dict[str, Any]:
        return {"trial": self.trial_id, **self.values, "status": self.status, "steps": self.steps,
                f"final_{metric}": self.final, f"last{RANK_WINDOW}_mean_{metric}": self.ranked,
                f"best_{metric}": self.best, "checkpoint": self.checkpoint,
                "mlflow_run_id": self.mlflow_run_id, "error": self.error, "seconds_per_step": self.step_s}


def _series(frame, name: str) -> list[tuple[int, float]]:
    """``(training_iteration, value)`` of one metric in a trial's result frame, finite values only."""
    column = f"{RESULT_KEY}/{name}"
    if frame is None or column not in frame:
        return []
    return [(int(step), float(v)) for step, v in zip(frame["training_iteration"], frame[column])
            if isinstance(v, (int, float)) and math.isfinite(v)]


def trial_rows(analysis, metric: str, searched: list[str], steps: int, curves=()) -> list[TrialRow]:
    """Every trial of a finished (or interrupted) Tune experiment, best first, with the series
    of each metric named in ``curves``."""
    rows = []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id)
        series = [v for _, v in _series(frame, metric)]
        step_times = [v for _, v in _series(frame, STEP_S)]
        done = (trial.last_result or {}).get("training_iteration", 0)
        status = {"TERMINATED": "finished" if done >= steps else "stopped early",
                  "ERROR": "failed"}.get(trial.status, "unfinished")
        rows.append(TrialRow(
            trial_id=trial.trial_id, values=searched_values(trial.config, searched), status=status,
            steps=done, final=series[-1] if series else None,
            ranked=statistics.fmean(series[-RANK_WINDOW:]) if series else None,
            best=max(series) if series else None,
            checkpoint=trial.checkpoint.path if trial.checkpoint else None,
            metrics=dict((trial.last_result or {}).get(RESULT_KEY) or {}),
            error=_last_error_line(trial) if status == "failed" else None,
            step_s=statistics.fmean(step_times) if step_times else None,
            curves={name: _series(frame, name) for name in curves},
        ))
    return rows


def rank(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by the last-steps mean; trials without a value last."""
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda r: (r.ranked is None, sign * (r.ranked or 0.0)))


def format_table(rows: list[TrialRow], metric: str) -> str:
    """A fixed-width table (also valid Markdown) of the ranked trials."""
    if not rows:
        return "(no trials)"
    headers = ["trial", *(_short(k) for k in rows[0].values), "status", "steps",
               f"{metric} final", f"last-{RANK_WINDOW} mean", "best", "failed (last step)"]
    body = [[r.trial_id, *(_fmt(v) for v in r.values.values()), r.status, str(r.steps),
             *("-" if v is None else f"{v:.3f}" for v in (r.final, r.ranked, r.best, r.metrics.get(FAILED_FRACTION)))]
            for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
