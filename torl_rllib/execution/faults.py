"""Failures a run cannot continue through, and the check that tells a sandbox pool that is
restarting from one that is gone. The driver answers both by checkpointing the last completed
step and exiting with the cause named (``torl-rllib train``: exit code 1)."""

from __future__ import annotations

import time

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

__all__ = ["RunCannotContinue", "EnvRunnersLost", "LearnersLost", "SandboxPoolLost", "RunUnhealthy",
           "check_sandbox_pools", "is_learner_failure"]

POOL_PING_TIMEOUT_S = 60.0  # a restarting pool (new jails) answers well within this


class RunCannotContinue(RuntimeError):
    """The step in flight cannot be completed and retrying in-process will not help."""


class EnvRunnersLost(RunCannotContinue):
    """No healthy EnvRunner is left and none could be restored."""


class LearnersLost(RunCannotContinue):
    """A Learner died; the step's update is lost and the Learners' state with it."""


class RunUnhealthy(RunCannotContinue):
    """Too many trajectories failed for ``failure_patience`` steps in a row; the message names
    the dominant cause. The failing steps made no update."""


class SandboxPoolLost(RunCannotContinue):
    """A node's sandbox pool is gone for good (its restarts are spent) or does not answer."""


def check_sandbox_pools(pools: dict[str, object], timeout_s: float = POOL_PING_TIMEOUT_S) -> None:
    """Raise ``SandboxPoolLost`` naming the node and cause if the pool of an alive node does not
    answer; a pool that Ray is restarting answers once it is back. (A node that left the cluster
    took its pool and its EnvRunners with it: the other nodes' runners carry on.)"""
    alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
    for node, handle in pools.items():
        if node not in alive:
            continue
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get(handle.metrics.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except ActorUnavailableError:  # restarting: ask again until the deadline
                if time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                exc = GetTimeoutError(f"the pool did not come back within {timeout_s:.0f}s")
            except (RayActorError, GetTimeoutError) as error:
                exc = error
            raise SandboxPoolLost(f"the sandbox pool of node {node[:12]} cannot come back: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def is_learner_failure(learner_group, exc: RayActorError) -> bool:
    """Whether ``exc`` came from one of ``learner_group``'s actors (not an EnvRunner's)."""
    # RLlib 2.x's LearnerGroup has no public list of its Learner actors, nor Ray's ActorHandle a
    # public actor id: no public alternative to ``_workers`` / ``_actor_id`` exists.
    learners = getattr(learner_group, "_workers", None) or []
    return not learners or exc.actor_id in {w._actor_id.hex() for w in learners}
