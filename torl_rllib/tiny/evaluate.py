"""Self-check of the tiny base model with ToRL's tool semantics (C = 1), on CPU.

Each response is sampled with Hugging Face ``generate`` at temperature 1 (no top-p/top-k) until EOS, the stop string
```` ```output ```` or the response budget (which counts tool output, as in ToRL). At the stop
string the last ```` ```python ```` block runs in a subprocess, ``format_observation`` of the result
is appended, and sampling continues without the stop string. The reward is the last ``\\boxed{}``
against the gold answer. The GRPO pipeline does the same through the real sandbox; this module is
only the pretraining script's quick, dependency-free measurement.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from tqdm import tqdm

from torl_rllib.rollout.observation import format_observation
from torl_rllib.tasks.templates import render_prompt
from torl_rllib.tiny.synthetic import STOP_STRING, TEMPLATE, ExecutionResult, Problem

__all__ = [
    "EvalReport",
    "Trajectory",
    "last_boxed",
    "last_python_block",
    "execute_subprocess",
    "generate",
    "rollouts",
    "evaluate",
]

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXEC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Trajectory:
    """One sampled response (tool output included) and how it was graded."""

    response: str
    used_code: bool
    correct: bool


@dataclass(frozen=True)
class EvalReport:
    """Accuracy and code use over sampled responses."""

    samples: int
    accuracy: float
    code_ratio: float
    accuracy_with_code: float
    accuracy_without_code: float

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory]) -> "EvalReport":
        def mean(values: list[bool]) -> float:
            return sum(values) / len(values) if values else float("nan")

        with_code = [t.correct for t in trajectories if t.used_code]
        without_code = [t.correct for t in trajectories if not t.used_code]
        return cls(
            samples=len(trajectories),
            accuracy=mean([t.correct for t in trajectories]),
            code_ratio=mean([t.used_code for t in trajectories]),
            accuracy_with_code=mean(with_code),
            accuracy_without_code=mean(without_code),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            if depth == 0:
                return text[begin:index]
            depth -= 1
    return None


def last_python_block(text: str) -> str | None:
    """The code of the last closed ```` ```python ```` block in ``text``, or None."""
    blocks = PYTHON_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def execute_subprocess(code: str, timeout_s: float = EXEC_TIMEOUT_S) -> ExecutionResult:
    """Run model-written code in a fresh Python process (a trusted-input self-check, not a sandbox)."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as timeout:
        stdout = timeout.stdout.decode() if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
        return ExecutionResult(stdout, "", timed_out=True)
    return ExecutionResult(done.stdout, done.stderr if done.returncode else "")


@torch.no_grad()
def generate(model, tokenizer, contexts: Sequence[list[int]], max_new_tokens: int, stop: str | None) -> list[list[int]]:
    """Sample a continuation of each context at temperature 1 (top-p 1, top-k off), batched.

    Each continuation ends after EOS (dropped) or the stop string (kept) or at ``max_new_tokens``.
    """
    eos, width = tokenizer.eos_token_id, max(len(ids) for ids in contexts)
    input_ids = torch.tensor([[eos] * (width - len(ids)) + ids for ids in contexts])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in contexts])
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        stop_strings=[stop] if stop else None,
        tokenizer=tokenizer,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    continuations = []
    for row in output[:, width:].tolist():
        continuations.append(row[: row.index(eos)] if eos in row else row)
    return continuations


def rollouts(model, tokenizer, problems: Sequence[Problem], budget: int) -> list[Trajectory]:
    """One response per problem with at most one tool call; ``budget`` counts model and tool tokens."""
    prompts = [tokenizer.encode(render_prompt(TEMPLATE, p.problem)) for p in problems]
    responses = generate(model, tokenizer, prompts, budget, STOP_STRING)
    called = []
    for index, response in enumerate(responses):
        text = tokenizer.decode(response)
        if text.endswith(STOP_STRING) and (code := last_python_block(text)) is not None:
            responses[index] = response + tokenizer.encode(format_observation(execute_subprocess(code)))
            called.append(index)
    resumable = [i for i in called if len(responses[i]) < budget]
    if resumable:
        room = max(budget - len(responses[i]) for i in resumable)
        tails = generate(model, tokenizer, [prompts[i] + responses[i] for i in resumable], room, None)
        for index, tail in zip(resumable, tails):
            responses[index] += tail[: budget - len(responses[index])]
    trajectories = []
    for index, (problem, response) in enumerate(zip(problems, responses)):
        text = tokenizer.decode(response)
        trajectories.append(Trajectory(text, index in called, last_boxed(text) == problem.answer))
    return trajectories


def evaluate(
    model, tokenizer, problems: Sequence[Problem], budget: int = 128, seed: int = 0, batch_size: int = 50
) -> tuple[EvalReport, list[Trajectory]]:
    """Sample one response per problem and report accuracy and code use."""
    torch.manual_seed(seed)
    model.eval()
    trajectories = []
    for start in tqdm(range(0, len(problems), batch_size), desc="eval", unit="batch", leave=False):
        trajectories += rollouts(model, tokenizer, problems[start : start + batch_size], budget)
    return EvalReport.from_trajectories(trajectories), trajectories
