"""What FSDP2 saves per Learner: ``python benchmarks/sharding.py [--json]``.

Builds a LearnerGroup of ``--learners`` Learners (gloo on CPU, one process each) with
``learner_strategy: ddp`` and then ``fsdp``, runs the same GRPO updates on the same synthetic
episodes, and prints each Learner's parameter and optimizer-state bytes, the median update time,
and the FSDP/DDP ratios (sharding over N Learners should hold ~1/N of each).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import elapsed, median, report  # noqa: E402
from benchmarks.learner_overhead import synthetic_episodes, update_bench_parser  # noqa: E402


def measure(strategy: str, args) -> dict:
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from torl_rllib.algorithms.grpo import GRPOConfig
    from torl_rllib.rollout.env_runner import placeholder_spaces

    config = (GRPOConfig().rl_module(model_config={"path": args.model})
              .training(lr=1e-5, grad_clip=1.0).task(train_data="unused")
              .learners(num_learners=args.learners, num_cpus_per_learner=args.cpus_per_learner,
                        learner_strategy=strategy, fsdp={"param_dtype": "float32"}))
    group = config.build_learner_group(spaces=placeholder_spaces())
    try:
        (vocab, *_) = [r.get() for r in group.foreach_learner(
            lambda learner: learner.module[DEFAULT_MODULE_ID].unwrapped().model.config.vocab_size)]
        episodes = synthetic_episodes(vocab, args.trajectories, args.prompt_len, args.response_len)
        times = [elapsed(lambda: group.update(episodes=episodes, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0}))
                 for _ in range(args.warmup + args.iters)][args.warmup:]
        memory = [r.get() for r in group.foreach_learner(lambda learner: learner.memory_bytes())]
    finally:
        group.shutdown()
    return {"parameter_bytes": [m["parameters"] for m in memory], "optimizer_bytes": [m["optimizer"] for m in memory],
            "update_s": round(median(times), 4)}


def main(argv=None) -> None:
    parser = update_bench_parser(__doc__, trajectories=32, iters=3, warmup=1)
    parser.add_argument("--learners", type=int, default=2)
    parser.add_argument("--cpus-per-learner", type=float, default=1.0)
    args = parser.parse_args(argv)

    import ray

    ray.init(num_cpus=max(2, int(args.learners * args.cpus_per_learner)), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        ddp, fsdp = measure("ddp", args), measure("fsdp", args)
    finally:
        ray.shutdown()
    result = {
        "learners": args.learners, "trajectories": args.trajectories, "ddp": ddp, "fsdp": fsdp,
        "parameter_ratio": round(max(fsdp["parameter_bytes"]) / max(ddp["parameter_bytes"]), 3),
        "optimizer_ratio": round(max(fsdp["optimizer_bytes"]) / max(ddp["optimizer_bytes"]), 3),
        "update_time_ratio": round(fsdp["update_s"] / ddp["update_s"], 3),
    }
    report(result, args.json, lambda: [
        f"{args.learners} Learners, GRPO update of {args.trajectories} trajectories (median of {args.iters}):",
        *(f"  {name}: parameters {row['parameter_bytes']} B, optimizer state {row['optimizer_bytes']} B "
          f"per Learner, update {row['update_s'] * 1000:.0f} ms" for name, row in (("DDP ", ddp), ("FSDP", fsdp))),
        f"  FSDP / DDP per Learner: parameters {result['parameter_ratio']:.3f}, optimizer state "
        f"{result['optimizer_ratio']:.3f}, update time {result['update_time_ratio']:.2f}x"])


if __name__ == "__main__":
    main()
