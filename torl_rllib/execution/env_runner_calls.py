"""Calls spread over an ``EnvRunnerGroup`` that survive runner failures.

RLlib's ``foreach_env_runner`` drops the result of a runner that died (with
``restart_failed_env_runners``, RLlib's default) and does not say which call it lost. Here each
call is a unit of work on a queue: every healthy runner takes the next one as soon as it is
free, and the call of a runner that dies goes back on the queue for another runner, or for the
same one once ``restore`` has brought it back. Results come back in the order of the calls.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Sequence

from ray.exceptions import RayActorError

from torl_rllib.execution.faults import EnvRunnersLost

logger = logging.getLogger(__name__)

__all__ = ["call_in_shards"]

TAG = "torl_shard"


def call_in_shards(
    group, method: str, calls: Sequence[dict[str, Any]], *, restore: Callable[[], list] | None = None,
    on_result: Callable[[int, Any], None] | None = None, poll_s: float = 0.5,
) -> tuple[list, int]:
    """``getattr(runner, method)(**calls[i])`` for every i, on the group's healthy remote
    runners (or its local runner when it has no remote one). Returns (results in call order,
    number of calls re-issued because their runner failed). Raises ``EnvRunnersLost`` when no
    runner is healthy and ``restore`` (e.g. ``Algorithm.restore_env_runners``) brings none back."""
    results: list = [None] * len(calls)
    if group.num_remote_env_runners() == 0:
        for index, kwargs in enumerate(calls):
            results[index] = getattr(group.local_env_runner, method)(**kwargs)
            if on_result:
                on_result(index, results[index])
        return results, 0
    todo, busy, reissued = deque(range(len(calls))), {}, 0  # busy: runner id -> call index
    while todo or busy:
        healthy = set(group.healthy_env_runner_ids())
        for runner_id in [r for r in busy if r not in healthy]:  # died with a call in flight
            logger.warning("EnvRunner %d failed; its share goes to another runner", runner_id)
            todo.appendleft(busy.pop(runner_id))
            reissued += 1
        if not healthy and not busy:
            healthy = set(restore() if restore else []) or set(group.healthy_env_runner_ids())
            if not healthy:
                raise EnvRunnersLost(
                    f"all {group.num_remote_env_runners()} EnvRunners failed and none could be restarted "
                    "(see fault_tolerance: restart_failed_env_runners, max_num_env_runner_restarts)")
        for runner_id in sorted(healthy - set(busy)):
            if not todo:
                break
            index = todo.popleft()
            busy[runner_id] = index
            group.foreach_env_runner_async(method, TAG, kwargs=calls[index], remote_worker_ids=[runner_id])
        try:
            ready = group.fetch_ready_async_reqs(tags=TAG, timeout_seconds=poll_s)
        except RayActorError as exc:  # fault tolerance is off (neither restart nor ignore)
            raise EnvRunnersLost(f"an EnvRunner died and fault tolerance is off: {exc}") from exc
        for runner_id, result in ready:
            index = busy.pop(runner_id)
            results[index] = result
            if on_result:
                on_result(index, result)
    return results, reissued
