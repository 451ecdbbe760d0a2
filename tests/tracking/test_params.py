from torl_rllib.tracking import flatten_params
from torl_rllib.tracking.params import MAX_PARAM_VALUE_LENGTH, library_versions, to_params


def test_flatten_params_uses_dotted_keys_and_keeps_leaves_whole():
    nested = {
        "model": {"path": "tiny", "dtype": {"name": "float32"}},
        "rollout": {"stop": ["```output"], "n": 4},
        "empty": {},
        "seed": 0,
        "notes": None,
    }
    assert flatten_params(nested) == {
        "model.path": "tiny",
        "model.dtype.name": "float32",
        "rollout.stop": ["```output"],
        "rollout.n": 4,
        "empty": {},
        "seed": 0,
        "notes": None,
    }


def test_flatten_params_of_flat_dict_is_identity():
    assert flatten_params({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}


def test_to_params_truncates_long_values_and_sanitizes_keys():
    params = {p.key: p.value for p in to_params({"long": "x" * 10_000, "a b": 1, "ok.key": [1, 2]})}
    assert len(params["long"]) == MAX_PARAM_VALUE_LENGTH
    assert params["long"].endswith("...[truncated]")
    assert params["a_b"] == "1"
    assert params["ok.key"] == "[1, 2]"


def test_library_versions_cover_the_stack():
    versions = library_versions()
    libraries = ("ray", "torch", "transformers", "vllm", "mlflow")
    assert set(versions) == {f"versions.{name}" for name in libraries}
    assert versions["versions.mlflow"][0].isdigit()
    assert all(versions.values())
