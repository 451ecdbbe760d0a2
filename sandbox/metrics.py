"""`PoolMetrics`: thread-safe counters and a latency window for a pool."""

from __future__ import annotations

import collections
import threading

from sandbox.result import ExecutionResult


class PoolMetrics:
    """Counts executions, timeouts, memory kills and sandbox errors; keeps recent latencies."""

    def __init__(self, window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.executions = 0
        self.timeouts = 0
        self.memory_kills = 0
        self.errors = 0
        self.truncated = 0
        self.batches = 0

    def record(self, result: ExecutionResult) -> None:
        with self._lock:
            self.executions += 1
            self.timeouts += result.timed_out
            self.memory_kills += result.memory_exceeded
            self.errors += result.error is not None
            self.truncated += result.stdout_truncated or result.stderr_truncated
            if result.error is None:
                self._latencies_ms.append(result.duration_s * 1000.0)

    def record_batch(self) -> None:
        with self._lock:
            self.batches += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            ordered = sorted(self._latencies_ms)
            return {
                "executions": self.executions,
                "timeouts": self.timeouts,
                "memory_kills": self.memory_kills,
                "errors": self.errors,
                "truncated_outputs": self.truncated,
                "batches": self.batches,
                "latency_p50_ms": percentile(ordered, 50),
                "latency_p99_ms": percentile(ordered, 99),
            }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
