"""Choosing and preparing the MLflow store a tracker writes to."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from torl_rllib.tracking.config import TrackingConfig

__all__ = ["resolve_tracking_uri", "prepare_store"]

logger = logging.getLogger(__name__)

_SQLITE_PREFIX = "sqlite:///"


def resolve_tracking_uri(uri: str | None, output_dir: Path | None) -> str:
    """``uri`` as given, else MLflow's own ``MLFLOW_TRACKING_URI`` when set, else a sqlite store
    ``mlflow.db`` in ``output_dir`` (else the cwd); a sqlite path is made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        # A relative sqlite path would move with the cwd (Tune runs each trial in its own dir).
        db_path = _sqlite_path(uri)
        return f"{_SQLITE_PREFIX}{db_path}" if db_path else uri
    return f"{_SQLITE_PREFIX}{(Path(output_dir or Path.cwd()) / 'mlflow.db').resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith(_SQLITE_PREFIX) or ":memory:" in uri:
        return None
    return Path(uri[len(_SQLITE_PREFIX):].split("?", 1)[0]).resolve()


def prepare_store(uri: str, cfg: TrackingConfig) -> str | None:
    """Make ``uri`` usable and return the artifact location for a new experiment (None: the
    store's default).

    * sqlite: creates the database's directory; artifacts go to ``mlartifacts`` beside the
      database (MLflow's default would be ``./mlruns`` in whatever the cwd is).
    * file: / plain path: MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE=true; a
      file URI named explicitly is taken as that opt-in.
    * http(s): bounds MLflow's retries and timeout (see ``TrackingConfig.http_timeout_s``).
    Environment variables the user has set are left alone.
    """
    scheme = urlparse(uri).scheme
    db_path = _sqlite_path(uri)
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return (db_path.parent / "mlartifacts").as_uri()
    if scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif scheme in ("http", "https"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.http_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.http_max_retries))
    return None
