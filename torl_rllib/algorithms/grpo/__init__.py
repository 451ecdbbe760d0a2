"""GRPO (ToRL) on RLlib: config + algorithm, learner, torch learner, advantages."""

from torl_rllib.algorithms.grpo.grpo import GRPO, GRPOConfig

__all__ = ["GRPO", "GRPOConfig"]
