"""Fixtures shared across test packages: a tiny random Qwen2 policy, a small arithmetic
dataset, and a real Ray cluster shared by the whole session."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_BASE_MODEL = REPO / "assets" / "tiny-math-base"
TINY_TRAIN_DATA = REPO / "assets" / "data" / "tiny_arithmetic_train.jsonl"
RECIPE = REPO / "experiments" / "tiny_cpu.yaml"
# The demo recipe cut to seconds per step: tracking with a trajectory table every step, a
# checkpoint after every step, a held-out evaluation (8 problems) every second step.
SHORT = ["training.prompts_per_step=2", "training.group_size=4",
         "tracking.trajectories_every=1", "run.checkpoint_every=1",
         "evaluation.interval=2", "evaluation.benchmarks=[{tiny_test: {max_problems: 8}}]"]


def run_cli(*args, cwd: Path | None = None) -> tuple[int, str, str]:
    """``torl-rllib ARGS`` run in this process from ``cwd``, through ``torl_rllib.cli.main`` (what
    the console script calls): for commands that refuse before any run starts, where a fresh
    Python would cost ~5 s of CPU each. Returns (exit code, stdout, stderr); an exception that
    escapes ``main`` (a would-be traceback) fails the test."""
    from torl_rllib.cli import main

    out, err, previous = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd or previous)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(cwd, process) of one real 3-step ``torl-rllib train RECIPE SHORT`` through the CLI in a
    subprocess, its MLflow store ``cwd/mlflow.db`` and its run directory ``cwd/run``. Shared by
    the CLI tests and the damaged-checkpoint tests (a 3-step run costs ~40 s): they read it or
    copy it. One writes to it: ``test_resume_continues_from_the_checkpoint`` continues its MLflow
    run (which is the point), after the other CLI tests have read that run."""
    cwd = tmp_path_factory.mktemp("trained_run")
    proc = subprocess.run([sys.executable, "-m", "torl_rllib.cli", "train", str(RECIPE), *SHORT, "run.steps=3",
                           "--output-dir", str(cwd / "run")], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd, proc


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """A randomly initialized Qwen2-architecture model with the project's char tokenizer,
    saved with ``save_pretrained`` so the real loading path runs."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tools.tiny.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("random-qwen2")
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def arithmetic_jsonl(tmp_path_factory) -> Path:
    """20 one-line addition problems in the JSONL shape the task loader reads."""
    path = tmp_path_factory.mktemp("data") / "add.jsonl"
    path.write_text("".join(
        json.dumps({"id": i, "problem": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
        for i in range(20)
    ))
    return path


@pytest.fixture(scope="session")
def ray_session():
    """Shuts down the shared Ray cluster at the end of the session (as Ray's own
    ``ray_start_regular_shared``: starting Ray once, not per module, saves seconds a module)."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(ray_session):
    """A real local Ray cluster with this machine's 2 CPUs, shared by the modules that ask for
    one. A module that needs a cluster of its own (several nodes, CPUs held by a blocker) shuts
    this one down first; the next module that asks starts it again."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if ray.is_initialized():  # the next module starts from an empty cluster (e.g. no sandbox pool)
        for actor in ray.util.list_named_actors(all_namespaces=True):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
