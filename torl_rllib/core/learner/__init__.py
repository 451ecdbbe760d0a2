"""Learner extensions (mirrors ``ray.rllib.core.learner``)."""
