"""Synthetic two-digit multiplication: RL problems and the tiny base model's pretraining documents.

Problems are ``What is {a} * {b}?`` with ``10 <= a, b <= 99`` and a four-digit product ``a * b``
(6,610 problems), the gold answer. Four digits throughout keep the tool output's position fixed,
which the ~1M-parameter model learns to copy much more reliably than mixed lengths.
They are written as JSONL rows ``{"id", "problem", "answer"}``, the shape the tasks loader reads.

A pretraining document is the ``tir_base_0309`` prompt followed by one of two responses:

* **code** (the tool path)::

     Let me compute it with Python.
    ```python
    print(47 * 83)
    ```
    ```output
    3901
    ```
    The answer is \\boxed{3901}.

  The text after the stop string ```` ```output ```` is ``format_observation`` of the snippet's
  real execution, so a document is, character for character, what an RL rollout looks like;
  the boxed answer is copied from that output.
* **guess** (no tool): a mental estimate that rounds both factors to tens, wrong unless both
  are multiples of ten::

     47 * 83 is about 50 * 80 = 4000.
    The answer is \\boxed{4000}.

Run ``python -m tools.tiny.synthetic --out-dir assets/data`` to write the problem files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from torl_rllib.rollout.observation import format_observation, format_result
from torl_rllib.rollout.tool_loop import STOP_STRING
from torl_rllib.tasks.templates import render_prompt

__all__ = [
    "TEMPLATE",
    "STOP_STRING",
    "Multiplication",
    "TrustedResult",
    "Document",
    "all_problems",
    "split_problems",
    "execute_trusted",
    "shared_prefix",
    "make_document",
    "sample_documents",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

TEMPLATE = "tir_base_0309"
CODE_INTRO = " Let me compute it with Python.\n```python\n"
ANSWER_LINE = "The answer is \\boxed{{{answer}}}."
FACTORS = range(10, 100)


@dataclass(frozen=True)
class Multiplication:
    """One multiplication problem ``a * b``."""

    a: int
    b: int

    @property
    def id(self) -> str:
        return f"mul-{self.a}-{self.b}"

    @property
    def problem(self) -> str:
        return f"What is {self.a} * {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a * self.b)

    def to_row(self) -> dict[str, str]:
        return {"id": self.id, "problem": self.problem, "answer": self.answer}


@dataclass(frozen=True)
class TrustedResult:
    """The outcome of running a snippet, in the shape ``format_observation`` reads."""

    stdout: str
    stderr: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and not self.stderr


@dataclass(frozen=True)
class Document:
    """A prompt and its response as segments ``(text, trainable)``; tool output is not trainable."""

    prompt: str
    segments: tuple[tuple[str, bool], ...]
    uses_code: bool

    @property
    def response(self) -> str:
        return "".join(text for text, _ in self.segments)

    @property
    def text(self) -> str:
        return self.prompt + self.response


def all_problems() -> list[Multiplication]:
    """Every two-digit by two-digit multiplication with a four-digit product, in a fixed order."""
    return [Multiplication(a, b) for a in FACTORS for b in FACTORS if a * b >= 1000]


def split_problems(seed: int, n_train: int, n_test: int) -> tuple[list[Multiplication], list[Multiplication]]:
    """Disjoint train and test problems drawn without replacement with ``seed``.

    The test problems are the first ``n_test`` of the shuffled order, so they do not depend on
    ``n_train``: ``split_problems(seed, len(all_problems()) - n_test, n_test)[0]`` is everything
    but the test set.
    """
    problems = all_problems()
    if n_train + n_test > len(problems):
        raise ValueError(f"only {len(problems)} distinct problems; asked for {n_train} + {n_test}")
    random.Random(seed).shuffle(problems)
    return problems[n_test : n_test + n_train], problems[:n_test]


@lru_cache(maxsize=None)
def execute_trusted(snippet: str) -> TrustedResult:
    """Run generated (trusted) code in this process and capture its stdout and traceback."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            exec(compile(snippet, "<snippet>", "exec"), {"__name__": "__main__"})
        except Exception:  # the traceback is the observation, as in the sandbox
            traceback.print_exc()
    return TrustedResult(stdout.getvalue(), stderr.getvalue())


def shared_prefix() -> str:
    """The prompt text before the problem, identical in every document."""
    marker = "\x00"
    prompt = render_prompt(TEMPLATE, marker)
    return prompt[: prompt.index(marker)]


def estimate(value: int) -> int:
    """``value`` rounded to the nearest ten, halves up."""
    return (value + 5) // 10 * 10


def make_document(problem: Multiplication, use_code: bool) -> Document:
    """The prompt and a code or guess response for ``problem`` (without the EOS token)."""
    prompt = render_prompt(TEMPLATE, problem.problem)
    if use_code:
        snippet = f"print({problem.a} * {problem.b})"
        result = execute_trusted(snippet)
        segments = (
            (f"{CODE_INTRO}{snippet}\n```\n{STOP_STRING}", True),
            (format_observation(result), False),
            (ANSWER_LINE.format(answer=format_result(result)), True),
        )
    else:
        ra, rb = estimate(problem.a), estimate(problem.b)
        guess = ra * rb
        text = f" {problem.a} * {problem.b} is about {ra} * {rb} = {guess}.\n" + ANSWER_LINE.format(answer=guess)
        segments = ((text, True),)
    return Document(prompt, segments, use_code)


def sample_documents(problems: Sequence[Multiplication], n: int, code_fraction: float, seed: int) -> list[Document]:
    """``n`` documents over random ``problems``; exactly ``round(n * code_fraction)`` of them use code.

    A fixed count (not a coin per document) keeps every training batch at the same share, so the
    model's probability of starting with code ends close to ``code_fraction``.
    """
    if not 0 <= code_fraction <= 1:
        raise ValueError(f"code_fraction must be in [0, 1], got {code_fraction}")
    rng = random.Random(seed)
    n_code = round(n * code_fraction)
    flags = [True] * n_code + [False] * (n - n_code)
    rng.shuffle(flags)
    return [make_document(rng.choice(problems), use_code) for use_code in flags]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write ``rows`` as JSON lines (creating parent folders); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="assets/data", help="where the problem files go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=4000, help="number of train problems")
    parser.add_argument("--test", type=int, default=400, help="number of test problems")
    parser.add_argument("--documents", type=int, default=0, help="also write this many pretraining documents")
    parser.add_argument("--code-fraction", type=float, default=0.375)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out = Path(args.out_dir)
    train, test = split_problems(args.seed, args.train, args.test)
    for name, problems in (("train", train), ("test", test)):
        path = out / f"tiny_arithmetic_{name}.jsonl"
        logger.info("wrote %d problems to %s", write_jsonl(path, (p.to_row() for p in problems)), path)
    if args.documents:
        docs = sample_documents(train, args.documents, args.code_fraction, args.seed)
        rows = ({"prompt": d.prompt, "response": d.response, "uses_code": d.uses_code} for d in docs)
        path = out / "tiny_arithmetic_pretrain.jsonl"
        logger.info("wrote %d documents to %s", write_jsonl(path, rows), path)


if __name__ == "__main__":
    main()
