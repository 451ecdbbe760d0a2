"""Evaluation on EnvRunners: problems sharded over an ``EnvRunnerGroup`` (results back in
order), per-benchmark metrics, and GRPO's in-training evaluation function.

``torl-rllib eval`` and RLlib's ``.evaluation(evaluation_interval=N)`` both run here, on
``ToolEnvRunner.evaluate_problems``: the training tool loop, sandbox, observation formatting,
grader and prompt template, so held-out numbers and training numbers mean the same thing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Callable, Sequence

from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from torl_rllib.rollout import metrics as rm
from torl_rllib.execution.env_runner_calls import call_in_shards
from torl_rllib.evaluation import EvalProtocol, ProblemResult, outcome_metrics
from torl_rllib.rollout.trace_records import select_traced
from torl_rllib.tracking.config import traces_per_step

__all__ = ["evaluate_on_env_runners", "benchmark_metrics", "benchmark_traces", "grpo_evaluation_function"]

logger = logging.getLogger(__name__)

# The tool-use analysis of the rollouts (same definitions as the per-step training metrics).
TOOL_USE_METRICS = (
    rm.CODE_RATIO, rm.EXECUTABLE_CODE_RATE, rm.INEFFECTIVE_CODE_RATE, rm.TOOL_CALLS_PER_RESPONSE, rm.ERROR_RECOVERY_RATE,
    rm.TOOL_GROUNDED_ANSWER_RATE, rm.ACCURACY_WITH_CODE, rm.ACCURACY_WITHOUT_CODE,
    rm.MODEL_TOKENS, rm.TOTAL_TOKENS, rm.TRUNCATION_RATE,
)

Progress = Callable[[int], None]


def evaluate_on_env_runners(
    group, problems: Sequence, protocol: EvalProtocol, chunk_size: int, on_progress: Progress | None = None,
    restore: Callable[[], list] | None = None, traces: int | None = None,
) -> tuple[list[ProblemResult], list[dict]]:
    """Evaluate ``problems`` on the group's healthy remote EnvRunners (or its local one when
    it has none), ``chunk_size`` problems per call, each runner taking the next chunk as soon as
    it is free (a failed runner's chunk is redone elsewhere). Returns the results in the order
    of ``problems`` and each call's statistics. With ``traces`` set, each call's ``["traces"]``
    holds the trace records of its failed responses and of up to ``traces`` others."""
    size = max(1, chunk_size)
    calls = [{"problems": list(problems[start:start + size]), "protocol": protocol, "traces": traces}
             for start in range(0, len(problems), size)]
    outcomes, _ = call_in_shards(
        group, "evaluate_problems", calls, restore=restore,
        on_result=(lambda index, _: on_progress(len(calls[index]["problems"]))) if on_progress else None,
    )
    return [r for results, _ in outcomes for r in results], [rollout for _, rollout in outcomes]


def benchmark_metrics(results: Sequence[ProblemResult], rollouts: list[dict], protocol: EvalProtocol) -> dict:
    """Accuracy (avg@k), pass@k, maj@k and the tool-use analysis of one benchmark, and every
    response metric per value of the split column (``accuracy/<value>``, ...) when one is set."""
    tool_use = rm.summarize_rollouts(rollouts, learner_version=0)
    metrics = outcome_metrics(results, protocol)
    metrics.update({name: tool_use[name] for name in TOOL_USE_METRICS})
    total = Counter()
    for r in rollouts:
        total.update(r["stats"])  # update, not +: sums such as reward_sum may be negative
    metrics.update(rm.split_metrics(total))
    # A rate whose condition never held (e.g. no failed execution to recover from) is left out.
    return {name: value for name, value in metrics.items() if not math.isnan(value)}


def benchmark_traces(rollouts: list[dict], others: int) -> list:
    """A benchmark's trace records: those of every failed response, and ``others`` more."""
    return select_traced((r for rollout in rollouts for r in rollout.get("traces", ())), others)


def grpo_evaluation_function(algorithm, eval_env_runner_group) -> tuple[dict, int, int]:
    """RLlib ``custom_evaluation_function``: the current policy on every configured held-out
    benchmark, under ``config.evaluation_protocol`` (greedy by default). Returns
    ``({benchmark: metrics}, env_steps, agent_steps)``; GRPO reports them as
    ``eval/<benchmark>/<metric>``."""
    config = algorithm.config
    group = eval_env_runner_group or algorithm.env_runner_group
    if group is algorithm.env_runner_group:
        algorithm.finish_rollout_ahead()  # the training runners are free only after it
    # RLlib's own pre-evaluation sync is fire-and-forget and carries no weights version.
    algorithm.sync_weights_to(group)
    protocol = EvalProtocol(**config.evaluation_protocol)
    chunk = max(1, config.engine_max_batch_size // protocol.k)
    out, samples = {}, 0
    traces = traces_per_step(config.tracking_config)
    for benchmark, problems in algorithm.eval_benchmarks:
        start = time.perf_counter()
        results, rollouts = evaluate_on_env_runners(
            group, problems, protocol, chunk, restore=lambda: algorithm.wait_for_env_runners(group), traces=traces)
        if traces is not None:
            algorithm.last_eval_traces.append((benchmark.name, benchmark_traces(rollouts, traces)))
        metrics = benchmark_metrics(results, rollouts, protocol)
        metrics["time_s"] = time.perf_counter() - start
        out[benchmark.name] = metrics
        samples += int(metrics["samples"])
        logger.info("step %d: %s accuracy %.3f", algorithm.iteration + 1, benchmark.name, metrics["accuracy"])
    # RLlib's evaluate() reports what its evaluation EnvRunners' metrics loggers aggregate into
    # EVALUATION_RESULTS: ours, as result["evaluation"]["env_runners"][benchmark][metric].
    reported = MetricsLogger()
    reported.log_dict(out, key=ENV_RUNNER_RESULTS, window=1)
    algorithm.metrics.aggregate([reported.reduce()], key=EVALUATION_RESULTS)
    return out, samples, samples
