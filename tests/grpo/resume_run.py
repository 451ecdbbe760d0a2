"""One leg of the resume test, run in its own process (``python tests/grpo/resume_run.py``).

    straight MODEL DATA OUT --steps 7 --save-at 2 5   train 7 steps, checkpoint after steps 2 and 5
    resume   MODEL DATA OUT --steps 7 --from CKPT      Algorithm.from_checkpoint(CKPT), train to step 7

``--max-staleness 1`` trains one step off-policy; ``--learner-strategy fsdp`` on 2 FSDP2 Learners. Writes OUT (torch.save): final weights,
optimizer state, problem ids sampled at each step, each step's weights-version lag.
"""

from __future__ import annotations

import argparse

import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, DEFAULT_MODULE_ID

from torl_rllib.algorithms.grpo import GRPOConfig


def build_config(model: str, data: str, max_staleness: int = 0, learner_strategy: str | None = None) -> GRPOConfig:
    """20 problems, 4 per step: an epoch is exactly 5 steps.

    A random model earns the same reward on every sample (all advantages 0), so a small
    entropy bonus makes sure every update really changes the weights and optimizer state.
    """
    config = (
        GRPOConfig()
        .debugging(seed=7)
        .rl_module(model_config={"path": model})
        .training(lr=3e-3, group_size=4, prompts_per_step=4, minibatches_per_step=2, entropy_coeff=0.01,
                  max_staleness=max_staleness)
        .rollout(max_response_tokens=16, max_tool_calls=0)
        .task(train_data=data)
        .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
    )
    if learner_strategy:
        config.learners(num_learners=2, num_cpus_per_learner=0.5, learner_strategy=learner_strategy,
                        fsdp={"param_dtype": "float32"})
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["straight", "resume"])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--save-at", type=int, nargs="*", default=[])
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--from", dest="from_checkpoint")
    parser.add_argument("--max-staleness", type=int, default=0)
    parser.add_argument("--learner-strategy", choices=["ddp", "fsdp"])
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if args.mode == "straight":
        algo = build_config(args.model, args.data, args.max_staleness, args.learner_strategy).build_algo()
    else:
        algo = Algorithm.from_checkpoint(args.from_checkpoint)
    prompts, lags = {}, {}
    while algo.iteration < args.steps:
        result = algo.train()
        prompts[algo.iteration] = list(algo.last_problem_ids)
        lags[algo.iteration] = result["torl"]["weights_version_lag"]
        if algo.iteration in args.save_at:
            algo.save_to_path(f"{args.checkpoint_dir}/step_{algo.iteration}")
    learner_state = algo.get_state(components=COMPONENT_LEARNER_GROUP)[COMPONENT_LEARNER_GROUP][COMPONENT_LEARNER]
    torch.save(
        {
            "weights": algo.learner_group.get_weights()[DEFAULT_MODULE_ID],
            "optimizer": learner_state["optimizer"],
            "prompts": prompts,
            "lags": lags,
            "iteration": algo.iteration,
        },
        args.out,
    )
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
