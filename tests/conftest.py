"""Fixtures shared across test packages: a tiny random Qwen2 policy, a small arithmetic
dataset, and a real (module-scoped) Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_BASE_MODEL = REPO / "assets" / "tiny-math-base"
TINY_TRAIN_DATA = REPO / "assets" / "data" / "tiny_arithmetic_train.jsonl"


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


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster with this machine's 2 CPUs, shut down after the module."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
