"""The data a run loads before its first step: training prompts that do not fit the prompt
budget (skipped, or refused with ``on_error: raise``), the column the metrics are split by, and
the in-training evaluation's benchmarks."""

from __future__ import annotations

import logging

from torl_rllib.evaluation import Benchmark, load_benchmark, resolve_benchmarks
from torl_rllib.utils.suggest import did_you_mean

logger = logging.getLogger(__name__)


def overlong_prompts_of(config, problems: list) -> tuple[set[str], str | None]:
    """The ids of the problems whose prompt does not fit (``max_prompt_tokens``, and the engine's
    context, room for one response token kept), and one line naming them (None if all fit)."""
    from transformers import AutoTokenizer

    from torl_rllib.rollout.env_runner import engine_context_length, prompt_limit
    from torl_rllib.tasks.prompt_lengths import describe_overlong, overlong_prompts

    context = engine_context_length(config)
    limit = prompt_limit(config, context)
    tokenizer = AutoTokenizer.from_pretrained(config.model_config["path"])
    found = overlong_prompts(problems, tokenizer, config.prompt_template, limit)
    if not found:
        return set(), None
    why = f"max_prompt_tokens {config.max_prompt_tokens}, engine context {context}"
    return {row for row, _ in found}, describe_overlong(found, limit, why)


def refuses_bad_rows(config) -> bool:
    """Whether the training data says ``on_error: raise`` (refuse) rather than skip bad rows."""
    return isinstance(config.train_data, dict) and config.train_data.get("on_error") == "raise"


def skip_overlong_prompts(config, problems: list) -> list:
    """The problems whose prompt fits; the others are named in one warning and left out, or
    refused (``ValueError``) when the training data says ``on_error: raise``."""
    too_long, message = overlong_prompts_of(config, problems)
    if message is None:
        return problems
    if refuses_bad_rows(config):
        raise ValueError(f"data.train: {message}")
    logger.warning("%s: skipped (counted in dataset_rows_skipped)", message)
    return [p for p in problems if str(p.id) not in too_long]


def split_column_problem(config, problems: list) -> str | None:
    """Why ``data.split_metrics_by`` names no column of the training rows (None when some row
    has it, or when no split is asked for): a typo would otherwise split nothing, silently."""
    column = config.split_metrics_by
    if not column or not problems or any(column in p.metadata for p in problems):
        return None
    columns = sorted({key for p in problems for key in p.metadata})
    hint = did_you_mean(column, columns) if columns else " (the rows have no column besides problem and answer)"
    return f"data.split_metrics_by: no training row has a column {column!r}{hint}"


def load_eval_benchmarks(config) -> list[tuple[Benchmark, list]]:
    """The in-training evaluation's benchmarks and their problems (none without an interval)."""
    if not config.evaluation_interval:
        return []
    benchmarks = resolve_benchmarks(list(config.evaluation_benchmarks), config.benchmarks_dir)
    return [(b, load_benchmark(b).problems) for b in benchmarks]
