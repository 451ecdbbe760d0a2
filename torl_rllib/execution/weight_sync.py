"""The versioned weight sync: the Learners' policy is broadcast to EnvRunners and every runner
confirms the version it now holds (RLlib's own ``sync_weights`` is fire-and-forget)."""

from __future__ import annotations

import ray
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID


def policy_weights(learner_group) -> dict:
    """The Learners' policy as an inference-only module state (what EnvRunners load):
    the whole weights, merged with the LoRA adapters when there are some."""
    component = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
    state = learner_group.get_state(components=component, inference_only=True)
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]


def sync_weights_to(algorithm, group, remote_ids: list[int] | None = None, weights: tuple | None = None) -> tuple:
    """Blocking broadcast of ``weights`` ((object ref, version); default: ``algorithm``'s
    learner's current ones) to ``group``'s runners (only the remote ones in ``remote_ids`` when
    given). Returns the (ref, version) sent.

    RLlib's own ``sync_weights`` is fire-and-forget and can be dropped silently; here every
    runner confirms the version it now holds, and a mismatch is an error.
    """
    if weights is None:
        weights = (ray.put(algorithm.policy_weights()), algorithm._weights_version)
    ref, version = weights
    held = []
    if group.local_env_runner is not None and remote_ids is None:
        held.append(group.local_env_runner.set_weights(ray.get(ref), version))
    ids = group.healthy_env_runner_ids() if remote_ids is None else remote_ids
    if ids:
        held += group.foreach_env_runner(
            "set_weights", kwargs={"weights": ref, "version": version},
            remote_worker_ids=ids, local_env_runner=False,
        )
    if any(v != version for v in held):
        raise RuntimeError(f"weight sync failed: runners hold versions {held}, expected {version}")
    return weights
