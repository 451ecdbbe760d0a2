"""GPU checks of the scale features (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs them):
FSDP2 and LoRA Learners on CUDA, and a 3-step colocated run of the tiny model with vLLM
(EnvRunner and Learner on one GPU, the engine asleep during each update, weights through CUDA
IPC). Skipped, with the reason, on machines without CUDA (and vLLM, for the colocated run)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.conftest import REPO
from torl_rllib.recipe import load_recipe
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TINY = REPO / "experiments" / "tiny_cpu.yaml"
SHORT = ["training.prompts_per_step=4", "training.group_size=4", "evaluation.interval=0", "tracking.enabled=false",
         "resources.num_env_runners=1", "resources.num_learners=1"]


@pytest.fixture
def gpu_cluster():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train(overrides, steps=3):
    algo = load_recipe(TINY, [*SHORT, *overrides]).build_config().build_algo()
    try:
        results = [algo.train()[RESULT_KEY] for _ in range(steps)]
        weights = algo.policy_weights()  # what the EnvRunners load (merged, for LoRA)
        runner = algo.env_runner_group.foreach_env_runner(lambda r: r.weights_version, local_env_runner=False)
        return results, weights, runner, algo._weights_version
    finally:
        algo.stop()


def test_fsdp_learner_on_gpu_bf16_with_cpu_offload(gpu_cluster):
    results, weights, versions, version = train([
        "resources.num_gpus_per_learner=1", "resources.learner_strategy=fsdp",
        "resources.fsdp.param_dtype=bfloat16", "resources.fsdp.cpu_offload=true"])
    assert all(r["trajectories"] == 16 for r in results) and versions == [version] == [3]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_lora_learner_on_gpu(gpu_cluster):
    results, weights, versions, version = train(["resources.num_gpus_per_learner=1", "model.lora.r=8",
                                                 "training.lr=1e-3"])
    assert versions == [version] == [3] and not any("lora" in k for k in weights)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (pip install -e '.[vllm]')")
def test_three_colocated_steps_with_vllm(gpu_cluster):
    results, _, versions, version = train([
        "rollout.rollout_engine=vllm", "rollout.vllm_kwargs={gpu_memory_utilization: 0.3, max_model_len: 1024, enforce_eager: true}",
        "resources.colocate=true", "resources.num_gpus_per_env_runner=0.51", "resources.num_gpus_per_learner=0.49"])
    assert versions == [version] == [3]
    assert all(r["trajectories"] == 16 and r.get("failed_trajectory_fraction", 0) == 0 for r in results), results
