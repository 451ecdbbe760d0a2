"""Starting a fault at a known moment: ``mark_sampling`` makes one EnvRunner's model slow and
has it touch a file when it first generates, so a test kills or removes that runner surely while
its share of the step is being sampled (a timer raced a fast machine's rollout)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

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
