"""Export a GRPO checkpoint's policy as a Hugging Face model directory (weights, config, tokenizer)."""

from __future__ import annotations

from pathlib import Path

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID


def module_checkpoint_dir(checkpoint: Path) -> Path:
    """Where RLlib keeps the policy module inside an Algorithm checkpoint."""
    return Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID


def export_policy(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's policy to ``out_dir`` so ``AutoModelForCausalLM.from_pretrained`` loads it."""
    from ray.rllib.core.rl_module.rl_module import RLModule
    from transformers import AutoTokenizer

    module_dir = module_checkpoint_dir(Path(checkpoint))
    if not module_dir.is_dir():
        raise FileNotFoundError(
            f"{checkpoint} is not a torl-rllib checkpoint (no {module_dir.relative_to(Path(checkpoint))})"
        )
    module = RLModule.from_checkpoint(str(module_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module.model.save_pretrained(out)
    AutoTokenizer.from_pretrained(module.model_config["path"]).save_pretrained(out)
    return out
