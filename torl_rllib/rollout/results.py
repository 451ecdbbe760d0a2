"""Per-problem evaluation results, as ``ToolEnvRunner.evaluate_problems`` returns them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SampleResult", "ProblemResult"]


@dataclass
class SampleResult:
    """One response to a problem, graded, with how it used the tool."""

    response: str
    extracted: str | None
    correct: bool
    grade_reason: str
    tool_calls: int = 0
    failed_tool_calls: int = 0
    used_code: bool = False
    recovered: bool = False  # a failed execution followed by a successful one
    grounded: bool = False  # the final answer appears in a tool output
    model_tokens: int = 0
    total_tokens: int = 0
    truncated: bool = False
    error: str | None = None  # the rollout failed (counted as incorrect)


@dataclass
class ProblemResult:
    """A problem's gold answer and its k graded responses."""

    id: str
    source: str
    problem: str
    gold: str
    samples: list[SampleResult] = field(default_factory=list)

    @property
    def num_correct(self) -> int:
        return sum(s.correct for s in self.samples)

    def to_dict(self) -> dict:
        return asdict(self)
