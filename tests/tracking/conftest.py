import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environ():
    """The tracker may set MLFLOW_* defaults in os.environ; keep tests independent of that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
