"""Ray start-up for the CLI drivers, and the CPUs a process may use."""

from __future__ import annotations

import logging
import os

__all__ = ["init_ray", "available_cpus"]


def init_ray(verbose: bool = False) -> None:
    """Start (or join) Ray with its console noise kept out unless ``verbose``."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
            configure_logging=True,
        )
    for name in ("ray", "ray.rllib", "ray.tune", "ray.data"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity, e.g. a Ray worker's or a container's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
