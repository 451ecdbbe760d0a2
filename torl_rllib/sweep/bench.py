"""Overhead of a sweep: ``python -m torl_rllib.sweep.bench [--steps N] [--json]``.

Runs the same two configurations of the tiny demo (lr 1e-4 and 3e-4, C = 1, the trials'
resources of ``experiments/sweeps/tiny_cpu.yaml``) twice in one process and one Ray cluster:
as two ``torl-rllib train`` runs back to back, and as a 2-trial sweep with
``max_concurrent_trials=1`` (Tune, trial actors, parent/child MLflow runs, results). Prints both
wall times and their ratio (sweep / sequential; the target is <= 1.0 plus noise).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from torl_rllib.recipe import recipe_from_dict

SWEEP_FILE = Path(__file__).resolve().parents[2] / "experiments" / "sweeps" / "tiny_cpu.yaml"
LRS = (1.0e-4, 3.0e-4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from torl_rllib.sweep import load_sweep
    from torl_rllib.sweep.driver import run_sweep
    from torl_rllib.train import init_ray, run_training

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.chdir(tmp)  # both write their MLflow runs to ./mlflow.db here
        spec = load_sweep(SWEEP_FILE, [
            f"search_space={{training.lr: {{grid: {list(LRS)}}}}}", "rollout.max_tool_calls=1",
            "tune.max_concurrent_trials=1", "tune.scheduler=fifo", f"tune.stop={{steps: {args.steps}}}",
            f"output_dir={tmp / 'sweep'}",
        ])
        init_ray()
        start = time.perf_counter()
        for lr in LRS:
            data = {**spec.recipe.data, "name": f"bench_lr{lr:g}"}
            data["training"] = {**data["training"], "lr": lr}
            data["run"] = {**data.get("run", {}), "steps": args.steps, "checkpoint_every": spec.tune.checkpoint_every}
            recipe = recipe_from_dict(data, tmp)
            run_training(recipe, tmp / recipe.name)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        outcome = run_sweep(spec)
        sweep = time.perf_counter() - start
    result = {"steps": args.steps, "trials": len(LRS), "sequential_train_s": round(sequential, 1),
              "sweep_s": round(sweep, 1), "sweep_over_sequential": round(sweep / sequential, 3),
              "sweep_status": outcome.status}
    if args.json:
        print(json.dumps(result))
        return
    print(f"2 x `torl-rllib train` back to back, {args.steps} steps each: {sequential:.1f} s")
    print(f"2-trial sweep, max_concurrent_trials=1, {args.steps} steps each: {sweep:.1f} s ({outcome.status})")
    print(f"sweep / sequential: {sweep / sequential:.2f}x (target <= 1.0)")


if __name__ == "__main__":
    main()
