"""The GRPO loss of the real ``GRPOTorchLearner.compute_loss_for_module`` equals a value
computed by hand, for every aggregation mode, on a tiny batch with sequences of different
lengths, a masked tool token and both clip sides active; clipped tokens get no gradient;
the driver's global counts replace the local normalizer; entropy bonus and k3 KL add up."""

from __future__ import annotations

import math

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES
from torl_rllib.algorithms.grpo.torch.grpo_torch_learner import LOSS_AGG_MODES, aggregate_loss
from torl_rllib.modules.causal_lm_module import REF_LOGPROBS, TOKEN_ENTROPY, TOKEN_LOGPROBS

from .conftest import build_learner, grpo_config

EPS_LOW, EPS_HIGH, MAX_RESPONSE = 0.2, 0.28, 8
# Two sequences: advantage +1 with 3 loss tokens (one tool token in between, masked), and
# advantage -2 with 2 loss tokens then padding. Ratios new/old at the loss tokens:
ADV = [1.0, -2.0]
MASK = [[0, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0]]
RATIO = [[1, 1, 1.5, 0.5, 1, 1.1], [1, 0.5, 1.5, 1, 1, 1]]
# Per-token loss max(-A r, -A clip(r, 0.8, 1.28)) worked out by hand:
#   A=+1: r=1.5 -> clipped to 1.28 (upper side) -> -1.28; r=0.5 -> -0.5 (the lower clip would
#         give -0.8, the max keeps -0.5: unclipped); r=1.1 -> -1.1 (inside).
#   A=-2: r=0.5 -> clipped to 0.8 (lower side) -> 1.6; r=1.5 -> 3.0 (unclipped).
TOKEN_LOSS = [[-1.28, -0.5, -1.1], [1.6, 3.0]]
CLIPPED = [[True, False, False], [True, False]]
EXPECTED = {
    "token-mean": (-1.28 - 0.5 - 1.1 + 1.6 + 3.0) / 5,
    "seq-mean-token-mean": ((-1.28 - 0.5 - 1.1) / 3 + (1.6 + 3.0) / 2) / 2,
    "seq-mean-token-sum-norm": ((-1.28 - 0.5 - 1.1) / MAX_RESPONSE + (1.6 + 3.0) / MAX_RESPONSE) / 2,
}
# d loss / d logprob at an unclipped token = -A * r * (that token's weight in the mode).
TOKEN_WEIGHT = {
    "token-mean": [1 / 5, 1 / 5],
    "seq-mean-token-mean": [1 / (3 * 2), 1 / (2 * 2)],
    "seq-mean-token-sum-norm": [1 / (MAX_RESPONSE * 2)] * 2,
}


@pytest.fixture(scope="module")
def learner(random_model_dir, arithmetic_jsonl):
    config = grpo_config(random_model_dir, arithmetic_jsonl, clip_eps_low=EPS_LOW, clip_eps_high=EPS_HIGH,
                         max_response_tokens=MAX_RESPONSE)
    return build_learner(config)


def hand_batch():
    old = torch.full((2, 6), -1.0)
    old[0, 4] = -30.0  # a tool token: its (garbage) ratio e^29 must not count
    new = (old + torch.log(torch.tensor(RATIO))).requires_grad_(True)
    batch = {
        Columns.LOSS_MASK: torch.tensor(MASK, dtype=torch.float32),
        "old_logprobs": old,
        "advantages": torch.tensor(ADV),
    }
    entropy = torch.arange(12, dtype=torch.float32).reshape(2, 6) / 10
    return batch, {TOKEN_LOGPROBS: new, TOKEN_ENTROPY: entropy}


def loss_of(learner, batch, fwd_out, **overrides):
    config = learner.config.copy(copy_frozen=False)
    for key, value in overrides.items():
        setattr(config, key, value)
    return learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=config, batch=batch, fwd_out=fwd_out)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_loss_matches_hand_computed_value_and_gradient(learner, mode):
    batch, fwd_out = hand_batch()
    loss = loss_of(learner, batch, fwd_out, loss_agg_mode=mode)
    assert loss.item() == pytest.approx(EXPECTED[mode], rel=1e-6), mode

    loss.backward()
    grad = fwd_out[TOKEN_LOGPROBS].grad
    for row in range(2):
        positions = [t for t in range(6) if MASK[row][t]]
        for k, t in enumerate(positions):
            want = 0.0 if CLIPPED[row][k] else -ADV[row] * RATIO[row][t] * TOKEN_WEIGHT[mode][row]
            assert grad[row, t].item() == pytest.approx(want, abs=1e-7), f"{mode}: gradient at ({row}, {t})"
        off = [t for t in range(6) if not MASK[row][t]]
        assert (grad[row, off] == 0).all(), f"{mode}: masked tokens must get no gradient"


def test_global_counts_from_the_driver_normalize_the_loss(learner):
    batch, fwd_out = hand_batch()
    learner.before_gradient_based_update(timesteps={GLOBAL_LOSS_TOKENS: 10.0, GLOBAL_SEQUENCES: 4.0})
    try:
        token_mean = loss_of(learner, batch, fwd_out, loss_agg_mode="token-mean").item()
        seq_mean = loss_of(learner, batch, fwd_out, loss_agg_mode="seq-mean-token-mean").item()
    finally:
        learner.before_gradient_based_update(timesteps={})
    assert token_mean == pytest.approx(EXPECTED["token-mean"] * 5 / 10, rel=1e-6)
    assert seq_mean == pytest.approx(EXPECTED["seq-mean-token-mean"] * 2 / 4, rel=1e-6)


def test_entropy_bonus_and_k3_kl_to_the_reference(learner):
    batch, fwd_out = hand_batch()
    fwd_out[REF_LOGPROBS] = batch["old_logprobs"] + 0.3  # ref - new at each loss token, by hand:
    deltas = [0.3 - math.log(RATIO[r][t]) for r in range(2) for t in range(6) if MASK[r][t]]
    k3 = sum(math.exp(d) - d - 1 for d in deltas)
    entropy = sum(fwd_out[TOKEN_ENTROPY][r, t].item() for r in range(2) for t in range(6) if MASK[r][t])
    loss = loss_of(learner, batch, fwd_out, loss_agg_mode="token-mean", entropy_coeff=0.01, kl_coeff=0.5)
    assert loss.item() == pytest.approx(EXPECTED["token-mean"] + (0.5 * k3 - 0.01 * entropy) / 5, rel=1e-6)


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        aggregate_loss(torch.zeros(1, 2), torch.ones(1, 2), "sum", 2.0, 1.0, 8)


def test_logged_clip_fraction_and_approx_kl_to_the_sampling_policy(learner):
    """The tokens were sampled from the old policy q; with r = p/q the k3 estimate of
    KL(q || p) is the mean of r - 1 - log r (unbiased under q)."""
    batch, fwd_out = hand_batch()
    learner._micro_batch_stats = {}  # as an update starts
    loss_of(learner, batch, fwd_out, loss_agg_mode="token-mean")
    learner._log_update_stats()  # as an update ends (one micro-batch here)
    ratios = [RATIO[r][t] for r in range(2) for t in range(6) if MASK[r][t]]
    k3 = sum(x - 1 - math.log(x) for x in ratios) / len(ratios)
    outside = sum(not 1 - EPS_LOW <= x <= 1 + EPS_HIGH for x in ratios) / len(ratios)
    logged = learner.metrics.peek(DEFAULT_MODULE_ID)
    assert logged["approx_kl"] == pytest.approx(k3, rel=1e-6)
    assert logged["clip_fraction"] == pytest.approx(outside)
    assert logged["num_loss_tokens"] == len(ratios)


def test_importance_clip_weights_each_token_by_its_truncated_ratio_to_the_sampler(learner):
    """Decoupled PPO: the clip is taken against the policy at the start of the update (here the
    forward itself: no token is clipped) and each token's gradient is weighted by
    min(pi / pi_rollout, c) — the ratios of a stale rollout, truncated at c = 1.2."""
    batch, fwd_out = hand_batch()
    loss = loss_of(learner, batch, fwd_out, loss_agg_mode="token-mean", importance_clip=1.2)
    weights = [[min(r, 1.2) for r in row] for row in RATIO]
    expected = sum(-ADV[r] * weights[r][t] for r in range(2) for t in range(6) if MASK[r][t]) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = fwd_out[TOKEN_LOGPROBS].grad
    for r in range(2):
        for t in range(6):
            want = -ADV[r] * weights[r][t] / 5 if MASK[r][t] else 0.0
            assert grad[r, t].item() == pytest.approx(want, abs=1e-7)


def test_rollout_mismatch_over_trainable_tokens_only():
    """|log pi_learner - log pi_rollout| and the out-of-band ratio fraction, on the MASK/RATIO
    batch above: loss tokens have ratios 1.5, 0.5, 1.1 and 0.5, 1.5 (the masked ones are 1)."""
    from torl_rllib.algorithms.grpo.torch.grpo_torch_learner import rollout_mismatch

    rollout = torch.full((2, 6), -1.0)
    learner = rollout + torch.tensor(RATIO).log()
    learner[0, 4] = 50.0  # a tool token: masked, so never counted
    stats = rollout_mismatch(learner, rollout, torch.tensor(MASK, dtype=torch.float32))
    diffs = [math.log(1.5), math.log(2), math.log(1.1), math.log(2), math.log(1.5)]
    assert stats["rollout_logprob_diff_mean"] == pytest.approx(sum(diffs) / 5, rel=1e-5)
    assert stats["rollout_logprob_diff_max"] == pytest.approx(math.log(2), rel=1e-5)
    assert stats["rollout_ratio_outside_band"] == pytest.approx(4 / 5)  # all but 1.1
    assert rollout_mismatch(learner, rollout, torch.zeros(2, 6)) == {}
