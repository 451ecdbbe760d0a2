"""The GRPO loss in torch: PPO-style clipped ratio with separate low/high clip."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from torl_rllib.algorithms.grpo.grpo_learner import (
    APPROX_KL_KEY, CLIP_FRACTION_KEY, LOSS_AGG_MODES, NUM_LOSS_TOKENS_KEY, REF_KL_KEY, GRPOLearner,
)
from torl_rllib.core.columns import ADVANTAGES, OLD_LOGPROBS
from torl_rllib.core.learner.torch.sharded_torch_learner import ShardedTorchLearner
from torl_rllib.modules.causal_lm_module import REF_LOGPROBS, TOKEN_ENTROPY, TOKEN_LOGPROBS


def aggregate_loss(
    token_loss: torch.Tensor, mask: torch.Tensor, mode: str,
    num_tokens: float, num_sequences: float, max_response_tokens: int,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    * ``token-mean``: sum over all loss tokens / ``num_tokens`` (DAPO).
    * ``seq-mean-token-mean``: the mean over sequences of each sequence's token mean (GRPO).
    * ``seq-mean-token-sum-norm``: each sequence's token sum / ``max_response_tokens``, averaged
      over sequences (Dr. GRPO: no length bias).
    ``num_tokens`` / ``num_sequences`` are the *global* counts the sum is divided by.
    """
    masked = token_loss * mask
    if mode == "token-mean":
        return masked.sum() / max(num_tokens, 1.0)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(num_sequences, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return (masked.sum(-1) / max_response_tokens).sum() / max(num_sequences, 1.0)
    raise ValueError(f"unknown loss_agg_mode {mode!r}; choose one of {LOSS_AGG_MODES}")


class GRPOTorchLearner(GRPOLearner, ShardedTorchLearner):
    """Clipped policy-gradient loss (clip-higher), optional k3 KL to a reference model and
    entropy bonus, aggregated per ``loss_agg_mode`` over the global mini-batch."""

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any], fwd_out):
        mask = batch[Columns.LOSS_MASK]
        logprobs = fwd_out[TOKEN_LOGPROBS]
        advantages = batch[ADVANTAGES].unsqueeze(-1)
        if config.importance_clip:
            # Decoupled PPO: clip against the policy at the start of this update (the first
            # forward of a 1-epoch, 1-minibatch update is exactly it), weight by the truncated
            # ratio to the policy that sampled (stale by up to max_staleness versions).
            proximal = logprobs.detach()
            weight = torch.exp(proximal - batch[OLD_LOGPROBS]).clamp(max=config.importance_clip)
            advantages = advantages * weight
            log_ratio = logprobs - proximal
        else:
            log_ratio = logprobs - batch[OLD_LOGPROBS]
        ratio = torch.exp(log_ratio)
        clipped = torch.clamp(ratio, 1.0 - config.clip_eps_low, 1.0 + config.clip_eps_high)
        token_loss = torch.maximum(-advantages * ratio, -advantages * clipped)
        if config.entropy_coef:
            token_loss = token_loss - config.entropy_coef * fwd_out[TOKEN_ENTROPY]
        if config.kl_coef:
            ref_delta = fwd_out[REF_LOGPROBS] - logprobs
            ref_kl = torch.exp(ref_delta) - ref_delta - 1.0  # k3, low variance, >= 0
            token_loss = token_loss + config.kl_coef * ref_kl

        n_local = mask.sum()
        num_tokens = self._global_loss_tokens or float(n_local)
        num_seqs = self._global_sequences or float(mask.shape[0])
        loss = aggregate_loss(
            token_loss, mask, config.loss_agg_mode, num_tokens, num_seqs, config.max_response_tokens
        ) * self.world_size

        with torch.no_grad():
            denom = n_local.clamp(min=1.0)
            mean = lambda x: (x * mask).sum() / denom  # noqa: E731
            stats = {
                POLICY_LOSS_KEY: loss,
                ENTROPY_KEY: mean(fwd_out[TOKEN_ENTROPY]),
                CLIP_FRACTION_KEY: mean(((ratio - clipped).abs() > 0).float()),
                APPROX_KL_KEY: mean(ratio - log_ratio - 1.0),  # k3, tokens drawn from the old policy
                NUM_LOSS_TOKENS_KEY: n_local,
            }
            if config.kl_coef:
                stats[REF_KL_KEY] = mean(ref_kl)
        self.metrics.log_dict(
            {k: v.item() if torch.is_tensor(v) else v for k, v in stats.items()},
            key=module_id, window=1,
        )
        return loss

    @override(TorchLearner)
    def get_parameters(self, module):
        # Only trainable weights reach the optimizer (never the frozen reference model).
        return [p for p in module.parameters() if p.requires_grad]

