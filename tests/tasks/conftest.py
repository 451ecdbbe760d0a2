"""Shared fixtures: the real benchmark files in ``<repo>/../shared/data/benchmarks``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks"


def benchmark_file(name: str) -> Path:
    """Path of a shared benchmark file; skips the test when ``../shared`` is not checked out."""
    path = BENCHMARKS / name
    if not path.exists():
        pytest.skip(f"benchmark file {path.resolve()} is absent (needs the shared data next to the repo)")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def batch_grader():
    from torl_rllib.tasks import BatchGrader

    with BatchGrader() as grader:
        yield grader
