"""`SandboxPool`: the Ray actor that owns one node's warm jails."""

from __future__ import annotations

import functools
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import SandboxStartError
from sandbox.pool import WarmJailPool
from sandbox.result import ExecutionResult

POOL_NAME_PREFIX = "sandbox-pool-"


class SandboxPool:
    """Ray actor body: one per node and config (named, pinned to its node), owning a WarmJailPool.

    Get handles with `SandboxPool.for_current_node(config)` (from the driver or from inside
    another actor) or `SandboxPool.for_all_nodes(config)`. A threaded actor: each call runs in
    one of `actor_max_concurrency` threads and blocks until its snippets are done; further
    calls wait in Ray's queue, which is the backpressure when every jail is busy.

    The actor asks Ray for `actor_num_cpus` (default 0) CPUs: its jails are its own processes,
    and reserving CPUs for it would starve the EnvRunners and Learners of a small cluster
    (on 2 CPUs: a silent scheduling deadlock). It is owned by whoever creates it first, so let
    the driver create the pools (`for_all_nodes`) before the actors that use them; where the
    creator ends before its users (Ray Tune trials sharing a node's pool), create it
    `detached` and end it with `shutdown_all` when the last user is done.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self._pool = WarmJailPool(config, cpus=config.actor_num_cpus or None)

    def execute_batch(self, codes: list[str]) -> list[ExecutionResult]:
        return self._pool.execute_batch(codes)

    def execute(self, code: str, session: str | None = None) -> ExecutionResult:
        return self._pool.execute(code, session)

    def open_session(self) -> str:
        return self._pool.open_session()

    def close_session(self, session: str) -> None:
        self._pool.close_session(session)

    def metrics(self) -> dict[str, Any]:
        import ray

        return {**self._pool.metrics(), "node_id": ray.get_runtime_context().get_node_id()}

    def shutdown(self) -> None:
        """Stop the jails and end the actor."""
        import ray

        self._pool.close()
        ray.actor.exit_actor()

    @staticmethod
    def actor_name(config: SandboxConfig, node_id: str) -> str:
        return f"{POOL_NAME_PREFIX}{node_id[:16]}-{config.fingerprint()}"

    @classmethod
    def for_node(cls, config: SandboxConfig, node_id: str, *, wait: bool = True, detached: bool = False):
        """Handle of the pool on `node_id` for `config`, creating it if needed (`detached`: it
        outlives its creator, until `shutdown_all` or the end of the Ray cluster).

        With `wait`, blocks until its jails are up and raises SandboxStartError if they cannot
        start (the message names the cause and the fix).
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        handle = _actor_class().options(
            name=cls.actor_name(config, node_id),
            namespace=config.ray_namespace,
            get_if_exists=True,
            num_cpus=config.actor_num_cpus,
            max_concurrency=config.actor_max_concurrency,
            max_restarts=config.actor_max_restarts,
            lifetime="detached" if detached else None,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(config)
        if wait:
            try:
                ray.get(handle.metrics.remote())
            except ray.exceptions.RayActorError as exc:
                raise SandboxStartError(f"the sandbox pool on node {node_id} did not start: {exc}") from exc
        return handle

    @classmethod
    def for_current_node(cls, config: SandboxConfig, *, wait: bool = True, detached: bool = False):
        """Handle of this node's pool (works in the driver and inside any Ray actor or task)."""
        import ray

        return cls.for_node(config, ray.get_runtime_context().get_node_id(), wait=wait, detached=detached)

    @classmethod
    def for_all_nodes(cls, config: SandboxConfig, *, wait: bool = True, detached: bool = False) -> dict[str, Any]:
        """Create (or find) the pool of every alive node: {node_id: handle}."""
        import ray

        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        return {node: cls.for_node(config, node, wait=wait, detached=detached) for node in nodes}

    @classmethod
    def shutdown_all(cls, namespace: str = SandboxConfig.ray_namespace) -> int:
        """End every pool in `namespace` (their jails stop with them); returns how many."""
        import ray

        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == namespace and a["name"].startswith(POOL_NAME_PREFIX)]
        for name in names:
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            except ValueError:  # ended meanwhile
                pass
        return len(names)


@functools.cache
def _actor_class():
    import ray

    return ray.remote(SandboxPool)
