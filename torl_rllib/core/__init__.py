"""Definitions shared by the rollout side and the algorithm side (as ``ray.rllib.core`` holds
RLlib's): episode and batch column names, group-relative advantages."""
