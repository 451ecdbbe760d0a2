"""The run's params: the resolved config flattened to dotted keys, plus library versions."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Mapping

from mlflow.entities import Param

from torl_rllib.tracking.names import sanitize_key, truncate

__all__ = ["flatten_params", "library_versions", "to_params", "MAX_PARAM_VALUE_LENGTH"]

logger = logging.getLogger(__name__)

MAX_PARAM_VALUE_LENGTH = 6000  # MLflow's limit on a param value
VERSIONED_LIBRARIES = ("ray", "torch", "transformers", "vllm", "mlflow")


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}``. Only mappings are
    descended into; lists and other values are kept whole; an empty mapping stays as ``{}``."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def library_versions() -> dict[str, str]:
    """``{"versions.ray": "2.60.0", ..., "versions.vllm": "not installed"}``, read from package
    metadata (nothing is imported)."""
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[f"versions.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"versions.{name}"] = "not installed"
    return versions


def to_params(flat: Mapping[str, Any]) -> list[Param]:
    """MLflow params with sanitized keys and values cut to MLflow's length limit."""
    params = {}
    for name, value in flat.items():
        key = sanitize_key(name)
        if key is None:
            logger.debug("dropping param with unusable name %r", name)
            continue
        params[key] = truncate(str(value), MAX_PARAM_VALUE_LENGTH)
    return [Param(key, text) for key, text in params.items()]
