"""EnvRunner failures, with real killed processes: a runner SIGKILLed mid-step has its share of
the step sampled again (same seeds, so the same data) and is restarted with the current weights;
with no runner left and none restorable, the run stops cleanly with the last completed step's
checkpoint (exit code 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import REPO, TINY_BASE_MODEL, TINY_TRAIN_DATA
from tests.faults.conftest import descendants, mark_sampling, when_marked
from tests.grpo.conftest import grpo_config
from torl_rllib.tracking.step_metrics import RESULT_KEY

pytestmark = pytest.mark.slow
# Functions below run inside Ray actors, which cannot import this test module.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def two_runner_config():
    """The tiny base model on its arithmetic (responses of ~60 tokens: a step samples for ~3 s)."""
    return (grpo_config(TINY_BASE_MODEL, TINY_TRAIN_DATA, max_response_tokens=160, max_tool_calls=0, lr=1e-4)
            .training(group_size=8, prompts_per_step=8)
            .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
            .learners(num_cpus_per_learner=0)
            .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=3))


def runner_pids(algo) -> dict[int, int]:
    ids = algo.env_runner_group.healthy_env_runner_ids()
    pids = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), remote_worker_ids=ids,
                                                    local_env_runner=False)
    return dict(zip(ids, pids))


def test_a_runner_killed_mid_step_is_resampled_and_restarted(ray_cluster, tmp_path):
    reference = two_runner_config().build_algo()
    try:
        expected = [reference.train()[RESULT_KEY]]
    finally:
        reference.stop()

    algo = two_runner_config().build_algo()
    try:
        victim = runner_pids(algo)[2]
        mark_sampling(algo, 2, tmp_path / "sampling")
        killer = threading.Thread(target=when_marked, args=(tmp_path / "sampling", lambda: os.kill(victim, signal.SIGKILL)))
        killer.start()  # while the step samples
        first = algo.train()[RESULT_KEY]
        killer.join()
        assert first["resampled_shards"] == 1, first
        assert first["trajectories"] == 64 and first.get("failed_trajectory_fraction", 0) == 0
        # Same seeds: the step's data is what it would have been without the failure.
        for key in ("accuracy", "reward_mean", "response_length/total_tokens"):
            assert first[key] == pytest.approx(expected[0][key]), key
        # RLlib probes failed runners before each step; once Ray has restarted this one, GRPO
        # syncs the current weights to it, blocking and versioned, before it samples again.
        for _ in range(10):
            later = algo.train()[RESULT_KEY]
            if later["env_runner_restarts"]:
                break
        assert later["env_runner_restarts"] == 1 and later["healthy_env_runners"] == 2, later
        assert later["weights_version_lag"] == 0
        versions = algo.env_runner_group.foreach_env_runner(lambda r: r.weights_version, local_env_runner=False)
        assert versions == [algo._weights_version] * 2
        assert runner_pids(algo)[2] != victim
    finally:
        algo.stop()


def test_one_step_off_policy_survives_a_runner_killed_while_sampling_ahead(ray_cluster):
    """max_staleness=1: the rollout of step t+1 runs on a driver thread during step t's update;
    a runner killed then has its share sampled again by that thread, and the run goes on."""
    algo = two_runner_config().training(max_staleness=1).build_algo()
    try:
        victim = runner_pids(algo)[2]
        algo.train()  # step 1; step 2's rollout has started, ahead
        os.kill(victim, signal.SIGKILL)
        results = [algo.train()[RESULT_KEY]]
        while not results[-1]["env_runner_restarts"] and len(results) < 10:
            results.append(algo.train()[RESULT_KEY])
        assert all(r["trajectories"] == 64 and r.get("failed_trajectory_fraction", 0) == 0 for r in results), results
        assert all(r["weights_version_lag"] == 1 for r in results)
        # Restarted between two steps (while no rollout runs) and given the current weights.
        assert results[-1]["env_runner_restarts"] == 1, results
        algo.train()
        assert runner_pids(algo)[2] != victim and len(runner_pids(algo)) == 2
    finally:
        algo.stop()


def test_no_runner_left_saves_the_last_step_and_exits_1(tmp_path):
    recipe = REPO / "experiments" / "tiny_cpu.yaml"
    args = [sys.executable, "-m", "torl_rllib.cli", "train", str(recipe), "run.steps=6", "run.checkpoint_every=0",
            "training.prompts_per_step=2", "training.group_size=4", "evaluation.interval=0",
            "fault_tolerance.max_num_env_runner_restarts=0", "--output-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    found = descendants(proc.pid, "ray::ToolEnvRunner")
    assert found, "no EnvRunner process to kill"
    for runner in found:
        runner.kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "AttributeError" not in stderr, stderr[-3000:]
    assert "EnvRunners failed and none could be restarted" in stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["steps"] >= 2
    step = int(summary["checkpoint"].rsplit("_", 1)[1])
    assert step == summary["steps"], "the checkpoint must be the last completed step"
    assert "--resume" in stderr


def tiny_algo(*overrides):
    """The tiny recipe with a model double whose every response runs a 2 s snippet."""
    from torl_rllib.recipe import load_recipe

    recipe = load_recipe(REPO / "experiments" / "tiny_cpu.yaml", [
        "training.prompts_per_step=2", "training.group_size=4", "evaluation.interval=0", "tracking.enabled=false",
        "resources.num_env_runners=0", "rollout.rollout_engine=tests.faults.slow_code_engine:SlowCodeEngine",
        "sandbox.jails=8", *overrides])
    return recipe.build_config().build_algo()


def kill_during_next_step(algo, target: str = "pool") -> dict:
    """SIGKILL this run's pool (``target="pool"``) or one of its jails' PID 1 (``"jail"``) as soon
    as its jails run the step's 2 s snippets; returns the step's metrics."""
    import ray

    (pool,) = algo._sandbox_pools.values()
    pid = ray.get(pool.__ray_call__.remote(lambda actor: os.getpid()))  # this run's pool, not another's

    def kill_when_busy():
        while not ray.get(pool.metrics.remote())["busy_jails"]:
            time.sleep(0.02)
        if target == "jail":
            jails = [p for p in psutil.Process(pid).children(recursive=True)
                     if "torl-sandbox/runtime/bin/python" in " ".join(p.cmdline())]
            os.kill(jails[0].pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        return algo.train()[RESULT_KEY]
    finally:
        killer.join()


@pytest.fixture(scope="module")
def undisturbed_second_step(ray_cluster):
    algo = tiny_algo()
    try:
        algo.train()
        return algo.train()[RESULT_KEY]
    finally:
        algo.stop()


UNCHANGED = ("trajectories", "accuracy", "reward_mean", "code_ratio", "executable_code_rate",
             "tool_calls_per_response", "response_length/total_tokens")


@pytest.mark.parametrize("target", ["pool", "jail"])
def test_a_sandbox_killed_mid_call_is_retried_and_the_step_is_the_undisturbed_one(target, undisturbed_second_step):
    """The calls in flight run the same snippets again once the jail or the pool is back
    (Ray restarts the pool): no trajectory fails, and the step is what it would have been."""
    algo = tiny_algo()
    try:
        algo.train()
        hit = kill_during_next_step(algo, target)
        assert hit.get("failed_trajectories", 0) == 0 and hit.get("dropped_groups", 0) == 0, hit
        assert hit["retries/sandbox_failed"] >= 1, hit
        for key in UNCHANGED:
            assert hit[key] == undisturbed_second_step[key], key
    finally:
        algo.stop()


def test_a_sandbox_pool_that_cannot_come_back_stops_the_run_naming_it(ray_cluster):
    from torl_rllib.execution.faults import SandboxPoolLost

    algo = tiny_algo("sandbox.actor_max_restarts=0")
    try:
        algo.train()
        position = algo._prompts.get_state()
        with pytest.raises(SandboxPoolLost, match="the sandbox pool of node .* cannot come back"):
            kill_during_next_step(algo)
        assert algo.iteration == 1 and algo._prompts.get_state() == position, "the failed step must leave no trace"
    finally:
        algo.stop()


def test_a_dead_learner_is_a_clear_error_with_the_newest_checkpoint(tmp_path):
    """RLlib 2.60 cannot restart a Learner: the run stops with the cause and the newest
    checkpoint named (exit 1), never a raw traceback."""
    recipe = REPO / "experiments" / "tiny_cpu.yaml"
    args = [sys.executable, "-m", "torl_rllib.cli", "train", str(recipe), "run.steps=50", "run.checkpoint_every=2",
            "training.prompts_per_step=2", "training.group_size=4", "evaluation.interval=0",
            "resources.num_env_runners=0", "resources.num_learners=1", "resources.num_cpus_per_learner=1",
            "--output-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    found = descendants(proc.pid, "ray::_WrappedExecutable")
    assert found, "no Learner process (Ray Train worker) to kill"
    for learner in found:
        learner.kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "a Learner died during step" in stderr and "cannot restart Learners" in stderr, stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["checkpoint"].endswith("step_000002"), summary
