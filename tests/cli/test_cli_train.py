"""``torl-rllib train`` through the real CLI in a subprocess: the MLflow store it leaves
(run, params, per-step metrics, trajectory table, plots), ``export`` to a Hugging Face
directory that transformers loads and generates with, ``--resume``, in-training evaluation,
and ``eval`` of a checkpoint. (Faults: ``tests/faults``.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RECIPE, REPO, SHORT

pytestmark = pytest.mark.slow


def cli(*args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torl_rllib.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def trained(trained_run):
    """The session's 3-step CLI run (``tests/conftest.py``)."""
    return trained_run


def test_train_writes_summary_and_checkpoints(trained):
    cwd, proc = trained
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["steps"] == 3
    assert Path(summary["checkpoint"]).is_dir()
    assert set(summary["accuracy"]) == {"first", "final", "best"}
    assert (cwd / "run" / "checkpoints" / "step_000002").is_dir(), "periodic checkpoint missing"
    assert "finished: 3 steps" in proc.stdout


def test_mlflow_store_has_run_params_metrics_table_and_plots(trained):
    from mlflow import MlflowClient

    cwd, _ = trained
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny_cpu"
    assert run.data.params["training.group_size"] == "4"
    assert "versions.ray" in run.data.params and "versions.torch" in run.data.params
    for metric in ("accuracy", "code_ratio", "reward_mean", "tool_calls_per_response",
                   "response_length/model_tokens", "entropy", "grad_norm", "time/step_s"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [m.step for m in history] == [1, 2, 3], f"{metric} not logged once per step"
    for metric in ("eval/tiny_test/accuracy", "eval/tiny_test/code_ratio"):  # held out, at step 2 only
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "trajectories")}
    assert "trajectories/step_000001.json" in artifacts
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "trajectories/step_000001.json", str(cwd))).read_text())
    assert {"prompt", "response", "answer", "reward"} <= set(table["columns"])
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/accuracy.png" in plots and "plots/code_ratio.png" in plots
    # MLflow conventions: the policy is a logged model of the run, the data its dataset input.
    models = client.search_logged_models([run.info.experiment_id])
    assert [(m.name, m.source_run_id) for m in models] == [("model", run.info.run_id)]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "tiny_arithmetic_train" and dataset.dataset.digest
    assert "tiny_arithmetic_train.jsonl" in dataset.dataset.source
    assert run.data.tags["torl.checkpoint_path"] == summary["checkpoint"]


def test_export_loads_in_transformers_and_generates(trained):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cwd, _ = trained
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    out = cwd / "exported"
    relative = Path(summary["checkpoint"]).relative_to(cwd)  # as a user types it (RLlib wants URIs)
    proc = cli("export", relative, "exported", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("What is 12 * 34?", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    # The exported weights are the trained ones, not the base model's.
    base = AutoModelForCausalLM.from_pretrained(REPO / "assets" / "tiny-math-base")
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    cwd, _ = trained
    checkpoint = cwd / "run" / "checkpoints" / "step_000002"
    proc = cli("train", RECIPE, *SHORT, "run.steps=4", "--resume", checkpoint,
               "--output-dir", tmp_path / "resumed", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 4
    first = json.loads((cwd / "run" / "summary.json").read_text())
    assert summary["mlflow_run_id"] == first["mlflow_run_id"], "resume started a new MLflow run"
    assert (tmp_path / "resumed" / "checkpoints" / "step_000004").is_dir()
    assert not (tmp_path / "resumed" / "checkpoints" / "step_000002").exists(), "resume re-ran steps"
    # The held-out evaluation keeps its cadence across the resume, in the same run.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    history = client.get_metric_history(summary["mlflow_run_id"], "eval/tiny_test/accuracy")
    assert sorted(m.step for m in history) == [2, 4]
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "eval/tiny_test/accuracy" in m] == [4]


def test_eval_of_a_checkpoint_uses_its_settings_and_links_its_run(trained):
    from mlflow import MlflowClient

    cwd, _ = trained
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    out = cwd / "eval"
    proc = cli("eval", cwd / "run", "--benchmarks", "tiny_test", "max_problems=8", "--output-dir", out, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["checkpoint"] == summary["checkpoint"] and report["checkpoint_step"] == 3
    assert report["training_run_id"] == summary["mlflow_run_id"]
    assert report["settings"]["rollout"]["max_response_tokens"] == 160  # the training run's budget
    assert (out / "model" / "config.json").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.tags["torl.evaluated_run_id"] == summary["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/tiny_test/accuracy")] == [3]
