"""Per-step rollout metrics, combined exactly from every EnvRunner's sums."""

from __future__ import annotations

import re
from collections import Counter

# Metric names (what MLflow, the progress bar and the plots show).
REWARD_MEAN = "reward_mean"
ACCURACY = "accuracy"
CODE_RATIO = "code_ratio"  # responses with >= 1 executed block
EXECUTABLE_CODE_RATE = "executable_code_rate"  # calls that ran without error or timeout
INEFFECTIVE_CODE_RATE = "ineffective_code_rate"  # of the calls that ran: printed nothing, or not the answer
TOOL_CALLS_PER_RESPONSE = "tool_calls_per_response"
MODEL_TOKENS = "response_length/model_tokens"
TOTAL_TOKENS = "response_length/total_tokens"
TRUNCATION_RATE = "truncation_rate"
ZERO_VARIANCE_GROUPS = "zero_variance_group_fraction"
FAILED_FRACTION = "failed_trajectory_fraction"
FAILED = "failed_trajectories"
DROPPED_GROUPS = "dropped_groups"  # groups left out of the update because one of their trajectories failed
VERSION_LAG = "weights_version_lag"
TOKENS_PER_S = "tokens_per_s"
ROLLOUT_S = "time/rollout_wall_s"
TOOL_WAIT_S = "time/tool_wait_s_per_call"
GRADE_S = "time/grade_s"  # grading work, overlapped with generation (graded as each trajectory ends)
# Tool-use analysis (ToRL's emergent behaviours); absent in a step where the condition never
# occurred (e.g. no execution failed), rather than a misleading 0.
ACCURACY_WITH_CODE = "accuracy/with_code"
ACCURACY_WITHOUT_CODE = "accuracy/without_code"
ERROR_RECOVERY_RATE = "error_recovery_rate"  # of responses with a failed execution, a later one succeeded
TOOL_GROUNDED_ANSWER_RATE = "tool_grounded_answer_rate"  # of answers given with code, printed by a tool

# Sums an EnvRunner keeps per value of the split column (``data.split_metrics_by``):
# ``by/<value>/<sum>``; every metric of ``response_metrics`` is then reported as ``<metric>/<value>``.
SPLIT_PREFIX = "by/"
_UNSAFE = re.compile(r"[^\w\-. ]")


def split_key(value) -> str:
    """The metric-name suffix of one value of the split column (MLflow's allowed characters)."""
    return _UNSAFE.sub("_", str(value)).strip() or "_"


def _ratio(a: float, b: float) -> float:
    return float(a) / b if b else 0.0


def _conditional(a: float, b: float) -> float:
    """A rate over the responses where a condition held; NaN (then dropped) when none did."""
    return float(a) / b if b else float("nan")


def response_metrics(total: Counter) -> dict[str, float]:
    """The metrics of a set of graded responses, from their sums (one step, or one kind of it)."""
    graded = total["graded"]
    return {
        REWARD_MEAN: _ratio(total["reward_sum"], graded),
        ACCURACY: _ratio(total["correct"], graded),
        CODE_RATIO: _ratio(total["used_code"], graded),
        EXECUTABLE_CODE_RATE: _conditional(total["tool_ok"], total["tool_calls"]),
        INEFFECTIVE_CODE_RATE: _conditional(total["tool_ineffective"], total["tool_ok"]),
        TOOL_CALLS_PER_RESPONSE: _ratio(total["tool_calls"], graded),
        MODEL_TOKENS: _ratio(total["model_tokens"], graded),
        TOTAL_TOKENS: _ratio(total["total_tokens"], graded),
        TRUNCATION_RATE: _ratio(total["truncated"], graded),
        ACCURACY_WITH_CODE: _conditional(total["correct_with_code"], total["used_code"]),
        ACCURACY_WITHOUT_CODE: _conditional(total["correct"] - total["correct_with_code"],
                                            graded - total["used_code"]),
        ERROR_RECOVERY_RATE: _conditional(total["recovered_from_tool_failure"], total["had_tool_failure"]),
        TOOL_GROUNDED_ANSWER_RATE: _conditional(total["tool_grounded_answer"], total["answered_with_code"]),
    }


def summarize_rollouts(rollouts: list[dict], learner_version: int) -> dict[str, float]:
    """``rollouts``: each EnvRunner's ``{"stats": sums, "samples": rows}`` for this step."""
    total = Counter()
    for r in rollouts:
        total.update({k: v for k, v in r["stats"].items() if k != "weights_version"})
    versions = [r["stats"].get("weights_version", learner_version) for r in rollouts]
    wall = max((r["stats"].get("rollout_s", 0.0) for r in rollouts), default=0.0)
    out = response_metrics(total)
    out.update({
        ZERO_VARIANCE_GROUPS: _ratio(total["zero_variance_groups"], total["groups"]),
        FAILED_FRACTION: _ratio(total["failed"], total["trajectories"]),
        VERSION_LAG: float(learner_version - min(versions, default=learner_version)),
        TOKENS_PER_S: _ratio(total["model_tokens"], wall),
        ROLLOUT_S: wall,
        TOOL_WAIT_S: _ratio(total["tool_s"], total["tool_calls"]),
        GRADE_S: max((r["stats"].get("grade_s", 0.0) for r in rollouts), default=0.0),
        "trajectories": float(total["trajectories"]),
        FAILED: float(total["failed"]),
        DROPPED_GROUPS: float(total["dropped_groups"]),
        "tool_timeouts": float(total["tool_timeouts"]),
        "dropped_by_dynamic_sampling": float(total["dropped_by_dynamic_sampling"]),
    })
    for key, value in total.items():
        if key.startswith(("failed/", "grade/", "retries/")):
            out[key] = float(value)
    out.update(split_metrics(total))
    return out


def split_metrics(total: Counter) -> dict[str, float]:
    """``<metric>/<value>`` for every ``response_metrics`` metric and every value of the split
    column seen in ``total`` (the step's summed EnvRunner statistics)."""
    by_value: dict[str, Counter] = {}
    for key, value in total.items():
        if key.startswith(SPLIT_PREFIX):
            split_value, _, name = key[len(SPLIT_PREFIX):].rpartition("/")
            by_value.setdefault(split_value, Counter())[name] = value
    return {f"{name}/{split_value}": metric
            for split_value, sums in sorted(by_value.items())
            for name, metric in response_metrics(sums).items()}


def summarize_failures(rollouts: list[dict]) -> list[dict]:
    """This step's failures over every EnvRunner: one row per kind with its count and the first
    example message (the exception chain down to the root), most frequent first."""
    counts, examples = Counter(), {}
    for r in rollouts:
        counts.update({k.removeprefix("failed/"): v for k, v in r["stats"].items() if k.startswith("failed/")})
        for kind, example in (r.get("failures") or {}).items():
            examples.setdefault(kind, example)
    return [{"kind": kind, "count": int(count), "example": examples.get(kind, "")}
            for kind, count in counts.most_common()]
