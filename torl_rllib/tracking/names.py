"""Making names and values fit MLflow's rules for keys and value lengths."""

from __future__ import annotations

import re

__all__ = ["MAX_KEY_LENGTH", "sanitize_key", "truncate"]

MAX_KEY_LENGTH = 250  # MLflow's limit on metric, param and tag keys
_BAD_CHARS = re.compile(r"[^\w./\-]")
_TRUNCATED = "...[truncated]"


def sanitize_key(name: str) -> str | None:
    """MLflow-safe form of ``name``: characters other than letters, digits, ``_ . - /`` become
    ``_``; empty, ``.`` and ``..`` path segments are dropped (MLflow rejects non-normalized
    paths); the result is cut to MLflow's key length. None when nothing is left."""
    cleaned = _BAD_CHARS.sub("_", str(name).strip())[:MAX_KEY_LENGTH]
    key = "/".join(part for part in cleaned.split("/") if part not in ("", ".", ".."))
    return key or None


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked as truncated when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED
