"""Failure-tolerant sampling (as RLlib's ``execution/rollout_ops``): a step's problems are split
over the healthy EnvRunners, a runner that dies has its share sampled again with the same seeds,
and failed runners are restarted and given the step's weights before they sample."""

from __future__ import annotations

import logging
import time

import numpy as np

from torl_rllib.execution.env_runner_calls import call_in_shards
from torl_rllib.tracking.config import traces_per_step

logger = logging.getLogger(__name__)


def sample(algorithm, problems: list, iteration: int | None = None,
           weights: tuple | None = None) -> tuple[list, list[dict], int]:
    """Split the step's problems over ``algorithm``'s EnvRunners; each samples its groups. A
    runner that dies mid-step has its share sampled again, with the same seeds, by another runner
    or by itself once restarted (``restart_failed_env_runners``) and given ``weights`` ((ref,
    version) the step samples with; default: the learner's), so the step's data is what it would
    have been; with no runner left and none restorable, ``EnvRunnersLost``. Returns (episodes,
    each runner's rollout statistics, number of shards sampled again)."""
    group = algorithm.env_runner_group
    runners = max(1, len(group.healthy_env_runner_ids()))
    shards = [s for s in np.array_split(np.arange(len(problems)), runners) if len(s)]
    iteration = algorithm.iteration if iteration is None else iteration
    traces = traces_per_step(algorithm.config.tracking_config)  # trace records: failed ones and these many more
    calls = [{"problems": [problems[i] for i in s], "iteration": iteration, "traces": traces} for s in shards]
    results, reissued = call_in_shards(group, "sample_groups", calls,
                                       restore=lambda: algorithm.wait_for_env_runners(group, weights))
    episodes = [ep for eps, _ in results for ep in eps]
    return episodes, [rollout for _, rollout in results], reissued


def wait_for_env_runners(algorithm, group, weights: tuple | None = None) -> list[int]:
    """With no healthy runner left: wait for Ray to restart failed ones (while restarts are
    left, up to ``env_runner_restore_timeout_s``) and restore them; [] when none comes back."""
    config = algorithm.config
    deadline = time.monotonic() + config.env_runner_restore_timeout_s
    logger.warning("no healthy EnvRunner: waiting up to %.0fs for a restart", config.env_runner_restore_timeout_s)
    while True:
        restored = restore_env_runners(algorithm, group, weights)
        restarts_left = config.restart_failed_env_runners and group.num_remote_worker_restarts() < (
            config.max_num_env_runner_restarts * max(1, group.num_remote_env_runners()))
        if restored or not restarts_left or time.monotonic() > deadline:
            return restored
        time.sleep(1.0)


def restore_env_runners(algorithm, env_runner_group, weights: tuple | None = None) -> list[int]:
    """Bring failed EnvRunners back (RLlib's restart) and give them ``weights`` (default: the
    learner's current ones) through the blocking, versioned sync before they sample; counts
    them in ``algorithm._env_runner_restarts``. Returns the restored runners' ids."""
    restored = env_runner_group.probe_unhealthy_env_runners() if algorithm.config.restart_failed_env_runners else []
    if restored:
        algorithm._env_runner_restarts += len(restored)
        version = weights[1] if weights else algorithm._weights_version
        logger.warning("restarted EnvRunner(s) %s; syncing weights version %d", restored, version)
        algorithm.sync_weights_to(env_runner_group, remote_ids=restored, weights=weights)
    return restored
