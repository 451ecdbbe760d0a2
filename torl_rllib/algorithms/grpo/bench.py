"""RLlib's overhead on a GRPO update: ``python -m torl_rllib.algorithms.grpo.bench``.

Times, in one run on the same batch and model, (a) one update through RLlib
(``LearnerGroup.update`` on episodes: learner connector → forward → GRPO loss → backward →
clip → optimizer step) and (b) the same forward/loss/backward/clip/step in a plain PyTorch
loop on pre-built tensors, and prints the ratio (target <= 1.15x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from torl_rllib.core.columns import ADVANTAGES, OLD_LOGPROBS
from torl_rllib.algorithms.grpo.torch.grpo_torch_learner import aggregate_loss

DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "assets" / "tiny-math-base"


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
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--trajectories", type=int, default=trajectories)
    parser.add_argument("--prompt-len", type=int, default=270)
    parser.add_argument("--response-len", type=int, default=96)
    parser.add_argument("--iters", type=int, default=iters)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv=None) -> None:
    parser = update_bench_parser(__doc__.split("\n\n")[0], trajectories=64, iters=10, warmup=2)
    args = parser.parse_args(argv)
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

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    # Interleave to share any drift in machine load fairly.
    plain, rllib = [], []
    for _ in range(2):
        plain.append(timed(plain_step))
        rllib.append(timed(rllib_step))
    plain_s, rllib_s = min(plain), min(rllib)
    result = {
        "trajectories": args.trajectories, "tokens_per_trajectory": args.prompt_len + args.response_len,
        "parameters": sum(p.numel() for p in params),
        "plain_torch_update_s": round(plain_s, 4), "rllib_update_s": round(rllib_s, 4),
        "rllib_over_plain": round(rllib_s / plain_s, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"GRPO update of {args.trajectories} trajectories x ~{result['tokens_per_trajectory']} tokens, "
              f"{result['parameters']:,} parameters (median of {args.iters}, best of 2 rounds):")
        print(f"  plain PyTorch loop : {plain_s * 1000:8.1f} ms")
        print(f"  RLlib LearnerGroup : {rllib_s * 1000:8.1f} ms")
        print(f"  ratio              : {rllib_s / plain_s:8.3f}x  (target <= 1.15x)")


if __name__ == "__main__":
    main()
