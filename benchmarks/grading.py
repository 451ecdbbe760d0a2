"""Grading throughput: ``python benchmarks/grading.py [--n 2048] [--workers N] [--json]``.

Builds responses from real MATH500 solutions (half graded against their own answer, a third
against another problem's, the rest with their boxes removed), grades them with a
:class:`BatchGrader` whose workers are already up, and prints graded responses per second.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import SHARED, parser as make_parser, report  # noqa: E402
from torl_rllib.tasks.batch import BatchGrader  # noqa: E402
from torl_rllib.utils.cluster import available_cpus  # noqa: E402
from torl_rllib.tasks.datasets import load_dataset  # noqa: E402
from torl_rllib.tasks.grading import DEFAULT_TIMEOUT_S  # noqa: E402

DEFAULT_DATA = SHARED / "data" / "benchmarks" / "math500.jsonl"


def make_batch(data: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (response, gold) pairs from a MATH-style JSONL whose ``answer`` is a boxed solution."""
    lines = data.read_text(encoding="utf-8").splitlines()
    solutions = [json.loads(line)["answer"] for line in lines if line.strip()]
    golds = [problem.answer for problem in load_dataset(data)]
    rng = random.Random(seed)
    responses, targets = [], []
    for _ in range(n):
        i, kind = rng.randrange(len(golds)), rng.random()
        if kind < 0.5:
            response = solutions[i]
        elif kind < 0.85:
            response = solutions[rng.randrange(len(solutions))]
        else:
            response = solutions[i].replace("\\boxed", "")
        responses.append(response)
        targets.append(golds[i])
    return responses, targets


def main(argv: list[str] | None = None) -> float:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=int, default=2048, help="responses to grade (default 2048)")
    parser.add_argument("--workers", type=int, help=f"verifier processes (default: the {available_cpus()} available cores)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per comparison")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MATH500-style JSONL (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"{args.data.resolve()} not found; pass --data with a MATH500-style JSONL file")

    responses, golds = make_batch(args.data, args.n)
    start = time.perf_counter()
    with BatchGrader(num_workers=args.workers, timeout_s=args.timeout) as grader:
        grader.grade_batch([r"\boxed{\frac{1}{2}}"] * grader.num_workers, ["0.5"] * grader.num_workers)
        startup_s = time.perf_counter() - start
        grader.grade_batch(responses, golds)
        stats = grader.last_stats
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.reasons.items()))
    result = {"workers": grader.num_workers, "startup_s": startup_s, "responses": stats.num_responses,
              "seconds": stats.seconds, "responses_per_s": stats.responses_per_s, "reasons": dict(stats.reasons)}
    report(result, args.json, [
        f"workers: {grader.num_workers} (started in {startup_s:.2f} s)",
        f"graded {stats.num_responses} responses in {stats.seconds:.2f} s: {stats.responses_per_s:.0f} responses/s",
        f"reasons: {reasons}"])
    return stats.responses_per_s


if __name__ == "__main__":
    main()
