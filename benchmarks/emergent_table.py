"""The emergent-behaviours table, read back from what MLflow logged.

    python benchmarks/emergent_table.py [--run-id ID | --run-name emergent_cpu] [--sweep NAME]
                                        [--plots DIR] [--json]

For one training run (the newest run named ``--run-name`` unless ``--run-id`` is given): each
behaviour of ToRL's analysis, its metric, its value at the start (mean of the first ``--window``
steps) and at the end (mean of the last ``--window`` steps). With ``--sweep`` (the sweep's run
name): the C trade-off, one row per trial with its C, seed, accuracy over its last steps and
seconds per step. With ``--plots``: one PNG per behaviour over training (and, with ``--sweep``,
one per behaviour with every trial's curve) into DIR. Numbers come from the tracking store, so
they are the runs' own.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import parser as make_parser, report  # noqa: E402

DEFAULT_URI = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
# (behaviour, metric, which way ToRL's analysis says it moves)
BEHAVIOURS = (
    ("code use where computation is needed", "code_ratio/two_digit", "up"),
    ("plain reasoning where it suffices", "code_ratio/times_table", "down"),
    ("accuracy, computation-heavy kind", "accuracy/two_digit", "up"),
    ("accuracy, easy kind", "accuracy/times_table", "up"),
    ("executable code", "executable_code_rate/two_digit", "up"),
    ("ineffective code (self-regulation)", "ineffective_code_rate/two_digit", "down"),
    ("error recovery", "error_recovery_rate/two_digit", "up"),
    ("answers grounded in tool output", "tool_grounded_answer_rate/two_digit", "up"),
)


def _run(client: MlflowClient, experiment: str, run_id: str | None, run_name: str) -> object:
    if run_id:
        return client.get_run(run_id)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"no MLflow experiment {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        sys.exit(f"no run named {run_name!r} in experiment {experiment!r}; train it first")
    return runs[0]


def _series(client: MlflowClient, run_id: str, metric: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)]


def behaviour_rows(client: MlflowClient, run, window: int) -> list[dict]:
    rows = []
    for behaviour, metric, expected in BEHAVIOURS:
        values = _series(client, run.info.run_id, metric)
        start = statistics.fmean(values[:window]) if values else None
        end = statistics.fmean(values[-window:]) if values else None
        moved = None if start is None else ("up" if end > start else "down" if end < start else "flat")
        rows.append({"behaviour": behaviour, "metric": metric, "start": start, "end": end, "steps": len(values),
                     "expected": expected, "emerged": moved == expected})
    return rows


def sweep_rows(client: MlflowClient, experiment: str, sweep_name: str, window: int) -> list[dict]:
    parent = _run(client, experiment, None, sweep_name)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    rows = []
    for child in children:
        accuracy = _series(client, child.info.run_id, "accuracy")
        step_s = _series(client, child.info.run_id, "time/step_s")
        rows.append({
            "C": int(child.data.params.get("rollout.max_tool_calls", -1)),
            "seed": int(child.data.params.get("seed", -1)),
            f"accuracy (last {window})": statistics.fmean(accuracy[-window:]) if accuracy else None,
            "accuracy/two_digit": _last(client, child.info.run_id, "accuracy/two_digit", window),
            "error_recovery_rate/two_digit": _last(client, child.info.run_id, "error_recovery_rate/two_digit", window),
            "s/step": statistics.fmean(step_s) if step_s else None,
            "steps": len(accuracy), "run_id": child.info.run_id,
        })
    return sorted(rows, key=lambda r: (r["C"], r["seed"]))


def _last(client, run_id: str, metric: str, window: int) -> float | None:
    values = _series(client, run_id, metric)
    return statistics.fmean(values[-window:]) if values else None


def write_plots(client: MlflowClient, run, out: Path, sweep: list[dict] | None) -> list[Path]:
    """PNGs of each behaviour's metric against step: the run's, and every sweep trial's."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for _, metric, _ in BEHAVIOURS:
        lines = [("run", run.info.run_id)] + [(f"C={r['C']} seed={r['seed']}", r["run_id"]) for r in sweep or []]
        fig = Figure(figsize=(5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        for label, run_id in lines:
            history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
            if history:
                ax.plot([m.step for m in history], [m.value for m in history], label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="x-small")
        path = out / f"{metric.replace('/', '_')}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(nothing logged)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--tracking-uri", default=DEFAULT_URI)
    parser.add_argument("--experiment", default="torl-rllib")
    parser.add_argument("--run-id")
    parser.add_argument("--run-name", default="emergent_cpu")
    parser.add_argument("--sweep", help="also the C trade-off of this sweep's run name (e.g. emergent_cpu_sweep)")
    parser.add_argument("--window", type=int, default=5, help="steps averaged at the start and at the end")
    parser.add_argument("--plots", type=Path, help="write one PNG per behaviour into this folder")
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    run = _run(client, args.experiment, args.run_id, args.run_name)
    out = {"run_id": run.info.run_id, "behaviours": behaviour_rows(client, run, args.window)}
    if args.sweep:
        out["sweep"] = sweep_rows(client, args.experiment, args.sweep, args.window)
    if args.plots:
        out["plots"] = [str(p) for p in write_plots(client, run, args.plots, out.get("sweep"))]
    report(out, args.json, lambda: [
        f"run {out['run_id']} (start: mean of the first {args.window} steps, end: of the last {args.window})",
        markdown(out["behaviours"]),
        *([f"\nsweep {args.sweep}: the C trade-off", markdown(out["sweep"])] if args.sweep else [])], indent=2)


if __name__ == "__main__":
    main()
