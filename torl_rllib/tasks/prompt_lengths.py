"""Prompts too long for the run: found when the data loads (and by ``torl-rllib check``), with
their row ids, instead of as failed trajectories at every step that draws them."""

from __future__ import annotations

from typing import Sequence

from torl_rllib.tasks.templates import render_prompt

__all__ = ["overlong_prompts", "describe_overlong"]


def overlong_prompts(problems: Sequence, tokenizer, template: str, limit: int) -> list[tuple[str, int]]:
    """``(row id, prompt tokens)`` of every problem whose rendered prompt has more than ``limit``
    tokens."""
    texts = [render_prompt(template, p.problem, tokenizer) for p in problems]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return [(str(p.id), n) for p, n in zip(problems, lengths) if n > limit]


def describe_overlong(found: list[tuple[str, int]], limit: int, why: str, shown: int = 5) -> str:
    """One line: how many, the limit and why, and the first ids with their lengths."""
    ids = ", ".join(f"{row} ({n} tokens)" for row, n in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return f"{len(found)} prompt(s) longer than {limit} tokens ({why}): {ids}{more}"
