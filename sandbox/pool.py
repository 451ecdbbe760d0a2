"""`WarmJailPool`: K warm jails served by K threads in this process (no Ray)."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from sandbox.config import SandboxConfig
from sandbox.jail import WarmJail
from sandbox.launch import make_launcher
from sandbox.metrics import PoolMetrics
from sandbox.result import ExecutionResult

log = logging.getLogger(__name__)

Task = tuple[Callable[[WarmJail], Any], Future]


@dataclass
class _Session:
    jail: int
    last_used: float


class WarmJailPool:
    """K warm jails; batched, ordered execution that never raises for a snippet's sake.

    Snippets go through one bounded FIFO queue (a full queue blocks the submitter:
    backpressure); each jail's thread takes the next snippet as soon as its jail is free.
    Session jails (`session_jails > 0`) each have their own queue, so every turn of a session
    reaches the jail holding it. Start-up fails with `SandboxStartError` naming cause and fix.
    """

    def __init__(self, config: SandboxConfig, *, cpus: float | None = None) -> None:
        self.config = config
        self._launcher = make_launcher(config)
        count = config.resolved_jails(cpus)
        self._jails = [WarmJail(config, self._launcher, f"jail-{i}") for i in range(count)]
        self._session_jails = [WarmJail(config, self._launcher, f"session-jail-{i}") for i in range(config.session_jails)]
        everything = self._jails + self._session_jails
        start = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=len(everything)) as starter:
                list(starter.map(WarmJail.start, everything))
        except BaseException:
            for jail in everything:
                jail.kill()
            raise
        log.info("started %d warm jails (%s) in %.2fs", len(everything), config.backend, time.monotonic() - start)
        self._queue: queue.Queue[Task | None] = queue.Queue(maxsize=config.max_queued)
        self._session_queues: list[queue.Queue[Task | None]] = [queue.Queue() for _ in self._session_jails]
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False
        self._metrics = PoolMetrics()
        pairs = [(j, self._queue) for j in self._jails] + list(zip(self._session_jails, self._session_queues))
        self._workers = [
            threading.Thread(target=self._serve, args=pair, name=pair[0].name, daemon=True) for pair in pairs
        ]
        for worker in self._workers:
            worker.start()

    # stateless snippets --------------------------------------------------------------------

    def submit(self, code: str) -> Future:
        """Queue one snippet; the future resolves to its ExecutionResult."""
        return self._submit(self._queue, lambda jail: self._record(jail.execute(code)))

    def execute(self, code: str, session: str | None = None) -> ExecutionResult:
        """Run one snippet (in `session` if given) and wait for its result."""
        if session is None:
            return _outcome(self.submit(code))
        with self._lock:
            state = self._sessions.get(session)
            if state is not None:
                state.last_used = time.monotonic()
        if state is None:
            return ExecutionResult.failure(f"unknown, closed or expired session {session}")
        return _outcome(self._submit(
            self._session_queues[state.jail], lambda jail: self._record(jail.run_in_session(session, code))
        ))

    def execute_batch(self, codes: list[str]) -> list[ExecutionResult]:
        """Run snippets on all jails at once; results come back in input order."""
        self._metrics.record_batch()
        futures = [self.submit(code) for code in codes]
        return [_outcome(f) for f in futures]

    # sessions ----------------------------------------------------------------------------

    def open_session(self) -> str:
        """Start a persistent interpreter; returns its id. RuntimeError when sessions are off or full."""
        if not self._session_jails:
            raise RuntimeError("sessions are off: set SandboxConfig.session_jails > 0")
        self._expire_sessions()
        with self._lock:
            counts = [0] * len(self._session_jails)
            for state in self._sessions.values():
                counts[state.jail] += 1
            index = min(range(len(counts)), key=counts.__getitem__)
            if counts[index] >= self.config.max_sessions_per_jail:
                raise RuntimeError(f"all {sum(counts)} session slots are in use (max_sessions_per_jail)")
            session = uuid.uuid4().hex[:16]
            self._sessions[session] = _Session(index, time.monotonic())
        error = self._submit(self._session_queues[index], lambda jail: jail.open_session(session)).result()
        if error:
            with self._lock:
                self._sessions.pop(session, None)
            raise RuntimeError(f"cannot open a sandbox session: {error}")
        return session

    def close_session(self, session: str) -> None:
        """End a session (idempotent); its variables are gone."""
        with self._lock:
            state = self._sessions.pop(session, None)
        if state is not None:
            self._submit(self._session_queues[state.jail], lambda jail: jail.close_session(session)).result()

    def _expire_sessions(self) -> None:
        deadline = time.monotonic() - self.config.session_ttl_s
        with self._lock:
            expired = [sid for sid, state in self._sessions.items() if state.last_used < deadline]
        for session in expired:
            log.info("closing sandbox session %s: idle for more than %.0fs", session, self.config.session_ttl_s)
            self.close_session(session)

    # pool ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Executions, p50/p99 latency (ms), timeouts, memory kills, errors, restarts, load."""
        jails = self._jails + self._session_jails
        snapshot: dict[str, Any] = self._metrics.snapshot()
        with self._lock:
            snapshot.update(busy_jails=self._busy, sessions_open=len(self._sessions))
        snapshot.update(
            backend=self.config.backend,
            jails=len(self._jails),
            session_jails=len(self._session_jails),
            restarts=sum(j.restarts for j in jails),
            recycles=sum(j.recycles for j in jails),
            queued=self._queue.qsize(),
        )
        return snapshot

    def server_pids(self) -> list[int | None]:
        """Host pids of each stateless jail's PID 1 (benchmarks and tests inspect them)."""
        return [jail.server_pid() for jail in self._jails]

    def close(self) -> None:
        """Fail whatever is still queued, stop the threads and the jails."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        queues = [(self._queue, len(self._jails)), *((q, 1) for q in self._session_queues)]
        for tasks, readers in queues:
            _fail_queued(tasks)
            for _ in range(readers):
                tasks.put(None)
        for worker in self._workers:
            worker.join(timeout=self.config.timeout_s + self.config.grace_s + 5)
        for tasks, _ in queues:  # anything submitted while closing
            _fail_queued(tasks)
        for jail in self._jails + self._session_jails:
            jail.close()

    def __enter__(self) -> WarmJailPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals -----------------------------------------------------------------------------

    def _submit(self, tasks: queue.Queue, fn: Callable[[WarmJail], Any]) -> Future:
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("sandbox pool closed"))
        else:
            tasks.put((fn, future))
        return future

    def _record(self, result: ExecutionResult) -> ExecutionResult:
        self._metrics.record(result)
        return result

    def _serve(self, jail: WarmJail, tasks: queue.Queue) -> None:
        while (task := tasks.get()) is not None:
            fn, future = task
            with self._lock:
                self._busy += 1
            try:
                future.set_result(fn(jail))
            except Exception as exc:  # a bug in the sandbox, not the snippet: report, keep serving
                log.exception("%s: internal error", jail.name)
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._busy -= 1
            if not self._closed:
                jail.maintain()


def _fail_queued(tasks: queue.Queue) -> None:
    while True:
        try:
            task = tasks.get_nowait()
        except queue.Empty:
            return
        if task is not None:
            task[1].set_exception(RuntimeError("sandbox pool closed"))


def _outcome(future: Future) -> ExecutionResult:
    try:
        return future.result()
    except Exception as exc:
        return ExecutionResult.failure(f"sandbox pool: {exc}")
