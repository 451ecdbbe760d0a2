"""Chaos benchmark: train the tiny model while killing a random component every K seconds, and
compare with an undisturbed run of the same recipe and seed.

    python benchmarks/chaos.py [--steps 40] [--kill-every 20] [--seed 0] [--json]

Both runs are ``torl-rllib train`` in fresh processes. During the chaos run, every ``--kill-every``
seconds of training (the clock starts when a trainer session has completed a step, so start-up
is not what gets killed) one of these gets SIGKILL, chosen at random among those running: an EnvRunner
(``ray::ToolEnvRunner``), the SandboxPool actor, one jail (its PID 1), or the trainer itself (its
whole process group), after which the run is restarted with ``--resume auto``. Printed: steps
completed, kills by component, EnvRunner restarts, re-sampled shards, the infrastructure retries
(a generation, tool call or grading retried for the same trajectory), failed trajectories, the
wall-time overhead, whether the sampled prompt sequence and the final weights equal the
undisturbed run's, the largest weight difference, and the two accuracy curves. Runner failures are
re-sampled with the same seeds, a tool call whose jail or pool was killed runs the same snippet
again, and a resumed trainer continues exactly, so the data of every step is the undisturbed one.
The weights still differ in their last bits: a rollout's log-probabilities depend, at float
rounding, on which sequences share an engine batch, which depends on timing (two undisturbed runs,
one beside a busy CPU, differ the same way).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import EXPERIMENTS, elapsed, parser as make_parser, ratio  # noqa: E402

RECIPE = EXPERIMENTS / "tiny_cpu.yaml"
# What is killed, and how each is found (``pgrep -f`` patterns); the trainer is our child.
COMPONENTS = {
    "env_runner": "ray::ToolEnvRunner",
    "sandbox_pool": "ray::SandboxPool",
    "jail": "torl-sandbox/runtime/bin/python -I -c",
}


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in out if int(pid) != os.getpid()]


def _train(recipe: Path, out: Path, steps: int, extra: list[str], resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "torl_rllib.cli", "train", str(recipe), f"run.steps={steps}",
            "run.checkpoint_every=1", "evaluation.interval=0", "tracking.enabled=false", *extra,
            "--output-dir", str(out)] + (["--resume", "auto"] if resume else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _lines(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _summary(out: Path) -> dict:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def undisturbed(recipe: Path, out: Path, steps: int, extra: list[str]) -> float:
    def run():
        proc = _train(recipe, out, steps, extra, resume=False)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the undisturbed run failed:\n{err[-3000:]}")

    return elapsed(run)


def chaos(recipe: Path, out: Path, steps: int, extra: list[str], kill_every: float, seed: int) -> dict:
    rng = random.Random(seed)
    kills, restarts, sessions, stops = Counter(), 0, 0, []
    start = time.perf_counter()
    while True:
        proc = _train(recipe, out, steps, extra, resume=sessions > 0)
        sessions += 1
        done_before, next_kill = len(_lines(out)), None
        while proc.poll() is None:
            time.sleep(0.2)
            if next_kill is None:  # the clock starts once this session has trained a step
                if len(_lines(out)) > done_before:
                    next_kill = time.monotonic() + kill_every
                continue
            if time.monotonic() < next_kill:
                continue
            next_kill = time.monotonic() + kill_every
            running = {name: pids for name, pattern in COMPONENTS.items() if (pids := _pids(pattern))}
            choice = rng.choice(sorted([*running, "trainer"]))
            if choice == "trainer":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(rng.choice(running[choice]), signal.SIGKILL)
            kills[choice] += 1
        _, err = proc.communicate()
        lines = _lines(out)
        restarts += int(lines[-1].get("env_runner_restarts", 0)) if lines else 0
        if proc.returncode == 0 and _summary(out).get("status") == "FINISHED":
            break
        if proc.returncode not in (0, -signal.SIGKILL):  # a clean stop (exit 1): resume it too
            cause = next((line for line in reversed(err.splitlines()) if line.startswith("error:")), "no error line")
            stops.append(cause)
            print(f"chaos: the trainer stopped with exit code {proc.returncode} ({cause}); resuming", file=sys.stderr)
    return {"wall_s": time.perf_counter() - start, "kills": dict(kills), "env_runner_restarts": restarts,
            "trainer_sessions": sessions, "clean_stops": stops}


def _weights_diff(a: Path, b: Path) -> float:
    """The largest absolute difference between two exported policies' weights (inf if their
    tensors differ in name)."""
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if left.keys() != right.keys():
        return float("inf")
    return max(float((left[k].double() - right[k].double()).abs().max()) for k in left)


def _curve(lines: list[dict], steps: list[int]) -> list[float | None]:
    by_step = {line["step"]: line.get("accuracy") for line in lines}
    return [round(by_step[s], 3) if by_step.get(s) is not None else None for s in steps]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, prog="python benchmarks/chaos.py")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between two kills")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill choices")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/chaos"))
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both runs")
    args = parser.parse_args(argv)
    base, disturbed = args.output_dir / "undisturbed", args.output_dir / "chaos"
    for folder in (base, disturbed):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    base_s = undisturbed(args.recipe, base, args.steps, args.overrides)
    report = chaos(args.recipe, disturbed, args.steps, args.overrides, args.kill_every, args.seed)
    ref, got = _lines(base), _lines(disturbed)
    failed = sum(line.get("failed_trajectories", 0) for line in got)
    retries = Counter()
    for line in got:
        retries.update({k.removeprefix("retries/"): int(v) for k, v in line.items() if k.startswith("retries/")})
    marks = sorted({1, *range(10, args.steps + 1, 10), args.steps})
    report.update({
        "steps": args.steps, "steps_completed": len(got), "kill_every_s": args.kill_every,
        "steps_in_order": [line["step"] for line in got] == list(range(1, args.steps + 1)),
        "resampled_shards": int(sum(line.get("resampled_shards", 0) for line in got)),
        "trajectories_failed": int(round(failed)), "retries": dict(retries),
        "dropped_groups": int(sum(line.get("dropped_groups", 0) for line in got)), "undisturbed_wall_s": base_s,
        "overhead": report["wall_s"] / base_s,
        "prompts_equal": [l["problems_digest"] for l in got] == [l["problems_digest"] for l in ref],  # noqa: E741
        "weights_max_abs_diff": (diff := _weights_diff(base / "final_model", disturbed / "final_model")),
        "weights_equal": diff == 0.0,
        "accuracy_steps": marks, "accuracy_undisturbed": _curve(ref, marks), "accuracy_chaos": _curve(got, marks),
    })
    if args.json:
        print(json.dumps(report))
        return 0
    kills = ", ".join(f"{name} {count}" for name, count in sorted(report["kills"].items())) or "none"
    print(f"chaos: {report['steps_completed']} of {args.steps} steps completed (in order: "
          f"{report['steps_in_order']}), a kill every {args.kill_every:g} s, {report['trainer_sessions']} trainer session(s)")
    print(f"kills: {kills}")
    for cause in report["clean_stops"]:
        print(f"a trainer session stopped cleanly (exit 1) and was resumed: {cause}")
    retried = ", ".join(f"{kind} {count}" for kind, count in sorted(report["retries"].items())) or "none"
    print(f"EnvRunner restarts {report['env_runner_restarts']} | re-sampled shards {report['resampled_shards']} | "
          f"retries: {retried} | trajectories failed {report['trajectories_failed']} "
          f"(groups dropped {report['dropped_groups']})")
    print(f"wall time: undisturbed {base_s:.0f} s, chaos {report['wall_s']:.0f} s: {ratio(report['overhead'])}")
    print(f"prompt sequence equal: {report['prompts_equal']} | final weights equal: {report['weights_equal']} "
          f"(largest difference {report['weights_max_abs_diff']:.1e})")
    print(f"accuracy at steps {marks}: undisturbed {report['accuracy_undisturbed']}, chaos {report['accuracy_chaos']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
