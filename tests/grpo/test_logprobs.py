"""The rollout log-probabilities equal the learner's for the same weights (to 1e-4), at
temperature 1.0 and 0.7, including the tokens sampled after a tool observation; and the
chunked log-prob/entropy projection equals the unchunked one, gradients included."""

from __future__ import annotations

import asyncio

import pytest
import torch
from ray.rllib.core.columns import Columns

from torl_rllib.modules.causal_lm_module import TOKEN_ENTROPY, TOKEN_LOGPROBS, token_logprobs_and_entropy
from torl_rllib.tasks import render_prompt

from .conftest import (
    ForcedCodeEngine, SandboxExecutor, build_learner, grpo_config, learner_batch, policy, to_episode, tool_loop,
)

PROBLEMS = ["What is 1 + 4?", "What is 12 + 15?", "What is 123 + 126?"]
OBSERVATION = "\n42\n```\n"
TOL = 1e-4


@pytest.fixture(scope="module", params=[1.0, 0.7], ids=lambda t: f"T={t}")
def learner(request, random_model_dir, arithmetic_jsonl):
    return build_learner(grpo_config(random_model_dir, arithmetic_jsonl, temperature=request.param))


def test_rollout_logprobs_equal_learner_logprobs_across_a_tool_call(learner, tokenizer, jail_pool):
    module = policy(learner)
    temperature = learner.config.temperature
    assert module.temperature == temperature, "the module must use the sampling temperature"
    engine = ForcedCodeEngine(module.model, tokenizer)  # the learner's own weights
    sandbox = SandboxExecutor(jail_pool, group=len(PROBLEMS))  # next segments: one left-padded batch

    async def group():
        return await asyncio.gather(*(
            tool_loop(engine, sandbox, tokenizer, render_prompt("tir_base_0309", problem), seed=seed,
                      temperature=temperature, max_tool_calls=1, max_response_tokens=90)
            for seed, problem in enumerate(PROBLEMS)
        ))

    trajectories = asyncio.run(group())
    for traj in trajectories:
        assert traj.error is None, traj.error
        assert [c.observation for c in traj.tool_calls] == [OBSERVATION], "the real sandbox ran print(6*7)"
    batch = learner_batch(learner, [to_episode(t) for t in trajectories])
    learned = module.forward_train(batch)[TOKEN_LOGPROBS].detach()

    mask = batch[Columns.LOSS_MASK].bool()
    diff = (learned - batch["old_logprobs"]).abs()
    assert diff[mask].max() < TOL, f"rollout and learner logprobs differ by up to {diff[mask].max():.2e}"
    after = torch.zeros_like(mask)  # model tokens sampled by HFEngine after the observation
    for row, traj in enumerate(trajectories):
        start = len(traj.prompt_ids) + len(engine.forced) + len(tokenizer.encode(OBSERVATION))
        assert traj.loss_mask[len(engine.forced) : start - len(traj.prompt_ids)] == [0] * len(OBSERVATION)
        after[row, start : len(traj.prompt_ids) + len(traj.response_ids)] = True
    assert after.sum() >= 10, "too few tokens were sampled after the observation to compare"
    assert batch["old_logprobs"][after].mean() < -1.0, "post-observation tokens must be genuinely sampled"
    assert diff[after].max() < TOL, f"after the observation logprobs differ by up to {diff[after].max():.2e}"


def reference(hidden, lm_head, targets, temperature):
    logits = (hidden @ lm_head.weight.T + lm_head.bias) / temperature
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def test_chunked_logprobs_and_entropy_equal_unchunked_with_gradients():
    torch.manual_seed(0)
    rows, width, vocab = 10, 16, 40  # chunks of 3: the last one is partial
    lm_head = torch.nn.Linear(width, vocab)
    hidden0 = torch.randn(rows, width)
    targets = torch.randint(vocab, (rows,))
    weights = torch.randn(2, rows)

    results = {}
    for name, chunk in [("chunked", 3), ("unchunked", 1024), ("reference", None)]:
        hidden = hidden0.clone().requires_grad_(True)
        lm_head.zero_grad()
        if chunk is None:
            lp, ent = reference(hidden, lm_head, targets, 0.7)
        else:
            lp, ent = token_logprobs_and_entropy(hidden, lm_head, targets, temperature=0.7, chunk_size=chunk)
        ((lp * weights[0]).sum() + (ent * weights[1]).sum()).backward()
        results[name] = [lp.detach(), ent.detach(), hidden.grad, lm_head.weight.grad.clone(), lm_head.bias.grad.clone()]

    names = ["logprobs", "entropy", "d/d hidden", "d/d weight", "d/d bias"]
    for other in ("unchunked", "reference"):
        for what, a, b in zip(names, results["chunked"], results[other]):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), f"chunked {what} differs from {other}"


def test_module_chunk_size_does_not_change_its_outputs(random_model_dir, arithmetic_jsonl, tokenizer):
    from ray.rllib.core import DEFAULT_MODULE_ID

    from torl_rllib.rollout.env_runner import placeholder_spaces

    config = grpo_config(random_model_dir, arithmetic_jsonl)
    config.rl_module(model_config={"path": str(random_model_dir), "logits_chunk_size": 5})
    small = config.get_multi_rl_module_spec(spaces=placeholder_spaces()).build()[DEFAULT_MODULE_ID]
    config.rl_module(model_config={"path": str(random_model_dir)})
    default = config.get_multi_rl_module_spec(spaces=placeholder_spaces()).build()[DEFAULT_MODULE_ID]
    assert small.logits_chunk_size == 5

    ids = torch.tensor([tokenizer.encode("12 + 30 = 42 and 7 * 6 = 42", add_special_tokens=False)])
    response = torch.zeros_like(ids, dtype=torch.float32)
    response[:, 4:] = 1.0
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "response_mask": response}
    a, b = small.forward_train(batch), default.forward_train(batch)
    for key in (TOKEN_LOGPROBS, TOKEN_ENTROPY):
        assert torch.allclose(a[key], b[key], atol=1e-6), f"{key} depends on logits_chunk_size"
        assert (a[key][:, :4] == 0).all() and (a[key][:, 4:] != 0).all(), f"{key} must cover response tokens only"
