"""Torch Learner extensions: FSDP2-sharded Learners."""
