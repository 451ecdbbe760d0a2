"""The emergent-behaviours curriculum: problems and pretraining documents in which each of ToRL's
tool-use behaviours is *possible* for the base model and rewarded by the ±1 outcome alone.

Two problem kinds (the dataset's ``kind`` column):

* ``times_table``: ``What is seven times eight?``, one-digit factors (2 to 9) in words. The
  base model knows the table: its plain answer ``seven times eight is 56.`` is right. Its code
  copies the words (``print(seven * eight)``) and never runs: a problem easier to reason about
  than to code, where calling the tool can only lose.
* ``two_digit``: ``What is 47 * 83?`` (the arithmetic demo's problems). The plain answer is a
  rounded estimate and wrong; only code that runs gives the product.

Half the documents of each kind use code, and the base model's code is not reliable:

====================  =====  ====================================================
snippet               share  what the model sees
====================  =====  ====================================================
``print(47 * 83)``    55 %   ``3901``
``print(47 * 83``     15 %   ``SyntaxError: '(' was never closed``
``print(a * b)``      10 %   ``NameError: name 'a' is not defined``
``47 * 83``           20 %   nothing printed (ineffective code)
====================  =====  ====================================================

(the snippets of the ``times_table`` kind have the same shapes, with the factors in words). After
a failed or ineffective call, 20 % of the documents fix the code and run it again (error
recovery: possible with C >= 2, rare at the start; on the ``times_table`` kind the fix fails
again); the others give up without an answer. So plain reasoning is the better strategy where it
suffices (``times_table``) and code where it does not (``two_digit``), and this stays true
however good the model's code becomes. (A first version stated the times table in digits: RL
then made all code reliable, code lost its cost there, and code use rose on both kinds,
``code_ratio/times_table`` 0.46 -> 0.73 in 20 steps. Words keep the cost.)

So, from ±1 alone, RL can: raise code use on ``two_digit`` and lower it on ``times_table``
(strategy), write code that runs (executable-code rate), stop writing code that prints nothing
(ineffective-code rate) and retry after an error (error recovery, with C >= 2).

    python -m tools.tiny.emergent --out-dir assets/data
"""

from __future__ import annotations

import argparse
import logging
import random
from dataclasses import dataclass
from typing import Sequence

from torl_rllib.rollout.observation import format_observation, format_result
from torl_rllib.rollout.tool_loop import STOP_STRING
from torl_rllib.tasks.templates import render_prompt
from tools.tiny.synthetic import (
    ANSWER_LINE,
    CODE_INTRO,
    TEMPLATE,
    Document,
    Multiplication,
    estimate,
    execute_trusted,
    split_problems,
    write_jsonl,
)

__all__ = [
    "TIMES_TABLE",
    "TWO_DIGIT",
    "KINDS",
    "SNIPPET_SHARES",
    "KindedMultiplication",
    "times_table",
    "emergent_split",
    "make_emergent_document",
    "sample_emergent_documents",
]

logger = logging.getLogger(__name__)

TIMES_TABLE = "times_table"
TWO_DIGIT = "two_digit"
KINDS = (TIMES_TABLE, TWO_DIGIT)
TABLE_FACTORS = range(2, 10)
WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
# How the base model's first snippet goes (see the module docstring); the shares sum to 1.
SNIPPET_SHARES = {"clean": 0.55, "syntax_error": 0.15, "name_error": 0.10, "no_print": 0.20}
RETRY_SHARE = 0.2  # of failed or ineffective calls, the share of documents that fix and rerun
CODE_FRACTION = 0.5
TIMES_TABLE_SHARE = 0.4  # of the documents and of the RL train file
FIX_INTRO = "Let me fix the code.\n```python\n"
GIVE_UP = "The code did not work, so I have no answer."
DEMO_TEST_SIZE = 400  # the arithmetic demo's held-out split (``tiny_arithmetic_test.jsonl``)


@dataclass(frozen=True)
class KindedMultiplication(Multiplication):
    """A multiplication problem with its kind: ``times_table`` (one-digit factors, in words) or
    ``two_digit``."""

    @property
    def kind(self) -> str:
        return TIMES_TABLE if self.a < 10 and self.b < 10 else TWO_DIGIT

    @property
    def factors(self) -> tuple[str, str]:
        """The factors as the problem states them."""
        if self.kind == TIMES_TABLE:
            return WORDS[self.a], WORDS[self.b]
        return str(self.a), str(self.b)

    @property
    def problem(self) -> str:
        if self.kind == TIMES_TABLE:
            return "What is {} times {}?".format(*self.factors)
        return super().problem

    def to_row(self) -> dict[str, str]:
        return {**super().to_row(), "kind": self.kind}


def times_table() -> list[KindedMultiplication]:
    """Every one-digit product ``a * b`` with 2 <= a, b <= 9."""
    return [KindedMultiplication(a, b) for a in TABLE_FACTORS for b in TABLE_FACTORS]


def emergent_split(seed: int, n_two_digit_train: int, n_two_digit_test: int) -> tuple[list, list]:
    """RL train and test rows. The times table is in both (it is known knowledge, not a held-out
    skill). The two-digit test rows are the first of the arithmetic demo's 400 test problems,
    which the base models never saw in pretraining; the train rows come from the demo's train
    split."""
    if n_two_digit_test > DEMO_TEST_SIZE:
        raise ValueError(f"at most {DEMO_TEST_SIZE} two-digit test problems (the demo's held-out split)")
    train, test = split_problems(seed, n_two_digit_train, DEMO_TEST_SIZE)
    as_kinded = lambda problems: [KindedMultiplication(p.a, p.b) for p in problems]  # noqa: E731
    return times_table() + as_kinded(train), times_table() + as_kinded(test[:n_two_digit_test])


def _plain_answer(problem: KindedMultiplication) -> str:
    """The reasoning-only response: exact for the times table, a rounded estimate otherwise."""
    if problem.kind == TIMES_TABLE:
        a, b = problem.factors
        return f" {a} times {b} is {problem.a * problem.b}.\n" + ANSWER_LINE.format(answer=problem.answer)
    ra, rb = estimate(problem.a), estimate(problem.b)
    return f" {problem.a} * {problem.b} is about {ra} * {rb} = {ra * rb}.\n" + ANSWER_LINE.format(answer=ra * rb)


def _snippet(problem: KindedMultiplication, variant: str) -> str:
    a, b = problem.factors
    return {
        "clean": f"print({a} * {b})",
        "syntax_error": f"print({a} * {b}",
        "name_error": "print(a * b)",
        "no_print": f"{a} * {b}",
    }[variant]


def _call(snippet: str) -> tuple[tuple[str, bool], tuple[str, bool], bool]:
    """The model's block, the observation that follows it, and whether it printed a result."""
    result = execute_trusted(snippet)
    return (snippet + f"\n```\n{STOP_STRING}", True), (format_observation(result), False), bool(
        result.ok and result.stdout.strip())


def make_emergent_document(problem: KindedMultiplication, use_code: bool, variant: str = "clean",
                           retry: bool = False) -> Document:
    """The prompt and one response for ``problem``: plain reasoning, or a first snippet of
    ``variant`` (see ``SNIPPET_SHARES``) that, if it fails, is rewritten and rerun when
    ``retry``; the answer is copied from the output, or the response gives up."""
    prompt = render_prompt(TEMPLATE, problem.problem)
    if not use_code:
        return Document(prompt, ((_plain_answer(problem), True),), False)
    block, observation, printed = _call(_snippet(problem, variant))
    segments = [(CODE_INTRO + block[0], True), observation]
    if not printed and retry:
        block, observation, printed = _call(_snippet(problem, "clean"))
        segments += [(FIX_INTRO + block[0], True), observation]
    if not printed:
        return Document(prompt, (*segments, (GIVE_UP, True)), True)
    answer = format_result(execute_trusted(_snippet(problem, "clean")))
    return Document(prompt, (*segments, (ANSWER_LINE.format(answer=answer), True)), True)


def sample_emergent_documents(problems: Sequence[Multiplication], n: int, seed: int) -> list[Document]:
    """``n`` documents: ``TIMES_TABLE_SHARE`` of them on the times table, the rest on ``problems``
    (two-digit); half of each use code, with the snippet shares and retries of the module doc."""
    rng = random.Random(seed)
    table = times_table()
    variants, weights = zip(*SNIPPET_SHARES.items())
    docs = []
    for _ in range(n):
        problem = rng.choice(table) if rng.random() < TIMES_TABLE_SHARE else rng.choice(problems)
        problem = KindedMultiplication(problem.a, problem.b)
        use_code = rng.random() < CODE_FRACTION
        variant = rng.choices(variants, weights)[0]
        docs.append(make_emergent_document(problem, use_code, variant, retry=rng.random() < RETRY_SHARE))
    return docs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the emergent curriculum's RL problem files.")
    parser.add_argument("--out-dir", default="assets/data")
    parser.add_argument("--seed", type=int, default=0, help="the arithmetic demo's split seed")
    parser.add_argument("--train", type=int, default=96, help="two-digit train problems (times table: 64)")
    parser.add_argument("--test", type=int, default=200, help="two-digit test problems (times table: 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train, test = emergent_split(args.seed, args.train, args.test)
    for name, problems in (("train", train), ("test", test)):
        path = f"{args.out_dir}/emergent_{name}.jsonl"
        logger.info("wrote %d problems to %s", write_jsonl(path, (p.to_row() for p in problems)), path)


if __name__ == "__main__":
    main()
