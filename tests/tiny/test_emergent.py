"""The emergent-behaviours curriculum: its documents are real tool-loop transcripts, each
behaviour is possible in them, and the shipped files and base model match the generator."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from torl_rllib.rollout.observation import EMPTY_OUTPUT_MESSAGE
from torl_rllib.tasks.datasets import load_dataset
from tools.tiny.emergent import (
    GIVE_UP, KINDS, SNIPPET_SHARES, TIMES_TABLE, TWO_DIGIT, KindedMultiplication, emergent_split,
    make_emergent_document, sample_emergent_documents, times_table,
)
from tools.tiny.synthetic import split_problems

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "tiny-emergent-base"
DATA = ROOT / "assets" / "data"


def observations(document) -> list[str]:
    return [text for text, trainable in document.segments if not trainable]


def test_plain_answers_are_right_on_the_times_table_and_wrong_on_two_digit_products():
    assert KindedMultiplication(7, 8).problem == "What is seven times eight?"
    assert make_emergent_document(KindedMultiplication(7, 8), use_code=False).response.endswith("\\boxed{56}.")
    assert not make_emergent_document(KindedMultiplication(47, 83), use_code=False).response.endswith("\\boxed{3901}.")


@pytest.mark.parametrize("variant,shown", [
    ("clean", "3901"),
    ("syntax_error", "SyntaxError: '(' was never closed"),
    ("name_error", "NameError: name 'a' is not defined"),
    ("no_print", EMPTY_OUTPUT_MESSAGE),
])
def test_each_snippet_variant_shows_its_real_execution(variant, shown):
    document = make_emergent_document(KindedMultiplication(47, 83), use_code=True, variant=variant)
    assert observations(document)[0].strip().splitlines()[0] == shown
    if variant == "clean":
        assert document.response.endswith("\\boxed{3901}.")
    else:
        assert document.response.endswith(GIVE_UP)


def test_a_retry_fixes_the_code_and_answers_from_its_output():
    document = make_emergent_document(KindedMultiplication(47, 83), use_code=True, variant="name_error", retry=True)
    assert [o.strip().splitlines()[0] for o in observations(document)] == [
        "NameError: name 'a' is not defined", "3901"]
    assert document.response.endswith("\\boxed{3901}.")


@pytest.mark.parametrize("variant", SNIPPET_SHARES)
@pytest.mark.parametrize("retry", [False, True])
def test_code_for_a_times_table_problem_in_words_never_runs(variant, retry):
    """The base model's code copies the words, so on this kind the tool can only lose."""
    document = make_emergent_document(KindedMultiplication(7, 8), use_code=True, variant=variant, retry=retry)
    assert all(o.strip().split(":")[0] in ("NameError", "SyntaxError") for o in observations(document))
    assert len(observations(document)) == 1 + retry and document.response.endswith(GIVE_UP)


def test_document_mix_matches_the_documented_shares():
    two_digit = [KindedMultiplication(p.a, p.b) for p in split_problems(0, 500, 400)[0]]
    docs = sample_emergent_documents(two_digit, 4000, seed=1)
    kinds = Counter(TWO_DIGIT if re.search(r"What is \d+ \* \d+\?", d.prompt) else TIMES_TABLE for d in docs)
    assert 0.35 < kinds[TIMES_TABLE] / len(docs) < 0.45
    assert 0.45 < sum(d.uses_code for d in docs) / len(docs) < 0.55
    code = [d for d in docs if d.uses_code and re.search(r"What is \d+ \* \d+\?", d.prompt)]
    first = Counter(observations(d)[0].strip().splitlines()[0].split(":")[0] for d in code)
    errors = (first["SyntaxError"] + first["NameError"]) / len(code)
    assert abs(errors - SNIPPET_SHARES["syntax_error"] - SNIPPET_SHARES["name_error"]) < 0.04
    assert abs(first["Timeout"] / len(code) - SNIPPET_SHARES["no_print"]) < 0.04
    retried = sum(len(observations(d)) == 2 for d in code)
    assert 0.03 < retried / len(code) < 0.15  # rare: 20 % of the failed or ineffective first calls


def test_the_split_keeps_two_digit_test_rows_out_of_pretraining():
    train, test = emergent_split(0, 96, 200)
    pretraining_pool = {(p.a, p.b) for p in split_problems(0, 6610 - 400, 400)[0]}
    assert {(p.a, p.b) for p in test if p.kind == TWO_DIGIT}.isdisjoint(pretraining_pool)
    assert {p.kind for p in train} == set(KINDS) and len(times_table()) == 64


@pytest.mark.parametrize("name,rows", [("train", 160), ("test", 264)])
def test_shipped_problem_files_match_the_generator_and_carry_their_kind(name, rows):
    dataset = load_dataset(DATA / f"emergent_{name}.jsonl")
    expected = emergent_split(0, 96, 200)[name == "test"]
    assert len(dataset) == rows == len(expected)
    assert [(p.problem, p.answer, p.metadata["kind"]) for p in dataset] == [
        (p.problem, p.answer, p.kind) for p in expected]


def test_shipped_base_model_self_check_shows_each_behaviour_is_possible():
    """The pretraining report of tiny-emergent-base (C = 2, temperature 1): plain answers win
    on the times table and lose on two-digit products, two-digit code fails sometimes, and a
    failed call is sometimes followed by one that runs."""
    report = json.loads((MODEL / "pretrain_report.json").read_text())
    assert report["command"].startswith("python -m tools.tiny.pretrain")
    assert "--curriculum emergent" in report["command"]
    table, two_digit = report["eval"]["by_kind"][TIMES_TABLE], report["eval"]["by_kind"][TWO_DIGIT]
    assert table["accuracy_without_code"] >= 0.6 and two_digit["accuracy_without_code"] <= 0.05
    assert two_digit["accuracy_with_code"] >= 0.4 and table["accuracy_with_code"] <= 0.05
    assert 0.2 <= two_digit["code_ratio"] <= 0.8 and 0.2 <= table["code_ratio"] <= 0.8
    assert 0.2 <= two_digit["failed_call_rate"] <= 0.7
    assert 0.0 < two_digit["recovery_rate"] < 0.5
