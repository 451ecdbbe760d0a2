"""Token sampling with per-sequence random streams.

Each sequence draws one uniform number per token from its own ``numpy`` generator (seeded per
request) and picks the token by inverse-CDF over the (optionally top-k/top-p truncated)
distribution. A sequence's tokens therefore depend only on its seed and its logits, not on
which other sequences share its batch: rollouts are reproducible after a resume even though
asynchronous tool calls change batch composition from run to run.
"""

from __future__ import annotations

import numpy as np
import torch


def sequence_rng(seed: int | None) -> np.random.Generator:
    """The random stream of one request."""
    return np.random.default_rng(seed)


def sample_tokens(
    logprobs: torch.Tensor, uniforms: torch.Tensor, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Pick one token per row of ``logprobs`` ([B, V], normalized) with ``uniforms`` ([B])."""
    probs = logprobs.exp()
    if top_k or top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        if top_k:
            probs[:, top_k:] = 0.0
        if top_p < 1.0:
            before = probs.cumsum(-1) - probs  # mass strictly before each token
            probs = probs.masked_fill(before >= top_p, 0.0)
    else:
        order = None
    cdf = probs.double().cumsum(-1)
    targets = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, targets).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    return idx if order is None else order.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
