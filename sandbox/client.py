"""`SandboxClient`: await snippets from an asyncio loop; concurrent calls share one actor call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sandbox.result import ExecutionResult

log = logging.getLogger(__name__)


class SandboxClient:
    """Async front of a `SandboxPool` actor handle, for one event loop.

    `await client.execute(code)` calls made in the same loop iteration (or within `linger_s`)
    are sent together as one `execute_batch` call of up to `max_batch` snippets: Ray costs
    about 1 ms per call. Never raises for a snippet: if the actor is unreachable, each
    snippet gets a failed result with `error` set.
    """

    def __init__(self, handle: Any, *, max_batch: int = 256, linger_s: float = 0.0) -> None:
        if max_batch < 1 or linger_s < 0:
            raise ValueError(f"max_batch must be >= 1 and linger_s >= 0, got {max_batch}, {linger_s}")
        self._handle = handle
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task] = set()

    async def execute(self, code: str, session: str | None = None) -> ExecutionResult:
        """Run one snippet (in `session` if given: those calls are not batched)."""
        if session is not None:
            return (await self._guarded(self._handle.execute.remote(code, session), 1))[0]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((code, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._linger_s:
                loop.call_later(self._linger_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await future

    async def execute_batch(self, codes: list[str]) -> list[ExecutionResult]:
        return list(await asyncio.gather(*(self.execute(code) for code in codes)))

    async def open_session(self) -> str:
        return await self._handle.open_session.remote()

    async def close_session(self, session: str) -> None:
        await self._handle.close_session.remote(session)

    async def metrics(self) -> dict[str, Any]:
        return await self._handle.metrics.remote()

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), self._max_batch):
            task = asyncio.ensure_future(self._send(pending[i:i + self._max_batch]))
            self._inflight.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        results = await self._guarded(self._handle.execute_batch.remote([code for code, _ in batch]), len(batch))
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    async def _guarded(self, ref: Any, count: int) -> list[ExecutionResult]:
        try:
            results = await ref
        except Exception as exc:  # actor died or unreachable: fail these snippets, not the caller
            log.warning("sandbox pool call failed: %r", exc)
            return [ExecutionResult.failure(f"sandbox pool unavailable: {exc!r}")] * count
        return results if isinstance(results, list) else [results]
