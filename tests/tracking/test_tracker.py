import json
import logging
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from torl_rllib.tracking import MlflowTracker, TrackingConfig

STEPS = 12
CONFIG = {
    "model": {"path": "tiny-model", "dtype": "float32"},
    "grpo": {"group_size": 4, "lr": 1e-5},
}
ROWS = [
    {
        "prompt": "What is 1+1?",
        "response": "```python\nprint(1+1)\n```\n```output\n2\n```\n\\boxed{2}",
        "tool_calls": [{"code": "print(1+1)", "output": "2"}],
        "answer": "2",
        "gold": "2",
        "reward": 1.0,
    },
    {
        "prompt": "What is 2+2?",
        "response": "\\boxed{5}",
        "tool_calls": [],
        "answer": "5",
        "gold": "4",
        "reward": -1.0,
    },
]


def step_metrics(step: int) -> dict:
    return {
        "accuracy": step / STEPS,
        "code_ratio": 0.5,
        "response_length/model_tokens": 100.0 + step,
        "tool_calls_per_response": 1.0,
        "timings/step_s": 2.5,
        "entropy": float("nan"),  # dropped
    }


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A whole tracked training of STEPS steps, written to a fresh sqlite store."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrackingConfig(trajectories_every=5)
    tracker = MlflowTracker(cfg, run_name="tiny_cpu", output_dir=out)
    run_id = tracker.start(CONFIG)
    tracker.log_text("model:\n  path: tiny-model\n", "config/resolved.yaml")
    tracker.set_tags({"recipe": "tiny_cpu"})
    for step in range(1, STEPS + 1):
        tracker.log_metrics(step, step_metrics(step))
        if tracker.wants_trajectories(step):
            tracker.log_trajectories(step, ROWS)
    tracker.finish()
    return tracker, run_id, out


def test_defaults_to_a_sqlite_store_in_the_output_dir(tracked_run):
    tracker, run_id, out = tracked_run
    assert run_id is not None and run_id == tracker.run_id
    assert tracker.tracking_uri == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    assert (out / "mlflow.db").is_file()
    assert (out / "mlartifacts" / run_id).is_dir()


def test_run_has_name_status_tags_and_flattened_params(tracked_run):
    tracker, run_id, _ = tracked_run
    run = MlflowClient(tracker.tracking_uri).get_run(run_id)
    assert run.info.run_name == "tiny_cpu"
    assert run.info.status == "FINISHED"
    assert run.data.tags["recipe"] == "tiny_cpu"
    params = run.data.params
    assert params["model.path"] == "tiny-model"
    assert params["grpo.group_size"] == "4"
    assert params["grpo.lr"] == "1e-05"
    assert params["versions.vllm"]  # a version or "not installed"
    assert {"versions.ray", "versions.torch", "versions.transformers"} <= set(params)


def test_every_step_is_in_the_metric_history(tracked_run):
    tracker, run_id, _ = tracked_run
    client = MlflowClient(tracker.tracking_uri)
    history = client.get_metric_history(run_id, "accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, STEPS + 1))
    assert len(client.get_metric_history(run_id, "response_length/model_tokens")) == STEPS
    assert "entropy" not in client.get_run(run_id).data.metrics


def test_trajectory_tables_are_logged_every_n_steps(tracked_run):
    tracker, run_id, _ = tracked_run
    client = MlflowClient(tracker.tracking_uri)
    files = sorted(a.path for a in client.list_artifacts(run_id, "trajectories"))
    assert files == ["trajectories/step_000005.json", "trajectories/step_000010.json"]
    table = json.loads(Path(client.download_artifacts(run_id, files[0])).read_text())
    assert table["columns"] == ["prompt", "response", "tool_calls", "answer", "gold", "reward"]
    assert [row[-1] for row in table["data"]] == [1.0, -1.0]
    assert json.loads(table["data"][0][2]) == ROWS[0]["tool_calls"]


def test_plots_and_config_are_artifacts(tracked_run):
    tracker, run_id, _ = tracked_run
    client = MlflowClient(tracker.tracking_uri)
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {
        "plots/accuracy.png",
        "plots/code_ratio.png",
        "plots/response_length_model_tokens.png",
        "plots/tool_calls_per_response.png",
        "plots/training_dynamics.png",
    }
    png = Path(client.download_artifacts(run_id, "plots/training_dynamics.png")).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert [a.path for a in client.list_artifacts(run_id, "config")] == ["config/resolved.yaml"]


def test_calls_after_finish_do_nothing(tracked_run):
    tracker, run_id, _ = tracked_run
    tracker.log_metrics(STEPS + 1, {"accuracy": 0.0})
    history = MlflowClient(tracker.tracking_uri).get_metric_history(run_id, "accuracy")
    assert len(history) == STEPS


def test_two_trackers_in_one_process_write_to_their_own_stores(tmp_path):
    trackers = [
        MlflowTracker(TrackingConfig(plots=False), run_name=name, output_dir=tmp_path / name)
        for name in ("a", "b")
    ]
    for tracker in trackers:
        tracker.start({"name": tracker.run_name})
    for step, tracker in enumerate(trackers):
        tracker.log_metrics(step, {"accuracy": float(step)})
    for tracker in trackers:
        tracker.finish()
        run = MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)
        assert run.data.params["name"] == tracker.run_name
        assert run.data.metrics == {"accuracy": float(trackers.index(tracker))}


def test_disabled_tracker_touches_nothing(tmp_path):
    tracker = MlflowTracker(TrackingConfig(enabled=False), run_name="off", output_dir=tmp_path)
    assert tracker.start(CONFIG) is None
    tracker.log_metrics(1, {"accuracy": 1.0})
    assert not tracker.wants_trajectories(10)
    tracker.finish()
    assert list(tmp_path.iterdir()) == []


# -- failures never reach training ------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exercise_every_method(tracker: MlflowTracker, tmp_path: Path) -> None:
    (tmp_path / "ckpt.txt").write_text("checkpoint")
    tracker.start(CONFIG)
    tracker.set_tags({"recipe": "tiny_cpu"})
    tracker.log_dict(CONFIG, "config/resolved.yaml")
    tracker.log_text("text", "notes.txt")
    for step in range(1, 4):
        tracker.log_metrics(step, {"accuracy": 0.5})
    tracker.log_trajectories(3, ROWS)
    tracker.log_artifact(tmp_path / "ckpt.txt", "checkpoint")
    tracker.log_plots()
    tracker.finish("FAILED")


@pytest.mark.parametrize("where", ["closed_http_port", "db_under_a_file"])
def test_broken_store_never_raises_and_warns_once(where, tmp_path, caplog):
    if where == "closed_http_port":
        uri = f"http://127.0.0.1:{closed_port()}"
    else:
        (tmp_path / "blocker").write_text("a file where a directory should be")
        uri = f"sqlite:///{tmp_path / 'blocker' / 'sub' / 'mlflow.db'}"
    tracker = MlflowTracker(TrackingConfig(tracking_uri=uri), run_name="broken")
    with caplog.at_level(logging.DEBUG, logger="torl_rllib.tracking"):
        exercise_every_method(tracker, tmp_path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "training continues" in warnings[0].getMessage()
    assert tracker.run_id is None
    assert tracker.history.series("accuracy") == [(1, 0.5), (2, 0.5), (3, 0.5)]


def test_tracking_resumes_and_backfills_when_the_store_comes_back(tmp_path, caplog):
    blocker = tmp_path / "store"
    blocker.write_text("not a directory yet")
    tracker = MlflowTracker(TrackingConfig(), run_name="flaky", output_dir=blocker)
    with caplog.at_level(logging.WARNING, logger="torl_rllib.tracking"):
        assert tracker.start(CONFIG) is None
        tracker.log_metrics(1, {"accuracy": 0.25})
        blocker.unlink()
        tracker.log_metrics(2, {"accuracy": 0.5})
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "MLflow tracking failed in start",
        "MLflow tracking works again",
    ]
    run = MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)
    assert run.data.params["model.path"] == "tiny-model"  # params of the failed start() arrive
    assert run.data.metrics == {"accuracy": 0.5}
    # Nothing lost: the step logged while the store was down is backfilled at its own step.
    history = MlflowClient(tracker.tracking_uri).get_metric_history(tracker.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5)]


def test_any_uri_works_including_a_file_store(tmp_path):
    cfg = TrackingConfig(tracking_uri=(tmp_path / "mlruns").as_uri(), plots=False)
    tracker = MlflowTracker(cfg, run_name="file_store")
    tracker.start(CONFIG)
    tracker.log_metrics(1, {"accuracy": 1.0})
    tracker.finish()
    run = MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)
    assert run.data.metrics == {"accuracy": 1.0}
    assert run.info.status == "FINISHED"


def test_one_log_batch_call_per_step(tmp_path, monkeypatch):
    tracker = MlflowTracker(TrackingConfig(plots=False), run_name="batched", output_dir=tmp_path)
    tracker.start({})
    calls = []
    log_batch = MlflowClient.log_batch

    def counting_log_batch(self, *args, **kwargs):
        calls.append(kwargs)
        return log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counting_log_batch)
    for step in range(3):
        tracker.log_metrics(step, {f"metric_{i}": float(i) for i in range(150)})
    assert len(calls) == 3
    assert all(len(call["metrics"]) == 150 for call in calls)
