"""How to start a warm jail's process for the configured backend."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sandbox import jail_server
from sandbox.config import SandboxConfig
from sandbox.nsjail_config import SCRATCH_DIRS, jail_config, jail_environment, nsjail_binary, write_config_file
from sandbox.runtime import probe_runtime

log = logging.getLogger(__name__)

SERVER_SOURCE = Path(jail_server.__file__).read_text()


@dataclass
class Launcher:
    """The command line and environment that start one warm jail; shared by a pool's jails."""

    argv: list[str]
    env: dict[str, str]
    jailed: bool  # False only for the unsafe_subprocess backend
    config_path: str | None = None

    def close(self) -> None:
        if self.config_path:
            Path(self.config_path).unlink(missing_ok=True)
            self.config_path = None


def server_settings(cfg: SandboxConfig, jailed: bool) -> dict:
    """The JSON config handed to `jail_server.main`."""
    return {
        "timeout_s": cfg.timeout_s,
        "cpu_time_s": cfg.cpu_time_s,
        "memory_mb": cfg.memory_mb,
        "file_size_mb": cfg.file_size_mb,
        "max_output_bytes": cfg.max_output_bytes,
        "max_sessions": cfg.max_sessions_per_jail,
        "preload": list(cfg.preload),
        "scratch": list(SCRATCH_DIRS) if jailed else None,
    }


def make_launcher(cfg: SandboxConfig) -> Launcher:
    """Check the runtime (and nsjail) and build the launch command; never picks a backend silently."""
    runtime = probe_runtime(cfg.resolved_runtime_python, cfg.extra_readonly_paths)
    jailed = cfg.backend == "nsjail"
    args = ["-I", "-c", SERVER_SOURCE, json.dumps(server_settings(cfg, jailed))]
    if not jailed:
        log.warning(
            "SANDBOX BACKEND unsafe_subprocess: snippets run as %s on this host with no "
            "namespaces, no seccomp, no filesystem or network isolation (rlimits only). Use it "
            "only on a trusted development machine where nsjail cannot run.",
            "root" if os.geteuid() == 0 else f"uid {os.geteuid()}",
        )
        return Launcher(argv=[runtime.python, *args], env=jail_environment(), jailed=False)
    binary = nsjail_binary(cfg)
    path = write_config_file(jail_config(cfg, runtime, args))
    return Launcher(argv=[binary, "--config", path], env={}, jailed=True, config_path=path)
