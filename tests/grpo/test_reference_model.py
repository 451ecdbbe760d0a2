"""The reference model exists only when kl_coeff > 0, and then only in the learner's module
(never in an inference-only EnvRunner module); it is frozen, left out of the optimizer, of the
module state and so of the weight sync; the k3 KL to it is 0 at init and grows as the policy
moves away while the reference stays put."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from torl_rllib.algorithms.grpo.grpo_learner import REF_KL_KEY
from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES
from torl_rllib.modules.causal_lm_module import REF_LOGPROBS, TOKEN_LOGPROBS
from torl_rllib.rollout.engine import SamplingParams
from torl_rllib.rollout.env_runner import placeholder_spaces
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.tool_loop import Trajectory

from .conftest import build_learner, grpo_config, learner_batch, policy, to_episode


@pytest.fixture(scope="module")
def plain(random_model_dir, arithmetic_jsonl):
    return build_learner(grpo_config(random_model_dir, arithmetic_jsonl))


@pytest.fixture(scope="module")
def with_ref(random_model_dir, arithmetic_jsonl):
    return build_learner(grpo_config(random_model_dir, arithmetic_jsonl, kl_coeff=0.1, lr=1e-2))


def optimized(learner) -> list[torch.nn.Parameter]:
    return [p for group in learner.get_optimizer().param_groups for p in group["params"]]


def module_state(learner) -> dict:
    return learner.get_state()["rl_module"][DEFAULT_MODULE_ID]


def test_no_reference_model_without_kl(plain):
    module = policy(plain)
    assert module.ref_model is None
    assert not [k for k in module.state_dict() if k.startswith("ref_model.")]
    assert not [k for k in module_state(plain) if k.startswith("ref_model.")]
    params = list(module.parameters())
    assert len(optimized(plain)) == len(params) and {id(p) for p in optimized(plain)} == {id(p) for p in params}


def test_reference_model_is_frozen_and_kept_out_of_optimizer_and_state(with_ref, plain):
    module = policy(with_ref)
    ref = module.ref_model
    assert ref is not None, "kl_coeff > 0 must build a reference model in the learner's module"
    assert not any(p.requires_grad for p in ref.parameters()), "the reference model must be frozen"
    policy_ids = {id(p) for p in module.model.parameters()}
    assert {id(p) for p in optimized(with_ref)} == policy_ids, "the optimizer holds exactly the policy's weights"
    assert len(optimized(with_ref)) == len(optimized(plain))
    ref_storage = {p.data_ptr() for p in ref.parameters()}
    assert not ref_storage & {p.data_ptr() for p in module.model.parameters()}, "the reference must be a copy"
    state = module_state(with_ref)
    assert not [k for k in state if k.startswith("ref_model.")], "get_state must leave the reference out"
    assert state.keys() == module_state(plain).keys()


def test_inference_only_module_has_no_reference_and_takes_the_learner_state(with_ref):
    spec = with_ref.config.get_rl_module_spec(spaces=placeholder_spaces(), inference_only=True)
    runner_module = spec.build()
    assert runner_module.model_config["kl_coeff"] > 0 and runner_module.ref_model is None, (
        "the EnvRunner's inference-only module must not build a reference model"
    )
    state = module_state(with_ref)
    runner_module.set_state(state)  # the weight sync
    synced = runner_module.get_state()
    assert synced.keys() == state.keys() and all(torch.equal(synced[k], state[k]) for k in state)


def test_k3_kl_is_zero_at_init_and_the_reference_stays_put(with_ref, tokenizer):
    module = policy(with_ref)
    ref_before = {k: v.clone() for k, v in module.ref_model.state_dict().items()}
    policy_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    prompts = [tokenizer.encode(f"What is {i} + 3?", add_special_tokens=False) for i in range(4)]
    outputs = HFEngine(module.model, tokenizer).generate_batch(prompts, SamplingParams(max_new_tokens=12, seed=3))
    episodes = [
        to_episode(Trajectory(p, o.token_ids, o.logprobs, [1] * len(o.token_ids), finish_reason=o.finish_reason),
                   advantage=adv)
        for p, o, adv in zip(prompts, outputs, [1.0, -1.0, 1.0, -1.0])
    ]
    batch = learner_batch(with_ref, episodes)
    mask = batch["loss_mask"].bool()

    out = module.forward_train(batch)
    assert torch.equal(out[REF_LOGPROBS][mask], out[TOKEN_LOGPROBS][mask].detach()), "policy == reference at init"
    tokens = float(mask.sum())
    results = with_ref.update(episodes=episodes, timesteps={GLOBAL_LOSS_TOKENS: tokens, GLOBAL_SEQUENCES: 4.0})
    assert results[DEFAULT_MODULE_ID][REF_KL_KEY].peek() == 0.0, "k3 KL at init must be exactly 0"

    moved = any(not torch.equal(v, policy_before[k]) for k, v in module.model.state_dict().items())
    assert moved, "the update must change the policy"
    assert all(torch.equal(v, ref_before[k]) for k, v in module.ref_model.state_dict().items()), (
        "the update must not touch the reference model"
    )
    after = module.forward_train(batch)
    delta = (after[REF_LOGPROBS] - after[TOKEN_LOGPROBS].detach())[mask]
    assert (torch.exp(delta) - delta - 1).mean() > 0, "k3 KL must grow once the policy has moved"
