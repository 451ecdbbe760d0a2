"""Overhead of a sweep: ``python benchmarks/sweep_vs_runs.py [--steps N] [--json]``.

The same two configurations of the tiny demo (lr 1e-4 and 3e-4, C = 1, the trial settings of
``experiments/sweeps/tiny_cpu.yaml`` with every CPU for the one trial at a time), run as a user
would run them, each command a fresh process: two ``torl-rllib train`` commands back to back,
then one ``torl-rllib sweep`` with ``max_concurrent_trials=1`` (Tune, trial actors,
parent/child MLflow runs, results, best model). Prints both wall times and their ratio
(sweep / sequential; target <= 1.0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import EXPERIMENTS, elapsed, parser as make_parser, ratio, report  # noqa: E402

LRS = (1.0e-4, 3.0e-4)


def _timed(args: list[str], cwd: Path) -> float:
    def run():
        proc = subprocess.run([sys.executable, "-m", "torl_rllib.cli", *args], cwd=cwd,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"`torl-rllib {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")

    return elapsed(run)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    from torl_rllib.sweep import load_sweep

    cpus = os.cpu_count() or 1
    sweep_file = EXPERIMENTS / "sweeps" / "tiny_cpu.yaml"
    shared = [f"resources.num_cpus_for_main_process={cpus}", "rollout.max_tool_calls=1"]
    spec = load_sweep(sweep_file, shared)  # the trials' recipe, for the train runs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_overrides = [*spec.recipe_overrides, f"run.steps={args.steps}",
                           f"run.checkpoint_every={spec.tune.checkpoint_every}"]
        sequential = sum(
            _timed(["train", str(EXPERIMENTS / "tiny_cpu.yaml"), *train_overrides, f"training.lr={lr}",
                    "--output-dir", str(tmp / f"train_{lr:g}")], tmp)
            for lr in LRS
        )
        sweep = _timed(["sweep", str(sweep_file), *shared, f"search_space={{training.lr: {{grid: {list(LRS)}}}}}",
                        "tune.max_concurrent_trials=1", "tune.scheduler=fifo",
                        f"tune.stop={{steps: {args.steps}}}", f"output_dir={tmp / 'sweep'}"], tmp)
    result = {"steps": args.steps, "trials": len(LRS), "sequential_train_s": round(sequential, 1),
              "sweep_s": round(sweep, 1), "sweep_over_sequential": round(sweep / sequential, 3)}
    report(result, args.json, [
        f"2 x `torl-rllib train` back to back, {args.steps} steps each: {sequential:.1f} s",
        f"`torl-rllib sweep`, 2 trials, max_concurrent_trials=1, {args.steps} steps each: {sweep:.1f} s",
        f"sweep / sequential: {ratio(sweep / sequential)} (target <= 1.0)"])


if __name__ == "__main__":
    main()
