"""Evaluation building blocks: benchmarks (a registry of local files), the protocol (greedy or
k samples), per-problem results and their metrics (avg@k, unbiased pass@k, maj@k)."""

from torl_rllib.evaluation.benchmarks import Benchmark, BenchmarkError, load_benchmark, resolve_benchmarks
from torl_rllib.evaluation.metrics import majority_index, outcome_metrics, pass_at_k
from torl_rllib.evaluation.protocol import EvalProtocol
from torl_rllib.rollout.results import ProblemResult, SampleResult

__all__ = ["Benchmark", "BenchmarkError", "EvalProtocol", "ProblemResult", "SampleResult",
           "load_benchmark", "majority_index", "outcome_metrics", "pass_at_k", "resolve_benchmarks"]
