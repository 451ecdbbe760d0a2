import math

import numpy as np
import pytest

from torl_rllib.tracking.metrics import MetricHistory, to_metrics
from torl_rllib.tracking.names import MAX_KEY_LENGTH, sanitize_key


@pytest.mark.parametrize(
    "name, key",
    [
        ("accuracy", "accuracy"),
        ("response_length/model_tokens", "response_length/model_tokens"),
        ("time generate (s)", "time_generate__s_"),
        ("/timings//learner/./update/../", "timings/learner/update"),
        ("a:b", "a_b"),
        ("//", None),
        ("x" * 300, "x" * MAX_KEY_LENGTH),
    ],
)
def test_sanitize_key(name, key):
    assert sanitize_key(name) == key


def test_to_metrics_drops_non_finite_and_non_numeric_values():
    metrics = to_metrics(
        np.int64(3),
        {
            "ok": 0.5,
            "int": 2,
            "numpy": np.float32(1.5),
            "flag": True,
            "nan": math.nan,
            "inf": -math.inf,
            "text": "1.0",
            "none": None,
            "vector": np.ones(3),
            "//": 1.0,
        },
        timestamp_ms=1,
    )
    assert {m.key: m.value for m in metrics} == {"ok": 0.5, "int": 2.0, "numpy": 1.5, "flag": 1.0}
    assert all(type(m.step) is int and m.step == 3 and m.timestamp == 1 for m in metrics)


def test_history_keeps_points_per_key():
    history = MetricHistory()
    history.add(to_metrics(1, {"a": 1.0}, timestamp_ms=0))
    history.add(to_metrics(2, {"a": 2.0, "b": 5.0}, timestamp_ms=0))
    assert history.series("a") == [(1, 1.0), (2, 2.0)]
    assert history.series("b") == [(2, 5.0)]
    assert history.series("missing") == []
