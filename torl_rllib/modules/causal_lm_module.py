"""A Hugging Face causal LM as an RLlib ``TorchRLModule``.

``model_config`` keys (set through ``GRPOConfig.rl_module(model_config=...)``):

* ``path`` (required): local directory or hub id, loaded with ``from_pretrained``.
* ``dtype``: ``"float32"`` (CPU default), ``"bfloat16"`` or ``"float16"``.
* ``gradient_checkpointing``: trade compute for activation memory in the learner.
* ``temperature``: the sampling temperature; log-probabilities are of ``softmax(logits / T)``.
* ``logits_chunk_size``: positions per chunk when turning hidden states into log-probs.
* ``kl_coeff``: when > 0, a frozen reference copy of the initial model is built (only in the
  learner's module, never in inference-only modules); it is excluded from the optimizer,
  from the module state and from the weight sync. With LoRA the reference is the base model
  itself, run with the adapters disabled (no copy).
* ``lora``: ``{r, alpha, dropout, target_modules}`` (``torl_rllib.modules.lora``): the learner
  trains PEFT LoRA adapters only; its state is the adapters, its inference-only state (what
  EnvRunners load) the merged weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch.utils.checkpoint import checkpoint

from torl_rllib.utils.fsdp import is_sharded, shard_like, unsharded
from torl_rllib.modules.lora import ADAPTER_MARKER, apply_lora, causal_lm, merged_state_dict

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Batch columns the learner connector builds and the module reads.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
RESPONSE_MASK = "response_mask"  # 1 on every response token (model and tool tokens)
# Forward outputs, [B, T] aligned with input_ids: at t, the log-prob of token t given < t.
TOKEN_LOGPROBS = "token_logprobs"
TOKEN_ENTROPY = "token_entropy"
REF_LOGPROBS = "ref_logprobs"  # only when a reference model exists (kl_coeff > 0)
REF_PREFIX = "ref_model."
MODEL_PREFIX = "model."  # the Hugging Face model's weights inside the module state


def _chunk_logprobs_entropy(hidden, lm_head_weight, lm_head_bias, targets, inv_temperature):
    logits = F.linear(hidden, lm_head_weight, lm_head_bias).float() * inv_temperature
    log_z = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
    probs = torch.softmax(logits, dim=-1)
    entropy = log_z - (probs * logits).sum(-1)
    return logprobs, entropy


def token_logprobs_and_entropy(
    hidden: torch.Tensor,
    lm_head: torch.nn.Linear,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of ``targets`` and the entropy at each of ``hidden``'s rows.

    The vocabulary projection runs ``chunk_size`` rows at a time and each chunk is
    recomputed in the backward pass (activation checkpointing), so the full
    ``[tokens, vocab]`` fp32 logits are never held at once, whatever the sequence length.
    """
    inv_t = 1.0 / temperature
    out_lp, out_ent = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        args = (hidden[start : start + chunk_size], lm_head.weight, lm_head.bias,
                targets[start : start + chunk_size], inv_t)
        if torch.is_grad_enabled() and hidden.requires_grad:
            lp, ent = checkpoint(_chunk_logprobs_entropy, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs_entropy(*args)
        out_lp.append(lp)
        out_ent.append(ent)
    if not out_lp:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(out_lp), torch.cat(out_ent)


class CausalLMModule(TorchRLModule):
    """The policy: any ``AutoModelForCausalLM``. One "action" is a whole response.

    ``_forward_train`` returns ``[B, T]`` tensors aligned with ``input_ids``: at every response
    position t, the log-probability of token t given the tokens before it and the entropy of
    the distribution it was drawn from (zeros elsewhere).
    """

    @override(TorchRLModule)
    def setup(self):
        from transformers import AutoModelForCausalLM

        cfg = self.model_config or {}
        if not cfg.get("path"):
            raise ValueError("CausalLMModule needs model_config['path'] (a local directory or hub id)")
        dtype_name = cfg.get("dtype", "float32")
        if dtype_name not in DTYPES:
            raise ValueError(f"model dtype {dtype_name!r} is not one of {sorted(DTYPES)}")
        load = dict(dtype=DTYPES[dtype_name], trust_remote_code=cfg.get("trust_remote_code", False))
        self.model = AutoModelForCausalLM.from_pretrained(cfg["path"], **load)
        self.model.generation_config.top_k = None  # never let HF add its implicit top-k=50
        learner = not self.inference_only
        self.lora = bool(cfg.get("lora")) and learner
        if learner and cfg.get("gradient_checkpointing"):
            self.model.gradient_checkpointing_enable()
            if self.lora:  # the frozen embeddings' output must carry gradients into the layers
                self.model.enable_input_require_grads()
        if self.lora:
            self.model = apply_lora(self.model, cfg["lora"])
        kl = float(cfg.get("kl_coeff", 0.0)) > 0 and learner
        self.adapter_free_reference = kl and self.lora
        self.ref_model = None
        if kl and not self.lora:
            self.ref_model = AutoModelForCausalLM.from_pretrained(cfg["path"], **load).eval()
            self.ref_model.requires_grad_(False)
        self.temperature = float(cfg.get("temperature", 1.0))
        self.logits_chunk_size = int(cfg.get("logits_chunk_size", 1024))

    def _response_logprobs(self, batch: dict[str, Any], model=None) -> dict[str, torch.Tensor]:
        model = causal_lm(model or self.model)
        input_ids = batch[INPUT_IDS]
        attention_mask = batch[ATTENTION_MASK]
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = model.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        # The hidden state at t predicts token t+1: project only predecessors of response tokens.
        is_target = torch.zeros_like(batch[RESPONSE_MASK], dtype=torch.bool)
        is_target[:, 1:] = batch[RESPONSE_MASK][:, 1:].bool()
        predecessor = torch.zeros_like(is_target)
        predecessor[:, :-1] = is_target[:, 1:]
        logprobs, entropy = token_logprobs_and_entropy(
            hidden[predecessor], model.get_output_embeddings(), input_ids[is_target],
            self.temperature, self.logits_chunk_size,
        )
        # Scatter back to [B, T]: the value at t belongs to token t (0 off the response).
        out_lp = torch.zeros(input_ids.shape, dtype=logprobs.dtype, device=logprobs.device)
        out_ent = torch.zeros_like(out_lp)
        out_lp = out_lp.masked_scatter(is_target, logprobs)
        out_ent = out_ent.masked_scatter(is_target, entropy)
        return {TOKEN_LOGPROBS: out_lp, TOKEN_ENTROPY: out_ent}

    @override(TorchRLModule)
    def _forward(self, batch, **kwargs):
        with torch.no_grad():
            return self._response_logprobs(batch)

    @override(TorchRLModule)
    def _forward_train(self, batch, **kwargs):
        out = self._response_logprobs(batch)
        if self.ref_model is not None:
            with torch.no_grad(), unsharded(self.ref_model) as reference:
                out[REF_LOGPROBS] = self._response_logprobs(batch, reference)[TOKEN_LOGPROBS]
        elif self.adapter_free_reference:
            with torch.no_grad(), self.model.disable_adapter():
                out[REF_LOGPROBS] = self._response_logprobs(batch)[TOKEN_LOGPROBS]
        return out

    # RLlib's default state handling converts to numpy, which rejects bfloat16: keep tensors.
    # The reference model is rebuilt from ``path``, never checkpointed or synced.
    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only=False, **kwargs):
        if self.lora:  # inference: the merged model; otherwise the adapters (the base is ``path``)
            if inference_only:
                return {MODEL_PREFIX + k: v.cpu() for k, v in merged_state_dict(self.model).items()}
            return {k: v.detach().cpu() for k, v in self.state_dict().items() if ADAPTER_MARKER in k}
        # Sharded (FSDP) weights stay sharded: the Learner gathers them, all ranks together.
        return {
            k: v.detach() if is_sharded(v) else v.detach().cpu()
            for k, v in self.state_dict().items() if not k.startswith(REF_PREFIX)
        }

    @override(TorchRLModule)
    def set_state(self, state) -> None:
        own = self.state_dict()
        unknown = set(state) - set(own)
        if unknown:
            raise KeyError(f"state has weights this module does not: {sorted(unknown)[:5]}")
        result = self.load_state_dict(
            {k: shard_like(torch.as_tensor(v).to(own[k].dtype), own[k]) for k, v in state.items()}, strict=False
        )
        missing = [k for k in result.missing_keys
                   if not k.startswith(REF_PREFIX) and (not self.lora or ADAPTER_MARKER in k)]
        if missing:
            raise KeyError(f"state lacks weights of this module: {missing[:5]}")

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face parameter names (what a rollout engine loads), merged
        with the LoRA adapters when there are some."""
        if self.lora:
            return merged_state_dict(self.model)
        return {k: v.detach() for k, v in self.model.state_dict().items()}
