"""Hyperparameter sweeps on Ray Tune (trials are ``GRPO`` itself), reviewed in MLflow."""

from torl_rllib.sweep.spec import SweepSpec, TuneSettings, load_sweep

__all__ = ["SweepSpec", "TuneSettings", "load_sweep"]
