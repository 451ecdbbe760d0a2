import json

from torl_rllib.rollout.observation import format_observation
from torl_rllib.tasks.templates import render_prompt
from torl_rllib.rollout.tool_loop import last_python_block
from torl_rllib.tasks import extract_boxed
from tools.tiny.self_check import execute_subprocess
from tools.tiny.synthetic import (
    STOP_STRING,
    TEMPLATE,
    Multiplication,
    all_problems,
    make_document,
    sample_documents,
    shared_prefix,
    split_problems,
    write_jsonl,
)


def test_split_is_disjoint_seeded_and_test_set_independent_of_train_size():
    train, test = split_problems(0, 4000, 400)
    assert len(train) == 4000 and len(test) == 400 and not set(train) & set(test)
    assert split_problems(0, 4000, 400) == (train, test)
    assert split_problems(0, 100, 400)[1] == test
    problems = all_problems()
    assert len(set(problems)) == len(problems) == 6610
    assert all(len(p.answer) == 4 for p in problems)


def test_code_document_holds_the_real_output_in_observation_format():
    problem = Multiplication(47, 83)
    doc = make_document(problem, use_code=True)
    assert doc.prompt == render_prompt(TEMPLATE, "What is 47 * 83?")
    (before, trainable_before), (observation, trainable_obs), (after, trainable_after) = doc.segments
    assert (trainable_before, trainable_obs, trainable_after) == (True, False, True)
    assert before.endswith(STOP_STRING) and before.count(STOP_STRING) == 1
    code = last_python_block(before)
    assert code.strip() == "print(47 * 83)"
    # The observation is what the tool loop would append after a real execution.
    assert observation == format_observation(execute_subprocess(code)) == "\n3901\n```\n"
    assert extract_boxed(doc.response) == "3901" == problem.answer


def test_guess_document_has_no_code_and_is_almost_always_wrong():
    doc = make_document(Multiplication(47, 83), use_code=False)
    assert "```" not in doc.response and len(doc.segments) == 1
    assert extract_boxed(doc.response) == "4000"
    problems = all_problems()
    right = [p for p in problems if extract_boxed(make_document(p, use_code=False).response) == p.answer]
    assert len(right) / len(problems) < 0.02  # exact tens and a few coincidences


def test_sampled_documents_are_seeded_and_hold_the_exact_code_share():
    docs = sample_documents(all_problems(), 400, code_fraction=0.375, seed=3)
    assert docs == sample_documents(all_problems(), 400, code_fraction=0.375, seed=3)
    assert sum(d.uses_code for d in docs) == 150
    assert 0 < sum(d.uses_code for d in docs[:100]) < 100  # shuffled, not sorted
    for doc in docs:
        assert doc.text.startswith(shared_prefix())
        assert len(doc.response) <= 120  # fits the demo's 128-token response budget


def test_write_jsonl_rows(tmp_path):
    path = tmp_path / "sub" / "problems.jsonl"
    assert write_jsonl(path, (p.to_row() for p in all_problems()[:3])) == 3
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"id": "mul-11-91", "problem": "What is 11 * 91?", "answer": "1001"}
