"""``ToolEnvRunner``: an RLlib EnvRunner that samples whole GRPO groups with ToRL's tool loop.

Per ``sample_groups`` call (training): for each problem, G trajectories run concurrently through the
engine and the sandbox (no batch barrier); each is graded, rewarded, and its group's
advantages computed here, where the whole group lives; then one single-step
``SingleAgentEpisode`` per trajectory is returned (prompt ids as observation, response ids
as the action, per-token logprobs / loss mask / advantage / weights version as extra model
outputs). Infrastructure failures are retried where they happen (the tool loop: generation and
tool calls; here: grading); a trajectory that still fails takes its whole group out of the update
(no advantages over a partial group: the missing sample would bias its group's baseline), is
counted by failure kind with an example message, and never fails the step. ``evaluate_problems``
(evaluation) runs the same tool loop, sandbox and grader with an evaluation protocol and returns
graded per-problem results. Both also return trace records (``torl_rllib.rollout.trace_records``)
of every failed trajectory and a few others, for the driver to log as MLflow traces.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env import INPUT_ENV_SPACES
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.annotations import override
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED, NUM_ENV_STEPS_SAMPLED_LIFETIME

from torl_rllib.core.advantages import group_advantages
from torl_rllib.core.columns import ADVANTAGE, LOGPROBS, LOSS_MASK, WEIGHTS_VERSION
from torl_rllib.rollout.results import ProblemResult, SampleResult
from torl_rllib.rollout.engine import SamplingParams, derive_seed
from torl_rllib.rollout.failures import GRADING_FAILED, PROMPT_TOO_LONG, describe_failure, failure_kind
from torl_rllib.rollout.tool_loop import ToolLoopConfig, Trajectory, run_trajectory
from torl_rllib.rollout.tool_use import tool_use
from torl_rllib.rollout.metrics import SPLIT_PREFIX, split_key
from torl_rllib.rollout.trace_records import TraceRecord, select_traced, trace_record
from torl_rllib.tasks import RewardConfig, compute_reward, grade, render_prompt
from torl_rllib.utils.cluster import available_cpus

logger = logging.getLogger(__name__)

WEIGHTS_VERSION_STATE = "weights_version"


class ToolEnvRunner(EnvRunner, Checkpointable):
    """Samples GRPO groups with the ToRL tool loop (engine + SandboxPool + grader)."""

    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        from transformers import AutoTokenizer

        if self.worker_index:  # a remote runner: its own process (a local one shares the driver's threads)
            torch.set_num_threads(rollout_threads(config))
        self._spaces = placeholder_spaces()
        model_path = config.model_config["path"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.module = config.get_rl_module_spec(spaces=self._spaces, inference_only=True).build()
        gpu = torch.cuda.is_available() and (not self.worker_index or config.num_gpus_per_env_runner)
        if gpu and config.rollout_engine == "hf":  # vLLM holds its own copy of the weights
            self.module.to("cuda")
        self.weights_version = 0
        self._loop = BackgroundLoop()
        self._grader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading")
        self.engine = make_engine(config, self.module, self.tokenizer)
        self._sandbox = None  # the node's SandboxPool actor, looked up on first use
        self._reward = RewardConfig(**config.reward)
        self._loop_config = ToolLoopConfig(
            max_tool_calls=config.max_tool_calls,
            max_response_tokens=config.max_response_tokens,
            budget_counts_tool_output=config.budget_counts_tool_output,
            observation_style=config.observation_style,
            infra_retries=config.infra_retries,
            context_length=engine_context_length(config),
        )
        self._prompt_limit = prompt_limit(config, self._loop_config.context_length)
        self._sampling = SamplingParams(
            max_new_tokens=config.max_response_tokens, temperature=config.temperature,
            top_p=config.top_p, top_k=config.top_k,
        )

    # ---- sampling -------------------------------------------------------------------------
    def sample_groups(self, problems: list, iteration: int,
                      traces: int | None = None) -> tuple[list[SingleAgentEpisode], dict]:
        """G trajectories for each problem → (episodes, rollout statistics).

        Each trajectory is graded as soon as it ends (in the verifier process, while the others
        still generate), and its group's advantages are computed when the group is complete. With
        ``traces`` set, ``["traces"]`` holds the records of every failed trajectory and of the
        first ``traces`` others.
        """
        start = time.perf_counter()
        prompts = [self._encode_prompt(p) for p in problems]
        execute = self._executor()  # looked up outside the event loop (it may block on Ray)
        seed = lambda problem, k: derive_seed(self.config.seed, iteration, problem.source, problem.id, k)  # noqa: E731
        stats = Counter(groups=len(problems))
        grading = self._graded_group(stats)
        grading.traced = traces is not None
        groups = self._loop.run(self._rollout(
            problems, prompts, self.config.group_size, self._sampling, seed, execute, grading))
        stats["rollout_s"] = time.perf_counter() - start
        episodes, samples = [], []
        for problem, scored in zip(problems, groups):
            for traj, reward, result, advantage in scored:
                episodes.append(self._episode(traj, reward, advantage))
                if len(samples) < self.config.trajectories_to_log:
                    samples.append(self._sample_row(problem, traj, reward, result))
        stats["weights_version"] = self.weights_version
        self.num_env_steps_sampled_lifetime += len(episodes)
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, len(episodes), reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, len(episodes), reduce="lifetime_sum")
        traced = self._trace_records(grading, traces, lambda outcome: {} if outcome is None else {
            "reward": outcome[0], "answer": outcome[1].extracted, "correct": bool(outcome[1].correct),
            "grade_reason": outcome[1].reason})
        return episodes, {"stats": dict(stats), "samples": samples, "failures": grading.examples, "traces": traced}

    def _trace_records(self, grading: _Grading, others: int | None, graded: Callable) -> list[TraceRecord]:
        """Records of the trajectories to trace: every failed one and the first ``others`` of the
        rest (none when ``others`` is None); ``graded(outcome)`` gives a record's grade fields."""
        if others is None:
            return []
        picked = select_traced(grading.seen, others, failed=lambda seen: seen[3].error is not None)
        return [trace_record(problem, traj, self.tokenizer, group=group, sample=sample,
                             weights_version=self.weights_version, **graded(outcome))
                for group, sample, problem, traj, outcome in picked]

    def _graded_group(self, stats: Counter):
        """What a finished group becomes: (trajectory, reward, grade, advantage) per trajectory;
        nothing when one of them failed."""

        def finish(problem, outcomes) -> list:
            if any(outcome is None for _, outcome in outcomes):
                stats["dropped_groups"] += 1
                return []
            kept = [(traj, *outcome) for traj, outcome in outcomes]
            advantages = group_advantages([reward for _, reward, _ in kept], scale=self.config.scale_advantages)
            zero_variance = len(kept) > 0 and not np.any(advantages)
            stats["zero_variance_groups"] += zero_variance
            if zero_variance and self.config.dynamic_sampling:
                stats["dropped_by_dynamic_sampling"] += len(kept)
                return []
            return [(traj, reward, result, adv) for (traj, reward, result), adv in zip(kept, advantages)]

        return _Grading(self._score, stats, finish)

    def _encode_prompt(self, problem) -> list[int]:
        text = render_prompt(self.config.prompt_template, problem.problem, self.tokenizer)
        return self.tokenizer.encode(text, add_special_tokens=False)

    async def _rollout(self, problems, prompts, n, sampling, seed_of, execute, grading) -> list:
        """``n`` trajectories per problem, all at once; ``seed_of(problem, k)`` seeds the k-th.
        Each trajectory is graded by ``grading`` as soon as it ends; each group is finished by it
        as soon as its last trajectory is graded."""
        gen_start = time.perf_counter()
        loop = asyncio.get_running_loop()

        async def one(problem, prompt_ids, k):
            if len(prompt_ids) > self._prompt_limit:  # the driver skips these when the data loads
                now = time.time_ns()
                traj = Trajectory(prompt_ids, error=describe_failure(
                    PROMPT_TOO_LONG, f"{len(prompt_ids)} tokens > {self._prompt_limit}"), start_ns=now, end_ns=now)
            else:
                traj = await run_trajectory(
                    self.engine, execute, self.tokenizer, prompt_ids, sampling, self._loop_config, seed_of(problem, k))
            # One grading thread: the verifier pool serializes its calls anyway.
            return traj, await loop.run_in_executor(self._grader, grading.score, problem, traj)

        async def group(index, problem, prompt_ids):
            outcomes = await asyncio.gather(*(one(problem, prompt_ids, k) for k in range(n)))
            grading.see(index, problem, outcomes)
            return grading.finish(problem, outcomes)

        groups = await asyncio.gather(*(group(i, p, ids) for i, (p, ids) in enumerate(zip(problems, prompts))))
        logger.debug("rollout of %d groups took %.2fs", len(groups), time.perf_counter() - gen_start)
        return groups

    def evaluate_problems(self, problems: list, protocol,
                          traces: int | None = None) -> tuple[list[ProblemResult], dict]:
        """``protocol.k`` graded responses per problem (an ``EvalProtocol``: greedy or sampled)
        with the training tool loop, sandbox and grader → (results in order, rollout statistics).
        Each sample's seed depends only on the protocol's seed, the problem and the sample index.
        With ``traces`` set, ``["traces"]`` holds the records of every failed response and of the
        first ``traces`` others."""
        start = time.perf_counter()
        prompts = [self._encode_prompt(p) for p in problems]
        execute = self._executor()
        seed = lambda problem, k: derive_seed(protocol.seed, "eval", problem.source, problem.id, k)  # noqa: E731
        sampling = protocol.sampling(self.config.max_response_tokens)
        stats = Counter(groups=len(problems))
        grading = _Grading(self._sample_result, stats, lambda problem, samples: [s for _, s in samples])
        grading.traced = traces is not None
        groups = self._loop.run(self._rollout(problems, prompts, protocol.k, sampling, seed, execute, grading))
        stats["rollout_s"] = time.perf_counter() - start
        results = [ProblemResult(str(p.id), p.source, p.problem, p.answer, samples) for p, samples in zip(problems, groups)]
        stats["weights_version"] = self.weights_version
        traced = self._trace_records(grading, traces, lambda sample: {} if sample.error else {
            "answer": sample.extracted, "correct": sample.correct, "grade_reason": sample.grade_reason})
        return results, {"stats": dict(stats), "samples": [], "traces": traced}

    def _sample_result(self, problem, traj: Trajectory, stats: Counter) -> SampleResult:
        outcome = self._score(problem, traj, stats)
        text = self.tokenizer.decode(traj.response_ids, skip_special_tokens=True)
        if outcome is None:
            return SampleResult(text, None, False, "failed", len(traj.tool_calls), error=traj.error)
        result = outcome[1]
        use = tool_use(traj.tool_calls, result.extracted)
        return SampleResult(
            response=text, extracted=result.extracted, correct=bool(result.correct), grade_reason=result.reason,
            tool_calls=use.calls, failed_tool_calls=use.failed_calls, used_code=use.used_code,
            recovered=use.recovered, grounded=use.grounded, model_tokens=traj.num_model_tokens,
            total_tokens=len(traj.response_ids), truncated=traj.truncated,
        )

    def _executor(self):
        if self.config.max_tool_calls == 0:
            return None
        from sandbox import SandboxClient, SandboxConfig, SandboxPool

        if self._sandbox is None:  # the driver created (and owns) every node's pool
            self._sandbox = SandboxPool.for_current_node(SandboxConfig(**self.config.sandbox_config))
        return SandboxClient(self._sandbox).execute

    def _score(self, problem, traj: Trajectory, stats: Counter):
        """Grade one trajectory and update the statistics; None when it failed."""
        stats["trajectories"] += 1
        if traj.error is None:
            text = self.tokenizer.decode(traj.response_ids, skip_special_tokens=True)
            for attempt in range(self.config.infra_retries + 1):  # a grader crash: grade again
                try:
                    result = grade(text, problem.answer, timeout_s=self.config.grade_timeout_s)
                    reward = compute_reward(result, traj.truncated, self._reward)
                    break
                except Exception as exc:  # grading must never fail the step
                    if attempt == self.config.infra_retries:
                        traj.error = describe_failure(GRADING_FAILED, exc)
                    else:
                        traj.retries[GRADING_FAILED] = traj.retries.get(GRADING_FAILED, 0) + 1
        for kind, count in traj.retries.items():
            stats[f"retries/{kind}"] += count
        if traj.error is not None:
            stats["failed"] += 1
            stats[f"failed/{failure_kind(traj.error)}"] += 1
            return None
        calls = traj.tool_calls
        use = tool_use(calls, result.extracted)
        sums = Counter({
            "graded": 1,
            "reward_sum": reward,
            "correct": bool(result.correct),
            "used_code": use.used_code,
            "correct_with_code": use.used_code and bool(result.correct),
            "had_tool_failure": use.had_failure,
            "recovered_from_tool_failure": use.recovered,
            "answered_with_code": use.used_code and bool(result.extracted),
            "tool_grounded_answer": use.grounded,
            "tool_calls": len(calls),
            "tool_ok": sum(c.ok for c in calls),
            "tool_ineffective": use.ineffective_calls,
            "tool_timeouts": sum(c.timed_out for c in calls),
            "tool_s": sum(c.latency_s for c in calls),
            "model_tokens": traj.num_model_tokens,
            "total_tokens": len(traj.response_ids),
            "truncated": traj.truncated,
        })
        stats.update(sums)
        stats[f"grade/{result.reason}"] += 1
        split_value = problem.metadata.get(self.config.split_metrics_by) if self.config.split_metrics_by else None
        if split_value is not None:
            prefix = f"{SPLIT_PREFIX}{split_key(split_value)}/"
            stats.update({prefix + key: value for key, value in sums.items()})
        return reward, result

    def _episode(self, traj: Trajectory, reward: float, advantage: float) -> SingleAgentEpisode:
        prompt = np.asarray(traj.prompt_ids, dtype=np.int64)
        loss_mask = np.asarray(traj.loss_mask, dtype=np.float32)
        if traj.truncated and self.config.overlong_mask:
            loss_mask = np.zeros_like(loss_mask)  # DAPO overlong masking
        return SingleAgentEpisode(
            observations=[prompt, prompt],
            actions=[np.asarray(traj.response_ids, dtype=np.int64)],
            rewards=[float(reward)],
            extra_model_outputs={
                LOGPROBS: [np.asarray(traj.logprobs, dtype=np.float32)],
                LOSS_MASK: [loss_mask],
                ADVANTAGE: [float(advantage)],
                WEIGHTS_VERSION: [self.weights_version],
            },
            terminated=True,
            len_lookback_buffer=0,
        )

    def _sample_row(self, problem, traj: Trajectory, reward: float, result) -> dict:
        return {
            "problem_id": str(problem.id),
            "prompt": problem.problem,
            "response": self.tokenizer.decode(traj.response_ids, skip_special_tokens=True),
            "tool_calls": len(traj.tool_calls),
            "answer": result.extracted,
            "gold": problem.answer,
            "reward": reward,
            "weights_version": self.weights_version,
        }

    # ---- weights ----------------------------------------------------------------------------
    def set_weights(self, weights: dict, version: int) -> int:
        """Load the learner's weights (blocking sync); returns the version now held."""
        self.module.set_state(weights)
        if self.engine.holds_own_weights:
            self.engine.load_weights(self.module.hf_state_dict())
        self.weights_version = version
        return self.weights_version

    def sleep_engine(self) -> None:
        """Release the engine's accelerator memory until the next weight sync (colocation)."""
        self.engine.sleep()

    # ---- EnvRunner / Checkpointable API --------------------------------------------------------
    @override(EnvRunner)
    def sample(self, **kwargs):
        raise NotImplementedError(
            "ToolEnvRunner samples whole groups: the GRPO algorithm calls sample_groups(problems, iteration)"
        )

    @override(EnvRunner)
    def get_spaces(self):
        return self._spaces

    @override(EnvRunner)
    def assert_healthy(self):
        assert self.module is not None and self.engine is not None, "ToolEnvRunner not set up"

    @override(EnvRunner)
    def get_metrics(self):
        return self.metrics.reduce()

    @override(Checkpointable)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = {WEIGHTS_VERSION_STATE: self.weights_version}
        if self._check_component(COMPONENT_RL_MODULE, components, not_components):
            state[COMPONENT_RL_MODULE] = self.module.get_state()
        return state

    @override(Checkpointable)
    def set_state(self, state) -> None:
        if COMPONENT_RL_MODULE in state:
            weights = state[COMPONENT_RL_MODULE]
            # RLlib's own syncs send the multi-module form {module_id: weights}, possibly by reference.
            if isinstance(weights, ray.ObjectRef):
                weights = ray.get(weights)
            weights = weights.get(DEFAULT_MODULE_ID, weights)
            self.set_weights(weights, state.get(WEIGHTS_VERSION_STATE, self.weights_version))

    @override(Checkpointable)
    def get_ctor_args_and_kwargs(self):
        return (), {"config": self.config}

    @override(EnvRunner)
    def stop(self):
        self.engine.shutdown()
        self._loop.close()
        self._grader.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Grading:
    """How a rollout grades: ``scorer(problem, trajectory, stats)`` per finished trajectory (in the
    grading thread), ``finish(problem, [(trajectory, outcome), ...])`` per finished group."""

    scorer: Callable
    stats: Counter
    finish: Callable
    examples: dict[str, str] = field(default_factory=dict)  # the first error of each failure kind
    traced: bool = False  # keep every finished trajectory in ``seen`` (to pick trace records from)
    seen: list[tuple] = field(default_factory=list)  # (group, sample, problem, trajectory, outcome)

    def score(self, problem, traj: Trajectory):
        start, start_ns = time.perf_counter(), time.time_ns()
        try:
            return self.scorer(problem, traj, self.stats)
        finally:
            traj.grading_ns = (start_ns, time.time_ns())
            self.stats["grade_s"] += time.perf_counter() - start  # overlapped with generation
            if traj.error is not None:
                self.examples.setdefault(failure_kind(traj.error), traj.error)

    def see(self, group: int, problem, outcomes: list) -> None:
        """Keep a finished group's (trajectory, outcome) pairs when tracing."""
        if self.traced:
            self.seen.extend((group, sample, problem, traj, outcome) for sample, (traj, outcome) in enumerate(outcomes))


class BackgroundLoop:
    """One event loop on a thread of its own for all of a runner's rollouts.

    Ray actor methods may already run inside an event loop (so ``asyncio.run`` is refused
    there), and the engine's batching task and the sandbox client keep state bound to the
    loop they first ran on: one long-lived loop serves both.
    """

    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rollout-loop", daemon=True)
        self._thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def rollout_threads(config) -> int:
    """Torch threads of a remote EnvRunner: ``config.num_threads`` if set; else, on-policy,
    this machine's CPUs shared among the runners (rollout and update alternate: the cores the
    Learner holds are idle while the runners sample); one step off-policy, the CPUs Ray gave it."""
    if config.num_threads:
        return config.num_threads
    if config.max_staleness:
        return max(1, math.floor(config.num_cpus_per_env_runner))
    return max(1, available_cpus() // max(1, config.num_env_runners))


def placeholder_spaces() -> dict:
    """Token sequences have no fixed-size gym space; RLlib only needs a serializable one."""
    obs = gym.spaces.Box(0, np.iinfo(np.int32).max, shape=(1,), dtype=np.int64)
    act = gym.spaces.Box(0, np.iinfo(np.int32).max, shape=(1,), dtype=np.int64)
    return {INPUT_ENV_SPACES: (obs, act), DEFAULT_MODULE_ID: (obs, act)}


def engine_context_length(config) -> int | None:
    """Tokens (prompt + response) the rollout engine holds: vLLM's ``max_model_len`` when the
    recipe sets one, else the model's ``max_position_embeddings`` (None if it has none)."""
    if config.rollout_engine == "vllm" and config.vllm_kwargs.get("max_model_len"):
        return int(config.vllm_kwargs["max_model_len"])
    if ":" in config.rollout_engine and engine_class(config.rollout_engine).context_length:
        return engine_class(config.rollout_engine).context_length
    from transformers import AutoConfig

    model = config.model_config
    hf_config = AutoConfig.from_pretrained(model["path"], trust_remote_code=model.get("trust_remote_code", False))
    return getattr(hf_config, "max_position_embeddings", None)


def prompt_limit(config, context_length: int | None) -> int:
    """The longest usable prompt: ``max_prompt_tokens``, and room for one response token."""
    return min(config.max_prompt_tokens, context_length - 1) if context_length else config.max_prompt_tokens


def engine_class(path: str):
    """The ``RolloutEngine`` class an import path ``package.module:Class`` names."""
    import importlib

    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_engine(config, module, tokenizer):
    """The rollout engine named by ``config.rollout_engine``: ``hf``, ``vllm``, or the import
    path ``package.module:Class`` of a ``RolloutEngine`` built as
    ``Class(config=..., module=..., tokenizer=...)`` (e.g. a test double of the model)."""
    if ":" in config.rollout_engine:
        return engine_class(config.rollout_engine)(config=config, module=module, tokenizer=tokenizer)
    if config.rollout_engine == "hf":
        from torl_rllib.rollout.hf_engine import HFEngine

        return HFEngine(module.model, tokenizer, max_batch_size=config.engine_max_batch_size)
    if config.rollout_engine == "vllm":
        from torl_rllib.rollout.vllm_engine import VLLMEngine

        # The engine computes in the policy's dtype unless the recipe says otherwise (vLLM's own
        # default, "auto", takes the checkpoint's torch_dtype: bfloat16 for a float32 learner).
        vllm_kwargs = {"dtype": config.model_config.get("dtype", "float32"), **config.vllm_kwargs}
        return VLLMEngine(config.model_config["path"], sleep_mode=config.colocate, **vllm_kwargs)
    raise ValueError(f"unknown rollout_engine {config.rollout_engine!r}; choose 'hf' or 'vllm'")
