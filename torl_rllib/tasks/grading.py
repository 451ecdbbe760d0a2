"""Grade a response against a gold answer: last box, then math-verify, bounded in time.

``grade`` is safe to call from any thread or from asyncio code (no signals) and never raises on
bad input. Cheap decisions are made in the calling process: no box, an answer too large or too
deeply nested to be real, and integer-vs-integer answers (most RL rewards). Everything else goes
to a persistent verifier process (:mod:`.verifier_pool`) that is killed if it misses the deadline.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Literal

from torl_rllib.tasks.extraction import extract_boxed
from torl_rllib.tasks.verifier_pool import VerifierPool

__all__ = ["DEFAULT_TIMEOUT_S", "GradeReason", "GradeResult", "grade", "prepare", "resolve"]

DEFAULT_TIMEOUT_S = 5.0
# Real answers are short and shallow; longer or deeper ones are degenerate outputs, rejected
# without parsing (a collapsed policy can emit thousands of them in one batch).
MAX_ANSWER_CHARS = 1000
MAX_NESTING = 16

GradeReason = Literal["no_box", "parse_error", "timeout", "mismatch", "match"]
_INTEGER = re.compile(r"-?\d{1,50}")
_OPENERS, _CLOSERS = frozenset("{[("), frozenset("}])")


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one response.

    ``extracted`` is the content of the response's last box (None without one); ``parsed_gold``
    is the gold answer as the grader understood it (None if it could not be parsed or the
    comparison timed out); ``reason`` says how the verdict was reached.
    """

    correct: bool
    extracted: str | None
    parsed_gold: str | None
    reason: GradeReason


def prepare(response, gold) -> GradeResult | tuple[str, str]:
    """Decide ``(response, gold)`` locally if possible, else return the ``(answer, gold)`` to verify."""
    answer = extract_boxed(response)
    if answer is None:
        return GradeResult(False, None, None, "no_box")
    gold_text = _gold_text(gold)
    if gold_text is None or _degenerate(gold_text):
        return GradeResult(False, answer, None, "parse_error")
    if _degenerate(answer):
        return GradeResult(False, answer, None, "parse_error")
    if _INTEGER.fullmatch(answer) and _INTEGER.fullmatch(gold_text):
        correct = int(answer) == int(gold_text)
        return GradeResult(correct, answer, str(int(gold_text)), "match" if correct else "mismatch")
    return answer, gold_text


def resolve(answer: str, outcome: tuple[str, str | None]) -> GradeResult:
    """Turn a verifier outcome ``(verdict, parsed_gold)`` for ``answer`` into a GradeResult."""
    verdict, parsed_gold = outcome
    return GradeResult(verdict == "match", answer, parsed_gold, verdict)


def grade(response: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> GradeResult:
    """Grade ``response`` (a whole model output or just ``\\boxed{answer}``) against ``gold``.

    ``gold`` may be a bare answer, a number, or a solution whose last box holds the answer.
    The comparison takes at most about ``timeout_s`` seconds (reason ``"timeout"`` beyond).
    """
    prepared = prepare(response, gold)
    if isinstance(prepared, GradeResult):
        return prepared
    return resolve(prepared[0], _default_pool().run([prepared], timeout_s)[0])


def _gold_text(gold) -> str | None:
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        return None
    text = str(gold).strip()
    if "box" in text:
        text = extract_boxed(text) or text
    return text or None


def _degenerate(text: str) -> bool:
    if len(text) > MAX_ANSWER_CHARS:
        return True
    depth = 0
    for char in text:
        if char in _OPENERS:
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif char in _CLOSERS:
            depth -= 1
    return False


_pool: VerifierPool | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _default_pool() -> VerifierPool:
    """The process-wide single-worker pool behind :func:`grade` (a forked child starts its own)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = VerifierPool(num_workers=1), os.getpid()
        return _pool
