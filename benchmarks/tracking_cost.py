"""Cost of per-step tracking: ``python benchmarks/tracking_cost.py [--json]``.

Logs ``--metrics`` metrics per step for ``--steps`` steps through ``MlflowTracker`` (one
``log_batch`` per step) to a fresh sqlite store, then the same metrics one ``log_metric`` call
each (what Tune's ``MLflowLoggerCallback`` does) for ``--naive-steps`` steps, and prints both
per-step times, their ratio, and the batched time as a share of a reference training step.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import elapsed, parser as make_parser, report  # noqa: E402
from torl_rllib.tracking import MlflowTracker, TrackingConfig  # noqa: E402


def _step_metrics(n: int, rng: random.Random) -> dict[str, float]:
    return {f"bench/metric_{i:03d}": rng.random() for i in range(n)}


def _time_ms(fn) -> float:
    return elapsed(fn) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=100)
    parser.add_argument("--naive-steps", type=int, default=10)
    parser.add_argument(
        "--step-time-s", type=float, default=3.0, help="reference training step time (s)"
    )
    args = parser.parse_args(argv)
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        tracker = MlflowTracker(TrackingConfig(plots=False), run_name="bench", output_dir=Path(tmp))
        setup_ms = _time_ms(lambda: tracker.start({"bench": vars(args)}))
        if tracker.run_id is None:
            raise SystemExit("could not create the MLflow run (see the warning above)")
        batched = [
            _time_ms(lambda: tracker.log_metrics(step, _step_metrics(args.metrics, rng)))
            for step in range(args.steps)
        ]

        client = MlflowClient(tracker.tracking_uri)
        experiment_id = client.get_run(tracker.run_id).info.experiment_id
        run_id = client.create_run(experiment_id, run_name="naive").info.run_id

        def log_one_by_one(step: int) -> None:
            for key, value in _step_metrics(args.metrics, rng).items():
                client.log_metric(run_id, key, value, step=step)

        naive = [_time_ms(lambda: log_one_by_one(step)) for step in range(args.naive_steps)]
        tracker.finish()

    mean_batched, mean_naive = statistics.fmean(batched), statistics.fmean(naive)
    result = {"metrics": args.metrics, "steps": args.steps, "naive_steps": args.naive_steps, "setup_ms": setup_ms,
              "batched_ms_per_step": mean_batched, "batched_median_ms": statistics.median(batched),
              "batched_max_ms": max(batched), "naive_ms_per_step": mean_naive,
              "naive_over_batched": mean_naive / mean_batched,
              "share_of_step": mean_batched / (args.step_time_s * 1000), "step_time_s": args.step_time_s}
    report(result, args.json, [
        f"store setup (create db + run + params): {setup_ms:.0f} ms",
        f"batched, one log_batch per step: {args.metrics} metrics x {args.steps} steps: "
        f"mean {mean_batched:.1f} ms/step (median {statistics.median(batched):.1f}, "
        f"max {max(batched):.1f}), total {sum(batched) / 1000:.2f} s",
        f"naive, one log_metric per metric: {args.metrics} metrics x {args.naive_steps} steps: "
        f"mean {mean_naive:.1f} ms/step, total {sum(naive) / 1000:.2f} s",
        f"naive / batched: {mean_naive / mean_batched:.0f}x",
        f"batched share of a {args.step_time_s:g} s training step: "
        f"{100 * mean_batched / (args.step_time_s * 1000):.2f}% (target < 5%)"])


if __name__ == "__main__":
    main()
