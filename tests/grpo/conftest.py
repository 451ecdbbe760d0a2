"""Shared pieces of the GRPO tests: a real nsjail sandbox as the tool loop's executor, a
scripted policy (only to force *what* the model writes in tool-loop tests), the real HF
engine with a forced first code segment, GRPO learners built from a real config, and the
episode ``ToolEnvRunner._episode`` builds."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Sequence

import pytest
import torch

from torl_rllib.rollout.engine import GenerationOutput, RolloutEngine, SamplingParams
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.tool_loop import STOP_STRING, ToolLoopConfig, Trajectory, run_trajectory

CODE_SEGMENT = "Let me compute.\n```python\nprint(6*7)\n```\n" + STOP_STRING
ANSWER = " So the answer is \\boxed{42}."


@pytest.fixture(scope="session")
def tokenizer():
    """The char tokenizer saved with ``random_model_dir`` (one token per character); what
    ``AutoTokenizer`` loads from that directory gives the same ids
    (``test_env_runner_reads_the_model_tokenizer_exactly``)."""
    from tools.tiny.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def jail_pool():
    """One real warm nsjail jail for the whole GRPO suite."""
    from sandbox import SandboxConfig, WarmJailPool

    with WarmJailPool(SandboxConfig(jails=1, timeout_s=3.0, cpu_time_s=2, memory_mb=512)) as pool:
        yield pool


@pytest.fixture
def sandbox(jail_pool):
    """A fresh recording executor over the shared real jail."""
    return SandboxExecutor(jail_pool)


class SandboxExecutor:
    """The tool loop's async executor over the real jail pool; records every (code, result).

    With ``group=n`` it answers once n calls are waiting, with one ``execute_batch`` (as
    ``SandboxClient`` coalesces concurrent calls), so those trajectories resume together and
    their next segments share one engine batch."""

    def __init__(self, pool, group: int = 1):
        self.pool = pool
        self.group = group
        self.executed: list[tuple[str, object]] = []
        self._waiting: list[tuple[str, asyncio.Future]] = []

    async def __call__(self, code: str):
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((code, future))
        if len(self._waiting) == self.group:
            batch, self._waiting = self._waiting, []
            results = await asyncio.to_thread(self.pool.execute_batch, [c for c, _ in batch])
            for (c, waiting), result in zip(batch, results):
                self.executed.append((c, result))
                waiting.set_result(result)
        return await future


class ScriptedEngine(RolloutEngine):
    """A policy forced to write ``text`` and then EOS, honouring the engine contract.

    Each call continues the script where the previous call ended and stops, exactly like a
    real engine, at EOS, right after a stop string of ``params.stop``, or at
    ``max_new_tokens``. Logprobs are distinct negative numbers, so tests can tell sampled
    positions from tool positions. ``calls`` records (prompt_ids, params, output).
    """

    def __init__(self, tokenizer, text: str):
        self.tokenizer = tokenizer
        self.script = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.cursor = 0
        self.calls: list[tuple[list[int], SamplingParams, GenerationOutput]] = []

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationOutput:
        ids, reason = [], "length"
        while len(ids) < params.max_new_tokens and self.cursor < len(self.script):
            ids.append(self.script[self.cursor])
            self.cursor += 1
            if ids[-1] == self.tokenizer.eos_token_id:
                reason = "eos"
                break
            if any(self.tokenizer.decode(ids).endswith(s) for s in params.stop):
                reason = "stop"
                break
        logprobs = [-0.01 * (len(self.calls) + 1) - 0.001 * i for i in range(len(ids))]
        out = GenerationOutput(ids, logprobs, reason)
        self.calls.append((list(prompt_ids), params, out))
        return out

    def load_weights(self, state_dict) -> None:
        raise NotImplementedError("a scripted policy has no weights")


class ForcedCodeEngine(HFEngine):
    """The real HF engine, except that each trajectory's first segment is forced to be
    ``CODE_SEGMENT`` (finish reason "stop"), with the log-probabilities the model itself
    gives those tokens at the request's temperature. Every later segment is sampled by
    ``HFEngine`` for real, after the real tool observation."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.forced = tokenizer.encode(CODE_SEGMENT, add_special_tokens=False)

    async def generate(self, prompt_ids, params):
        if params.stop:  # only the first segment may call the tool (C = 1)
            return GenerationOutput(list(self.forced), self._score(prompt_ids, params.temperature), "stop")
        return await super().generate(prompt_ids, params)

    @torch.no_grad()
    def _score(self, prompt_ids, temperature: float) -> list[float]:
        ids = torch.tensor([list(prompt_ids) + self.forced])
        logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        return logprobs.gather(-1, torch.tensor(self.forced).unsqueeze(-1)).squeeze(-1).tolist()


def run_tool_loop(engine, execute, tokenizer, prompt: str, *, seed: int = 7, temperature: float = 1.0,
                  **config) -> Trajectory:
    """One trajectory of the real tool loop; ``config`` are ``ToolLoopConfig`` fields."""
    return asyncio.run(tool_loop(engine, execute, tokenizer, prompt, seed=seed, temperature=temperature, **config))


async def tool_loop(engine, execute, tokenizer, prompt: str, *, seed: int, temperature: float = 1.0, **config):
    """``run_trajectory`` on ``prompt`` (coroutine: several can share one engine batch)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    sampling = SamplingParams(max_new_tokens=1, temperature=temperature)  # the loop sets the budget
    return await run_trajectory(engine, execute, tokenizer, prompt_ids, sampling, ToolLoopConfig(**config), seed)


def grpo_config(model_dir, train_data, **training):
    """A GRPO config on the random policy; ``training`` goes to ``.training()``, except the
    ``.rollout()`` keys ``temperature``, ``max_response_tokens`` and ``max_tool_calls``."""
    from torl_rllib.algorithms.grpo import GRPOConfig

    rollout_keys = ("temperature", "max_response_tokens", "max_tool_calls")
    rollout = {k: training.pop(k) for k in rollout_keys if k in training}
    return (
        GRPOConfig()
        .rl_module(model_config={"path": str(model_dir)})
        .task(train_data=str(train_data))
        .training(group_size=2, prompts_per_step=2, **training)
        .rollout(**rollout)
    )


def build_learner(config):
    """A real GRPOTorchLearner (local, in this process) for ``config``."""
    from torl_rllib.rollout.env_runner import placeholder_spaces

    return config.build_learner(spaces=placeholder_spaces())


def policy(learner):
    """The learner's CausalLMModule."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    return learner.module[DEFAULT_MODULE_ID]


def to_episode(traj, reward: float = 1.0, advantage: float = 0.5, *, overlong_mask=False, weights_version=0):
    """The episode ``ToolEnvRunner._episode`` builds for ``traj`` (the real method, called on
    just the runner state it reads)."""
    from torl_rllib.rollout.env_runner import ToolEnvRunner

    runner = SimpleNamespace(config=SimpleNamespace(overlong_mask=overlong_mask), weights_version=weights_version)
    return ToolEnvRunner._episode(runner, traj, reward, advantage)


def learner_batch(learner, episodes) -> dict[str, torch.Tensor]:
    """The learner's own connector pipeline applied to ``episodes``: the module's batch."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    batch = learner._learner_connector(
        rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=learner.metrics
    )
    return batch[DEFAULT_MODULE_ID]
