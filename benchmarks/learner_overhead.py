"""RLlib's overhead on a GRPO update: ``python benchmarks/learner_overhead.py [--json]``.

Times, in one run on the same batch and model, (a) one update through RLlib
(``LearnerGroup.update`` on episodes: learner connector → forward → GRPO loss → backward →
clip → optimizer step) and (b) the same forward/loss/backward/clip/step in a plain PyTorch
loop on pre-built tensors, and prints the ratio (target <= 1.15x).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import TINY_MODEL, median_time, parser, ratio, report  # noqa: E402
from torl_rllib.core.columns import ADVANTAGES, OLD_LOGPROBS  # noqa: E402
from torl_rllib.algorithms.grpo.torch.grpo_torch_learner import aggregate_loss  # noqa: E402


def synthetic_episodes(vocab: int, n: int, prompt_len: int, response_len: int, seed: int = 0):
    """``n`` single-step episodes shaped like rollouts (random ids, ragged responses)."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from torl_rllib.core.columns import ADVANTAGE, LOGPROBS, LOSS_MASK, WEIGHTS_VERSION

    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        length = int(rng.integers(response_len // 2, response_len + 1))
        prompt = rng.integers(0, vocab, prompt_len)
        mask = np.ones(length, dtype=np.float32)
        mask[length // 3 : length // 3 + 8] = 0.0  # a tool observation
        episodes.append(SingleAgentEpisode(
            observations=[prompt, prompt], actions=[rng.integers(0, vocab, length)], rewards=[0.0],
            extra_model_outputs={LOGPROBS: [rng.normal(-2.0, 0.5, length).astype(np.float32)],
                                 LOSS_MASK: [mask], ADVANTAGE: [float(rng.normal())], WEIGHTS_VERSION: [0]},
            terminated=True, len_lookback_buffer=0,
        ))
    return episodes


def update_bench_parser(description: str, *, trajectories: int, iters: int, warmup: int) -> argparse.ArgumentParser:
    """The options every GRPO-update benchmark takes: model, synthetic batch shape, repetitions."""
    result = parser(description)
    result.add_argument("--model", default=str(TINY_MODEL))
    result.add_argument("--trajectories", type=int, default=trajectories)
    result.add_argument("--prompt-len", type=int, default=270)
    result.add_argument("--response-len", type=int, default=96)
    result.add_argument("--iters", type=int, default=iters)
    result.add_argument("--warmup", type=int, default=warmup)
    return result


def main(argv=None) -> None:
    args = update_bench_parser(__doc__, trajectories=64, iters=10, warmup=2).parse_args(argv)
    torch.set_num_threads(1)

    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from torl_rllib.algorithms.grpo import GRPOConfig
    from torl_rllib.rollout.env_runner import placeholder_spaces

    config = (GRPOConfig().rl_module(model_config={"path": args.model})
              .training(lr=1e-5, grad_clip=1.0).task(train_data="unused"))
    learner_group = config.build_learner_group(spaces=placeholder_spaces())
    learner = learner_group._learner
    module = learner.module[DEFAULT_MODULE_ID]
    vocab = module.model.config.vocab_size
    episodes = synthetic_episodes(vocab, args.trajectories, args.prompt_len, args.response_len)
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: 0}

    def rllib_step():
        learner_group.update(episodes=episodes, timesteps=timesteps)

    # The plain loop: same module, loss, clipping and optimizer hyperparameters, own optimizer.
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={}, metrics=None)[DEFAULT_MODULE_ID]
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)

    def plain_step():
        out = module.forward_train(batch)
        ratio = torch.exp(out["token_logprobs"] - batch[OLD_LOGPROBS])
        adv = batch[ADVANTAGES].unsqueeze(-1)
        token_loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
        mask = batch["loss_mask"]
        loss = aggregate_loss(token_loss, mask, "token-mean", float(mask.sum()), float(mask.shape[0]), 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    # Interleave to share any drift in machine load fairly.
    plain, rllib = [], []
    for _ in range(2):
        plain.append(median_time(plain_step, args.iters, args.warmup))
        rllib.append(median_time(rllib_step, args.iters, args.warmup))
    plain_s, rllib_s = min(plain), min(rllib)
    result = {
        "trajectories": args.trajectories, "tokens_per_trajectory": args.prompt_len + args.response_len,
        "parameters": sum(p.numel() for p in params),
        "plain_torch_update_s": round(plain_s, 4), "rllib_update_s": round(rllib_s, 4),
        "rllib_over_plain": round(rllib_s / plain_s, 3),
    }
    report(result, args.json, lambda: [
        f"GRPO update of {args.trajectories} trajectories x ~{result['tokens_per_trajectory']} tokens, "
        f"{result['parameters']:,} parameters (median of {args.iters}, best of 2 rounds):",
        f"  plain PyTorch loop : {plain_s * 1000:8.1f} ms",
        f"  RLlib LearnerGroup : {rllib_s * 1000:8.1f} ms",
        f"  ratio              : {ratio(rllib_s / plain_s, 3, 8)}  (target <= 1.15x)"])


if __name__ == "__main__":
    main()
