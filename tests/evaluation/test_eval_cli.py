"""``torl-rllib eval`` through the real CLI (``cli.main``, on the session's Ray cluster; the vLLM
run in a subprocess of its own): the real tool loop, nsjail sandbox, grader and EnvRunners; only
the model is replaced, where a test needs known answers, by an engine that answers the gold
(``gold_engine.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_BASE_MODEL, run_cli
from tests.tasks.conftest import BENCHMARKS, benchmark_file

EVAL_RECIPE = REPO / "experiments" / "eval" / "tiny_cpu.yaml"
SHARED_FILES = ("aime24.jsonl", "amc23.jsonl", "math500.jsonl", "torl_test.parquet")


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``torl-rllib eval ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "torl_rllib.cli", "eval", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["GoldEngine", "WrongEngine"])
def test_every_shared_benchmark_row_grades_through_the_harness(engine, tmp_path, ray_cluster, monkeypatch):
    files = [str(benchmark_file(name).resolve()) for name in SHARED_FILES]
    out = tmp_path / "out"
    monkeypatch.setenv("GOLD_ENGINE_FILES", json.dumps(files))  # read by the engine, in this process
    code, _, stderr = run_cli("eval", TINY_BASE_MODEL, "--benchmarks", ",".join(files), "--output-dir", out,
                              f"rollout.rollout_engine=tests.evaluation.gold_engine:{engine}",
                              "rollout.max_prompt_tokens=100000", "rollout.max_response_tokens=100000",
                              "sandbox.jails=2", cwd=tmp_path)
    assert code == 0, stderr[-4000:]
    report = json.loads((out / "eval.json").read_text())
    sizes = {name: int(m["problems"]) for name, m in report["benchmarks"].items()}
    assert sizes == {"aime24": 30, "amc23": 40, "math500": 500, "torl_test": 374}
    expected = 1.0 if engine == "GoldEngine" else 0.0
    wrong = [r for r in rows(out) if r["correct"] != bool(expected)]
    assert not wrong, f"{len(wrong)} rows graded otherwise, e.g. {wrong[:3]}"
    for metrics in report["benchmarks"].values():
        assert metrics["accuracy"] == expected and metrics["failed_samples"] == 0
        assert metrics["code_ratio"] == 1.0 and metrics["executable_code_rate"] == 1.0  # the sandbox ran each
    if engine == "GoldEngine":  # the boxed answer is what the tool printed
        assert all(m["tool_grounded_answer_rate"] == 1.0 for m in report["benchmarks"].values())


@pytest.fixture(scope="module")
def greedy_runs(tmp_path_factory, ray_cluster):
    """The base model, greedy, on 48 tiny test problems: twice in the driver, once on 2
    EnvRunners, once on the vLLM engine (in a fresh process: vLLM's engine core is a process
    tree of its own, kept out of the test process)."""
    cwd = tmp_path_factory.mktemp("greedy")
    outs = {}
    for name, extra in (("a", []), ("b", []), ("two_runners", ["resources.num_env_runners=2",
                                                               "resources.num_cpus_per_env_runner=0.5"]),
                        ("vllm", ["rollout.rollout_engine=vllm"])):
        outs[name] = cwd / name
        args = [TINY_BASE_MODEL, "--config", EVAL_RECIPE, "max_problems=48", *extra, "--output-dir", outs[name]]
        if name == "vllm":
            proc = cli(*args, cwd=cwd)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            code, stdout, stderr = run_cli("eval", *args, cwd=cwd)
        assert code == 0, stderr[-4000:]
        outs[f"{name}_stdout"] = stdout
    return cwd, outs


@pytest.mark.slow
def test_greedy_eval_is_reproducible_and_independent_of_sharding(greedy_runs):
    _, outs = greedy_runs
    first = rows(outs["a"])
    in_file = [json.loads(line)["id"] for line in (REPO / "assets" / "data" / "tiny_arithmetic_test.jsonl")
               .read_text().splitlines()[:48]]
    assert [r["problem_id"] for r in first] == [f"tiny_arithmetic_test/{i}" for i in in_file]
    assert rows(outs["b"]) == first, "greedy evaluation gave different results on a second run"
    assert rows(outs["two_runners"]) == first, "2 EnvRunners gave other results than 0"


@pytest.mark.slow
def test_greedy_answers_agree_across_engines(greedy_runs):
    """The real vLLM engine (its CPU build here) answers as the HF engine does, greedily."""
    from torl_rllib.evaluation.agreement import answer_agreement

    _, outs = greedy_runs
    agreement = answer_agreement(outs["a"] / "problems.jsonl", outs["vllm"] / "problems.jsonl")
    assert agreement["problems"] == 48 and agreement["answers_agree"] >= 0.95, agreement


@pytest.mark.slow
def test_eval_writes_table_report_and_mlflow_run(greedy_runs):
    from mlflow import MlflowClient

    cwd, outs = greedy_runs
    stdout = outs["a_stdout"]
    assert "tiny-math-base (greedy, C=1)" in stdout and "tiny_test" in stdout and "Avg" in stdout
    assert "problems/s" in stdout and "tokens/s" in stdout
    report = json.loads((outs["a"] / "eval.json").read_text())
    metrics = report["benchmarks"]["tiny_test"]
    assert report["status"] == "FINISHED" and report["protocol"]["temperature"] == 0.0
    assert report["settings"]["rollout"]["max_tool_calls"] == 1 and "torch" in report["versions"]
    assert {"accuracy", "code_ratio", "tool_calls_per_response", "response_length/model_tokens",
            "problems_per_s", "tokens_per_s"} <= set(metrics)
    assert report["average"]["accuracy"] == metrics["accuracy"]
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["torl.run_type"] == "eval"
    assert run.data.metrics["eval/tiny_test/accuracy"] == pytest.approx(metrics["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/table.json", "eval/problems_tiny_test.json"} <= artifacts


@pytest.mark.slow
def test_sampled_protocol_reports_avg_pass_and_maj(tmp_path, ray_cluster):
    out = tmp_path / "out"
    code, _, stderr = run_cli("eval", TINY_BASE_MODEL, "--config", EVAL_RECIPE, "--k", "4", "--temperature", "1.0",
                              "max_problems=24", "--output-dir", out, cwd=tmp_path)
    assert code == 0, stderr[-4000:]
    metrics = json.loads((out / "eval.json").read_text())["benchmarks"]["tiny_test"]
    assert len(rows(out)) == 96
    assert metrics["pass@1"] == pytest.approx(metrics["accuracy"])
    assert metrics["accuracy"] <= metrics["pass@2"] <= metrics["pass@4"]
    assert 0.0 <= metrics["maj@4"] <= metrics["pass@4"]
    assert 0 < metrics["accuracy"] < metrics["pass@4"], "the base model should vary across samples"


@pytest.mark.slow
def test_unreadable_rows_are_counted_and_reported(tmp_path, ray_cluster, monkeypatch, caplog):
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"problem": "What is 2 * 3?", "answer": "6"}\n{broken\n{"problem": "What is 4 * 5?", "answer": 20.0}\n')
    out = tmp_path / "out"
    monkeypatch.setenv("GOLD_ENGINE_FILES", json.dumps([str(data)]))
    code, _, stderr = run_cli("eval", TINY_BASE_MODEL, "--config", EVAL_RECIPE, "--benchmarks", data,
                              "--output-dir", out, "rollout.rollout_engine=tests.evaluation.gold_engine:GoldEngine",
                              cwd=tmp_path)
    assert code == 0, stderr[-4000:]
    metrics = json.loads((out / "eval.json").read_text())["benchmarks"]["mixed"]
    assert metrics["problems"] == 2 and metrics["accuracy"] == 1.0
    assert metrics["skipped_rows"] == 1 and "row 1: invalid JSON" in metrics["first_skipped"]
    assert "skipped 1 unreadable rows" in caplog.text  # the console's warning (logging, in this process)


def bad_inputs(tmp_path: Path) -> list[tuple[list, str]]:
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n[1]\n")
    return [
        (["--benchmarks", "amc_23,tiny_test"], "benchmark 'amc_23': unknown benchmark (did you mean 'amc23'?)"),
        (["--benchmarks", tmp_path / "nope.jsonl"], "nope.jsonl not found"),
        (["--benchmarks", junk], "has no usable rows (2 malformed rows"),
        (["--k", "4"], "greedy decoding (temperature 0) gives 4 identical responses"),
        (["rollout.max_tool_cals=0"], "rollout.max_tool_cals: unknown key (did you mean 'max_tool_calls'?)"),
        (["rollout.temperature=0.7"], "rollout.temperature: set it under protocol"),
        (["--config", tmp_path / "missing.yaml"], "eval recipe"),
    ], empty


def test_bad_input_is_a_clear_error_without_traceback(tmp_path):
    cases, empty = bad_inputs(tmp_path)
    for args, message in cases:
        code, _, stderr = run_cli("eval", TINY_BASE_MODEL, "--benchmarks", "tiny_test", *args, cwd=tmp_path)
        assert code == 2 and message in stderr, (args, stderr)
    code, _, stderr = run_cli("eval", empty, cwd=tmp_path)
    assert code == 2 and "neither a Hugging Face model directory" in stderr, stderr
