"""Export the policy as a Hugging Face model directory (weights, config, tokenizer), from a
GRPO checkpoint or from live weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

from torl_rllib.utils.checkpoint_manifest import verify_checkpoint
from torl_rllib.modules.causal_lm_module import MODEL_PREFIX


ADAPTER_DIR = "adapter"  # LoRA runs: OUT/adapter holds the adapter alone (PeftModel.from_pretrained)


def module_checkpoint_dir(checkpoint: Path) -> Path:
    """Where RLlib keeps the policy module inside an Algorithm checkpoint."""
    return Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID


def _write_hf_model(model, tokenizer_source: str, out_dir: str | Path) -> Path:
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(out)
    return out


def export_policy(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's policy to ``out_dir`` so ``AutoModelForCausalLM.from_pretrained`` loads it
    (merged with its LoRA adapter, which is also written alone to ``out_dir/adapter``)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    checkpoint = Path(checkpoint).resolve()  # RLlib reads a relative path as a URI and fails
    module_dir = module_checkpoint_dir(checkpoint)
    if not module_dir.is_dir():
        raise FileNotFoundError(
            f"{checkpoint} is not a torl-rllib checkpoint (no {module_dir.relative_to(Path(checkpoint))})"
        )
    verify_checkpoint(checkpoint)  # DamagedCheckpoint names the damaged file
    module = RLModule.from_checkpoint(str(module_dir))
    model = module.model
    if module.lora:  # the adapter alone (PEFT's format), then the merged model
        model.save_pretrained(Path(out_dir) / ADAPTER_DIR)
        model = model.merge_and_unload()
    return _write_hf_model(model, module.model_config["path"], out_dir)


def export_weights(weights: Mapping[str, Any], model_config: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write live policy weights (a ``CausalLMModule`` state) to ``out_dir`` as a Hugging Face
    model directory, on the architecture and tokenizer of ``model_config["path"]``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_config["path"], torch_dtype=getattr(torch, model_config.get("dtype", "float32")),
        trust_remote_code=model_config.get("trust_remote_code", False),
    )
    model.load_state_dict(
        {k[len(MODEL_PREFIX):]: torch.as_tensor(v) for k, v in weights.items() if k.startswith(MODEL_PREFIX)}
    )
    return _write_hf_model(model, model_config["path"], out_dir)
