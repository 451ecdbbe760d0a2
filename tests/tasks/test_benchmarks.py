"""The grader and the loaders against the real benchmark files in ../shared/data/benchmarks."""

import random
import re
from collections import Counter

import pytest

from torl_rllib.tasks import load_dataset

from .conftest import benchmark_file, read_jsonl

NUM_SHUFFLED_PAIRS = 500


def different_answer_pairs(answers: list[str], count: int, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` random (i, j) pairs whose gold answers differ as text (equal ones would match)."""
    rng = random.Random(seed)
    key = [re.sub(r"\s+", "", str(answer)) for answer in answers]
    pairs = []
    while len(pairs) < count:
        i, j = rng.randrange(len(answers)), rng.randrange(len(answers))
        if key[i] != key[j]:
            pairs.append((i, j))
    return pairs


def assert_all(results, expected: bool, labels):
    wrong = [(label, result) for label, result in zip(labels, results) if result.correct != expected]
    assert not wrong, f"{len(wrong)} graded {'incorrect' if expected else 'correct'}: {wrong[:5]}"


def test_math500_solutions_match_their_own_boxed_answer(batch_grader):
    path = benchmark_file("math500.jsonl")
    solutions = [row["answer"] for row in read_jsonl(path)]
    dataset = load_dataset(path)
    assert len(dataset) == 500 and dataset.num_skipped == 0
    golds = [problem.answer for problem in dataset]
    assert golds[2] == r"\frac{14}{3}"  # nested braces in the last \boxed{}
    assert all(solution.rstrip().endswith(gold) for solution, gold in zip(solutions, golds))  # "The answer is: ..."
    results = batch_grader.grade_batch(solutions, golds)
    assert_all(results, True, golds)


def test_math500_no_false_positives_over_shuffled_pairs(batch_grader):
    path = benchmark_file("math500.jsonl")
    solutions = [row["answer"] for row in read_jsonl(path)]
    golds = [problem.answer for problem in load_dataset(path)]
    pairs = different_answer_pairs(golds, NUM_SHUFFLED_PAIRS)
    results = batch_grader.grade_batch([solutions[j] for _, j in pairs], [golds[i] for i, _ in pairs])
    assert_all(results, False, [(golds[i], golds[j]) for i, j in pairs])


def test_aime24_solutions_match_their_answer(batch_grader):
    dataset = load_dataset(benchmark_file("aime24.jsonl"))
    assert len(dataset) == 30
    # Whole AoPS solutions: several methods, \framebox, \textbf{(073)}, "104." inside the box.
    results = batch_grader.grade_batch([p.metadata["solution"] for p in dataset], [p.answer for p in dataset])
    assert_all(results, True, [p.id for p in dataset])
    results = batch_grader.grade_batch([rf"\boxed{{{p.answer}}}" for p in dataset], [p.answer for p in dataset])
    assert_all(results, True, [p.id for p in dataset])


def test_aime24_no_false_positives_over_shuffled_pairs(batch_grader):
    dataset = load_dataset(benchmark_file("aime24.jsonl"))
    golds = [p.answer for p in dataset]
    pairs = different_answer_pairs(golds, NUM_SHUFFLED_PAIRS)
    results = batch_grader.grade_batch([dataset[j].metadata["solution"] for _, j in pairs], [golds[i] for i, _ in pairs])
    assert_all(results, False, [(golds[i], golds[j]) for i, j in pairs])


def test_amc23_float_answers_match_integers(batch_grader):
    path = benchmark_file("amc23.jsonl")
    raw_answers = [row["answer"] for row in read_jsonl(path)]
    assert raw_answers[0] == 27.0
    dataset = load_dataset(path)
    assert [p.answer for p in dataset][0] == "27"
    responses = [rf"So they meet \boxed{{{int(answer)}}} miles from A." for answer in raw_answers]
    assert_all(batch_grader.grade_batch(responses, raw_answers), True, raw_answers)  # 27 vs 27.0
    assert_all(batch_grader.grade_batch(responses, [str(a) for a in raw_answers]), True, raw_answers)  # vs "27.0"
    assert_all(batch_grader.grade_batch(responses, [p.answer for p in dataset]), True, raw_answers)


def test_amc23_no_false_positives_over_shuffled_pairs(batch_grader):
    raw_answers = [row["answer"] for row in read_jsonl(benchmark_file("amc23.jsonl"))]
    pairs = different_answer_pairs(raw_answers, NUM_SHUFFLED_PAIRS)
    responses = [rf"\boxed{{{int(raw_answers[j])}}}" for _, j in pairs]
    results = batch_grader.grade_batch(responses, [raw_answers[i] for i, _ in pairs])
    assert_all(results, False, pairs)


def test_torl_parquet_loads_374_rows_with_sources(batch_grader):
    dataset = load_dataset(benchmark_file("torl_test.parquet"))
    assert len(dataset) == 374 and dataset.num_skipped == 0
    assert Counter(p.source for p in dataset) == {"aime24": 120, "aime25": 120, "math500": 134}
    assert len({p.id for p in dataset}) == 374  # AIME rows repeat 4 times; ids stay unique
    first = dataset[0]
    assert first.problem.startswith("Every morning Aya goes for a $9$-kilometer-long walk")
    assert first.answer == "204" and first.metadata["extra_info"]["split"] == "test"
    assert [p.id for p in dataset][:2] == [first.id, first.id + "#1"]
    results = batch_grader.grade_batch([rf"\boxed{{{p.answer}}}" for p in dataset], [p.answer for p in dataset])
    assert_all(results, True, [p.id for p in dataset])


@pytest.mark.parametrize("name", ["aime24.jsonl", "amc23.jsonl", "math500.jsonl", "torl_test.parquet"])
def test_problems_are_picklable_with_stable_ids(name):
    import pickle

    first, second = load_dataset(benchmark_file(name)), load_dataset(benchmark_file(name))
    assert [p.id for p in first] == [p.id for p in second]
    assert pickle.loads(pickle.dumps(first.problems)) == first.problems
