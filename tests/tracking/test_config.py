import pytest

from torl_rllib.tracking import DEFAULT_PLOT_METRICS, TrackingConfig


def test_defaults_plot_the_paper_curves():
    cfg = TrackingConfig()
    assert cfg.enabled and cfg.tracking_uri is None and cfg.experiment == "torl-rllib"
    assert cfg.plot_metrics == DEFAULT_PLOT_METRICS
    assert "response_length/model_tokens" in DEFAULT_PLOT_METRICS


def test_plot_metrics_from_yaml_lists_become_tuples():
    assert TrackingConfig(plot_metrics=["accuracy"]).plot_metrics == ("accuracy",)


@pytest.mark.parametrize(
    "field, value",
    [("trajectories_every", -1), ("experiment", ""), ("http_timeout_s", 0), ("http_max_retries", -1)],
)
def test_out_of_range_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        TrackingConfig(**{field: value})
