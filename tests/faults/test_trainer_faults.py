"""Trainer faults through the real CLI in subprocesses, with real signals and killed processes:
preemption (SIGINT/SIGTERM/SIGHUP, the grace period), a SIGKILL then ``--resume latest``, and a
full disk under the checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RECIPE, SHORT, run_cli
from tests.faults.conftest import descendants, wait_gone

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl_c", "sigterm", "sighup"])
def test_an_interrupt_saves_a_checkpoint_and_exits_cleanly(sig, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "run.steps=1000",
         "run.checkpoint_every=0", "--output-dir", str(tmp_path / "run")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)  # two steps logged: the signal lands while a later one runs
    ray_processes = descendants(proc.pid)  # the run's Ray cluster: GCS, raylet, workers
    assert any("raylet" in " ".join(p.cmdline()) for p in ray_processes), "the run started no Ray cluster"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr[-3000:]  # 130, 143, 129: the shell's convention
    assert "Traceback" not in stderr, stderr[-3000:]
    assert wait_gone(ray_processes, timeout_s=10) == [], "processes of the run's Ray cluster were left running"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "KILLED"
    from mlflow import MlflowClient

    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(summary["mlflow_run_id"]).info.status == "KILLED"
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
    code, _, stderr = run_cli("train", RECIPE, "--output-dir", tmp_path / "none", "--resume", "latest", cwd=tmp_path)
    assert code == 2 and "no complete checkpoint in" in stderr


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
