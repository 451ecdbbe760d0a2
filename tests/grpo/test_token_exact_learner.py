"""Token-exactness end to end: a real tool-loop trajectory (real nsjail sandbox), turned into
the episode ``ToolEnvRunner._episode`` builds, through the GRPO learner's own connector
pipeline: the learner's input ids are prompt + sampled ids + observation ids, and the loss
mask is 0 exactly on observation ids (and on the prompt and the padding)."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from torl_rllib.core.columns import ADVANTAGE, LOGPROBS, LOSS_MASK, WEIGHTS_VERSION
from torl_rllib.rollout.observation import format_observation
from torl_rllib.rollout.tool_loop import STOP_STRING
from torl_rllib.tasks import render_prompt

from .conftest import ANSWER, ScriptedEngine, build_learner, grpo_config, learner_batch, run_tool_loop, to_episode

PROMPTS = [render_prompt("tir_base_0309", "What is 6 * 7?"), render_prompt("tir_base_0309", "What is 1 / 0?")]
TOOL_SCRIPT = (
    "```python\nprint(6*7)\n```\n" + STOP_STRING
    + "Check:\n```python\nprint(42 / 0)\n```\n" + STOP_STRING + ANSWER
)


@pytest.fixture(scope="module")
def learner(random_model_dir, arithmetic_jsonl):
    return build_learner(grpo_config(random_model_dir, arithmetic_jsonl))


def rollout(tokenizer, sandbox, script, prompt):
    """A trajectory (C=2) and what it is made of: per segment, (sampled output, observation ids)."""
    engine = ScriptedEngine(tokenizer, script)
    traj = run_tool_loop(engine, sandbox, tokenizer, prompt, max_tool_calls=2, max_response_tokens=500)
    assert traj.error is None, traj.error
    observations = [tokenizer.encode(format_observation(r), add_special_tokens=False) for _, r in sandbox.executed]
    sandbox.executed.clear()
    outputs = [out for _, _, out in engine.calls]
    return traj, list(zip(outputs, observations + [[]] * (len(outputs) - len(observations))))


def test_learner_batch_is_prompt_sampled_and_observation_ids(learner, tokenizer, sandbox):
    cases = [  # (script, prompt, advantage): one with two tool calls, one shorter without any
        (TOOL_SCRIPT, PROMPTS[0], 0.75),
        ("The answer is \\boxed{42}.", PROMPTS[1], -1.25),
    ]
    rollouts = [rollout(tokenizer, sandbox, script, prompt) for script, prompt, _ in cases]
    assert len(rollouts[0][0].tool_calls) == 2 and len(rollouts[1][0].tool_calls) == 0
    episodes = [to_episode(traj, 1.0, adv, weights_version=3) for (traj, _), (_, _, adv) in zip(rollouts, cases)]
    batch = learner_batch(learner, episodes)

    width = max(len(t.prompt_ids) + len(t.response_ids) for t, _ in rollouts)
    for row, ((traj, parts), (_, prompt, adv)) in enumerate(zip(rollouts, cases)):
        ids, loss, logprobs = list(tokenizer.encode(prompt, add_special_tokens=False)), [], []
        prompt_len = len(ids)
        for out, observation in parts:
            ids += out.token_ids + observation
            loss += [1.0] * len(out.token_ids) + [0.0] * len(observation)
            logprobs += out.logprobs + [0.0] * len(observation)
        length, pad = len(ids), width - len(ids)
        expected = {
            "input_ids": torch.tensor(ids + [0] * pad),
            "attention_mask": torch.tensor([1] * length + [0] * pad),
            "response_mask": torch.tensor([0.0] * prompt_len + [1.0] * (length - prompt_len) + [0.0] * pad),
            Columns.LOSS_MASK: torch.tensor([0.0] * prompt_len + loss + [0.0] * pad),
            "old_logprobs": torch.tensor([0.0] * prompt_len + logprobs + [0.0] * pad),
        }
        for column, want in expected.items():
            got = batch[column][row]
            assert torch.equal(got, want.to(got.dtype)), f"row {row}: column {column} differs"
        assert batch["advantages"][row].item() == adv
    assert batch["input_ids"].shape == (2, width)


def test_episode_is_one_step_with_prompt_response_and_extras(tokenizer, sandbox):
    traj, _ = rollout(tokenizer, sandbox, TOOL_SCRIPT, PROMPTS[0])
    episode = to_episode(traj, reward=1.0, advantage=0.75, weights_version=3)

    assert len(episode) == 1 and episode.is_terminated, "one trajectory is one single-step episode"
    assert episode.get_observations(0).tolist() == traj.prompt_ids
    assert episode.get_actions(0).tolist() == traj.response_ids
    assert episode.get_rewards(0) == 1.0
    assert episode.get_extra_model_outputs(LOSS_MASK, 0).tolist() == traj.loss_mask
    assert episode.get_extra_model_outputs(LOGPROBS, 0).tolist() == pytest.approx(traj.logprobs, abs=1e-7)
    assert episode.get_extra_model_outputs(ADVANTAGE, 0) == 0.75
    assert episode.get_extra_model_outputs(WEIGHTS_VERSION, 0) == 3


def test_overlong_mask_zeroes_only_truncated_responses(learner, tokenizer, sandbox):
    complete, _ = rollout(tokenizer, sandbox, TOOL_SCRIPT, PROMPTS[0])
    engine = ScriptedEngine(tokenizer, TOOL_SCRIPT)
    cut = run_tool_loop(engine, sandbox, tokenizer, PROMPTS[0], max_tool_calls=2, max_response_tokens=40)
    assert cut.truncated and not complete.truncated
    batch = learner_batch(learner, [to_episode(t, overlong_mask=True) for t in (complete, cut)])

    p = len(complete.prompt_ids)
    assert batch[Columns.LOSS_MASK][0, p : p + len(complete.response_ids)].tolist() == complete.loss_mask
    assert batch[Columns.LOSS_MASK][1].sum() == 0, "a truncated response gets no loss with overlong_mask"
    assert batch["input_ids"][1, p : p + len(cut.response_ids)].tolist() == cut.response_ids


def test_env_runner_reads_the_model_tokenizer_exactly(random_model_dir, arithmetic_jsonl, tokenizer):
    """The prompt ids the learner trains on are the EnvRunner's encoding of the prompt: it must
    be the model's own tokenizer (here, one token per character, whitespace included)."""
    from torl_rllib.rollout.env_runner import ToolEnvRunner

    runner = ToolEnvRunner(config=grpo_config(random_model_dir, arithmetic_jsonl))
    try:
        for text in [PROMPTS[0], TOOL_SCRIPT]:
            ids = runner.tokenizer.encode(text, add_special_tokens=False)
            assert ids == tokenizer.encode(text, add_special_tokens=False), (
                f"the EnvRunner's {type(runner.tokenizer).__name__} encodes {text[:30]!r}... differently"
            )
            assert runner.tokenizer.decode(ids) == text
    finally:
        runner.stop()
