"""Why a trajectory failed: its kind (where it failed) and the exception chain down to the root.

A failure kind names the piece of infrastructure that failed, so that metrics count by it and
the retry policy can tell infrastructure from bad input:

* ``engine_failed``, ``sandbox_failed``, ``grading_failed``: the engine, the interpreter pool or
  the grader failed. These are retried for the same trajectory at the same point
  (``ToolLoopConfig.infra_retries``) and never reach the gradient: a trajectory that still fails
  takes its whole group out of the update.
* ``prompt_too_long``: bad input, never retried.

The message keeps every link of the chain (``__cause__``, else ``__context__``), each as
``Type: message`` kept short, outermost first: ``EngineGenerateError <- OverflowError: can't
serialize ints < -2**63 or > 2**64 - 1``. An exception whose own message is empty (vLLM's
``EngineGenerateError``) is still named by its type.
"""

from __future__ import annotations

__all__ = ["ENGINE_FAILED", "SANDBOX_FAILED", "GRADING_FAILED", "PROMPT_TOO_LONG", "INFRASTRUCTURE",
           "exception_chain", "describe_failure", "failure_kind"]

ENGINE_FAILED = "engine_failed"
SANDBOX_FAILED = "sandbox_failed"
GRADING_FAILED = "grading_failed"
PROMPT_TOO_LONG = "prompt_too_long"
INFRASTRUCTURE = (ENGINE_FAILED, SANDBOX_FAILED, GRADING_FAILED)  # retried; a snippet's own errors are not failures

MAX_LINKS = 6
MAX_LINK_CHARS = 240
LINK = " <- "


def _link(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > MAX_LINK_CHARS:
        text = text[: MAX_LINK_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def exception_chain(exc: BaseException) -> list[str]:
    """``exc`` and what caused it (``__cause__``, else an unsuppressed ``__context__``), outermost
    first, one short ``Type: message`` per link; the root is always kept when links are dropped."""
    links, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        links.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if len(links) > MAX_LINKS:
        links = links[: MAX_LINKS - 1] + links[-1:]
    return [_link(e) for e in links]


def describe_failure(kind: str, exc: BaseException | str) -> str:
    """``kind: chain`` (or ``kind: text``): what a failed trajectory records as its error."""
    detail = exc if isinstance(exc, str) else LINK.join(exception_chain(exc))
    return f"{kind}: {detail}"


def failure_kind(error: str) -> str:
    """The kind of a recorded error (its text before the first colon)."""
    return error.split(":", 1)[0]
