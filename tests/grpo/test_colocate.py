"""Colocation (``colocate: true``): the rollout engine sleeps before every Learner update and
gets the new weights after it, and the settings that cannot colocate are refused."""

from __future__ import annotations

import pytest

from tests.grpo.conftest import grpo_config

pytestmark = pytest.mark.slow


def test_the_engine_sleeps_through_every_update_and_wakes_with_the_new_weights(
        ray_cluster, random_model_dir, arithmetic_jsonl):
    config = (grpo_config(random_model_dir, arithmetic_jsonl, max_response_tokens=8, max_tool_calls=0)
              .rollout(rollout_engine="tests.grpo.sleeping_engine:SleepRecordingEngine")
              .learners(colocate=True))
    algo = config.build_algo()
    try:
        for _ in range(2):
            algo.train()
        runner = algo.env_runner_group.local_env_runner
        events = runner.engine.events
        first_sleep = events.index("sleep")
        assert first_sleep and set(events[:first_sleep]) == {"load"}  # the syncs at build
        assert events[first_sleep:] == ["sleep", "load"] * 2  # per step: sleep for the update, then new weights
        assert runner.weights_version == algo._weights_version == 2
    finally:
        algo.stop()


@pytest.mark.parametrize("settings, message", [
    (dict(training=dict(max_staleness=1)), "colocate needs max_staleness 0"),
    (dict(env_runners=dict(num_env_runners=2, num_gpus_per_env_runner=0.5),
          learners=dict(num_learners=2, num_gpus_per_learner=0.5)), "num_gpus_per_env_runner > 0.5"),
    (dict(env_runners=dict(num_env_runners=4, num_gpus_per_env_runner=0.51),
          learners=dict(num_learners=2, num_gpus_per_learner=0.49)), "num_env_runners == num_learners"),
])
def test_settings_that_cannot_colocate_are_refused(random_model_dir, arithmetic_jsonl, settings, message):
    config = grpo_config(random_model_dir, arithmetic_jsonl).learners(colocate=True)
    for section, values in settings.items():
        getattr(config, section)(**values)
    assert any(message in problem for problem in config.problems()), config.problems()
