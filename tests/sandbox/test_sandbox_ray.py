"""The Ray actor pool: per-node named actor, batched and async calls, metrics, clean failures."""

from __future__ import annotations

import asyncio
import time

import pytest

ray = pytest.importorskip("ray")

from sandbox import SandboxClient, SandboxConfig, SandboxPool, SandboxStartError  # noqa: E402

CONFIG = SandboxConfig(jails=2, timeout_s=2.0, cpu_time_s=1)


@ray.remote
class Blocker:
    """Holds every CPU of the test cluster."""

    def ping(self) -> bool:
        return True


@ray.remote(num_cpus=0)
class Rollout:
    """Stands in for an EnvRunner: finds its node's pool and awaits snippets from an event loop."""

    def __init__(self, config: SandboxConfig) -> None:
        self.handle = SandboxPool.for_current_node(config, wait=False)
        self.client = SandboxClient(self.handle)

    async def run(self, n: int) -> tuple[list[str], int, int]:
        before = (await self.client.metrics())["batches"]
        results = await asyncio.gather(*(self.client.execute(f"print({i} * {i})") for i in range(n)))
        after = (await self.client.metrics())["batches"]
        return [r.stdout for r in results], after - before, self.handle._actor_id.hex()


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # the session's shared cluster: this module needs its CPUs blocked
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    blocker = Blocker.options(num_cpus=2).remote()  # the pool must still start: it asks for 0 CPUs
    ray.get(blocker.ping.remote())
    yield
    ray.shutdown()


def test_pool_actor_serves_batches_in_order(cluster):
    handle = SandboxPool.for_current_node(CONFIG)
    codes = [f"print({i})" if i % 2 else f"import sympy; print(sympy.Integer({i}))" for i in range(50)]
    results = ray.get(handle.execute_batch.remote(codes))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(50)]
    assert SandboxPool.for_current_node(CONFIG)._actor_id == handle._actor_id  # one per node and config
    metrics = ray.get(handle.metrics.remote())
    assert metrics["executions"] >= 50 and metrics["jails"] == 2 and metrics["node_id"]
    assert {"latency_p50_ms", "latency_p99_ms", "timeouts", "memory_kills", "restarts"} <= metrics.keys()


def test_async_client_inside_an_actor_coalesces_calls(cluster):
    rollout = Rollout.remote(CONFIG)
    outputs, batches, actor_id = ray.get(rollout.run.remote(40))
    assert outputs == [f"{i * i}\n" for i in range(40)]
    assert batches == 1  # 40 concurrent awaits, one actor call
    assert actor_id == SandboxPool.for_current_node(CONFIG)._actor_id.hex()


def test_dead_pool_gives_failed_results_not_exceptions(cluster):
    handle = SandboxPool.for_current_node(SandboxConfig(jails=1, timeout_s=1.5, cpu_time_s=1))
    ray.kill(handle, no_restart=True)
    result = asyncio.run(SandboxClient(handle).execute("print(1)"))
    assert not result.ok and "sandbox pool unavailable" in result.error


def test_start_failure_is_raised_with_its_cause(cluster):
    with pytest.raises(SandboxStartError, match="nsjail binary not found"):
        SandboxPool.for_current_node(SandboxConfig(jails=1, nsjail_path="/nonexistent/nsjail"))


@ray.remote(num_cpus=0)
class Creator:
    """Stands in for a Tune trial: creates its node's pool, then ends."""

    def create(self, config: SandboxConfig, detached: bool) -> str:
        return SandboxPool.for_current_node(config, detached=detached)._actor_id.hex()


def _pool_alive(config: SandboxConfig) -> bool:
    name = SandboxPool.actor_name(config, ray.get_runtime_context().get_node_id())
    try:
        handle = ray.get_actor(name, namespace=config.ray_namespace)
        return ray.get(handle.execute.remote("print(7)"), timeout=30).stdout == "7\n"
    except (ValueError, ray.exceptions.RayActorError):
        return False


def test_a_detached_pool_outlives_its_creator_until_shutdown_all(cluster):
    owned, detached = SandboxConfig(jails=1, timeout_s=3.0), SandboxConfig(jails=1, timeout_s=4.0)
    for config, keep in ((owned, False), (detached, True)):
        creator = Creator.remote()
        ray.get(creator.create.remote(config, keep))
        ray.kill(creator)  # the trial ends
        time.sleep(2)
        assert _pool_alive(config) is keep
    assert SandboxPool.shutdown_all() >= 1
    time.sleep(2)
    assert not _pool_alive(detached)
