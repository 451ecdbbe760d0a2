"""Failure records: the exception chain down to the root, short, outermost first."""

from __future__ import annotations

from torl_rllib.rollout.metrics import summarize_failures
from torl_rllib.rollout.failures import MAX_LINKS, describe_failure, exception_chain, failure_kind


def raised(exc_factory):
    try:
        exc_factory()
    except Exception as exc:  # noqa: BLE001
        return exc


def test_cause_and_context_are_followed_to_the_root():
    def explicit():
        try:
            raise OverflowError("can't serialize ints")
        except OverflowError as exc:
            raise RuntimeError() from exc

    def implicit():
        try:
            {}["seed"]
        except KeyError:
            raise ValueError("bad request\n  with two lines")

    assert exception_chain(raised(explicit)) == ["RuntimeError", "OverflowError: can't serialize ints"]
    assert exception_chain(raised(implicit)) == ["ValueError: bad request with two lines", "KeyError: 'seed'"]


def test_suppressed_context_and_long_chains_stay_short():
    def suppressed():
        try:
            raise KeyError("hidden")
        except KeyError:
            raise ValueError("shown") from None

    assert exception_chain(raised(suppressed)) == ["ValueError: shown"]
    exc = ValueError("root " + "x" * 1000)
    for depth in range(10):
        outer = RuntimeError(f"level {depth}")
        outer.__cause__ = exc
        exc = outer
    chain = exception_chain(exc)
    assert len(chain) == MAX_LINKS and chain[0] == "RuntimeError: level 9"
    assert chain[-1].startswith("ValueError: root xxx") and len(chain[-1]) < 300, "the root is kept, shortened"


def test_describe_and_kind():
    error = describe_failure("engine_failed", RuntimeError("boom"))
    assert error == "engine_failed: RuntimeError: boom" and failure_kind(error) == "engine_failed"


def test_failures_are_merged_across_runners_most_frequent_first():
    rollouts = [
        {"stats": {"failed": 3, "failed/engine_failed": 2, "failed/sandbox_failed": 1},
         "failures": {"engine_failed": "engine_failed: A", "sandbox_failed": "sandbox_failed: B"}},
        {"stats": {"failed": 2, "failed/engine_failed": 2}, "failures": {"engine_failed": "engine_failed: C"}},
        {"stats": {}, "samples": []},
    ]
    assert summarize_failures(rollouts) == [
        {"kind": "engine_failed", "count": 4, "example": "engine_failed: A"},
        {"kind": "sandbox_failed", "count": 1, "example": "sandbox_failed: B"},
    ]
