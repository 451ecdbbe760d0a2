"""``micro_batch_size``: the forward/backward runs a few sequences at a time and the gradients
add up before the one optimizer step, so the update (weights, loss, statistics) is the one the
whole mini-batch at once gives, within float tolerance."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES
from torl_rllib.rollout.engine import SamplingParams
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.tool_loop import Trajectory

from .conftest import build_learner, grpo_config, policy, to_episode


def updated(model_dir, data, tokenizer, micro_batch_size):
    """A learner after one update on 5 sampled episodes (entropy bonus and KL on)."""
    learner = build_learner(grpo_config(model_dir, data, lr=1e-2, entropy_coeff=0.01, kl_coeff=0.1,
                                        micro_batch_size=micro_batch_size))
    prompts = [tokenizer.encode(f"What is {i} + 7?", add_special_tokens=False) for i in range(5)]
    outputs = HFEngine(policy(learner).model, tokenizer).generate_batch(
        prompts, SamplingParams(max_new_tokens=10, seed=11))
    episodes = [
        to_episode(Trajectory(p, o.token_ids, o.logprobs, [1] * len(o.token_ids), finish_reason=o.finish_reason),
                   advantage=adv)
        for p, o, adv in zip(prompts, outputs, [1.0, -1.0, 0.5, -0.5, 1.0])
    ]
    tokens = float(sum(len(o.token_ids) for o in outputs))
    results = learner.update(episodes=episodes, timesteps={GLOBAL_LOSS_TOKENS: tokens, GLOBAL_SEQUENCES: 5.0})
    stats = {k: v.peek() for k, v in results[DEFAULT_MODULE_ID].items() if hasattr(v, "peek")}
    grads = {name: p.grad.clone() for name, p in policy(learner).named_parameters() if p.grad is not None}
    return policy(learner).get_state(), grads, stats


@pytest.fixture(scope="module")
def whole(random_model_dir, arithmetic_jsonl, tokenizer):
    return updated(random_model_dir, arithmetic_jsonl, tokenizer, None)


@pytest.mark.parametrize("size", [1, 2])
def test_micro_batches_take_the_whole_batch_step(whole, size, random_model_dir, arithmetic_jsonl, tokenizer):
    weights, grads, stats = updated(random_model_dir, arithmetic_jsonl, tokenizer, size)
    whole_weights, whole_grads, whole_stats = whole
    assert grads.keys() == whole_grads.keys() and len(grads) > 10
    for key, value in whole_grads.items():  # the accumulated gradient is the whole batch's
        torch.testing.assert_close(grads[key], value, rtol=1e-4, atol=1e-8, msg=key)
    for key, value in whole_weights.items():
        # Adam's first step moves each weight by ~lr * sign(grad): where a gradient is ~1e-8
        # (Adam's eps) float noise shows, so weights agree to 1% of a step (lr = 1e-2).
        torch.testing.assert_close(weights[key], value, rtol=0, atol=1e-4, msg=key)
    for key in ("policy_loss", "entropy", "clip_fraction", "approx_kl", "kl_to_ref", "num_loss_tokens"):
        assert stats[key] == pytest.approx(whole_stats[key], rel=1e-5, abs=1e-7), key
    assert whole_stats["num_loss_tokens"] > 5 and whole_stats["policy_loss"] != 0.0
