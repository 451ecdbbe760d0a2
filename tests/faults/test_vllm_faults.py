"""Faults on the real vLLM engine (vLLM's CPU build here): an EnvRunner SIGKILLed while it samples
is restarted and the step completes; neither the killed runner's vLLM engine
core and workers, nor any vLLM process, outlives the run."""

from __future__ import annotations

import os
import signal
import sys
import threading

import psutil
import pytest

from tests.conftest import TINY_BASE_MODEL, TINY_TRAIN_DATA
from tests.faults.conftest import descendants, mark_sampling, wait_gone, when_marked
from tests.grpo.conftest import grpo_config
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def vllm_processes() -> list[psutil.Process]:
    """This test's vLLM engine-core and worker processes (they name themselves ``VLLM::...``):
    those below this process, whose Ray cluster runs the EnvRunners."""
    return descendants(os.getpid(), "VLLM::")


def vllm_config():
    return (grpo_config(TINY_BASE_MODEL, TINY_TRAIN_DATA, max_response_tokens=160, max_tool_calls=0, lr=1e-4)
            .training(group_size=4, prompts_per_step=4)
            .rollout(rollout_engine="vllm")
            .env_runners(num_env_runners=1, num_cpus_per_env_runner=1)
            .learners(num_cpus_per_learner=0)
            .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=2))


def test_a_vllm_runner_killed_mid_rollout_restarts_and_leaves_no_engine_behind(ray_cluster, tmp_path):
    algo = vllm_config().build_algo()
    try:
        victim_pid = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)[0]
        engine = [p for p in psutil.Process(victim_pid).children(recursive=True) if "VLLM::" in p.name()]
        assert engine, "the runner's vLLM engine core runs in processes of its own"
        mark_sampling(algo, 1, tmp_path / "sampling")
        killer = threading.Thread(target=when_marked,
                                  args=(tmp_path / "sampling", lambda: os.kill(victim_pid, signal.SIGKILL)))
        killer.start()
        result = algo.train()[RESULT_KEY]
        killer.join()
        assert result["resampled_shards"] == 1 and result["trajectories"] == 16, result
        assert result.get("failed_trajectories", 0) == 0  # (same seeds, same data: the HF fault test)
        assert wait_gone(engine) == [], "the killed runner's vLLM engine core outlived it"
    finally:
        engines = vllm_processes()  # the restarted runner's too (gone from this tree once orphaned)
        algo.stop()
    assert wait_gone(engines) == [], "a vLLM process outlived the run"
