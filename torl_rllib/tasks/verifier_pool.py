"""A pool of persistent verifier processes that bounds every comparison in wall-clock time.

Why processes: math-verify's own timeouts use ``signal.alarm``, which only works in the main
thread, and sympy can spend minutes inside one C call (``9^{9^{9^9}}``) where no signal handler
runs. Each worker (:mod:`.verifier_worker`) is started once with ``python -m`` (no fork of a
threaded parent, no re-import of ``__main__``), serves comparisons over pipes, and is killed and
replaced when one misses its deadline. The pool can be used from any thread; calls are serialized.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

__all__ = ["READY", "VerifierPool", "read_frame", "write_frame"]

logger = logging.getLogger(__name__)

READY = "ready"
TIMEOUT = ("timeout", None)
CRASHED = ("parse_error", None)
_DIED = object()  # the worker died while comparing
_HOW = f"its stderr says why (started as: {sys.executable} -m torl_rllib.tasks.verifier_worker)"
_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def write_frame(fd: int, message) -> None:
    """Write one length-prefixed pickled message to a file descriptor."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int):
    """Read one message written by :func:`write_frame`, blocking; EOFError when the pipe closes."""
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            raise EOFError("verifier pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Worker:
    """One verifier process and the request it is serving."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torl_rllib.tasks.verifier_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.buffer = b""
        self.ready = False
        self.task: int | None = None
        self.deadline = time.monotonic()

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None

    def send(self, task: int, request: tuple[str, str], deadline: float) -> bool:
        try:
            write_frame(self.proc.stdin.fileno(), request)
        except OSError:  # died while idle
            return False
        self.task, self.deadline = task, deadline
        return True

    def receive(self) -> list:
        """Read what is available and return the complete messages; EOFError if the process died."""
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk
        messages = []
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            end = _HEADER.size + size
            if len(self.buffer) < end:
                break
            messages.append(pickle.loads(self.buffer[_HEADER.size : end]))
            self.buffer = self.buffer[end:]
        return messages

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.kill()


class VerifierPool:
    """``num_workers`` verifier processes; :meth:`run` compares many pairs, each bounded in time."""

    def __init__(self, num_workers: int, startup_timeout_s: float = 120.0) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._workers = [self._start_worker() for _ in range(num_workers)]
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)

    def _start_worker(self) -> _Worker:
        worker = _Worker()
        worker.deadline = time.monotonic() + self.startup_timeout_s
        return worker

    def run(self, requests: list[tuple[str, str]], timeout_s: float) -> list[tuple[str, str | None]]:
        """Return ``compare(answer, gold)`` for each ``(answer, gold)``, in order.

        A comparison that takes longer than ``timeout_s`` yields ``("timeout", None)`` and its
        worker is replaced. One whose worker dies is retried once on a fresh worker (the worker
        may have been killed from outside), then yields ``("parse_error", None)``.
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("VerifierPool is closed")
            results: list = [None] * len(requests)
            pending = deque(range(len(requests)))
            unfinished = len(requests)
            retried: set[int] = set()
            while unfinished:
                self._dispatch(requests, pending, timeout_s)
                busy = [w for w in self._workers if not w.idle]
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                readable = wait([w.proc.stdout for w in busy], timeout)
                for index, worker in enumerate(self._workers):
                    if worker.idle:
                        continue
                    task = worker.task
                    outcome = self._poll(index, worker.proc.stdout in readable)
                    if outcome is _DIED and task not in retried:
                        retried.add(task)
                        pending.appendleft(task)
                    elif outcome is not None:
                        results[task] = CRASHED if outcome is _DIED else outcome
                        unfinished -= 1
            return results

    def _dispatch(self, requests, pending: deque, timeout_s: float) -> None:
        for index, worker in enumerate(self._workers):
            if worker.idle and pending:
                task = pending.popleft()
                if not worker.send(task, requests[task], time.monotonic() + timeout_s):
                    pending.appendleft(task)
                    self._replace(index)

    def _poll(self, index: int, readable: bool):
        """Advance a busy or starting worker: its task's outcome, ``_DIED``, or None (not yet)."""
        worker = self._workers[index]
        if readable:
            try:
                messages = worker.receive()
            except EOFError:
                code = worker.proc.wait()
                self._replace(index)
                if worker.task is None:
                    raise RuntimeError(f"verifier process exited with code {code} during start-up; {_HOW}")
                logger.warning("verifier process died (exit code %s) while grading; restarting it", code)
                return _DIED
            for message in messages:
                if message == READY:
                    worker.ready = True
                else:
                    worker.task = None
                    return message
            return None
        if time.monotonic() < worker.deadline:
            return None
        self._replace(index)
        if not worker.ready:
            raise RuntimeError(f"verifier process did not start within {self.startup_timeout_s:.0f} s; {_HOW}")
        logger.warning("grading missed its deadline; restarting the verifier process")
        return TIMEOUT

    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = self._start_worker()

    def close(self) -> None:
        """Kill the worker processes. Idempotent."""
        with self._lock:
            self._finalizer()
