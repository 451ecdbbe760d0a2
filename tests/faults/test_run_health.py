"""A run never hides its health: a run whose every trajectory fails names the root cause on the
console and in MLflow, stops within its patience with exit code 1 and a ready --resume command,
keeps the last healthy step's checkpoint, and is marked FAILED."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.faults.failing_engine import ROOT_CAUSE

pytestmark = pytest.mark.slow


def test_a_failing_run_names_its_root_cause_and_stops_within_its_patience(tmp_path):
    args = [sys.executable, "-m", "torl_rllib.cli", "train", str(REPO / "experiments" / "tiny_cpu.yaml"),
            "rollout.rollout_engine=tests.faults.failing_engine:ChainedFailureEngine", "rollout.infra_retries=1",
            "run.steps=20", "run.failure_patience=2", "training.prompts_per_step=2", "training.group_size=4",
            "evaluation.interval=0", "--output-dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the EnvRunner actor imports the model double
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    root = f"OverflowError: {ROOT_CAUSE}"
    # The first occurrence of the failure kind, with its cause; then one error line naming the
    # dominant cause, and the ready command.
    assert f"failed: engine_failed: EngineGenerateError <- {root}" in proc.stderr, proc.stderr[-3000:]
    assert "steps 1-2 failed in a row" in proc.stderr and "dominant cause: engine_failed (16 failed" in proc.stderr
    assert "--resume" in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["steps"] == 2
    assert summary["failed_trajectories"] == {"total": 16, "fraction": 1.0}
    assert "failed trajectories 16 (100.0%)" in proc.stdout
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["failed/engine_failed"] for m in metrics] == [8.0, 8.0]
    assert all(m["retries/engine_failed"] == 8.0 for m in metrics)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FAILED"
    with open(client.download_artifacts(run.info.run_id, "failures.json", str(tmp_path))) as f:
        table = json.load(f)
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [(r["step"], r["kind"], r["count"]) for r in rows] == [(1, "engine_failed", 8), (2, "engine_failed", 8)]
    assert all(root in r["example"] for r in rows)
