"""grade(): structured results, bad input, time bounds, threads and asyncio."""

import asyncio
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from torl_rllib.tasks import GradeResult, grade

# The deadline of a comparison starts when it is sent; a worker killed by the previous test may
# still be starting (about a second on a busy machine), hence the slack.
SLACK_S = 5.0


def test_result_fields():
    result = grade(r"so $\boxed{\dfrac{14}{3}}$", r"\frac{14}{3}")
    assert result == GradeResult(correct=True, extracted=r"\dfrac{14}{3}", parsed_gold="14/3", reason="match")
    assert pickle.loads(pickle.dumps(result)) == result


@pytest.mark.parametrize(
    ("response", "gold", "reason"),
    [
        ("The answer is 5", "5", "no_box"),
        (None, "5", "no_box"),
        (42, "5", "no_box"),
        (b"\\boxed{5}", "5", "no_box"),
        ("x" * 1_000_000, "5", "no_box"),
        (r"\boxed{5}", None, "parse_error"),
        (r"\boxed{5}", "", "parse_error"),
        (r"\boxed{5}", ["5"], "parse_error"),
        (r"\boxed{5}", True, "parse_error"),
        (r"\boxed{5}", "9" * 5000, "parse_error"),  # longer than any real answer
        (r"\boxed{" + "1" * 5000 + "}", "5", "parse_error"),
        (r"\boxed{\frac{1}{2}}", "3", "mismatch"),
        (r"\boxed{12}", "12", "match"),
    ],
)
def test_bad_input_is_a_result_not_an_exception(response, gold, reason):
    result = grade(response, gold)
    assert result.reason == reason and result.correct == (reason == "match")


def test_integer_answers_are_decided_without_a_worker():
    start = time.perf_counter()
    results = [grade(rf"\boxed{{{n}}}", "073") for n in range(1000)]
    assert time.perf_counter() - start < 1.0
    assert [r.correct for r in results].count(True) == 1 and results[73].parsed_gold == "73"


def test_ten_thousand_nested_brackets_are_rejected_at_once():
    for opener, closer in ("()", "[]", "{}"):
        start = time.perf_counter()
        result = grade(r"\boxed{" + opener * 10_000 + "1" + closer * 10_000 + "}", "1")
        assert result.reason == "parse_error"
        assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("answer", [r"9^{9^{9^9}}", "9**9**9**9"])
def test_tower_of_powers_times_out_within_the_bound(answer):
    timeout_s = 1.0
    start = time.perf_counter()
    result = grade(rf"\boxed{{{answer}}}", r"\frac{1}{3}", timeout_s=timeout_s)
    elapsed = time.perf_counter() - start
    assert result.reason == "timeout" and not result.correct and result.extracted == answer
    assert timeout_s <= elapsed < timeout_s + SLACK_S
    assert grade(r"\boxed{\frac{2}{6}}", r"\frac{1}{3}").correct  # the worker was replaced


def test_grading_installs_no_signal_handler():
    before = signal.getsignal(signal.SIGALRM)
    assert grade(r"\boxed{\sqrt{8}}", r"2\sqrt{2}").correct
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_from_many_threads():
    cases = [(rf"\boxed{{\frac{{{n}}}{{3}}}}", rf"\frac{{{2 * n}}}{{6}}") for n in range(1, 41)]
    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(lambda case: grade(*case), cases))
    assert all(result.correct for result in results)


def test_from_a_non_main_thread_with_a_timeout():
    results = []
    thread = threading.Thread(target=lambda: results.append(grade(r"\boxed{9^{9^{9^9}}}", "2", timeout_s=0.5)))
    thread.start()
    thread.join(timeout=0.5 + SLACK_S)
    assert not thread.is_alive() and results[0].reason == "timeout"


def test_from_asyncio():
    async def main():
        direct = grade(r"\boxed{0.5}", r"\frac12")
        in_thread = await asyncio.to_thread(grade, r"\boxed{(1,2)}", "(1, 2)")
        return direct, in_thread

    assert all(result.correct for result in asyncio.run(main()))


def test_answers_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    for answer in (f'__import__("pathlib").Path("{marker}").touch()', f"open({marker!s})", "__import__"):
        assert grade(rf"\boxed{{{answer}}}", "1").reason in ("mismatch", "parse_error")
    assert not marker.exists()
