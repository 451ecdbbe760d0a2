"""avg@k, the unbiased pass@k estimator and maj@k against hand-computed values, and the
evaluation protocol's checks."""

from __future__ import annotations

import math

import pytest

from torl_rllib.evaluation import EvalProtocol, ProblemResult, SampleResult, majority_index, outcome_metrics, pass_at_k


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),                   # pass@1 is the fraction correct
    (5, 2, 2, 1 - 3 / 10),            # 1 - C(3,2)/C(5,2)
    (10, 3, 4, 1 - 35 / 210),         # 1 - C(7,4)/C(10,4)
    (4, 1, 4, 1.0), (4, 0, 4, 0.0),   # n = k: any correct sample passes
    (8, 0, 3, 0.0), (8, 8, 1, 1.0),
    (6, 5, 2, 1.0),                   # fewer than k wrong samples: certain
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_the_mean_over_all_k_subsets():
    from itertools import combinations

    outcomes = [True, False, False, True, False, False, False]
    for k in range(1, len(outcomes) + 1):
        subsets = list(combinations(outcomes, k))
        assert pass_at_k(len(outcomes), sum(outcomes), k) == pytest.approx(
            sum(any(s) for s in subsets) / len(subsets))


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_majority_vote_groups_equal_answers_and_breaks_ties_by_first_seen():
    assert majority_index(["4", "3", " 3", None, "4"]) == 0  # "4" and "3" tie 2-2: first seen wins
    assert majority_index(["7", "5", "5", "7", "5"]) == 1
    assert majority_index(["(1, 2)", "\\left(1,2\\right)", "2"]) == 0
    assert majority_index([None, None]) is None


def sample(answer, correct):
    return SampleResult(response="", extracted=answer, correct=correct, grade_reason="")


def test_outcome_metrics_on_a_hand_made_case():
    results = [
        ProblemResult("a", "s", "p", "3", [sample("3", True), sample("4", False), sample("4", False), sample("3", True)]),
        ProblemResult("b", "s", "p", "5", [sample("1", False), sample("1", False), sample("5", True), sample(None, False)]),
        ProblemResult("c", "s", "p", "9", [sample("2", False)] * 4),
    ]
    metrics = outcome_metrics(results, EvalProtocol(k=4, temperature=1.0))
    assert metrics["accuracy"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)  # avg@4
    assert metrics["pass@1"] == pytest.approx(metrics["accuracy"])
    assert metrics["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 3)
    assert metrics["pass@4"] == pytest.approx(2 / 3)
    # a: "3" and "4" tie 2-2, "3" seen first -> correct; b: "1" wins -> wrong; c: wrong.
    assert metrics["maj@4"] == pytest.approx(1 / 3)
    assert metrics["problems"] == 3 and metrics["samples"] == 12


def test_greedy_reports_accuracy_only_and_failed_samples_count_as_wrong():
    failed = SampleResult("", None, False, "failed", error="sandbox_failed: boom")
    results = [ProblemResult("a", "s", "p", "1", [sample("1", True)]), ProblemResult("b", "s", "p", "2", [failed])]
    metrics = outcome_metrics(results, EvalProtocol())
    assert metrics == {"accuracy": 0.5, "problems": 2.0, "samples": 2.0, "failed_samples": 1.0}


def test_protocol_checks_and_pass_ks():
    assert EvalProtocol().greedy and EvalProtocol().pass_ks() == [1]
    assert EvalProtocol(k=16, temperature=0.6).pass_ks() == [1, 2, 4, 8, 16]
    assert EvalProtocol(k=6, temperature=1.0).pass_ks() == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="identical responses"):
        EvalProtocol(k=4)
    with pytest.raises(ValueError, match="k must be"):
        EvalProtocol(k=0, temperature=1.0)
    sampling = EvalProtocol().sampling(max_new_tokens=8)
    assert sampling.greedy and not math.isnan(sampling.temperature)
