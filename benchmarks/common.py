"""What every benchmark script shares: repository paths, timing, ``--json`` and report output.

The scripts run from a clone as ``python benchmarks/<name>.py [--json]``; ``benchmarks/`` is not
a package the wheel ships, so each one puts the repository root on ``sys.path`` (a line before
its imports) and imports this module as ``benchmarks.common``, which works the same when a test
imports a benchmark as ``benchmarks.<name>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a clone without installing
ASSETS = REPO / "assets"
TINY_MODEL = ASSETS / "tiny-math-base"
TINY_TRAIN_DATA = ASSETS / "data" / "tiny_arithmetic_train.jsonl"
EXPERIMENTS = REPO / "experiments"
SHARED = REPO.parent / "shared"  # the shared data sets (benchmarks/math500.jsonl, ...)
# ``--json`` prints one JSON object on stdout; vLLM logs to stdout unless told otherwise (its
# engine core processes inherit this), so its lines go to stderr with the rest of the noise.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def parser(doc: str, *, json_flag: bool = True, **kwargs) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (a module docstring), with
    the ``--json`` switch every benchmark takes unless ``json_flag`` is false."""
    result = argparse.ArgumentParser(description=doc.split("\n\n")[0], **kwargs)
    if json_flag:
        result.add_argument("--json", action="store_true", help="print one JSON object")
    return result


def elapsed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], iters: int, warmup: int = 0) -> float:
    """The median of ``iters`` timed calls of ``fn`` after ``warmup`` untimed ones, in seconds."""
    for _ in range(warmup):
        fn()
    return statistics.median(elapsed(fn) for _ in range(iters))


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def ratio(value: float, digits: int = 2, width: int = 0) -> str:
    """A ratio as the reports print it: ``1.17x``."""
    return f"{value:{width}.{digits}f}x"


def report(result: dict, as_json: bool, lines: Callable[[], Iterable[str]] | Iterable[str], indent=None) -> dict:
    """Print ``result`` as one JSON object with ``as_json``, else the human-readable ``lines``
    (an iterable, or a function returning one so that nothing is formatted for ``--json``)."""
    if as_json:
        print(json.dumps(result, indent=indent))
    else:
        for line in lines() if callable(lines) else lines:
            print(line)
    return result
