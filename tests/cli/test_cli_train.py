"""``torl-rllib train`` through the real CLI in a subprocess: the MLflow store it leaves
(run, params, per-step metrics, trajectory table, plots), ``export`` to a Hugging Face
directory that transformers loads and generates with, ``--resume``, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

RECIPE = REPO / "experiments" / "tiny_cpu.yaml"
SHORT = ["training.prompts_per_step=2", "training.group_size=4",
         "tracking.trajectories_every=1", "run.checkpoint_every=2",
         "evaluation.interval=2", "evaluation.benchmarks=[{tiny_test: {max_problems: 8}}]"]

pytestmark = pytest.mark.slow


def cli(*args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torl_rllib.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    proc = cli("train", RECIPE, *SHORT, "run.steps=3", "--output-dir", cwd / "run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd, proc


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
    proc = cli("export", summary["checkpoint"], out, cwd=cwd)
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


def ray_processes_of(session: str) -> list[str]:
    """Command lines of the processes still running that belong to Ray session ``session``."""
    found = subprocess.run(["pgrep", "-af", session], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl_c", "sigterm", "sighup"])
def test_an_interrupt_saves_a_checkpoint_and_exits_cleanly(sig, tmp_path):
    sessions_before = set(Path("/tmp/ray").glob("session_2*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "run.steps=1000",
         "run.checkpoint_every=0", "--output-dir", str(tmp_path / "run")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 300
    tracking_db = tmp_path / "mlflow.db"
    while time.time() < deadline and not (tracking_db.exists() and tracking_db.stat().st_size > 0):
        time.sleep(1)
    time.sleep(15)  # a few training steps
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr[-3000:]  # 130, 143, 129: the shell's convention
    assert "Traceback" not in stderr, stderr[-3000:]
    (session,) = set(Path("/tmp/ray").glob("session_2*")) - sessions_before
    time.sleep(2)
    assert not ray_processes_of(session.name), "processes of the run's Ray session were left running"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "KILLED"
    from mlflow import MlflowClient

    assert MlflowClient(f"sqlite:///{tracking_db}").get_run(summary["mlflow_run_id"]).info.status == "KILLED"
    assert summary["steps"] >= 1 and Path(summary["checkpoint"]).is_dir()
    assert summary["checkpoint"].endswith(f"step_{summary['steps']:06d}"), "checkpoint is not of the last step"


def test_a_step_longer_than_the_grace_period_is_abandoned_and_the_last_step_kept(tmp_path):
    """SIGTERM while a step samples, with a 0 s grace: the step is abandoned at once and the
    checkpoint is the last completed step (resuming redoes the abandoned one)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "run.steps=1000",
         "run.checkpoint_every=0", "run.preemption_grace_s=0", "training.prompts_per_step=8",
         "training.group_size=8", "--output-dir", str(tmp_path / "run")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.1)
    time.sleep(1.0)  # step 2 is sampling (a step samples 64 trajectories for ~3 s)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    assert "abandoned the step in flight" in stderr, stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "KILLED" and summary["steps"] >= 1
    assert summary["checkpoint"].endswith(f"step_{summary['steps']:06d}")


def test_resume_latest_after_a_kill_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL (no chance to save) after step 5 with checkpoints every 2 steps; ``--resume
    latest`` continues from step 4 in the same MLflow run, and every step appears once."""
    from mlflow import MlflowClient

    args = [sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "evaluation.interval=0",
            "run.checkpoint_every=2", "--output-dir", str(tmp_path / "run")]
    proc = subprocess.Popen([*args, "run.steps=1000"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 5):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert logged[:5] == [1, 2, 3, 4, 5]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(client.get_experiment_by_name("torl-rllib").experiment_id)

    done = subprocess.run([*args, "run.steps=7", "--resume", "latest"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "step_000004" in done.stderr
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6, 7]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mlflow_run_id"] == run.info.run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6, 7], steps
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_resume_latest_without_a_checkpoint_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), "--output-dir",
                           str(tmp_path / "none"), "--resume", "latest"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "no complete checkpoint in" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 30 MB filesystem (tmpfs): room for two checkpoints of the tiny model (~13 MB each)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30M", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_then_stops_cleanly(small_disk, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "evaluation.interval=0",
         "run.steps=6", "run.checkpoint_every=1", "--output-dir", str(small_disk / "run")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "could not save the checkpoint of step 3" in proc.stderr and "checkpoint saves in a row failed" in proc.stderr
    folder = small_disk / "run" / "checkpoints"
    assert (folder / "latest").read_text().strip() == "step_000002"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step_000001", "step_000002"]  # no .partial
    summary = json.loads((small_disk / "run" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["steps"] == 4 and summary["checkpoint"].endswith("step_000002")
    resumed = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "export", str(folder / "step_000002"),
                              str(tmp_path / "model")], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, "the kept checkpoint must be complete"
