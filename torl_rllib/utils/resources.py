"""The files shipped with the package: the tiny models and problem files of the repository's
top-level ``assets/`` folder, installed as the package ``torl_rllib.assets`` (see the
``package-dir`` mapping in pyproject.toml). Read through ``importlib.resources``, so an editable
checkout and an installed wheel resolve the same names."""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["ASSETS_PACKAGE", "asset_path"]

ASSETS_PACKAGE = "torl_rllib.assets"
_extracted = contextlib.ExitStack()  # assets copied out of a non-filesystem install, kept until exit
atexit.register(_extracted.close)


def asset_path(*parts: str) -> Path:
    """A filesystem path to a shipped asset, e.g. ``asset_path("data", "tiny_arithmetic_test.jsonl")``
    or ``asset_path("tiny-math-base")``; existence is not checked."""
    resource = files(ASSETS_PACKAGE)
    for part in parts:
        resource = resource / part
    if isinstance(resource, Path):  # installed on the filesystem: the file itself
        return resource
    return _extracted.enter_context(as_file(resource))
