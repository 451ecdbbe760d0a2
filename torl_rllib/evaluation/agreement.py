"""How two evaluations of the same model agree, problem by problem (e.g. the HF and the vLLM
engine on one checkpoint, greedy): ``python -m torl_rllib.evaluation.agreement A B [--json]``
with two ``problems.jsonl`` files (or the eval directories holding them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["answer_agreement"]


def _rows(path: Path) -> dict[tuple, dict]:
    path = path / "problems.jsonl" if path.is_dir() else path
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["benchmark"], r["problem_id"], r["sample"]): r for r in rows}


def answer_agreement(a: Path, b: Path) -> dict[str, float]:
    """Over the samples both evaluations hold: the fraction with the same extracted answer, with
    the same correctness, and with the very same response text; and each one's accuracy."""
    left, right = _rows(Path(a)), _rows(Path(b))
    shared = sorted(set(left) & set(right))
    if not shared:
        raise ValueError(f"{a} and {b} share no (benchmark, problem, sample)")
    n = len(shared)
    return {
        "problems": n,
        "answers_agree": sum(left[k]["extracted"] == right[k]["extracted"] for k in shared) / n,
        "correctness_agrees": sum(left[k]["correct"] == right[k]["correct"] for k in shared) / n,
        "responses_identical": sum(left[k]["response"] == right[k]["response"] for k in shared) / n,
        "accuracy_a": sum(bool(left[k]["correct"]) for k in shared) / n,
        "accuracy_b": sum(bool(right[k]["correct"]) for k in shared) / n,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="problems.jsonl (or its eval directory)")
    parser.add_argument("b", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = answer_agreement(args.a, args.b)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['problems']} samples: same answer {report['answers_agree']:.1%}, same correctness "
              f"{report['correctness_agrees']:.1%}, identical response {report['responses_identical']:.1%} | "
              f"accuracy {report['accuracy_a']:.3f} vs {report['accuracy_b']:.3f}")
    return report


if __name__ == "__main__":
    main()
