"""One step's update on the LearnerGroup (as RLlib's ``execution.train_ops``): the step's
trajectories in shuffled mini-batches, ``num_epochs`` times, each update carrying the
mini-batch's global counts so every Learner normalizes its loss by them."""

from __future__ import annotations

import numpy as np
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from torl_rllib.core.columns import LOSS_MASK
from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES, UPDATE_START


def train_on_episodes(algo, episodes: list) -> None:
    """Update ``algo.learner_group`` on ``episodes`` (the mini-batch order is seeded by the
    config's seed and the iteration) and aggregate the results into ``algo.metrics``."""
    config = algo.config
    rng = np.random.default_rng([config.seed or 0, algo.iteration])
    first = True
    for _ in range(config.num_epochs):
        order = rng.permutation(len(episodes))
        for idx in np.array_split(order, config.minibatches_per_step):
            if len(idx) == 0:
                continue
            minibatch = [episodes[i] for i in idx]
            results = algo.learner_group.update(
                episodes=minibatch,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0),
                    GLOBAL_LOSS_TOKENS: float(sum(ep.get_extra_model_outputs(LOSS_MASK, 0).sum() for ep in minibatch)),
                    GLOBAL_SEQUENCES: float(len(minibatch)),
                    UPDATE_START: float(first),
                },
            )
            first = False
            algo.metrics.aggregate(results, key=LEARNER_RESULTS)
