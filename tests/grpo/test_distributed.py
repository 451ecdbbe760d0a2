"""Scaling with RLlib's own knobs: 2 EnvRunners + 2 Learners (gloo DDP, fractional CPUs) on
2 cores. Every runner holds every weight update (versioned) and the Learners stay identical."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from torl_rllib.algorithms.grpo import GRPOConfig

pytestmark = pytest.mark.slow
STEPS = 3


@pytest.fixture(scope="module")
def algo(ray_cluster, random_model_dir, arithmetic_jsonl):
    config = (
        GRPOConfig()
        .debugging(seed=3)
        .rl_module(model_config={"path": str(random_model_dir)})
        .training(lr=3e-3, group_size=4, prompts_per_step=4, minibatches_per_step=2, entropy_coeff=0.01)
        .rollout(max_response_tokens=16, max_tool_calls=0)
        .task(train_data=str(arithmetic_jsonl))
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
        .learners(num_learners=2, num_cpus_per_learner=0.5)
    )
    algo = config.build_algo()
    algo.results = [algo.train() for _ in range(STEPS)]
    yield algo
    algo.stop()


def _learner_weights(algo):
    states = algo.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID].get_state())
    return [s.get() if hasattr(s, "get") else s for s in states]


def test_learners_hold_identical_weights(algo):
    states = _learner_weights(algo)
    assert len(states) == 2
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), f"DDP learners diverged at {key}"


def test_every_runner_holds_every_update(algo):
    versions = algo.env_runner_group.foreach_env_runner(lambda r: r.weights_version, local_env_runner=False)
    assert versions == [STEPS, STEPS], f"runners hold weight versions {versions}, expected {STEPS}"
    runner_states = algo.env_runner_group.foreach_env_runner(lambda r: r.module.get_state(), local_env_runner=False)
    learner = _learner_weights(algo)[0]
    for state in runner_states:
        for key, value in learner.items():
            assert torch.equal(value, state[key]), f"a runner's {key} differs from the learner's"
    for result in algo.results:
        assert result["env_runners"]["weights_version_lag"] == 0.0


def test_both_runners_and_learners_did_work(algo):
    result = algo.results[-1]
    assert result["env_runners"]["trajectories"] == 4 * 4  # all groups sampled across 2 runners
    assert result["learners"][DEFAULT_MODULE_ID]["num_module_steps_trained"] > 0
