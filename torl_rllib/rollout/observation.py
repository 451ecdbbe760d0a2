"""How a sandbox result is shown to the model (a pure function, the same for training and eval).

ToRL's formatting (the default, ``style="torl"``):
  * success: the program's stdout;
  * failure: only the last line of stderr (the exception line of the traceback);
  * nothing printed: a timeout-style message (ToRL shows a timeout when the result is empty);
  * 256+ characters: the first 128, ``...``, the last 128.

The model's own sampled tokens end with the stop string ```` ```output ````; the observation is
what follows it, so the text the model sees is exactly ToRL's
```` ```output\\n{result}\\n```\\n ````.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["ObservationStyle", "format_result", "format_observation", "OBSERVATION_STYLES"]

ObservationStyle = Literal["torl", "full"]
OBSERVATION_STYLES = ("torl", "full")
TRUNCATE_AT = 256
KEEP_EACH_SIDE = 128
EMPTY_OUTPUT_MESSAGE = "Timeout: the code produced no output"


class ExecutionLike(Protocol):
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def ok(self) -> bool: ...


def _truncate(text: str) -> str:
    if len(text) >= TRUNCATE_AT:
        return text[:KEEP_EACH_SIDE] + "..." + text[-KEEP_EACH_SIDE:]
    return text


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def format_result(result: ExecutionLike, style: ObservationStyle = "torl") -> str:
    """The text standing for one execution, before the output fence is put around it."""
    if style not in OBSERVATION_STYLES:
        raise ValueError(f"unknown observation style {style!r}; choose one of {OBSERVATION_STYLES}")
    if result.timed_out:
        text = "Timeout: the code ran past its time limit"
    elif result.ok:
        text = result.stdout.strip()
    else:
        text = result.stderr.strip() if style == "full" else _last_line(result.stderr)
        if not text:
            text = (result.stdout.strip() + "\nError").strip()
    if not text:
        text = EMPTY_OUTPUT_MESSAGE
    return _truncate(text) if style == "torl" else text


def format_observation(result: ExecutionLike, style: ObservationStyle = "torl") -> str:
    """What is appended after the model's ```` ```output ```` stop string."""
    return f"\n{format_result(result, style)}\n```\n"
