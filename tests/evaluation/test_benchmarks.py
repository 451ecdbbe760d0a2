"""The benchmark registry and its errors, on the real files in ../shared/data/benchmarks."""

from __future__ import annotations

import json

import pytest

from tests.tasks.conftest import BENCHMARKS, benchmark_file
from torl_rllib.evaluation import BenchmarkError, load_benchmark, resolve_benchmarks


@pytest.fixture
def shared_dir():
    benchmark_file("torl_test.parquet")  # skips without ../shared
    return BENCHMARKS.resolve()


def test_registry_names_load_the_shared_files(shared_dir):
    sizes = {b.name: len(load_benchmark(b)) for b in resolve_benchmarks(
        ["aime24", "amc23", "math500", "torl_aime24", "torl_aime25", "torl_math500", "tiny_test"], shared_dir)}
    assert sizes == {"aime24": 30, "amc23": 40, "math500": 500, "torl_aime24": 120, "torl_aime25": 120,
                     "torl_math500": 134, "tiny_test": 400}


def test_declared_specs_paths_and_limits(shared_dir, tmp_path):
    rows = [{"q": "What is 1+1?", "sol": ["$2$"]}, {"q": "And 2+2?", "sol": ["4"]}]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    declared = {"mine": {"path": str(tmp_path / "mine.jsonl"), "problem_field": "q", "answer_field": "sol"}}
    found = resolve_benchmarks(["mine", {"math500": {"max_problems": 7}}, str(shared_dir / "amc23.jsonl")],
                               shared_dir, declared)
    assert [b.name for b in found] == ["mine", "math500", "amc23"]
    assert [p.answer for p in load_benchmark(found[0])] == ["2", "4"]
    assert len(load_benchmark(found[1])) == 7
    assert load_benchmark(found[2])[0].answer == "27"  # 27.0 in the file


def test_every_problem_is_reported_at_once(shared_dir, tmp_path):
    with pytest.raises(BenchmarkError) as raised:
        resolve_benchmarks(["aime_24", "aime25", "olympiadbench", "missing.jsonl", {"x": {"pth": "a"}}, "amc23",
                            "amc23"], tmp_path)
    problems = raised.value.problems
    assert "benchmark 'aime_24': unknown benchmark (did you mean 'aime24'?)" in problems[0]
    assert f"benchmark 'aime25': file {tmp_path / 'aime25.jsonl'} not found" in problems[1]
    assert "TORL_BENCHMARKS_DIR" in problems[1]
    assert "olympiadbench.jsonl not found" in problems[2]
    assert "missing.jsonl not found" in problems[3]
    assert "benchmark 'x': unknown option(s) ['pth']" in problems[4]
    assert any("listed more than once" in p for p in problems)


def test_a_data_source_with_no_rows_is_named(shared_dir):
    (bench,) = resolve_benchmarks([{"aime26": {"path": "torl_test.parquet", "data_source": "aime26"}}], shared_dir)
    with pytest.raises(ValueError, match=r"no row of .* has data_source 'aime26' \(it has \['aime24', 'aime25', 'math500'\]\)"):
        load_benchmark(bench)
