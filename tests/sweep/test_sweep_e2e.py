"""``torl-rllib sweep`` end to end, with real Ray Tune, real GRPO trials, the real nsjail sandbox
and a real MLflow store: the parent/child run layout, pools shared across sequential trials,
a trial on the vLLM engine, a killed trial retried from its checkpoint, and an interrupted
sweep resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, run_cli
from tests.faults.conftest import descendants, wait_gone

pytestmark = pytest.mark.slow

SMALL = {  # every trial: the tiny demo, cut to seconds per step, 1 CPU per trial
    "training.prompts_per_step": 2, "training.group_size": 4,
    "resources.num_env_runners": 0, "resources.num_cpus_for_main_process": 1,
    "tracking.trajectories_every": 1,
}


def write_sweep(tmp_path: Path, search_space: dict, tune: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "test_sweep", "recipe": str(REPO / "experiments" / "tiny_cpu.yaml"),
        "overrides": SMALL, "search_space": search_space, "tune": tune,
        "output_dir": str(tmp_path / "out"),
    }))
    return path


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def runs(client: MlflowClient) -> tuple:
    experiment = client.get_experiment_by_name("torl-rllib").experiment_id
    found = client.search_runs([experiment])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def steps_of(client: MlflowClient, run, metric="accuracy") -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, metric)]


def run_sweep_in(tmp_path: Path, sweep: Path, *args):
    from torl_rllib.sweep import load_sweep
    from torl_rllib.sweep.driver import run_sweep

    cwd = os.getcwd()
    os.chdir(tmp_path)  # the default MLflow store is ./mlflow.db
    try:
        return run_sweep(load_sweep(sweep, list(args)))
    finally:
        os.chdir(cwd)


def test_sweep_makes_one_parent_and_a_child_run_per_trial(tmp_path, ray_cluster):
    sweep = write_sweep(tmp_path, {"training.lr": {"grid": [1.0e-4, 3.0e-4]}},
                        {"stop": {"steps": 2}, "checkpoint_every": 1, "max_concurrent_trials": 2})
    outcome = run_sweep_in(tmp_path, sweep)
    assert outcome.status == "FINISHED", outcome.table
    client = store(tmp_path)
    (parent,), children = runs(client)
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        assert child.info.status == "FINISHED"
        assert steps_of(client, child) == [1, 2] and steps_of(client, child, "time/step_s") == [1, 2]
        assert child.data.params["training.group_size"] == "4"
        assert child.data.tags["torl.checkpoint_path"].startswith(str(tmp_path / "out" / "tune"))
    assert {c.data.params["training.lr"] for c in children} == {"0.0001", "0.0003"}
    # The parent: search space and Tune settings as params, the results table, the best trial.
    assert parent.data.params["search_space.training.lr"] == "grid[0.0001, 0.0003]"
    assert parent.data.params["tune.scheduler"] == "fifo"
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep_results.json", str(tmp_path))).read_text())
    assert len(table["data"]) == 2 and "training.lr" in table["columns"]
    best = parent.data.tags["torl.best_trial"]
    assert parent.data.tags["torl.best_run_id"] in {c.info.run_id for c in children}
    # The metric and the seconds per step against the searched key; each tracked curve, all trials.
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == {
        "plots/accuracy_vs_training.lr.png", "plots/step_s_vs_training.lr.png", "plots/curves"}
    curves = {a.path for a in client.list_artifacts(parent.info.run_id, "plots/curves")}
    assert {"plots/curves/accuracy.png", "plots/curves/code_ratio.png",
            "plots/curves/response_length_model_tokens.png"} <= curves, curves
    models = client.search_logged_models([parent.info.experiment_id])
    assert [m.source_run_id for m in models] == [parent.info.run_id], "best model logged on the parent only"
    assert outcome.summary["best"]["trial"] == best
    assert outcome.best_command.startswith(f"torl-rllib train {REPO / 'experiments' / 'tiny_cpu.yaml'}")
    assert (tmp_path / "out" / "best_model" / "config.json").is_file()
    # The pools the trials shared are gone with the sweep.
    import ray

    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("sandbox-pool-")]


def test_sequential_trials_share_a_pool_and_a_trial_runs_on_the_vllm_engine(tmp_path, ray_cluster):
    """Two trials one after the other: the HF one, then one that samples with the real vLLM
    engine (its CPU build here). The second runs its code in the sandbox pool the first one
    started (it outlives its trial), and its engine processes end with it."""
    engines = {}  # this process's vLLM processes (its Ray cluster's), seen while the sweep runs
    watching = threading.Event()

    def watch():
        while not watching.wait(0.2):
            engines.update((p.pid, p) for p in descendants(os.getpid(), "VLLM::"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sweep = write_sweep(tmp_path, {"rollout.rollout_engine": {"grid": ["hf", "vllm"]}},
                        {"stop": {"steps": 2}, "checkpoint_every": 2, "max_concurrent_trials": 1})
    outcome = run_sweep_in(tmp_path, sweep)
    watching.set()
    watcher.join()
    assert outcome.status == "FINISHED", outcome.table
    client = store(tmp_path)
    _, children = runs(client)
    assert sorted(c.data.params["rollout.rollout_engine"] for c in children) == ["hf", "vllm"]
    for child in children:  # every trial ran code in the sandbox, none lost a trajectory
        assert child.info.status == "FINISHED" and steps_of(client, child) == [1, 2], child.info.run_name
        assert client.get_metric_history(child.info.run_id, "failed_trajectories")[-1].value == 0
        assert child.data.metrics["failed_trajectory_fraction"] == 0.0, child.info.run_name
        calls = [m.value for m in client.get_metric_history(child.info.run_id, "tool_calls_per_response")]
        assert max(calls) > 0, (child.info.run_name, calls)
    assert engines, "the vLLM trial started no vLLM engine process"
    assert wait_gone(engines.values()) == [], "the trial's vLLM engine outlived it"


def cli_sweep(sweep: Path, cwd: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torl_rllib.cli", "sweep", str(sweep), *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 600) -> list[str]:
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    proc.kill()
    raise AssertionError(f"never printed {text!r}; got:\n{''.join(lines)}\n{proc.stderr.read()[-3000:]}")


def trial_pids(sweep: subprocess.Popen) -> list[int]:
    """The sweep's trial processes (its own: other test workers may run sweeps too)."""
    return [proc.pid for proc in descendants(sweep.pid, "ray::GRPO")]


def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path):
    sweep = write_sweep(tmp_path, {"seed": {"grid": [0]}},
                        {"stop": {"steps": 4}, "checkpoint_every": 1, "max_failures": 1})
    proc = cli_sweep(sweep, tmp_path)
    wait_for_line(proc, "step 2/4")
    pids = trial_pids(proc)
    assert pids, "no trial process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "); retrying from its last checkpoint" in stdout
    assert "finished after 4 steps" in stdout
    client = store(tmp_path)
    _, children = runs(client)
    assert len(children) == 1, "the retry continues the trial's MLflow run"
    (child,) = children
    assert child.info.status == "FINISHED"
    steps = steps_of(client, child)
    assert set(steps) == {1, 2, 3, 4} and steps[-1] == 4 and steps[:2] == [1, 2]


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    sweep = write_sweep(tmp_path, {"seed": {"grid": [0, 1]}},
                        {"stop": {"steps": 2}, "checkpoint_every": 1, "max_concurrent_trials": 1})
    proc = cli_sweep(sweep, tmp_path)
    first = [line for line in wait_for_line(proc, "finished after 2 steps") if "finished after" in line][0]
    first_trial = first.strip("[").split()[0]
    proc.send_signal(signal.SIGTERM)  # what Slurm and Kubernetes send
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "--resume" in stdout
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())

    resumed = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "sweep", str(sweep), "--resume"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"[{first_trial} " not in resumed.stdout, "the finished trial ran again"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["finished", "finished"]
    client = store(tmp_path)
    (parent,), children = runs(client)
    assert parent.info.run_id == state["parent_run_id"] and parent.info.status == "FINISHED"
    assert len(children) == 2
    first_run = next(c for c in children if c.data.tags["tune.trial_id"] == first_trial)
    assert steps_of(client, first_run) == [1, 2]


def test_resume_refuses_a_directory_without_a_sweep_and_a_rerun_refuses_to_overwrite(tmp_path):
    sweep = write_sweep(tmp_path, {"seed": {"grid": [0]}}, {"stop": {"steps": 1}})
    code, _, stderr = run_cli("sweep", sweep, "--resume", cwd=tmp_path)
    assert code == 2 and "--resume: no sweep to resume in" in stderr
    (tmp_path / "out" / "tune").mkdir(parents=True)
    code, _, stderr = run_cli("sweep", sweep, cwd=tmp_path)
    assert code == 2 and "already holds a sweep: continue it with --resume" in stderr


def test_pbt_perturbs_lr_and_each_trial_keeps_its_own_run(tmp_path, ray_cluster):
    sweep = write_sweep(
        tmp_path, {"training.lr": {"grid": [1.0e-6, 3.0e-4]}},
        {"stop": {"steps": 5}, "checkpoint_every": 1, "max_concurrent_trials": 2,
         "scheduler": {"type": "pbt", "perturbation_interval": 3, "quantile_fraction": 0.5,
                       "resample_probability": 1.0, "synch": True,
                       "mutations": {"training.lr": {"loguniform": [1.0e-4, 1.0e-3]}}}},
    )
    outcome = run_sweep_in(tmp_path, sweep)
    assert outcome.status == "FINISHED", outcome.table
    client = store(tmp_path)
    _, children = runs(client)
    assert len(children) == 2, "an exploited trial keeps logging to its own run"
    for child in children:  # every trial logged on past the exploit at step 3, in its own run
        assert {1, 2, 3, 4} <= set(steps_of(client, child)), steps_of(client, child)
        assert child.info.status == "FINISHED"
    assert {r["trial"] for r in outcome.summary["results"]} == {c.data.tags["tune.trial_id"] for c in children}
    # At step 3 (accuracy 0.375 at lr 1e-6 vs 0.625 at 3e-4, seeded) the slow trial took the
    # other's checkpoint and a resampled lr (in [1e-4, 1e-3]), which its learner then uses.
    assert (tmp_path / "out" / "tune" / "pbt_global.txt").read_text().strip(), "PBT never exploited"
    lrs = [[m.value for m in client.get_metric_history(c.info.run_id, "learning_rate")] for c in children]
    assert any(series[2] != series[3] for series in lrs), lrs


def test_a_trial_that_cannot_start_fails_alone_with_its_reason(tmp_path, ray_cluster, capsys):
    sweep = write_sweep(tmp_path, {"sandbox.nsjail_path": {"grid": ["/nonexistent/nsjail", None]}},
                        {"stop": {"steps": 1}, "max_concurrent_trials": 2, "max_failures": 0})
    outcome = run_sweep_in(tmp_path, sweep)
    assert outcome.status == "FINISHED"  # the other trial ran
    failed = [r for r in outcome.summary["results"] if r["status"] == "failed"]
    assert len(failed) == 1 and "nsjail binary not found (/nonexistent/nsjail)" in failed[0]["error"]
    assert "failed for good: sandbox.errors.SandboxStartError: nsjail binary not found" in capsys.readouterr().err
