"""The learner connector: single-step episodes → right-padded token tensors.

RLlib's default learner connectors cannot handle ragged token arrays, so GRPO replaces them
(``add_default_connectors_to_learner_pipeline=False``). One episode is one trajectory:
observation = prompt ids, action = response ids (model and tool tokens interleaved),
extra model outputs = per-token sampling logprobs and loss mask, reward, advantage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from torl_rllib.core.columns import ADVANTAGE, ADVANTAGES, LOGPROBS, LOSS_MASK, OLD_LOGPROBS
from torl_rllib.modules.causal_lm_module import ATTENTION_MASK, INPUT_IDS, RESPONSE_MASK



class GRPOLearnerConnector(ConnectorV2):
    """Builds ``input_ids, attention_mask, response_mask, loss_mask, old_logprobs, advantages``."""

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch, episodes, shared_data=None, **kwargs) -> Any:
        module_id = next(iter(rl_module.keys()))
        # Custom connector builders are not told the device: read it from the module.
        device = next(rl_module[module_id].parameters()).device
        rows = []
        for ep in episodes:
            prompt = np.asarray(ep.get_observations(0), dtype=np.int64)
            response = np.asarray(ep.get_actions(0), dtype=np.int64)
            rows.append((
                prompt, response,
                np.asarray(ep.get_extra_model_outputs(LOGPROBS, 0), dtype=np.float32),
                np.asarray(ep.get_extra_model_outputs(LOSS_MASK, 0), dtype=np.float32),
                float(ep.get_extra_model_outputs(ADVANTAGE, 0)),
            ))
        width = max(len(p) + len(r) for p, r, *_ in rows)
        n = len(rows)
        input_ids = np.zeros((n, width), dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        response_mask = np.zeros((n, width), dtype=np.float32)
        loss_mask = np.zeros((n, width), dtype=np.float32)
        old_logprobs = np.zeros((n, width), dtype=np.float32)
        advantages = np.zeros((n,), dtype=np.float32)
        for i, (prompt, response, logprobs, mask, adv) in enumerate(rows):
            p, t = len(prompt), len(prompt) + len(response)
            input_ids[i, :p], input_ids[i, p:t] = prompt, response
            attention[i, :t] = 1
            response_mask[i, p:t] = 1
            loss_mask[i, p:t] = mask
            old_logprobs[i, p:t] = logprobs
            advantages[i] = adv
        columns = {
            INPUT_IDS: input_ids, ATTENTION_MASK: attention, RESPONSE_MASK: response_mask,
            Columns.LOSS_MASK: loss_mask, OLD_LOGPROBS: old_logprobs, ADVANTAGES: advantages,
        }
        batch[module_id] = {k: torch.from_numpy(v).to(device) for k, v in columns.items()}
        return batch
