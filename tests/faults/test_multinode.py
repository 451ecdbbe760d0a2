"""GRPO on a real two-node Ray cluster on one machine (``ray.cluster_utils.Cluster``, Ray's own
test utility; 1 CPU per node): one SandboxPool per node, each EnvRunner on its own node's pool,
and a node removed mid-step costs only that node's share of the step, which the other node's
runner samples again; training goes on."""

from __future__ import annotations

import sys
import threading

import pytest

from tests.conftest import REPO
from tests.faults.conftest import mark_sampling, when_marked
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
# The functions below run on EnvRunners of another node, which cannot import this test module.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def node_of(handle) -> str:
    import ray

    return ray.get(handle.__ray_call__.remote(lambda actor: ray.get_runtime_context().get_node_id()))


def test_one_pool_per_node_and_a_node_lost_mid_step(two_nodes, tmp_path):
    import ray

    from torl_rllib.recipe import load_recipe

    cluster, worker = two_nodes
    recipe = load_recipe(REPO / "experiments" / "tiny_cpu.yaml", [
        "training.prompts_per_step=8", "training.group_size=8", "evaluation.interval=0", "tracking.enabled=false",
        "resources.num_env_runners=2", "resources.num_cpus_per_env_runner=1", "sandbox.jails=1",
        "fault_tolerance.env_runner_restore_timeout_s=5"])
    algo = recipe.build_config().build_algo()
    try:
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert set(algo._sandbox_pools) == nodes and len(nodes) == 2  # one pool per node
        placement = algo.env_runner_group.foreach_env_runner(
            lambda r: (ray.get_runtime_context().get_node_id(), node_of(r._sandbox) if r._executor() else None),
            local_env_runner=False)
        assert sorted(runner for runner, _ in placement) == sorted(nodes)  # a runner on each node
        assert all(runner == pool for runner, pool in placement), placement  # each on its own node's pool
        first = algo.train()[RESULT_KEY]
        assert first["trajectories"] == 64 and first["healthy_env_runners"] == 2

        ids = algo.env_runner_group.healthy_env_runner_ids()
        runner_nodes = algo.env_runner_group.foreach_env_runner(
            lambda r: ray.get_runtime_context().get_node_id(), remote_worker_ids=ids, local_env_runner=False)
        mark_sampling(algo, ids[runner_nodes.index(worker.node_id)], tmp_path / "sampling")
        remover = threading.Thread(target=when_marked, args=(tmp_path / "sampling", lambda: cluster.remove_node(worker)))
        remover.start()  # while the step samples
        hit = algo.train()[RESULT_KEY]
        remover.join()
        assert hit["trajectories"] == 64 and hit.get("failed_trajectory_fraction", 0) == 0, hit
        assert hit["resampled_shards"] == 1, hit
        after = [algo.train()[RESULT_KEY] for _ in range(2)]  # training goes on, on one node
        assert all(m["trajectories"] == 64 and m["healthy_env_runners"] == 1 for m in after), after
        assert algo.iteration == 4
    finally:
        algo.stop()
