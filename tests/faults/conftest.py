"""Starting a fault at a known moment: ``mark_sampling`` makes one EnvRunner's model slow and
has it touch a file when it first generates, so a test kills or removes that runner surely while
its share of the step is being sampled (a timer raced a fast machine's rollout). ``descendants``
and ``wait_gone`` find and watch a test's own processes: other test workers (``pytest -n``) run
their own Ray clusters and engines on the same machine."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import psutil
import pytest

# The function below runs inside Ray actors, which cannot import this test package.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def mark_sampling(algo, runner_id: int, marker: Path, delay_s: float = 3.0) -> None:
    """A slow model double on runner ``runner_id``: each generate call touches ``marker``, then
    waits ``delay_s`` before generating (the tokens are the model's own)."""

    def slow_down(runner):
        generate = runner.engine.generate

        async def marked(*args, **kwargs):
            marker.touch()
            await asyncio.sleep(delay_s)
            return await generate(*args, **kwargs)

        runner.engine.generate = marked

    algo.env_runner_group.foreach_env_runner(slow_down, remote_worker_ids=[runner_id], local_env_runner=False)


def when_marked(marker: Path, action, timeout_s: float = 300.0) -> None:
    """Run ``action()`` as soon as ``marker`` exists (polled every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never appeared: the runner did not sample")
        time.sleep(0.02)
    action()


def descendants(pid: int, name_part: str = "") -> list[psutil.Process]:
    """The live processes below ``pid`` (a CLI run's Ray cluster and workers, a runner's engine)
    whose name or command line contains ``name_part``."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if name_part in proc.name() or name_part in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_gone(procs, timeout_s: float = 60.0) -> list:
    """The processes of ``procs`` still running after ``timeout_s`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.1)
    return alive
