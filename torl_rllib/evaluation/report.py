"""What an evaluation writes: the console table shaped like ToRL's Table 3 and the per-sample
rows of the per-problem table."""

from __future__ import annotations

from typing import Mapping, Sequence

from torl_rllib.rollout.results import ProblemResult

__all__ = ["AVERAGE", "table3", "problem_rows"]

AVERAGE = "average"


def table3(label: str, accuracies: Mapping[str, float], metric: str = "accuracy") -> str:
    """One row per model, one column per benchmark and their unweighted average, in percent
    (ToRL's Table 3)."""
    columns = [*accuracies, "Avg"]
    values = [*accuracies.values()]
    cells = [f"{100 * v:.1f}" for v in values] + [f"{100 * sum(values) / len(values):.1f}" if values else "-"]
    widths = [max(len(c), len(v)) for c, v in zip(columns, cells)]
    first = max(len(label), len(metric))
    header = f"{metric:<{first}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    row = f"{label:<{first}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(cells, widths))
    return f"{header}\n{'-' * len(header)}\n{row}"


def problem_rows(benchmark: str, results: Sequence[ProblemResult]) -> list[dict]:
    """One row per sample: which problem, the gold and extracted answers, whether it is
    correct, how it used the tool, and the full response (tool outputs included)."""
    return [
        {"benchmark": benchmark, "problem_id": r.id, "sample": i, "gold": r.gold, "extracted": s.extracted,
         "correct": s.correct, "tool_calls": s.tool_calls, "failed_tool_calls": s.failed_tool_calls,
         "grade": s.grade_reason, "truncated": s.truncated, "error": s.error, "response": s.response}
        for r in results for i, s in enumerate(r.samples)
    ]
