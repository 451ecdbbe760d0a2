"""Self-check of a tiny base model with ToRL's tool semantics (C = 1 unless told), on CPU.

The same engine and tool loop as a GRPO rollout (``HFEngine`` + ``run_trajectory``: sampling at
temperature 1, no top-p/top-k, stop at ```` ```output ````, the response budget counting tool
output), except that the code runs in a plain subprocess instead of the nsjail sandbox: this
module is only the pretraining script's quick, dependency-free measurement of trusted,
self-generated code. The reward is the last ``\\boxed{}`` against the gold answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

from torl_rllib.rollout.engine import SamplingParams
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.observation import EMPTY_OUTPUT_MESSAGE
from torl_rllib.rollout.tool_loop import ToolLoopConfig, run_trajectory
from torl_rllib.tasks import extract_boxed
from torl_rllib.tasks.templates import render_prompt
from tools.tiny.synthetic import TEMPLATE, TrustedResult, Multiplication

__all__ = ["SelfCheckReport", "SelfCheckSample", "execute_subprocess", "rollouts", "run_self_check"]

EXEC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SelfCheckSample:
    """One sampled response (tool output included) and how it was graded."""

    response: str
    used_code: bool
    correct: bool
    kind: str = ""  # the problem's kind, where it has one
    failed_call: bool = False  # some execution failed or printed nothing
    recovered: bool = False  # ... and a later one printed a result


@dataclass(frozen=True)
class SelfCheckReport:
    """Accuracy and code use over sampled responses."""

    samples: int
    accuracy: float
    code_ratio: float
    accuracy_with_code: float
    accuracy_without_code: float
    failed_call_rate: float = float("nan")  # of responses with code: a call failed or printed nothing
    recovery_rate: float = float("nan")  # of those: a later call printed a result
    by_kind: dict = field(default_factory=dict)  # kind -> the same report over that kind's problems

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[SelfCheckSample], split: bool = True) -> "SelfCheckReport":
        def mean(values: list[bool]) -> float:
            return sum(values) / len(values) if values else float("nan")

        with_code = [t for t in trajectories if t.used_code]
        failed = [t for t in with_code if t.failed_call]
        kinds = sorted({t.kind for t in trajectories if t.kind}) if split else []
        return cls(
            samples=len(trajectories),
            accuracy=mean([t.correct for t in trajectories]),
            code_ratio=mean([t.used_code for t in trajectories]),
            accuracy_with_code=mean([t.correct for t in with_code]),
            accuracy_without_code=mean([t.correct for t in trajectories if not t.used_code]),
            failed_call_rate=mean([t.failed_call for t in with_code]),
            recovery_rate=mean([t.recovered for t in failed]),
            by_kind={kind: cls.from_trajectories([t for t in trajectories if t.kind == kind], split=False)
                     for kind in kinds},
        )

    def to_dict(self) -> dict:
        return asdict(self)


def execute_subprocess(code: str, timeout_s: float = EXEC_TIMEOUT_S) -> TrustedResult:
    """Run model-written code in a fresh Python process (a trusted-input self-check, not a sandbox)."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as timeout:
        stdout = timeout.stdout.decode() if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
        return TrustedResult(stdout, "", timed_out=True)
    return TrustedResult(done.stdout, done.stderr if done.returncode else "")


def rollouts(model, tokenizer, problems: Sequence[Multiplication], budget: int, seed: int = 0,
             max_tool_calls: int = 1) -> list[SelfCheckSample]:
    """One response per problem with at most ``max_tool_calls`` tool calls; ``budget`` counts
    model and tool tokens."""
    engine = HFEngine(model, tokenizer, max_batch_size=len(problems))
    loop_config = ToolLoopConfig(max_tool_calls=max_tool_calls, max_response_tokens=budget)
    sampling = SamplingParams(max_new_tokens=budget)

    async def execute(code: str) -> TrustedResult:
        return await asyncio.to_thread(execute_subprocess, code)

    async def run_all():
        return await asyncio.gather(*(
            run_trajectory(engine, execute, tokenizer,
                           tokenizer.encode(render_prompt(TEMPLATE, p.problem), add_special_tokens=False),
                           sampling, loop_config, seed=seed * 1_000_003 + i)
            for i, p in enumerate(problems)
        ))

    try:
        trajectories = asyncio.run(run_all())
    finally:
        engine.shutdown()
    out = []
    for problem, traj in zip(problems, trajectories):
        if traj.error:
            raise RuntimeError(f"self-check rollout failed: {traj.error}")
        text = tokenizer.decode(traj.response_ids, skip_special_tokens=True)
        printed = [call.ok and call.observation != EMPTY_OUTPUT_MESSAGE for call in traj.tool_calls]
        first_bad = printed.index(False) if False in printed else None
        out.append(SelfCheckSample(
            text, bool(traj.tool_calls), extract_boxed(text) == problem.answer, getattr(problem, "kind", ""),
            failed_call=first_bad is not None, recovered=first_bad is not None and any(printed[first_bad + 1:]),
        ))
    return out


def run_self_check(
    model, tokenizer, problems: Sequence[Multiplication], budget: int = 128, seed: int = 0, batch_size: int = 50,
    max_tool_calls: int = 1,
) -> tuple[SelfCheckReport, list[SelfCheckSample]]:
    """Sample one response per problem and report accuracy and code use."""
    from tqdm import tqdm

    model.eval()
    trajectories = []
    for start in tqdm(range(0, len(problems), batch_size), desc="eval", unit="batch", leave=False):
        trajectories += rollouts(model, tokenizer, problems[start : start + batch_size], budget, seed + start,
                                 max_tool_calls)
    return SelfCheckReport.from_trajectories(trajectories), trajectories
