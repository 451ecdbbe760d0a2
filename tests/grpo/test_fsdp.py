"""FSDP2 Learners (``learner_strategy: fsdp``) on CPU with gloo, 2 Learners: the same step as
DDP (same episodes, same loss, the same weights after the update, within float tolerance),
about half the parameter memory per Learner, and a reference model that is sharded too."""

from __future__ import annotations

import sys

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from torl_rllib.algorithms.grpo import GRPOConfig
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
# Functions below run inside the Learner actors, which cannot import this test module.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def weight_classes(module) -> tuple[str, str]:
    """The class of a policy weight and of a reference-model weight (``DTensor`` when sharded)."""
    module = module.unwrapped()
    return tuple(type(m.model.layers[0].mlp.up_proj.weight).__name__ for m in (module.model, module.ref_model))


def one_step(strategy, model_dir, data):
    """One GRPO step on 2 Learners; the episodes are sampled in the driver (same seeds)."""
    config = (
        GRPOConfig()
        .debugging(seed=11)
        .rl_module(model_config={"path": str(model_dir)})
        .training(lr=3e-3, group_size=4, prompts_per_step=4, minibatches_per_step=1, entropy_coeff=0.01,
                  kl_coeff=0.05)
        .rollout(max_response_tokens=16, max_tool_calls=0)
        .task(train_data=str(data))
        .env_runners(num_env_runners=0)
        .learners(num_learners=2, num_cpus_per_learner=0.5, learner_strategy=strategy,
                  fsdp={"param_dtype": "float32"})
    )
    algo = config.build_algo()
    try:
        initial = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
        result = algo.train()
        sharded = algo.learner_group.foreach_learner(lambda learner: weight_classes(learner.module[DEFAULT_MODULE_ID]))
        return {
            "initial": initial,
            "weights": algo.learner_group.get_weights()[DEFAULT_MODULE_ID],
            "learner": result["learners"][DEFAULT_MODULE_ID],
            "episodes": result[RESULT_KEY]["response_length/total_tokens"],
            "param_bytes": [r.get()["parameters"] for r in algo.learner_group.foreach_learner(lambda l: l.memory_bytes())],
            "param_class": [r.get() for r in sharded],
        }
    finally:
        algo.stop()


@pytest.fixture(scope="module")
def ddp_and_fsdp(ray_cluster, random_model_dir, arithmetic_jsonl):
    return {s: one_step(s, random_model_dir, arithmetic_jsonl) for s in ("ddp", "fsdp")}


def test_fsdp_shards_the_policy_and_the_reference_model(ddp_and_fsdp):
    assert ddp_and_fsdp["fsdp"]["param_class"] == [("DTensor", "DTensor")] * 2
    assert ddp_and_fsdp["ddp"]["param_class"] == [("Parameter", "Parameter")] * 2


def test_fsdp_and_ddp_take_the_same_step(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp["ddp"], ddp_and_fsdp["fsdp"]
    assert fsdp["episodes"] == ddp["episodes"], "the two runs did not learn on the same episodes"
    for key in ("policy_loss", "entropy", "kl_to_ref"):
        assert fsdp["learner"][key] == pytest.approx(ddp["learner"][key], rel=1e-5, abs=1e-7), key
    assert fsdp["weights"].keys() == ddp["weights"].keys()
    moved = 0
    for key, value in ddp["weights"].items():
        torch.testing.assert_close(fsdp["weights"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        moved += not torch.equal(value, ddp["initial"][key])
    assert moved >= len(ddp["weights"]) // 2, "the update left most weights unchanged: nothing was compared"


def test_each_fsdp_learner_holds_about_half_the_parameters(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp["ddp"]["param_bytes"], ddp_and_fsdp["fsdp"]["param_bytes"]
    print(f"\nparameter bytes per Learner: DDP {ddp}, FSDP {fsdp} (ratio {fsdp[0] / ddp[0]:.3f})")
    for held in fsdp:
        assert 0.45 <= held / ddp[0] <= 0.6, (ddp, fsdp)


def test_fsdp_keeps_float32_master_shards_of_a_bfloat16_model(ray_cluster, random_model_dir, arithmetic_jsonl):
    """model.dtype bfloat16 (what the EnvRunners hold): the Learners' shards, the gathered state
    and so the checkpoints are float32; the runner gets its bfloat16 copy of that state."""
    config = (GRPOConfig()
              .rl_module(model_config={"path": str(random_model_dir), "dtype": "bfloat16"})
              .training(lr=1e-3, group_size=4, prompts_per_step=2, entropy_coeff=0.01)
              .rollout(max_response_tokens=8, max_tool_calls=0)
              .task(train_data=str(arithmetic_jsonl))
              .env_runners(num_env_runners=0)
              .learners(num_learners=2, num_cpus_per_learner=0.5, learner_strategy="fsdp"))
    algo = config.build_algo()
    try:
        algo.train()
        dtypes = algo.learner_group.foreach_learner(
            lambda learner: {p.dtype for p in learner.module[DEFAULT_MODULE_ID].model.parameters()})
        assert [r.get() for r in dtypes] == [{torch.float32}] * 2
        gathered = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
        assert {v.dtype for v in gathered.values()} == {torch.float32}
        runner = algo.env_runner_group.local_env_runner.module.get_state()
        assert {v.dtype for v in runner.values()} == {torch.bfloat16}
        for key, value in gathered.items():
            assert torch.equal(runner[key], value.to(torch.bfloat16)), key
    finally:
        algo.stop()
