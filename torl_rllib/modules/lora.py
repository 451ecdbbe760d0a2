"""LoRA adapters through PEFT for the learner's policy (``model_config["lora"]``).

Only the adapters are trained, held by the optimizer and checkpointed; the base weights come
from ``path``. What leaves the Learner for inference (EnvRunners, ``export``) is the merged
model: ``W + (alpha / r) * B @ A`` per adapted layer, under the base model's parameter names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

LORA_DEFAULTS: dict[str, Any] = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
ADAPTER_MARKER = "lora_"  # in the names of every adapter parameter


def lora_problems(lora: Any) -> list[str]:
    """Every problem of a ``lora`` setting, one line each (empty when valid)."""
    if not isinstance(lora, dict):
        return [f"lora must be a mapping {sorted(LORA_DEFAULTS)}, got {lora!r}"]
    problems = [f"lora.{key}: unknown key; valid: {sorted(LORA_DEFAULTS)}" for key in sorted(set(lora) - set(LORA_DEFAULTS))]
    settings = {**LORA_DEFAULTS, **lora}
    if not (isinstance(settings["r"], int) and settings["r"] >= 1):
        problems.append(f"lora.r: must be an integer >= 1, got {settings['r']!r}")
    if not (isinstance(settings["alpha"], (int, float)) and settings["alpha"] > 0):
        problems.append(f"lora.alpha: must be > 0, got {settings['alpha']!r}")
    if not (isinstance(settings["dropout"], (int, float)) and 0 <= settings["dropout"] < 1):
        problems.append(f"lora.dropout: must be in [0, 1), got {settings['dropout']!r}")
    targets = settings["target_modules"]
    if not (targets == "all-linear" or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        problems.append(f"lora.target_modules: 'all-linear' or a list of module names, got {targets!r}")
    return problems


def apply_lora(model: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """``model`` with fresh LoRA adapters (B = 0: the policy starts as the base model); only the
    adapters require gradients."""
    from peft import LoraConfig, get_peft_model

    problems = lora_problems(lora)
    if problems:
        raise ValueError("; ".join(problems))
    settings = {**LORA_DEFAULTS, **lora}
    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=settings["target_modules"], task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face causal LM inside ``model`` (itself when it has no adapters)."""
    return model.get_base_model() if is_lora(model) else model


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapted model's weights merged, under the base model's names (the model is unchanged)."""
    from peft.tuners.lora import LoraLayer

    base = causal_lm(model)
    merged = {name.replace(".base_layer.", "."): tensor.detach()
              for name, tensor in base.state_dict().items() if ADAPTER_MARKER not in name}
    for name, layer in base.named_modules():
        if isinstance(layer, LoraLayer):
            weight = f"{name}.weight"
            for adapter in layer.active_adapters:
                merged[weight] = merged[weight] + layer.get_delta_weight(adapter).to(merged[weight].dtype)
    return merged
