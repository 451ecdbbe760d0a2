"""A ``TorchLearner`` that shards its RLModule with FSDP2 (``config.learner_strategy == "fsdp"``)
and replicates it with DDP otherwise, as RLlib does."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils import force_list
from ray.rllib.utils.annotations import override

from torl_rllib.utils.fsdp import (
    gather, is_sharded, local_bytes, local_parameter_bytes, rank, shard_causal_lm_module, shard_like,
)


class ShardedTorchLearner(TorchLearner):
    """Shards the module when ``config.learner_strategy == "fsdp"`` (``config.fsdp``:
    ``param_dtype``, ``reduce_dtype``, ``cpu_offload``); DDP (RLlib's own) otherwise.

    RLlib asks only the first Learner for its state (the weight sync to EnvRunners, checkpoints),
    which one shard cannot answer. So every Learner gathers the module's full state at the points
    they all reach together (build, each update, ``set_state``) and the first keeps it on the CPU
    to answer from. The optimizer state is gathered only for a checkpoint: every Learner calls
    ``gather_optimizer_state()`` first (``GRPO.save_to_path`` does). Checkpoints therefore hold
    whole tensors, in DDP's layout, which ``export`` and ``eval`` read as any other.
    """

    @property
    def sharded(self) -> bool:
        return getattr(self.config, "learner_strategy", "ddp") == "fsdp"

    @override(TorchLearner)
    def build(self) -> None:
        self._full_module_state: dict | None = None
        self._full_optimizer_state: dict | None = None
        super().build()
        self._gather_module_state()

    @override(TorchLearner)
    def _make_module(self):
        module = super()._make_module()
        if self.sharded:  # before the optimizers are built on the (then sharded) parameters
            for module_id in module.keys():
                shard_causal_lm_module(module[module_id], **self.config.fsdp_policy())
        return module

    @override(TorchLearner)
    def _make_modules_ddp_if_necessary(self) -> None:
        if not self.sharded:
            super()._make_modules_ddp_if_necessary()

    @override(TorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        self._gather_module_state()
        if getattr(self.config, "colocate", False) and torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the update's activation memory back for the engine to wake into

    @override(TorchLearner)
    def set_state(self, state) -> None:
        super().set_state(state)
        # Also when ``state`` has no module part: restore_from_path loads the module first.
        self._gather_module_state()

    @override(TorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        if not self.sharded:
            return super().get_state(components, not_components=not_components, **kwargs)
        if self._full_module_state is None:
            raise RuntimeError("a sharded Learner's whole state is held by the first Learner only")
        state = super().get_state(
            components, not_components=[*force_list(not_components), COMPONENT_RL_MODULE], **kwargs)
        if self._check_component(COMPONENT_RL_MODULE, components, not_components):
            wanted = self._get_subcomponents(COMPONENT_RL_MODULE, components)
            state[COMPONENT_RL_MODULE] = {
                module_id: weights for module_id, weights in self._full_module_state.items()
                if wanted is None or module_id in force_list(wanted)
            }
        return state

    def gather_optimizer_state(self) -> None:
        """Collective (every Learner calls it): the first Learner keeps the whole optimizer state
        for the next ``get_state`` (a checkpoint)."""
        if self.sharded:
            state = self._optimizer_states()
            self._full_optimizer_state = state if rank() == 0 else None

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of module parameters and of optimizer state this Learner holds (its shards
        only, when sharded)."""
        return {
            "parameters": sum(local_parameter_bytes(self.module[m]) for m in self.module.keys()),
            "optimizer": sum(local_bytes(value) for optim in self._named_optimizers.values()
                             for slots in optim.state.values() for value in slots.values()
                             if torch.is_tensor(value)),
        }

    @override(TorchLearner)
    def _get_optimizer_state(self):
        if not self.sharded:
            return self._optimizer_states()
        if self._full_optimizer_state is None:
            raise RuntimeError(
                "a sharded Learner's optimizer state must be gathered by every Learner first: "
                "learner_group.foreach_learner(lambda learner: learner.gather_optimizer_state())"
            )
        state, self._full_optimizer_state = self._full_optimizer_state, None
        return state

    def _optimizer_states(self) -> dict:
        # RLlib converts to numpy, which rejects bfloat16 state: keep torch tensors (on CPU).
        return gather({
            name: {"module_id": self._optimizer_name_to_module[name], "state": optim.state_dict()}
            for name, optim in self._named_optimizers.items()
        })

    @override(TorchLearner)
    def _set_optimizer_state(self, state) -> None:
        super()._set_optimizer_state(state)
        if not self.sharded:
            return
        for optim in self._named_optimizers.values():  # whole tensors → this Learner's shards
            for group in optim.param_groups:
                for param in group["params"]:
                    slots = optim.state.get(param, {})
                    for key, value in slots.items():
                        if torch.is_tensor(value) and not is_sharded(value) and value.shape == param.shape:
                            slots[key] = shard_like(value, param)

    def _gather_module_state(self) -> None:
        if self.sharded:
            full = gather(self.module.get_state())
            self._full_module_state = full if rank() == 0 else None
