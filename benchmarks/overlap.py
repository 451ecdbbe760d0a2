"""Step time on-policy vs one step off-policy: ``python benchmarks/overlap.py [--json]``.

Runs a recipe (default: the no-tool tiny recipe) with ``training.max_staleness=0`` and ``=1``,
alternating, each as ``torl-rllib train`` in a fresh process, and reports each mode's median step
time over steps 2..N (step 1 pays the start-up), the rollout and update times, and the ratio.
With ``--json`` it prints one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import EXPERIMENTS, median, parser as make_parser, ratio, report  # noqa: E402

DEFAULT_RECIPE = EXPERIMENTS / "tiny_cpu_no_tool.yaml"
MODES = {"on_policy": 0, "one_step_off_policy": 1}


def run(recipe: str, staleness: int, steps: int, overrides: list[str], workdir: Path) -> list[dict]:
    out = workdir / f"staleness{staleness}"
    cmd = [sys.executable, "-m", "torl_rllib.cli", "train", recipe, f"training.max_staleness={staleness}",
           f"run.steps={steps}", f"run.output_dir={out}", "run.checkpoint_every=0", "run.export_final=false",
           "tracking.enabled=false", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=2, help="alternating runs of each mode")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, section.key=value")
    args = parser.parse_args(argv)
    steps: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="overlap-bench-") as tmp:
        for pair in range(args.pairs):
            order = list(MODES) if pair % 2 == 0 else list(reversed(MODES))
            for mode in order:
                metrics = run(args.recipe, MODES[mode], args.steps, args.overrides, Path(tmp) / f"{mode}{pair}")
                steps[mode] += metrics[1:]  # steps 2..N
                if not args.json:
                    print(f"  {mode:20s} run {pair + 1}: median step "
                          f"{median(m['time/step_s'] for m in metrics[1:]):.2f} s", flush=True)

    def of(mode, key):
        return median(m.get(key, 0.0) for m in steps[mode])

    result = {mode: {"step_s": of(mode, "time/step_s"), "rollout_wait_s": of(mode, "time/rollout_s"),
                     "learner_update_s": of(mode, "time/learner_update_s"),
                     "max_lag": max(m.get("weights_version_lag", 0) for m in steps[mode])} for mode in MODES}
    result["off_policy_vs_on_policy"] = result["one_step_off_policy"]["step_s"] / result["on_policy"]["step_s"]
    result["steps_per_run"], result["pairs"] = args.steps, args.pairs
    return report(result, args.json, lambda: [
        *(f"{mode:20s} median step {r['step_s']:.2f} s (waiting for the rollout {r['rollout_wait_s']:.2f} s, "
          f"update {r['learner_update_s']:.2f} s, lag <= {r['max_lag']:.0f})" for mode, r in
          ((mode, result[mode]) for mode in MODES)),
        f"one step off-policy / on-policy: {ratio(result['off_policy_vs_on_policy'])}"])


if __name__ == "__main__":
    main()
