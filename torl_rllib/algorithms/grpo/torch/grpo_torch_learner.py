"""The GRPO loss in torch: PPO-style clipped ratio with separate low/high clip."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from torl_rllib.algorithms.grpo.grpo_learner import (
    APPROX_KL_KEY, CLIP_FRACTION_KEY, LOGPROB_DIFF_MAX_KEY, LOGPROB_DIFF_MEAN_KEY, LOSS_AGG_MODES,
    MISMATCH_RATIO_BAND, NUM_LOSS_TOKENS_KEY, RATIO_OUTSIDE_KEY, REF_KL_KEY, GRPOLearner,
)
from torl_rllib.core.columns import ADVANTAGES, OLD_LOGPROBS
from torl_rllib.core.learner.torch.sharded_torch_learner import ShardedTorchLearner

SUMMED_STATS = (POLICY_LOSS_KEY, NUM_LOSS_TOKENS_KEY)  # the rest are means over loss tokens
MAX_STATS = (LOGPROB_DIFF_MAX_KEY,)
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
    def build(self) -> None:
        self._micro_batch_stats: dict[str, list[dict]] = {}  # statistics of each micro-batch
        super().build()

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
        if config.entropy_coeff:
            token_loss = token_loss - config.entropy_coeff * fwd_out[TOKEN_ENTROPY]
        if config.kl_coeff:
            ref_delta = fwd_out[REF_LOGPROBS] - logprobs
            ref_kl = torch.exp(ref_delta) - ref_delta - 1.0  # k3, low variance, >= 0
            token_loss = token_loss + config.kl_coeff * ref_kl

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
            if config.kl_coeff:
                stats[REF_KL_KEY] = mean(ref_kl)
            if self._update_start:
                stats.update(rollout_mismatch(logprobs.detach(), batch[OLD_LOGPROBS], mask))
        self._micro_batch_stats.setdefault(module_id, []).append(
            {k: v.item() if torch.is_tensor(v) else v for k, v in stats.items()})
        return loss

    @override(TorchLearner)
    def _update(self, batch: dict, **kwargs):
        """One update step: forward, loss and backward ``config.micro_batch_size`` sequences at a
        time (the whole mini-batch when None), the gradients added up, then one optimizer step.
        The loss is normalized by the mini-batch's global counts, so the sum is the mini-batch's
        gradient."""
        # Private RLlib names, none with a public equivalent: RLlib's step runs forward_train on
        # the whole mini-batch before compute_losses and no public hook skips it, so this overrides
        # Learner._update (the step RLlib marks @OverrideToImplementCustomLogic) and calls its
        # off-policyness metric, TorchLearner._compute_off_policyness, as RLlib's step does.
        self._compute_off_policyness(batch)
        for optim in self._optimizers():
            optim.zero_grad(set_to_none=True)
        self._micro_batch_stats = {}
        loss_per_module: dict = {}
        parts = list(micro_batches(batch, self.config.micro_batch_size))
        for index, micro in enumerate(parts):
            # DDP all-reduces once, the summed gradients, at the last micro-batch's backward.
            with self._without_gradient_sync(index < len(parts) - 1):
                fwd_out = self.module.forward_train(micro)
                losses = self.compute_losses(fwd_out=fwd_out, batch=micro)
                gradients = self.compute_gradients(losses)
            for module_id, loss in losses.items():
                loss_per_module[module_id] = loss_per_module.get(module_id, 0.0) + loss.detach()
        self._log_update_stats()
        with self._without_gradient_sync():  # as RLlib: no DDP hook fires while applying
            self.apply_gradients(self.postprocess_gradients(gradients))
        return fwd_out, loss_per_module, {}

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module: dict, **kwargs) -> dict:
        """Adds the gradients of ``loss_per_module`` to those of the step's earlier micro-batches
        (``_update`` zeroes them once per step) and returns the sums."""
        total = sum(loss_per_module.values())
        if torch.is_tensor(total) and total.grad_fn is not None:
            total.backward()
        return {self.get_param_ref(param): param.grad for optim in self._optimizers()
                for group in optim.param_groups for param in group["params"] if param.grad is not None}

    def _optimizers(self) -> list:
        return [optim for module_id in self.module.keys() for _, optim in self.get_optimizers_for_module(module_id)]

    @contextlib.contextmanager
    def _without_gradient_sync(self, active: bool = True):
        """DDP's ``no_sync`` on every module while ``active`` and there are several Learners."""
        with contextlib.ExitStack() as stack:
            if active and self.config.num_learners > 1:
                for module in self.module.values():
                    if isinstance(module, torch.nn.Module):
                        stack.enter_context(module.no_sync())
            yield

    def _log_update_stats(self) -> None:
        """One value per statistic for the whole mini-batch: sums of the micro-batches' loss and
        token counts, token-weighted means of the rest."""
        for module_id, parts in self._micro_batch_stats.items():
            tokens = sum(part[NUM_LOSS_TOKENS_KEY] for part in parts)
            merged = {
                key: sum(part[key] for part in parts) if key in SUMMED_STATS
                else max(part[key] for part in parts) if key in MAX_STATS
                else sum(part[key] * part[NUM_LOSS_TOKENS_KEY] for part in parts) / max(tokens, 1.0)
                for key in parts[0]
            }
            self.metrics.log_dict(merged, key=module_id, window=1)

    @override(TorchLearner)
    def get_parameters(self, module):
        # Only trainable weights reach the optimizer (never the frozen reference model).
        return [p for p in module.parameters() if p.requires_grad]


def rollout_mismatch(learner_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, float]:
    """How the rollout engine's log-probabilities of the trainable tokens differ from the
    learner's: mean and max absolute difference, and the fraction of tokens whose probability
    ratio lies outside ``MISMATCH_RATIO_BAND``."""
    keep = mask > 0
    if not keep.any():
        return {}
    diff = (learner_logprobs - rollout_logprobs)[keep].float()
    low, high = MISMATCH_RATIO_BAND
    ratio = diff.exp()
    return {
        LOGPROB_DIFF_MEAN_KEY: diff.abs().mean().item(),
        LOGPROB_DIFF_MAX_KEY: diff.abs().max().item(),
        RATIO_OUTSIDE_KEY: ((ratio < low) | (ratio > high)).float().mean().item(),
    }


def micro_batches(batch: dict, size: int | None):
    """``batch`` ({module_id: {column: [B, ...] tensor}}) in slices of ``size`` rows (one slice
    when ``size`` is None or at least B)."""
    rows = max((v.shape[0] for columns in batch.values() for v in columns.values() if torch.is_tensor(v)), default=0)
    step = size or rows or 1
    for start in range(0, max(rows, 1), step):
        yield {
            module_id: {k: v[start:start + step] if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else v
                        for k, v in columns.items()}
            for module_id, columns in batch.items()
        }
