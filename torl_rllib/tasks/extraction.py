"""Extract the final answer of a response: the content of its last box.

The reward pays for boxed answers only, so there is deliberately no "last number in the text"
fallback. Recognised: ``\\boxed{...}``, ``\\fbox{...}`` and ``\\framebox{...}`` with nested braces
(escaped braces ``\\{ \\}`` do not count), and ``\\boxed 5`` without braces. The scan is a single
linear pass, so adversarial inputs (thousands of unclosed boxes or nested braces) stay cheap.
"""

from __future__ import annotations

import re

__all__ = ["extract_boxed"]

_TOKENS = re.compile(
    r"(?P<box>\\(?:boxed|fbox|framebox)(?![A-Za-z])\s*)|(?P<escaped>\\.)|(?P<open>\{)|(?P<close>\})",
    re.DOTALL,
)
# ``\boxed 5``: the run of non-space characters after the command, up to a ``$``.
_BRACELESS = re.compile(r"[^\s${}][^\s$]*")


def extract_boxed(text: str) -> str | None:
    """Return the stripped content of the last complete, non-empty box in ``text``, or None.

    "Last" is by opening position, so a box inside a box wins: ``\\boxed{\\boxed{5}}`` yields ``5``.
    A box that is never closed (a response cut off inside it) does not count. Non-string input
    yields None.
    """
    if not isinstance(text, str):
        return None
    last: str | None = None
    last_start = -1
    open_braces: list[int] = []  # per open "{": where a box's content starts, or -1 for a plain group
    box_pending = False  # the previous token was a box command followed by "{"
    for token in _TOKENS.finditer(text):
        kind = token.lastgroup
        if kind == "open":
            open_braces.append(token.end() if box_pending else -1)
        elif kind == "close" and open_braces:
            start = open_braces.pop()
            content = text[start : token.start()].strip() if start > last_start else ""
            if content:
                last, last_start = content, start
        elif kind == "box" and not text.startswith("{", token.end()):
            braceless = _BRACELESS.match(text, token.end())
            content = braceless.group().rstrip(".,;") if braceless else ""
            if content:
                last, last_start = content, token.end()
        box_pending = kind == "box"
    return last
