"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for a ``CausalLMModule``, and moving whole
(unsharded) states in and out of sharded tensors.

Sharding: one FSDP unit per decoder layer (the classes the model names in
``_no_split_modules``, as accelerate and verl wrap them), the frozen reference model's layers
and its root as units of their own, and the RLModule itself as the root unit (embeddings, final
norm, LM head). RLlib calls ``forward_train`` rather than ``__call__``, so it is registered as
an FSDP forward method.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def rank() -> int:
    """This process's rank in the Learners' process group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_sharded(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face model (``_no_split_modules`` classes)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class in _no_split_modules; "
            "FSDP needs one unit per layer (use learner_strategy: ddp for this model)"
        )
    return layers


def shard_causal_lm_module(module: nn.Module, *, param_dtype=None, reduce_dtype=None, cpu_offload=False) -> None:
    """Shard ``module`` (a ``CausalLMModule``) in place across the default process group. The
    policy's shards are float32 master weights whatever dtype it was loaded in (an lr-1e-6 step
    is lost to bfloat16 rounding); it computes in ``param_dtype``."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard, register_fsdp_forward_method,
    )

    policies = dict(
        mp_policy=MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype),
        offload_policy=CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    )
    reference = getattr(module, "ref_model", None)
    if reference is not None:  # its own units: never gathered with the policy's
        for layer in decoder_layers(reference):
            fully_shard(layer, **policies)
        fully_shard(reference, **policies)
    module.model.float()
    for layer in decoder_layers(module.model):
        fully_shard(layer, **policies)
    fully_shard(module, **policies)
    register_fsdp_forward_method(module, "forward_train")
    # RLlib's TorchLearner enters ``module.no_sync()`` (a DDP API) around applying gradients
    # when num_learners > 1; gradients are already reduced then, so for FSDP it is a no-op.
    module.no_sync = contextlib.nullcontext


@contextlib.contextmanager
def unsharded(model: nn.Module):
    """Gather ``model``'s own (root) parameters for a call that is not its ``forward``;
    a no-op for an unsharded model."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield model
        return
    model.unshard()
    try:
        yield model
    finally:
        model.reshard()


def gather(tree: Any) -> Any:
    """``tree`` with every tensor copied to the CPU, sharded ones gathered whole on rank 0
    (other ranks get ``None`` for them). Collective: every rank calls it with the same structure. One tensor
    at a time, so a rank never holds more than one whole tensor beyond its shards."""
    if is_sharded(tree):
        if tree.device.type != tree.device_mesh.device_type:  # CPU-offloaded shards: NCCL gathers on the GPU
            tree = tree.to(tree.device_mesh.device_type)
        full = tree.full_tensor()
        return full.cpu() if rank() == 0 else None
    if torch.is_tensor(tree):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: gather(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(gather(v) for v in tree)
    return tree


def shard_like(full: torch.Tensor, like: Any) -> Any:
    """``full`` split as the sharded tensor ``like`` is (this rank's part, no communication:
    every rank holds ``full``); ``full`` itself when ``like`` is not sharded."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    full = torch.as_tensor(full).to(device=like.device, dtype=like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` this process holds (its shard only, for a sharded tensor)."""
    local = tensor.to_local() if is_sharded(tensor) else tensor
    return local.numel() * local.element_size()


def local_parameter_bytes(module: nn.Module) -> int:
    """Bytes of parameters this process holds (its shards only, for a sharded module)."""
    return sum(local_bytes(p) for p in module.parameters())
