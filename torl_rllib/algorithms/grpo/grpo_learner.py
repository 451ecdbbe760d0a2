"""Framework-agnostic part of the GRPO Learner: the global loss normalizer.

Each Learner sees only its shard of a mini-batch, and DDP averages gradients over Learners.
For the loss to be the *global* token (or sequence) mean, the driver sends the mini-batch's
global counts along with the update (through ``timesteps``, which every Learner receives in
``before_gradient_based_update``), and each Learner scales its local sum by
``num_learners / global_count``.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.learner.learner import Learner
from ray.rllib.utils.annotations import override

from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES, UPDATE_START


# How the per-token loss is reduced to a scalar (see GRPOTorchLearner / aggregate_loss).
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# Metric names (per module).
CLIP_FRACTION_KEY = "clip_fraction"
APPROX_KL_KEY = "approx_kl"  # k3 estimate of KL(sampling policy || current policy)
REF_KL_KEY = "kl_to_ref"
NUM_LOSS_TOKENS_KEY = "num_loss_tokens"
# Rollout-vs-learner disagreement over the trainable tokens, at the start of the step's update
# (the learner's weights are then those the rollout sampled with, on-policy): how far the
# engine's log-probabilities are from the learner's recomputation of them.
LOGPROB_DIFF_MEAN_KEY = "rollout_logprob_diff_mean"  # mean |log pi_rollout - log pi_learner|
LOGPROB_DIFF_MAX_KEY = "rollout_logprob_diff_max"  # max of the same
RATIO_OUTSIDE_KEY = "rollout_ratio_outside_band"  # fraction of tokens with pi_learner/pi_rollout outside [0.8, 1.2]
MISMATCH_RATIO_BAND = (0.8, 1.2)


class GRPOLearner(Learner):
    """Holds the global counts of the mini-batch being learned on."""

    @override(Learner)
    def build(self) -> None:
        super().build()
        self._global_loss_tokens: float | None = None
        self._global_sequences: float | None = None
        self._update_start = False

    @override(Learner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._global_loss_tokens = timesteps.get(GLOBAL_LOSS_TOKENS)
        self._global_sequences = timesteps.get(GLOBAL_SEQUENCES)
        self._update_start = bool(timesteps.get(UPDATE_START))

    @property
    def world_size(self) -> int:
        return max(1, self.config.num_learners)
