"""The evaluation driver behind ``torl-rllib eval``: a model or checkpoint answers benchmarks on
RLlib EnvRunners (``ToolEnvRunner.evaluate_problems``: the training tool loop, sandbox,
grader and template) → console table, ``eval.json``, ``problems.jsonl``, an MLflow run with a
sample of the responses as traces (tagged with their benchmark).

Nothing finished is lost: each benchmark's rows are written as soon as it completes, and an
interrupted evaluation (Ctrl-C, SIGTERM) still writes ``eval.json`` for the benchmarks done
and marks its MLflow run KILLED.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from torl_rllib.execution.faults import RunCannotContinue
from torl_rllib.evaluation_recipe import EvalSpec
from torl_rllib.evaluation import load_benchmark
from torl_rllib.evaluation.report import AVERAGE, problem_rows, table3
from torl_rllib.rollout import metrics as rm

logger = logging.getLogger("torl_rllib")

RUN_TYPE_TAG = "torl.run_type"
EVALUATED_RUN_TAG = "torl.evaluated_run_id"  # the training run whose checkpoint was evaluated


def _interrupt_on_sigterm() -> None:
    """SIGTERM (Slurm, Kubernetes) stops an evaluation like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def run_eval(spec: EvalSpec, verbose: bool = False) -> dict[str, Any]:
    """Evaluate per ``spec``; returns (and writes to ``DIR/eval.json``) the report."""
    import ray
    from ray.rllib.env.env_runner_group import EnvRunnerGroup
    from tqdm.auto import tqdm

    from torl_rllib.algorithms.grpo.evaluation import benchmark_metrics, benchmark_traces, evaluate_on_env_runners
    from torl_rllib.execution.cluster import check_schedulable, start_sandbox_pools
    from torl_rllib.tracking import MlflowTracker, TrackingConfig
    from torl_rllib.tracking.params import library_versions
    from torl_rllib.utils.cluster import init_ray

    _interrupt_on_sigterm()
    out = spec.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "problems.jsonl").unlink(missing_ok=True)
    benchmarks = spec.benchmarks()
    protocol = spec.protocol
    source = spec.source
    model_path = source.model
    if source.checkpoint is not None:
        from torl_rllib.export import export_policy

        shutil.rmtree(out / "model", ignore_errors=True)
        model_path = str(export_policy(source.checkpoint, out / "model"))
    config = spec.build_config(model_path)
    report: dict[str, Any] = {
        "name": spec.name, "status": "RUNNING", "model": source.model,
        "checkpoint": str(source.checkpoint) if source.checkpoint else None, "checkpoint_step": source.step,
        "training_run_id": source.training_run_id, "protocol": protocol.__dict__,
        "settings": {k: spec.data.get(k) for k in ("rollout", "data", "sandbox", "resources", "model", "seed")},
        "versions": {k.removeprefix("versions."): v for k, v in library_versions().items()}, "benchmarks": {},
    }
    # Runs of one eval recipe on different models must be told apart in the MLflow UI.
    run_name = spec.name if spec.name == source.label else f"{spec.name} {source.label}"
    tracker = MlflowTracker(TrackingConfig(**spec.data.get("tracking", {})), run_name=run_name)
    tags = {RUN_TYPE_TAG: "eval", "torl.model": source.model, "torl.protocol": protocol.name}
    if source.training_run_id:
        tags[EVALUATED_RUN_TAG] = source.training_run_id
    if source.checkpoint:
        tags["torl.checkpoint_path"] = str(source.checkpoint)
    tracker.start({"model": source.model, "protocol": protocol.__dict__, **report["settings"],
                   "benchmarks": [b.describe() for b in benchmarks]}, tags=tags)
    owns_ray = not ray.is_initialized()
    group = None
    start = time.perf_counter()
    try:
        init_ray(verbose)
        check_schedulable(config)
        start_sandbox_pools(config)
        group = EnvRunnerGroup(config=config, local_env_runner=config.num_env_runners == 0)
        chunk = max(1, config.engine_max_batch_size // protocol.k)
        traces = tracker.cfg.traces_per_step if tracker.active and tracker.cfg.traces else None
        for benchmark in benchmarks:
            dataset = load_benchmark(benchmark)
            if dataset.errors:
                logger.warning("%s: skipped %d unreadable rows (first: %s)", benchmark.name,
                               len(dataset.errors), dataset.errors[0])
            began = time.perf_counter()
            with tqdm(total=len(dataset), desc=benchmark.name, unit="problem", dynamic_ncols=True) as bar:
                results, rollouts = evaluate_on_env_runners(group, dataset.problems, protocol, chunk, bar.update,
                                                            traces=traces)
            wall = time.perf_counter() - began
            metrics = benchmark_metrics(results, rollouts, protocol)
            tokens = sum(s.model_tokens for r in results for s in r.samples)
            metrics.update({"problems_per_s": len(results) / wall, "tokens_per_s": tokens / wall, "time_s": wall})
            rows = problem_rows(benchmark.name, results)
            with (out / "problems.jsonl").open("a") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            tracker.log_table_rows(rows, f"eval/problems_{benchmark.name}.json")
            if traces is not None:
                tracker.log_traces(source.step or 0, benchmark_traces(rollouts, traces), benchmark=benchmark.name)
            report["benchmarks"][benchmark.name] = {
                **metrics, "path": str(benchmark.dataset.path), "data_source": benchmark.data_source,
                "skipped_rows": len(dataset.errors),
                "first_skipped": str(dataset.errors[0]) if dataset.errors else None,
            }
            print(f"{benchmark.name}: accuracy {metrics['accuracy']:.3f} | {len(results)} problems x {protocol.k} "
                  f"in {wall:.1f}s ({metrics['problems_per_s']:.2f} problems/s, "
                  f"{metrics['tokens_per_s']:.0f} tokens/s)", flush=True)
            split_by = spec.data.get("data", {}).get("split_metrics_by")
            for value in sorted(k.split("/", 1)[1] for k in metrics if k.startswith(f"{rm.CODE_RATIO}/")):
                print(f"  {split_by}={value}: accuracy {metrics[f'{rm.ACCURACY}/{value}']:.3f}, "
                      f"code ratio {metrics[f'{rm.CODE_RATIO}/{value}']:.3f}", flush=True)
        report["status"] = "FINISHED"
    except KeyboardInterrupt:
        report["status"] = "KILLED"
    except RunCannotContinue as exc:  # the benchmarks done so far are kept
        report["status"], report["error"] = "FAILED", str(exc)
    except BaseException:
        report["status"] = "FAILED"
        raise
    finally:
        report["wall_time_s"] = round(time.perf_counter() - start, 2)
        _finish(report, spec, tracker, out)
        if group is not None:
            group.stop()
        if owns_ray:  # leave nothing running (the sandbox pools die with Ray)
            ray.shutdown()
    return report


def _finish(report: dict, spec: EvalSpec, tracker, out: Path) -> None:
    """Averages, the table, ``eval.json`` and the MLflow record of what was evaluated."""
    done = report["benchmarks"]
    accuracies = {name: m["accuracy"] for name, m in done.items()}
    if accuracies:
        report[AVERAGE] = {"accuracy": sum(accuracies.values()) / len(accuracies)}
    label = f"{spec.source.label} ({spec.protocol.name}, C={spec.data['rollout'].get('max_tool_calls', 1)})"
    report["table"] = table3(label, accuracies) if accuracies else None
    report["mlflow_run_id"] = tracker.run_id
    (out / "eval.json").write_text(json.dumps(report, indent=2, default=str))
    step = report["checkpoint_step"] or 0
    metrics = {f"eval/{name}/{key}": value for name, m in done.items() for key, value in m.items()
               if isinstance(value, (int, float))}
    if AVERAGE in report:
        metrics[f"eval/{AVERAGE}/accuracy"] = report[AVERAGE]["accuracy"]
    tracker.log_metrics(step, metrics)
    tracker.log_table_rows([{"benchmark": name, **{k: v for k, v in m.items() if isinstance(v, (int, float))}}
                            for name, m in done.items()], "eval/table.json")
    tracker.log_artifact(out / "eval.json")
    tracker.finish(report["status"])
