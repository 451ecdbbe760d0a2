"""`ExecutionResult`: what one snippet did, as plain picklable data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one snippet.

    `exit_code` is the interpreter's exit status (None when a signal ended the snippet; see
    `signal`). `timed_out` covers both the wall-clock deadline and the CPU-time limit.
    `memory_exceeded` means the snippet died of an uncaught `MemoryError` (the address-space
    limit of one process) or was killed because its processes together held more than
    `memory_mb`. `stdout`/`stderr` are capped: past `max_output_bytes`, the head and the tail are
    kept around a marker line and the `*_truncated` flag is set; `*_bytes` count everything
    the snippet wrote. `error` is set only when the sandbox itself failed (jail crashed,
    missed its deadline, could not start); the snippet's own failures are not errors.
    """

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    memory_exceeded: bool = False
    duration_s: float = 0.0
    cpu_time_s: float = 0.0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Exit status 0, no timeout, no sandbox error."""
        return self.exit_code == 0 and not self.timed_out and self.error is None

    @classmethod
    def failure(cls, error: str, *, duration_s: float = 0.0, timed_out: bool = False) -> ExecutionResult:
        """A clean failed result for a snippet the sandbox could not run to completion."""
        return cls(error=error, duration_s=duration_s, timed_out=timed_out)

    @classmethod
    def from_reply(cls, reply: dict[str, Any], duration_s: float) -> ExecutionResult:
        """Build a result from a jail's reply, coercing every field (the jail is untrusted)."""

        def opt_int(key: str) -> int | None:
            value = reply.get(key)
            return None if value is None else int(value)

        return cls(
            stdout=str(reply.get("stdout", "")),
            stderr=str(reply.get("stderr", "")),
            exit_code=opt_int("exit_code"),
            signal=opt_int("signal"),
            timed_out=bool(reply.get("timed_out", False)),
            memory_exceeded=bool(reply.get("memory_exceeded", False)),
            duration_s=duration_s,
            cpu_time_s=float(reply.get("cpu_time_s", 0.0)),
            stdout_truncated=bool(reply.get("stdout_truncated", False)),
            stderr_truncated=bool(reply.get("stderr_truncated", False)),
            stdout_bytes=int(reply.get("stdout_bytes", 0)),
            stderr_bytes=int(reply.get("stderr_bytes", 0)),
            error=None if reply.get("error") is None else str(reply["error"]),
        )
