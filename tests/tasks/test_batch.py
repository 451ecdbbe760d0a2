"""BatchGrader: same results as grade(), in order, on several processes, bounded in time."""

import time

import pytest

from torl_rllib.tasks import BatchGrader, grade
from torl_rllib.utils.cluster import available_cpus

CASES = [
    (r"\boxed{\frac{14}{3}}", "4\\frac{2}{3}"),
    (r"\boxed{7}", "7"),
    (r"\boxed{8}", "7"),
    ("no box at all: 7", "7"),
    (r"\boxed{(1,2)}", "(2,1)"),
    (r"\boxed{\pm 2}", "2,-2"),
    (r"\boxed{" + "(" * 500 + "1" + ")" * 500 + "}", "1"),
    (r"\boxed{\text{(B)}}", "B"),
]


def test_same_results_as_grade_in_order(batch_grader):
    responses, golds = zip(*(CASES * 5))
    results = batch_grader.grade_batch(list(responses), list(golds))
    assert results == [grade(r, g) for r, g in zip(responses, golds)]
    assert [r.reason for r in results[:8]] == [
        "match", "match", "mismatch", "no_box", "mismatch", "match", "parse_error", "match"
    ]


def test_reports_throughput(batch_grader):
    batch_grader.grade_batch([r"\boxed{1}", r"\boxed{\frac{1}{2}}", "none"], ["1", "0.5", "1"])
    stats = batch_grader.last_stats
    assert stats.num_responses == 3 and stats.seconds > 0 and stats.responses_per_s > 0
    assert stats.reasons == {"match": 2, "no_box": 1}


def test_uses_the_available_cores_by_default(batch_grader):
    assert batch_grader.num_workers == available_cpus() >= 1


def test_empty_batch(batch_grader):
    assert batch_grader.grade_batch([], []) == []


def test_length_mismatch_is_an_error(batch_grader):
    with pytest.raises(ValueError, match="2 responses but 1 gold"):
        batch_grader.grade_batch(["a", "b"], ["1"])


def test_one_timeout_does_not_hold_up_the_batch():
    timeout_s = 1.0
    responses = [r"\boxed{9^{9^{9^9}}}"] + [rf"\boxed{{\frac{{{n}}}{{2}}}}" for n in range(40)]
    golds = ["1"] + [str(n / 2) for n in range(40)]
    with BatchGrader(num_workers=2, timeout_s=timeout_s) as grader:
        grader.grade_batch([r"\boxed{x}"], ["x"])  # wait until the workers are up
        start = time.perf_counter()
        results = grader.grade_batch(responses, golds)
        elapsed = time.perf_counter() - start
        assert results[0].reason == "timeout"
        assert all(result.correct for result in results[1:])
        assert elapsed < timeout_s + 5.0
        assert grader.grade_batch(responses[1:3], golds[1:3])[0].correct  # reusable after a restart


def test_survives_a_dead_worker():
    with BatchGrader(num_workers=1) as grader:
        grader.grade_batch([r"\boxed{x}"], ["x"])
        grader._pool._workers[0].proc.kill()  # e.g. killed by the OOM killer while idle
        assert grader.grade_batch([r"\boxed{\sqrt{4}}"], ["2"])[0].correct


def test_closed_grader_refuses_work():
    grader = BatchGrader(num_workers=1)
    grader.close()
    grader.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        grader.grade_batch([r"\boxed{1}"], ["1"])


@pytest.mark.parametrize(("kwargs", "message"), [({"num_workers": 0}, "num_workers"), ({"timeout_s": 0}, "timeout_s")])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchGrader(**kwargs)


def test_a_worker_that_cannot_start_is_a_clear_error(monkeypatch):
    from torl_rllib.tasks import verifier_pool

    monkeypatch.setattr(verifier_pool.sys, "executable", "/bin/false")
    pool = verifier_pool.VerifierPool(num_workers=1)
    try:
        with pytest.raises(RuntimeError, match="exited with code 1 during start-up"):
            pool.run([("1", "1")], timeout_s=1.0)
    finally:
        pool.close()
