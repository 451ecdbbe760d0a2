import os

from torl_rllib.tracking import TrackingConfig
from torl_rllib.tracking.store import prepare_store, resolve_tracking_uri


def test_default_uri_is_a_sqlite_db_in_the_output_dir_or_cwd(tmp_path, monkeypatch):
    expected = f"sqlite:///{tmp_path.resolve() / 'run' / 'mlflow.db'}"
    assert resolve_tracking_uri(None, tmp_path / "run") == expected
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"


def test_sqlite_store_gets_its_directory_and_artifacts_beside_it(tmp_path):
    location = prepare_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'mlflow.db'}", TrackingConfig())
    assert (tmp_path / "a" / "b").is_dir()
    assert location == (tmp_path / "a" / "b" / "mlartifacts").as_uri()


def test_file_uri_opts_in_to_the_file_store(tmp_path):
    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    assert prepare_store((tmp_path / "mlruns").as_uri(), TrackingConfig()) is None
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"


def test_http_limits_apply_only_where_the_user_set_none(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    prepare_store("http://127.0.0.1:5000", TrackingConfig(http_timeout_s=3))
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


def test_relative_sqlite_path_resolves_against_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = prepare_store("sqlite:///rel/mlflow.db", TrackingConfig())
    assert location == (tmp_path / "rel" / "mlartifacts").as_uri()
    assert (tmp_path / "rel").is_dir()
