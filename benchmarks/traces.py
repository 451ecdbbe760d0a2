"""Cost of trajectory traces: ``python benchmarks/traces.py [--steps N] [--rounds R] [--json]``.

Trains the tiny CPU demo (``experiments/tiny_cpu.yaml``: 8 problems x 8 samples per step, a
remote EnvRunner, the real sandbox) with MLflow tracking to a fresh sqlite store, once with
``tracking.traces: false`` (the baseline) and once with the default traces (every failed
trajectory and ``traces_per_step`` others), ``--rounds`` times in alternating order, same seed.
Prints the median time per step of each (the first step of every run, warm-up, left out), the
overhead ratio, and the time the background trace writer was busy per step: the work that
competes with training for the CPU, a steadier bound than the difference of two noisy medians.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import EXPERIMENTS, elapsed, median, parser as make_parser, report as print_report  # noqa: E402

RECIPE = EXPERIMENTS / "tiny_cpu.yaml"
TARGET = 0.02  # traces may add at most 2 % to a step


def run(steps: int, traces: bool, store: Path) -> dict:
    """``steps`` training steps; per-step wall times and the trace writer's busy time."""
    from mlflow import MlflowClient

    from torl_rllib.recipe import load_recipe
    from torl_rllib.tracking.callback import tracking_callback
    from torl_rllib.tracking.tracker import MlflowTracker

    busy = []
    send = MlflowTracker._send_traces

    def timed_send(self):
        start = time.perf_counter()
        try:
            return send(self)
        finally:
            busy.append(time.perf_counter() - start)

    overrides = [f"run.steps={steps}", "evaluation.interval=0", "tracking.plots=false",
                 "tracking.log_model=false", f"tracking.traces={str(traces).lower()}",
                 f"tracking.tracking_uri=sqlite:///{store}"]
    algo = load_recipe(RECIPE, overrides).build_config().build_algo()
    tracker = tracking_callback(algo).tracker
    tracker._send_traces = timed_send.__get__(tracker)  # the sender thread's work, timed
    try:
        times = [elapsed(algo.train) for _ in range(steps)]
    finally:
        algo.stop()
    found = MlflowClient(f"sqlite:///{store}").search_traces(
        locations=[tracker.experiment_id], run_id=tracker.run_id, include_spans=False) if tracker.run_id else []
    return {"step_s": times[1:], "writer_busy_s": sum(busy), "traces": len(found)}


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs, in alternating order")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step of a run is warm-up)")
    from torl_rllib.train import init_ray

    init_ray()
    measured = {False: [], True: []}
    writer_s, traces = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                result = run(args.steps, on, Path(tmp) / f"mlflow_{i}_{int(on)}.db")
                measured[on] += result["step_s"]
                if on:
                    writer_s += result["writer_busy_s"]
                    traces += result["traces"]
    off, on = median(measured[False]), median(measured[True])
    steps_on = args.rounds * args.steps
    report = {
        "steps_per_run": args.steps, "rounds": args.rounds,
        "step_s_traces_off": off, "step_s_traces_on": on, "overhead": on / off - 1,
        "writer_busy_s_per_step": writer_s / steps_on, "writer_share_of_step": writer_s / steps_on / off,
        "traces_per_step": traces / steps_on, "target": TARGET,
    }
    return print_report(report, args.json, lambda: [
        f"tiny demo, {args.rounds} x {args.steps} steps per setting (first step of each run left out)",
        f"  traces off: {off:.3f} s per step (median of {len(measured[False])})",
        f"  traces on:  {on:.3f} s per step (median of {len(measured[True])}), "
        f"{report['traces_per_step']:.1f} traces per step",
        f"  overhead: {report['overhead']:+.1%} (target <= {TARGET:.0%}); background writer busy "
        f"{report['writer_busy_s_per_step'] * 1000:.0f} ms per step = {report['writer_share_of_step']:.2%} "
        "of a step"])


if __name__ == "__main__":
    main()
