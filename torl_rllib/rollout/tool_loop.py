"""ToRL's tool loop as a small state machine over token ids.

generate ──(stop string, calls < C)──► run the segment's last ```python block ──► append the
observation's token ids (loss-masked) ──► generate … ; EOS, the token budget, or a segment
that ends without the stop string ends the trajectory. After C calls the stop string is no
longer passed, so later code is never executed.

Token-exact: the trajectory's ids are the sampled ids plus the observation ids, nothing is
decoded and re-encoded; only the code to run is decoded (from the model's own tokens).

Each segment and tool call keeps its wall-clock start and end (``time.time_ns()``), so a trace
of the trajectory can be written afterwards with the real timings (``torl_rllib.tracking.traces``).

Infrastructure failures are retried where they happen, up to ``infra_retries`` times with a
growing pause: a generation that raised is asked again with the same request (same seed, so the
same tokens), a tool call whose pool or jail failed runs the same snippet again. A step whose
failures all recover is therefore the step an undisturbed run would have taken. The snippet's
own faults (exceptions, its timeout, running out of memory, killing itself) are not failures:
they are the observation the model sees, as in ToRL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Literal

from torl_rllib.rollout.engine import RolloutEngine, SamplingParams, derive_seed
from torl_rllib.rollout.failures import ENGINE_FAILED, SANDBOX_FAILED, describe_failure
from torl_rllib.rollout.observation import ObservationStyle, format_observation

__all__ = ["ToolLoopConfig", "Trajectory", "Segment", "ToolCall", "run_trajectory", "last_python_block"]

STOP_STRING = "```output"
_PYTHON_BLOCK = re.compile(r"```python\s*\n(.*?)```", re.DOTALL)


def last_python_block(text: str) -> str | None:
    """The code of the last closed ```python block in ``text`` (None if there is none)."""
    blocks = _PYTHON_BLOCK.findall(text)
    return blocks[-1] if blocks else None


@dataclass(frozen=True)
class ToolLoopConfig:
    """Limits of one trajectory."""

    max_tool_calls: int = 1  # C
    max_response_tokens: int = 3072
    budget_counts_tool_output: bool = True  # ToRL: tool output counts against the budget
    observation_style: ObservationStyle = "torl"
    stop_string: str = STOP_STRING
    # The engine's context (prompt + response tokens it can hold; None: unbounded). The response
    # budget is clipped to the room left, so a long prompt ends as truncated, never as an error.
    context_length: int | None = None
    infra_retries: int = 3  # retries of a failed generation or sandbox call (same request)
    retry_backoff_s: float = 1.0  # pause before retry k (1, 2, ...): retry_backoff_s * 2**(k-1)


RAW_OUTPUT_CHARS = 2000  # of stdout and stderr kept on a ToolCall (the model sees ``observation``)


@dataclass
class ToolCall:
    """One execution: the code, its (model-facing) observation and the raw result."""

    code: str | None
    observation: str
    ok: bool
    timed_out: bool
    latency_s: float
    stdout: str = ""  # raw, cut to RAW_OUTPUT_CHARS
    stderr: str = ""
    exit_code: int | None = None  # the interpreter's exit status (None: killed, or no code to run)
    jail_s: float | None = None  # the jail's own run time, as the sandbox reports it
    start_ns: int = 0  # wall clock (time.time_ns) of the call's start and end
    end_ns: int = 0

    @property
    def wait_s(self) -> float | None:
        """The call's latency less the jail's run time: waiting for a free jail, plus transport."""
        return None if self.jail_s is None else max(0.0, self.latency_s - self.jail_s)

    @property
    def printed(self) -> bool:
        """Whether the code ran and printed something."""
        return self.ok and bool(self.stdout.strip())


@dataclass
class Segment:
    """One generation call: its tokens in ``Trajectory.response_ids`` and its wall-clock span."""

    first_token: int  # index of its first token in response_ids
    num_tokens: int
    finish_reason: str
    start_ns: int
    end_ns: int


@dataclass
class Trajectory:
    """A response as the learner will see it: ids, per-token logprobs and loss mask."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # 0.0 on tool tokens
    loss_mask: list[int] = field(default_factory=list)  # 1 = model token, 0 = tool token
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: Literal["eos", "length", "stop", ""] = ""
    error: str | None = None  # "kind: exception chain" when the infrastructure failed (failures.py)
    retries: dict[str, int] = field(default_factory=dict)  # infrastructure retries by failure kind
    segments: list[Segment] = field(default_factory=list)
    start_ns: int = 0  # wall clock (time.time_ns) of the trajectory's start and end
    end_ns: int = 0
    grading_ns: tuple[int, int] | None = None  # (start, end) of its grading, set by the grader

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def _extend(self, ids, logprobs, trainable: bool) -> None:
        self.response_ids.extend(ids)
        self.logprobs.extend(logprobs)
        self.loss_mask.extend([int(trainable)] * len(ids))


Executor = Callable[[str], Awaitable["object"]]  # code -> result with stdout/stderr/timed_out/ok


async def run_trajectory(
    engine: RolloutEngine,
    execute: Executor,
    tokenizer,
    prompt_ids: list[int],
    sampling: SamplingParams,
    config: ToolLoopConfig,
    seed: int,
) -> Trajectory:
    """Run one trajectory to its end; never raises (failures land in ``Trajectory.error``)."""
    traj = Trajectory(prompt_ids=list(prompt_ids), start_ns=time.time_ns())
    segment = 0
    try:
        while True:
            used = len(traj.response_ids) if config.budget_counts_tool_output else traj.num_model_tokens
            remaining = min(config.max_response_tokens - used, _room(traj, config))
            if remaining <= 0:
                traj.finish_reason = "length"
                break
            can_call = len(traj.tool_calls) < config.max_tool_calls
            params = dataclasses.replace(
                sampling, max_new_tokens=remaining, seed=derive_seed(seed, segment),
                stop=(config.stop_string,) if can_call else (),
            )
            start_ns = time.time_ns()
            out = await _retried(traj, ENGINE_FAILED, config,
                                 lambda: engine.generate(traj.prompt_ids + traj.response_ids, params))
            traj.segments.append(Segment(len(traj.response_ids), len(out.token_ids), out.finish_reason,
                                         start_ns, time.time_ns()))
            traj._extend(out.token_ids, out.logprobs, trainable=True)
            traj.finish_reason = out.finish_reason
            if out.finish_reason != "stop":
                break
            code = last_python_block(tokenizer.decode(out.token_ids, skip_special_tokens=False))
            observation, call = await _retried(traj, SANDBOX_FAILED, config,
                                               lambda: _call_tool(execute, code, config.observation_style))
            traj.tool_calls.append(call)
            obs_ids = tokenizer.encode(observation, add_special_tokens=False)
            if config.budget_counts_tool_output:
                obs_ids = obs_ids[: config.max_response_tokens - len(traj.response_ids)]
            if config.context_length is not None:
                obs_ids = obs_ids[: max(0, int(_room(traj, config)))]
            traj._extend(obs_ids, [0.0] * len(obs_ids), trainable=False)
            segment += 1
    except _RetriesSpent as spent:  # one trajectory's failure never fails the batch
        traj.error = describe_failure(spent.kind, spent.__cause__)
    except Exception as exc:  # a bug of ours (tokenizer, decoding): named, never retried
        traj.error = describe_failure(ENGINE_FAILED, exc)
    traj.end_ns = time.time_ns()
    return traj


def _room(traj: Trajectory, config: ToolLoopConfig) -> float:
    """Tokens the engine's context has left after the prompt and the response so far."""
    if config.context_length is None:
        return float("inf")
    return config.context_length - len(traj.prompt_ids) - len(traj.response_ids)


class SandboxUnavailable(RuntimeError):
    """The interpreter infrastructure failed (pool or jail gone), not the model's code."""


class _RetriesSpent(Exception):
    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


async def _retried(traj: Trajectory, kind: str, config: ToolLoopConfig, attempt):
    """``await attempt()``, again after an exception, up to ``config.infra_retries`` times;
    then ``_RetriesSpent(kind)`` from the last exception. Retries are counted in ``traj``."""
    for retry in range(config.infra_retries + 1):
        try:
            return await attempt()
        except Exception as exc:  # noqa: BLE001 - any infrastructure error; cancellation passes
            if retry == config.infra_retries:
                raise _RetriesSpent(kind) from exc
            traj.retries[kind] = traj.retries.get(kind, 0) + 1
            await asyncio.sleep(config.retry_backoff_s * 2**retry)  # 1, 2, 4 s: a pool restarts in ~2 s


class _NoCode:
    """The result shown when the model stopped for output without a python block."""

    stdout = ""
    stderr = "SyntaxError: no ```python code block before ```output"
    timed_out = False
    ok = False
    exit_code = None


async def _call_tool(execute: Executor, code: str | None, style: ObservationStyle):
    start, start_ns = time.perf_counter(), time.time_ns()
    if code is None:
        result = _NoCode()
    else:
        result = await execute(code)
        infra_error = getattr(result, "error", None)
        if infra_error and not result.timed_out:  # a jail killed at the snippet's deadline: its own doing
            raise SandboxUnavailable(infra_error)
    observation = format_observation(result, style)
    duration = getattr(result, "duration_s", None)
    call = ToolCall(code, observation, bool(result.ok), bool(result.timed_out), time.perf_counter() - start,
                    stdout=(result.stdout or "")[:RAW_OUTPUT_CHARS], stderr=(result.stderr or "")[:RAW_OUTPUT_CHARS],
                    exit_code=getattr(result, "exit_code", None), jail_s=None if duration is None else float(duration),
                    start_ns=start_ns, end_ns=time.time_ns())
    return observation, call
