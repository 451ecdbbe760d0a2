"""Grade a whole rollout batch on all available cores."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from torl_rllib.tasks.grading import DEFAULT_TIMEOUT_S, GradeResult, prepare, resolve
from torl_rllib.tasks.verifier_pool import VerifierPool
from torl_rllib.utils.cluster import available_cpus

__all__ = ["BatchGrader", "BatchStats"]


@dataclass(frozen=True)
class BatchStats:
    """Throughput of one :meth:`BatchGrader.grade_batch` call."""

    num_responses: int
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def responses_per_s(self) -> float:
        return self.num_responses / self.seconds if self.seconds > 0 else float("inf")


class BatchGrader:
    """Grades many responses in parallel with ``num_workers`` persistent verifier processes.

    Same results as :func:`~torl_rllib.tasks.grade` on each pair, in order. Reusable across
    batches; call :meth:`close` (or use it as a context manager) to stop the processes.
    ``last_stats`` holds the throughput of the latest batch.
    """

    def __init__(self, num_workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1 or None (all available cores), got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers or available_cpus()
        self.timeout_s = timeout_s
        self.last_stats: BatchStats | None = None
        self._pool = VerifierPool(self.num_workers)

    def grade_batch(self, responses: Sequence[str], golds: Sequence[str]) -> list[GradeResult]:
        """Grade ``responses[i]`` against ``golds[i]`` for every i."""
        if len(responses) != len(golds):
            raise ValueError(f"got {len(responses)} responses but {len(golds)} gold answers")
        start = time.perf_counter()
        results: list = [prepare(response, gold) for response, gold in zip(responses, golds)]
        todo = [i for i, result in enumerate(results) if not isinstance(result, GradeResult)]
        outcomes = self._pool.run([results[i] for i in todo], self.timeout_s)
        for i, outcome in zip(todo, outcomes):
            results[i] = resolve(results[i][0], outcome)
        self.last_stats = BatchStats(
            num_responses=len(results),
            seconds=time.perf_counter() - start,
            reasons=dict(Counter(result.reason for result in results)),
        )
        return results

    def close(self) -> None:
        """Stop the verifier processes. Idempotent."""
        self._pool.close()

    def __enter__(self) -> BatchGrader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
