"""What a trajectory's MLflow trace is made of, as plain picklable data.

An EnvRunner turns the trajectories it samples into ``TraceRecord``s (every failed one, and the
first ``traces_per_step`` others): text, grade and the wall-clock times stamped during the
rollout. The driver's tracker writes them as MLflow traces afterwards
(``torl_rllib.tracking.traces``), so generation itself carries no tracing cost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, TypeVar

from torl_rllib.rollout.tool_loop import ToolCall, Trajectory
from torl_rllib.rollout.tool_use import tool_use

__all__ = ["TraceRecord", "SegmentRecord", "ToolCallRecord", "trace_record", "select_traced", "gather_traces"]

T = TypeVar("T")


@dataclass
class SegmentRecord:
    """One generation segment: its text, token counts, finish reason and wall-clock span."""

    text: str
    num_tokens: int
    context_tokens: int  # prompt and response tokens the engine was given
    finish_reason: str
    start_ns: int
    end_ns: int


@dataclass
class ToolCallRecord:
    """One code execution as the sandbox ran it and the model saw it."""

    code: str | None
    observation: str
    stdout: str
    stderr: str
    ok: bool
    timed_out: bool
    exit_code: int | None
    latency_s: float
    jail_s: float | None
    wait_s: float | None
    start_ns: int
    end_ns: int


@dataclass
class TraceRecord:
    """One trajectory: the problem, the prompt, what the model wrote and ran, its grade."""

    problem_id: str
    source: str
    problem: str
    prompt: str
    response: str
    gold: str
    group: int  # the problem's index among the step's (or the evaluation call's) problems
    sample: int  # the trajectory's index in its group
    weights_version: int
    start_ns: int
    end_ns: int
    segments: list[SegmentRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    grading_ns: tuple[int, int] | None = None
    answer: str | None = None
    reward: float | None = None
    correct: bool | None = None
    used_code: bool = False  # at least one block was executed
    grade_reason: str | None = None
    error: str | None = None  # "kind: exception chain" (torl_rllib.rollout.failures)
    retries: dict[str, int] = field(default_factory=dict)


def _tool_call_record(call: ToolCall) -> ToolCallRecord:
    return ToolCallRecord(
        code=call.code, observation=call.observation, stdout=call.stdout, stderr=call.stderr, ok=call.ok,
        timed_out=call.timed_out, exit_code=call.exit_code, latency_s=call.latency_s, jail_s=call.jail_s,
        wait_s=call.wait_s, start_ns=call.start_ns, end_ns=call.end_ns,
    )


def trace_record(problem, traj: Trajectory, tokenizer, *, group: int, sample: int, weights_version: int,
                 reward: float | None = None, answer: str | None = None, correct: bool | None = None,
                 grade_reason: str | None = None) -> TraceRecord:
    """The record of one graded (or failed) trajectory of ``problem``."""
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    ids = traj.response_ids
    segments = [
        SegmentRecord(decode(ids[s.first_token:s.first_token + s.num_tokens]), s.num_tokens,
                      len(traj.prompt_ids) + s.first_token, s.finish_reason, s.start_ns, s.end_ns)
        for s in traj.segments
    ]
    return TraceRecord(
        problem_id=str(problem.id), source=str(problem.source), problem=problem.problem,
        prompt=decode(traj.prompt_ids), response=decode(ids), gold=str(problem.answer), group=group,
        sample=sample, weights_version=weights_version, start_ns=traj.start_ns, end_ns=traj.end_ns,
        segments=segments, tool_calls=[_tool_call_record(c) for c in traj.tool_calls], grading_ns=traj.grading_ns,
        answer=answer, reward=reward, correct=correct,
        used_code=tool_use(traj.tool_calls, answer).used_code,
        grade_reason=grade_reason, error=traj.error, retries=dict(traj.retries),
    )


def select_traced(items: Iterable[T], others: int, failed=lambda item: item.error is not None) -> list[T]:
    """Every failed item and the first ``others`` of the rest, in their order."""
    kept, left = [], others
    for item in items:
        if failed(item):
            kept.append(item)
        elif left > 0:
            kept.append(item)
            left -= 1
    return kept


def gather_traces(rollouts: Iterable[dict]) -> list[TraceRecord]:
    """The trace records of a step's rollouts (one per EnvRunner, each with its share of the
    step's problems, in order), their group indices counted over the whole step."""
    records, offset = [], 0
    for rollout in rollouts:
        records += [dataclasses.replace(r, group=r.group + offset) for r in rollout.get("traces", ())]
        offset += rollout["stats"].get("groups", 0)
    return records
