"""The flat per-step metrics of one RLlib training result: what MLflow, ``metrics.jsonl``, the
progress bar and Tune's schedulers all read (under ``result["torl"]``)."""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["RESULT_KEY", "LEARNER_METRICS", "TIMERS", "step_metrics"]

# Where GRPO puts these metrics in its training result, so Tune sees them as ``torl/<name>``.
RESULT_KEY = "torl"
# Learner metrics under RLlib's names → the names we show.
LEARNER_METRICS = {
    "policy_loss": "policy_loss",
    "entropy": "entropy",
    "clip_fraction": "clip_fraction",
    "approx_kl": "approx_kl",
    "kl_to_ref": "kl_to_ref",
    "rollout_logprob_diff_mean": "rollout_logprob_diff_mean",
    "rollout_logprob_diff_max": "rollout_logprob_diff_max",
    "rollout_ratio_outside_band": "rollout_ratio_outside_band",
    "gradients_default_optimizer_global_norm": "grad_norm",
    "default_optimizer_learning_rate": "learning_rate",
}
TIMERS = ("rollout", "learner_update", "weight_sync", "step")
EVAL_PREFIX = "eval"  # held-out evaluation metrics: eval/<benchmark>/<metric>


def step_metrics(result: Mapping[str, Any], evaluation: bool = True) -> dict[str, float]:
    """The per-step metrics of one ``algo.train()`` result, flat, numeric and finite (a count
    that did not occur this step, e.g. ``grade/no_box``, is absent rather than NaN); with
    ``evaluation``, also the held-out evaluation's as ``eval/<benchmark>/<metric>``."""
    picked: dict[str, Any] = dict(result.get("env_runners") or {})
    learner = (result.get("learners") or {}).get("default_policy") or {}
    picked.update({name: learner.get(key) for key, name in LEARNER_METRICS.items()})
    timers = result.get("timers") or {}
    picked.update({f"time/{key}_s": timers.get(key) for key in TIMERS})
    held_out = (result.get("evaluation") or {}).get("env_runners") or {} if evaluation else {}
    for benchmark, metrics in held_out.items():
        if isinstance(metrics, Mapping):
            picked.update({f"{EVAL_PREFIX}/{benchmark}/{name}": value for name, value in metrics.items()})
    return {
        key: float(value) for key, value in picked.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
