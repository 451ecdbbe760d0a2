"""``MlflowTrackingCallback``: ``config.build_algo(); algo.train()`` from plain Python records the
same MLflow run as ``torl-rllib train`` (params, per-step metrics, dataset input, trajectory
tables, plots, the final policy as a logged model), and a resumed training continues its run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from torl_rllib.recipe import load_recipe
from torl_rllib.tracking.callback import tracking_callback

pytestmark = pytest.mark.slow

RECIPE = REPO / "experiments" / "tiny_cpu.yaml"
SHORT = ["training.prompts_per_step=2", "training.group_size=4", "tracking.trajectories_every=1",
         "run.steps=2"]


def record(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    return {
        "params": set(run.data.params),
        "metrics": set(run.data.metrics),
        "steps": [m.step for m in client.get_metric_history(run_id, "accuracy")],
        "datasets": [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs],
        "trajectories": {a.path for a in client.list_artifacts(run_id, "trajectories")},
        "plots": {a.path for a in client.list_artifacts(run_id, "plots")},
        "models": [m.name for m in client.search_logged_models([run.info.experiment_id])
                   if m.source_run_id == run_id],
        "status": run.info.status,
    }


def test_plain_python_records_the_same_run_as_the_cli(tmp_path, ray_cluster):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cli = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT,
                          f"tracking.tracking_uri={uri}", "--output-dir", str(tmp_path / "cli_run")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cli_run_id = json.loads((tmp_path / "cli_run" / "summary.json").read_text())["mlflow_run_id"]

    config = load_recipe(RECIPE, SHORT).build_config().tracking(tracking_uri=uri)
    algo = config.build_algo()
    algo.train()
    algo.train()
    run_id = tracking_callback(algo).run_id
    algo.stop()

    client = MlflowClient(uri)
    from_python, from_cli = record(client, run_id), record(client, cli_run_id)
    assert from_python == from_cli
    assert from_python["steps"] == [1, 2] and from_python["models"] == ["model"]
    assert from_python["datasets"][0][0] == "tiny_arithmetic_train"


def test_logged_model_loads_with_mlflow_transformers_and_registers(tmp_path, ray_cluster):
    import mlflow.transformers

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_recipe(RECIPE, SHORT).build_config().tracking(tracking_uri=uri, register_model="tiny-policy")
    algo = config.build_algo()
    algo.train()
    algo.stop()
    client = MlflowClient(uri)
    (version,) = client.search_model_versions("name='tiny-policy'")
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):  # no global MLflow state left behind for other tests
        pipeline = mlflow.transformers.load_model(f"models:/tiny-policy/{version.version}")
    out = pipeline("What is 12 * 34?", max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"].startswith("What is 12 * 34?")


def test_a_restored_algorithm_continues_its_run(tmp_path, ray_cluster):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_recipe(RECIPE, SHORT).build_config().tracking(tracking_uri=uri, log_model=False)
    algo = config.build_algo()
    algo.train()
    run_id = tracking_callback(algo).run_id
    algo.save_to_path(str(tmp_path / "ckpt"))
    algo.run_status = "KILLED"  # as the CLI marks an interrupted run
    algo.stop()
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"

    algo = config.build_algo()
    algo.restore_from_path(str(tmp_path / "ckpt"))
    algo.train()
    assert tracking_callback(algo).run_id == run_id
    algo.stop()
    assert [m.step for m in client.get_metric_history(run_id, "accuracy")] == [1, 2]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.tags["torl.checkpoint_path"] == str(tmp_path / "ckpt")
