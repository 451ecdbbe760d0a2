"""How one response used the tool: the per-response facts behind ToRL's emergent-behaviour
analysis (code ratio, executable code, ineffective code, error recovery, tool-grounded answers),
the same in training and evaluation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["ToolUse", "tool_use"]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ToolUse:
    """Tool use of one response."""

    used_code: bool  # at least one executed block
    calls: int
    failed_calls: int  # raised, timed out, or had no code block
    ineffective_calls: int  # ran, but printed nothing or not the final answer
    had_failure: bool  # some execution failed (error or timeout)
    recovered: bool  # a failed execution was followed by a successful one
    grounded: bool  # the final answer appears in what a tool printed


def _grounded(answer: str | None, observations: Sequence[str]) -> bool:
    """Whether ``answer`` (whitespace ignored) stands in an observation as a whole token, so
    ``12`` is not found in ``123``."""
    if not answer:
        return False
    needle = re.escape(_SPACE.sub("", answer))
    pattern = re.compile(rf"(?<![\w.]){needle}(?![\w])")
    return any(pattern.search(_SPACE.sub("", text)) for text in observations)


def tool_use(calls: Sequence, answer: str | None) -> ToolUse:
    """``calls``: the response's ``ToolCall``s in order; ``answer``: its extracted final answer."""
    executed = [c for c in calls if c.code is not None]
    outcomes = [bool(c.ok) for c in executed]
    first_failure = next((i for i, ok in enumerate(outcomes) if not ok), None)
    return ToolUse(
        used_code=bool(executed),
        calls=len(calls),
        failed_calls=outcomes.count(False),
        ineffective_calls=sum(c.ok and not (c.printed and _grounded(answer, [c.observation])) for c in executed),
        had_failure=first_failure is not None,
        recovered=first_failure is not None and any(outcomes[first_failure + 1:]),
        grounded=_grounded(answer, [c.observation for c in executed]),
    )
