"""Fixtures shared across test packages: a tiny random Qwen2 policy, a small arithmetic
dataset, and a real Ray cluster shared by the whole session."""

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
