"""The shipped tiny base model and problem files load through the ordinary paths."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from torl_rllib.tasks.datasets import load_dataset
from torl_rllib.tasks.templates import render_prompt
from tools.tiny.synthetic import TEMPLATE, Multiplication, make_document
from tools.tiny.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "tiny-math-base"
DATA = ROOT / "assets" / "data"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(MODEL).eval()


def test_shipped_tokenizer_matches_the_builder(tokenizer):
    built = build_tokenizer()
    text = make_document(Multiplication(47, 83), use_code=True).text
    assert tokenizer.encode(text) == built.encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == built.eos_token_id


def test_shipped_model_is_a_small_qwen2(model, tokenizer):
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.max_position_embeddings >= 1024
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.top_k == 0 and model.generation_config.top_p == 1.0


def test_shipped_model_prefers_the_documented_continuations(model, tokenizer):
    """Teacher-forced: the model copies the tool output into the box."""
    document = make_document(Multiplication(47, 83), use_code=True)
    ids = torch.tensor([tokenizer.encode(document.text)])
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[0, :-1].argmax(-1)
    start = document.text.rindex("\\boxed{") + len("\\boxed{")
    answer = slice(start, start + len("3901"))
    assert tokenizer.decode(predicted[answer.start - 1 : answer.stop - 1].tolist()) == "3901"


def test_pretrain_report_is_in_the_target_window():
    report = json.loads((MODEL / "pretrain_report.json").read_text())
    assert report["command"].startswith("python -m tools.tiny.pretrain")
    result = report["eval"]
    assert result["accuracy"] <= 0.45 and result["code_ratio"] <= 0.5
    assert result["accuracy_with_code"] >= 0.9


@pytest.mark.parametrize("name,size", [("train", 4000), ("test", 400)])
def test_problem_files_load_through_the_tasks_loader(name, size):
    path = DATA / f"tiny_arithmetic_{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == size and all(set(row) == {"id", "problem", "answer"} for row in rows)
    for row in rows:
        a, b = row["problem"].removeprefix("What is ").removesuffix("?").split(" * ")
        assert row["answer"] == str(int(a) * int(b)) and row["id"] == f"mul-{a}-{b}"
    dataset = load_dataset(path)
    assert len(dataset) == size and dataset.num_skipped == 0
    assert render_prompt(TEMPLATE, dataset[0].problem).endswith(f"{rows[0]['problem']}\nAssistant:")


def test_train_and_test_problems_are_disjoint():
    train, test = (
        {json.loads(line)["id"] for line in (DATA / f"tiny_arithmetic_{name}.jsonl").open()}
        for name in ("train", "test")
    )
    assert not train & test
