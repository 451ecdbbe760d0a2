"""The "did you mean" hint of every unknown-name error (recipe keys, sweep keys, benchmarks)."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name, valid: Iterable[str], list_valid: bool = True, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name; else `` (valid: a, b, ...)`` when
    ``list_valid``, or nothing."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=cutoff)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid: {', '.join(sorted(valid))})" if list_valid else ""
