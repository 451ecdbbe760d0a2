"""Outcome metrics of an evaluation: avg@k, the unbiased pass@k, maj@k."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

from torl_rllib.evaluation.protocol import EvalProtocol
from torl_rllib.rollout.results import ProblemResult

__all__ = ["pass_at_k", "majority_index", "outcome_metrics"]

_SPACE = re.compile(r"\s+")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k of the n samples is correct, given c correct ones:
    ``1 - C(n-c, k) / C(n, k)``, the unbiased estimator of Chen et al. 2021 (Codex, eq. 1)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _vote_key(answer: str) -> str:
    return _SPACE.sub("", answer).replace("\\left", "").replace("\\right", "").rstrip(".")


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of a sample carrying the most frequent extracted answer (answers equal up to
    whitespace, ``\\left``/``\\right`` and a final period vote together; a tie goes to the
    answer seen first; samples without an answer do not vote). None when no sample answered."""
    keys = [_vote_key(a) if a else None for a in answers]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(i for i, key in enumerate(keys) if key is not None and votes[key] == top)


def outcome_metrics(results: Sequence[ProblemResult], protocol: EvalProtocol) -> dict[str, float]:
    """``accuracy`` (avg@k: mean over problems of the fraction of correct samples; greedy
    accuracy when k = 1), ``pass@k'`` and ``maj@k`` (k > 1), and the counts behind them. A
    sample whose rollout failed counts as incorrect."""
    if not results:
        raise ValueError("no results to score")
    n = len(results)
    out = {
        "accuracy": sum(r.num_correct / len(r.samples) for r in results) / n,
        "problems": float(n),
        "samples": float(sum(len(r.samples) for r in results)),
        "failed_samples": float(sum(s.error is not None for r in results for s in r.samples)),
    }
    if protocol.k > 1:
        for k in protocol.pass_ks():
            out[f"pass@{k}"] = sum(pass_at_k(len(r.samples), r.num_correct, k) for r in results) / n
        majority = [majority_index([s.extracted for s in r.samples]) for r in results]
        out[f"maj@{protocol.k}"] = sum(
            i is not None and r.samples[i].correct for r, i in zip(results, majority)) / n
    return out
