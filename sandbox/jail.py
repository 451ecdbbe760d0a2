"""`WarmJail`: the host's handle on one warm jail process (start, request/reply, restart)."""

from __future__ import annotations

import collections
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import LOADER_NOISE, SandboxStartError, diagnose
from sandbox.jail_server import HEADER, MAX_FRAME, encode_frame, write_all
from sandbox.launch import Launcher
from sandbox.result import ExecutionResult

log = logging.getLogger(__name__)


class JailFailure(Exception):
    """The jail missed its deadline, died, or broke the protocol; it has been killed."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class WarmJail:
    """One long-lived jail whose PID 1 serves snippets; not thread-safe (one caller at a time).

    `execute` never raises: a jail that dies or misses `timeout_s + grace_s` is killed and the
    snippet gets a failed result; `maintain()` restarts it (and recycles it after
    `max_executions_per_jail` snippets).
    """

    def __init__(self, cfg: SandboxConfig, launcher: Launcher, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._launcher = launcher
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._stderr_thread: threading.Thread | None = None
        self._next_id = 0
        self.executions = 0  # since the last (re)start
        self.restarts = 0
        self.recycles = 0
        self.sessions: set[str] = set()

    # lifecycle ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process and wait for its PID 1 to report ready; SandboxStartError otherwise."""
        self._stderr.clear()
        try:
            self._proc = self._launcher.spawn()
        except OSError as exc:
            raise SandboxStartError(f"cannot execute {self._launcher.argv[0]}: {exc}") from exc
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(self._proc.stderr,), name=f"{self.name}-stderr", daemon=True
        )
        self._stderr_thread.start()
        try:
            ready = self._read_frame(time.monotonic() + self.cfg.startup_timeout_s)
        except JailFailure:
            ready = None
        if not (isinstance(ready, dict) and ready.get("ready")):
            self.kill()
            self._stderr_thread.join(timeout=2)
            what = "starting a jail with nsjail" if self._launcher.jailed else "starting the unsafe sandbox server"
            raise SandboxStartError(diagnose("\n".join(self._stderr), what))
        self.executions = 0
        self.sessions.clear()
        log.debug("%s ready (python %s)", self.name, ready.get("python"))

    def maintain(self) -> None:
        """Restart a dead jail; recycle one past `max_executions_per_jail` (never while it holds sessions)."""
        recycle = self.executions >= self.cfg.max_executions_per_jail and not self.sessions
        if self.alive and not recycle:
            return
        if self.alive:
            self.recycles += 1
            self.close()
        else:
            self.restarts += 1
            self.kill()
        try:
            self.start()
        except SandboxStartError as exc:
            log.error("%s could not restart: %s", self.name, exc)

    def close(self) -> None:
        """Ask PID 1 to exit (EOF on its request pipe); kill it if it does not within a second."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the jail. Killing its PID 1 takes every jailed process with it."""
        if self._proc is None:
            return
        for pid in (self.server_pid(), self._proc.pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def server_pid(self) -> int | None:
        """Host pid of the jail's PID 1 (for nsjail: its only child), None if not running."""
        if not self.alive:
            return None
        if not self._launcher.jailed:
            return self._proc.pid
        try:
            with open(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children") as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    # requests ----------------------------------------------------------------------------

    def execute(self, code: str) -> ExecutionResult:
        """Run one stateless snippet."""
        return self._call({"op": "exec", "code": code})

    def open_session(self, session: str) -> str | None:
        """Start a session holder; returns None on success, else the reason."""
        try:
            reply = self._roundtrip({"op": "open", "session": session}, self.cfg.startup_timeout_s)
        except JailFailure as exc:
            return str(exc)
        if reply.get("error"):
            return str(reply["error"])
        self.sessions.add(session)
        return None

    def run_in_session(self, session: str, code: str) -> ExecutionResult:
        """Run one turn of a session (variables persist; a killed turn rolls back)."""
        if session not in self.sessions:
            return ExecutionResult.failure(f"session {session} is not open in this jail (lost in a restart?)")
        result = self._call({"op": "run", "session": session, "code": code})
        if result.error:
            self.sessions.discard(session)
        return result

    def close_session(self, session: str) -> None:
        """End a session's holder (no-op if unknown or the jail restarted since)."""
        if session in self.sessions and self.alive:
            self.sessions.discard(session)
            try:
                self._roundtrip({"op": "close", "session": session}, self.cfg.grace_s)
            except JailFailure as exc:
                log.warning("%s: closing session %s: %s", self.name, session, exc)

    def _call(self, request: dict[str, Any]) -> ExecutionResult:
        if len(request["code"].encode()) > self.cfg.max_code_bytes:
            return ExecutionResult.failure(f"snippet longer than max_code_bytes={self.cfg.max_code_bytes}")
        start = time.monotonic()
        try:
            reply = self._roundtrip(request, self.cfg.timeout_s + self.cfg.grace_s)
        except JailFailure as exc:
            return ExecutionResult.failure(str(exc), duration_s=time.monotonic() - start, timed_out=exc.timed_out)
        self.executions += 1
        try:
            return ExecutionResult.from_reply(reply, time.monotonic() - start)
        except (TypeError, ValueError) as exc:
            self.kill()
            return ExecutionResult.failure(f"{self.name} sent a malformed reply: {exc}")

    def _roundtrip(self, request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        if not self.alive:
            raise JailFailure(f"{self.name} is not running (restart failed: {self.last_stderr()})")
        self._next_id += 1
        request = {**request, "id": self._next_id}
        try:
            write_all(self._proc.stdin.fileno(), encode_frame(request))
            reply = self._read_frame(time.monotonic() + budget_s)
        except JailFailure as exc:
            self.kill()
            raise exc
        except OSError as exc:  # EPIPE: PID 1 is gone
            self.kill()
            raise JailFailure(f"{self.name} died: {exc}; {self.last_stderr()}") from exc
        if not isinstance(reply, dict) or reply.get("id") != self._next_id:
            self.kill()
            raise JailFailure(f"{self.name} broke the protocol (reply {str(reply)[:200]!r})")
        return reply

    def _read_frame(self, deadline: float) -> Any:
        """One frame from PID 1 within the deadline; JailFailure on timeout, EOF or garbage."""
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        size = None
        while size is None or len(buf) < HEADER.size + size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise JailFailure(f"{self.name} missed its deadline (hung or overloaded); restarting it", timed_out=True)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise JailFailure(f"{self.name} exited: {self.last_stderr()}")
            buf += chunk
            if size is None and len(buf) >= HEADER.size:
                (size,) = HEADER.unpack_from(buf)
                if size > MAX_FRAME:
                    raise JailFailure(f"{self.name} sent a {size}-byte frame")
        if len(buf) != HEADER.size + size:
            raise JailFailure(f"{self.name} sent unrequested data")
        try:
            return json.loads(bytes(buf[HEADER.size:]))
        except ValueError as exc:
            raise JailFailure(f"{self.name} sent malformed JSON: {exc}") from exc

    # diagnostics -------------------------------------------------------------------------

    def last_stderr(self) -> str:
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=0.2)
        return " | ".join(list(self._stderr)[-5:]) or "no stderr"

    def _drain_stderr(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line and not LOADER_NOISE.search(line):
                self._stderr.append(line)
                log.warning("%s: %s", self.name, line)
        stream.close()
