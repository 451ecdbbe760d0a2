"""Cluster set-up before the actors start: whether the cluster can host the requested
EnvRunners and Learners, the sandbox pools every EnvRunner of a node shares, and the torch
threads of a driver that is itself a Tune trial."""

from __future__ import annotations

import ray


def limit_trial_threads(config) -> None:
    """In a Tune trial (the algorithm is an actor), torch's default (every core) would
    oversubscribe the node when trials run side by side (measured 10x slower on 2 cores): use
    the trial's CPUs. Outside an actor, nothing changes."""
    if ray.get_runtime_context().get_actor_id() is not None:
        import torch

        torch.set_num_threads(max(1, int(config.num_cpus_for_main_process)))


def start_sandbox_pools(config) -> dict:
    """One SandboxPool actor per node and sandbox config, shared by every EnvRunner there.

    Created by the driver, which outlives the EnvRunners that use them. When the algorithm is
    itself an actor (a Ray Tune trial), the pools are detached: concurrent and later trials
    share them, none dies with the trial that happened to create it, and the sweep ends them
    (``SandboxPool.shutdown_all``). Fails fast, naming the cause, when jails cannot start."""
    if config.max_tool_calls == 0:
        return {}
    from sandbox import SandboxConfig, SandboxPool

    in_actor = ray.get_runtime_context().get_actor_id() is not None
    return SandboxPool.for_all_nodes(SandboxConfig(**config.sandbox_config), detached=in_actor)


def check_schedulable(config) -> None:
    """Fail fast (instead of hanging in ``build_algo()``) when the cluster cannot host the
    requested EnvRunners and Learners."""
    if not ray.is_initialized():
        return
    resources = ray.cluster_resources()
    available = resources.get("CPU", 0.0)
    cpus_runner = config.num_cpus_per_env_runner
    cpus_learner = config.num_cpus_per_learner
    if cpus_learner == "auto":
        cpus_learner = 0 if config.num_gpus_per_learner else 1
    eval_runners = config.evaluation_num_env_runners if config.evaluation_interval else 0
    runners = config.num_env_runners + eval_runners
    needed = runners * cpus_runner + config.num_learners * cpus_learner
    if needed > available + 1e-9:
        raise ValueError(
            f"this config needs {needed:g} CPUs ({runners} EnvRunners"
            f"{f' ({eval_runners} of them for evaluation)' if eval_runners else ''} x "
            f"{cpus_runner:g} + {config.num_learners} Learners x {cpus_learner:g}) but the Ray "
            f"cluster has {available:g}. Use fractional CPUs, e.g. "
            f".env_runners(num_cpus_per_env_runner=0.5).learners(num_cpus_per_learner=0.5), or fewer actors."
        )
    # Remote actors asking for GPUs the cluster lacks would wait forever, like missing CPUs.
    gpus_runner, gpus_learner = config.num_gpus_per_env_runner, config.num_gpus_per_learner
    needed_gpus = config.num_env_runners * gpus_runner + config.num_learners * gpus_learner
    gpus = resources.get("GPU", 0.0)
    if needed_gpus > gpus + 1e-9:
        raise ValueError(
            f"this config needs {needed_gpus:g} GPUs ({config.num_env_runners} EnvRunners x "
            f"{gpus_runner:g} + {config.num_learners} Learners x {gpus_learner:g}) but the Ray "
            f"cluster has {gpus:g}. On a CPU cluster set num_gpus_per_env_runner and num_gpus_per_learner to 0."
        )
