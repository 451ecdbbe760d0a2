"""Benchmarks: a small registry of local benchmark files (never downloaded), and any dataset
path or ``{path, problem_field, answer_field, ...}`` spec besides.

Registry names resolve under a benchmarks directory (``benchmarks_dir`` in an eval recipe, else
``$TORL_BENCHMARKS_DIR``, else ``./benchmarks``), with the file names and column mappings of
the Qwen2.5-Math evaluation suite that ToRL uses. ``torl_*`` names read ToRL's own evaluation
parquet (one file, rows told apart by ``data_source``). ``tiny_test`` is the CPU demo's test split
and ``emergent_test`` the emergent lab's (``kind`` column: ``times_table``, ``two_digit``), both
shipped in ``assets/data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from torl_rllib.utils.resources import asset_path
from torl_rllib.tasks.datasets import Dataset, DatasetSpec, load_dataset
from torl_rllib.utils.suggest import did_you_mean

__all__ = ["Benchmark", "BenchmarkError", "REGISTRY", "default_benchmarks_dir", "load_benchmark",
           "resolve_benchmarks"]

BENCHMARKS_DIR_ENV = "TORL_BENCHMARKS_DIR"
TINY_DATA = asset_path("data")  # the shipped problem files (torl_rllib.assets, i.e. assets/ in a checkout)
# name -> DatasetSpec fields (a relative path is under the benchmarks directory) + data_source.
REGISTRY: dict[str, dict[str, Any]] = {
    "aime24": {"path": "aime24.jsonl"},
    "aime25": {"path": "aime25.jsonl"},
    "amc23": {"path": "amc23.jsonl"},
    "math500": {"path": "math500.jsonl"},  # the worked solution's last \boxed{} is the gold
    "minerva": {"path": "minerva_math.jsonl", "answer_field": "solution"},
    "olympiadbench": {"path": "olympiadbench.jsonl", "problem_field": "question",
                      "answer_field": "final_answer"},  # a list of one answer per row
    "torl_aime24": {"path": "torl_test.parquet", "data_source": "aime24"},
    "torl_aime25": {"path": "torl_test.parquet", "data_source": "aime25"},
    "torl_math500": {"path": "torl_test.parquet", "data_source": "math500"},
    "tiny_test": {"path": str(TINY_DATA / "tiny_arithmetic_test.jsonl")},
    "emergent_test": {"path": str(TINY_DATA / "emergent_test.jsonl")},  # the emergent lab's test split
}
_SPEC_KEYS = tuple(f.name for f in fields(DatasetSpec))
BENCHMARK_KEYS = (*_SPEC_KEYS, "data_source", "max_problems")


class BenchmarkError(ValueError):
    """Every problem found in a list of benchmarks, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Benchmark:
    """A named set of problems: a dataset, optionally only its rows of one ``data_source``,
    optionally only its first ``max_problems`` problems."""

    name: str
    dataset: DatasetSpec
    data_source: str | None = None
    max_problems: int | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.dataset.path), "data_source": self.data_source,
                "max_problems": self.max_problems}


def default_benchmarks_dir() -> Path:
    return Path(os.environ.get(BENCHMARKS_DIR_ENV, "benchmarks"))


def _from_fields(name: str, spec: Mapping[str, Any], base: Path) -> Benchmark:
    unknown = sorted(set(spec) - set(BENCHMARK_KEYS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {list(BENCHMARK_KEYS)}")
    if "path" not in spec:
        raise ValueError("needs a path")
    values = dict(spec)
    data_source, max_problems = values.pop("data_source", None), values.pop("max_problems", None)
    if max_problems is not None and (isinstance(max_problems, bool) or not isinstance(max_problems, int)
                                     or max_problems < 1):
        raise ValueError(f"max_problems must be an integer >= 1, got {max_problems!r}")
    path = Path(str(values["path"])).expanduser()
    values["path"] = path if path.is_absolute() else base / path
    return Benchmark(name, DatasetSpec(**values), data_source, max_problems)


def resolve_benchmarks(
    entries: list[str | Mapping[str, Any]], benchmarks_dir: str | Path | None = None,
    declared: Mapping[str, Any] | None = None, max_problems: int | None = None,
) -> list[Benchmark]:
    """Benchmarks for ``entries`` (each a declared name, a registry name, a dataset path, or a
    one-key mapping ``{name: spec}``), checked to exist. Raises ``BenchmarkError`` listing every
    bad entry (unknown name with the closest match, missing file, bad option) at once."""
    base = Path(benchmarks_dir) if benchmarks_dir else default_benchmarks_dir()
    declared = dict(declared or {})
    out, problems, names = [], [], []
    for entry in entries:
        if isinstance(entry, Mapping):
            if len(entry) != 1:
                problems.append(f"benchmark {dict(entry)!r}: write one {{name: spec}} per entry")
                continue
            (name, spec), = entry.items()
        else:
            name, spec = str(entry), None
        try:
            benchmark = _resolve_one(name, spec, base, declared)
        except ValueError as exc:
            problems.append(f"benchmark {name!r}: {exc}")
            continue
        names.append(benchmark.name)
        if not Path(benchmark.dataset.path).exists():
            hint = (f" (set benchmarks_dir or ${BENCHMARKS_DIR_ENV} to the folder that holds it, "
                    "or declare the benchmark with its path)") if name in REGISTRY else ""
            problems.append(f"benchmark {name!r}: file {Path(benchmark.dataset.path).resolve()} not found{hint}")
            continue
        if max_problems and not benchmark.max_problems:
            benchmark = replace(benchmark, max_problems=max_problems)
        out.append(benchmark)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"benchmark(s) {dupes} listed more than once")
    if not entries:
        problems.append("no benchmarks given")
    if problems:
        raise BenchmarkError(problems)
    return out


def _resolve_one(name: str, spec, base: Path, declared: dict) -> Benchmark:
    if spec is None and name in declared:
        spec = declared[name]
    if isinstance(spec, str):  # an alias: {name: registry name or path}
        spec = REGISTRY.get(spec, {"path": spec})
    if isinstance(spec, Mapping):
        if "path" not in spec and name in REGISTRY:  # e.g. {math500: {max_problems: 50}}
            spec = {**REGISTRY[name], **spec}
        return _from_fields(name, spec, base)
    if spec is not None:
        raise ValueError(f"expected a path or a mapping of dataset options, got {type(spec).__name__}")
    if name in REGISTRY:
        return _from_fields(name, REGISTRY[name], base)
    path = Path(name).expanduser()
    if path.exists() or path.suffix in (".jsonl", ".json", ".parquet", ".ndjson"):
        return Benchmark(path.stem if path.is_file() or path.suffix else path.name, DatasetSpec(path=path))
    valid = sorted({*REGISTRY, *declared})
    raise ValueError(f"unknown benchmark{did_you_mean(name, valid, list_valid=False, cutoff=0.5)}; known: {', '.join(valid)}, "
                     "or give a dataset path")


def load_benchmark(benchmark: Benchmark) -> Dataset:
    """The benchmark's problems (malformed rows skipped and counted in ``Dataset.errors``)."""
    dataset = load_dataset(benchmark.dataset)
    problems = dataset.problems
    if benchmark.data_source is not None:
        problems = [p for p in problems if p.source == benchmark.data_source]
        if not problems:
            sources = sorted({p.source for p in dataset.problems})
            raise ValueError(f"benchmark {benchmark.name!r}: no row of {dataset.path} has "
                             f"data_source {benchmark.data_source!r} (it has {sources})")
    if benchmark.max_problems:
        problems = problems[: benchmark.max_problems]
    return Dataset(path=dataset.path, problems=problems, errors=dataset.errors)
