"""Per-response tool-use facts and the step rates built from them (ToRL's behaviour analysis)."""

from __future__ import annotations

import math

from torl_rllib.rollout.metrics import (
    ACCURACY, ACCURACY_WITH_CODE, ACCURACY_WITHOUT_CODE, CODE_RATIO, ERROR_RECOVERY_RATE, EXECUTABLE_CODE_RATE,
    INEFFECTIVE_CODE_RATE, SPLIT_PREFIX, TOOL_GROUNDED_ANSWER_RATE, split_key, summarize_rollouts,
)
from torl_rllib.rollout.tool_loop import ToolCall
from torl_rllib.rollout.tool_use import tool_use


def call(observation: str, ok: bool = True, code: str | None = "print(1)", stdout: str | None = None) -> ToolCall:
    """A call as the tool loop records it: what it printed (the observation, when it ran), and
    the model-facing observation."""
    printed = observation if ok and stdout is None else (stdout or "")
    return ToolCall(code=code, observation=observation, ok=ok, timed_out=False, latency_s=0.0, stdout=printed)


def test_no_code_is_neither_grounded_nor_failed():
    use = tool_use([], "42")
    assert (use.used_code, use.calls, use.had_failure, use.recovered, use.grounded) == (False, 0, False, False, False)


def test_error_then_success_is_a_recovery():
    use = tool_use([call("NameError: name 'x' is not defined", ok=False), call("408")], "408")
    assert use.had_failure and use.recovered and use.failed_calls == 1 and use.grounded


def test_success_then_error_is_not_a_recovery():
    use = tool_use([call("408"), call("ZeroDivisionError: division by zero", ok=False)], "408")
    assert use.had_failure and not use.recovered


def test_grounding_matches_whole_tokens_and_ignores_whitespace():
    assert tool_use([call("[1, 2, 12]\n")], "12").grounded
    assert not tool_use([call("123\n")], "12").grounded
    assert not tool_use([call("0.12\n")], "12").grounded
    assert tool_use([call("\\frac{1}{ 2}")], "\\frac{1}{2}").grounded
    assert not tool_use([call("12")], None).grounded
    # a block that was never executed (code None) grounds nothing
    assert not tool_use([call("12", code=None)], "12").grounded


def test_step_rates_are_conditional_and_absent_when_the_condition_never_held():
    stats = {"trajectories": 4, "graded": 4, "failed": 0, "correct": 3, "used_code": 2, "correct_with_code": 2,
             "had_tool_failure": 1, "recovered_from_tool_failure": 1, "answered_with_code": 2,
             "tool_grounded_answer": 1}
    out = summarize_rollouts([{"stats": stats, "samples": []}], learner_version=0)
    assert out[ACCURACY_WITH_CODE] == 1.0 and out[ACCURACY_WITHOUT_CODE] == 0.5
    assert out[ERROR_RECOVERY_RATE] == 1.0 and out[TOOL_GROUNDED_ANSWER_RATE] == 0.5
    quiet = summarize_rollouts([{"stats": {**stats, "had_tool_failure": 0, "recovered_from_tool_failure": 0},
                                 "samples": []}], learner_version=0)
    assert math.isnan(quiet[ERROR_RECOVERY_RATE])


def test_code_that_prints_nothing_or_not_the_answer_is_ineffective():
    empty = call("Timeout: the code produced no output", stdout="")
    assert tool_use([empty], None).ineffective_calls == 1
    assert tool_use([call("17")], "408").ineffective_calls == 1  # printed, but not what was answered
    assert tool_use([call("408")], "408").ineffective_calls == 0
    # a failed call is counted by the executable-code rate, not as ineffective
    use = tool_use([call("NameError: name 'a' is not defined", ok=False), call("408")], "408")
    assert (use.failed_calls, use.ineffective_calls, use.recovered) == (1, 0, True)


def response_sums(correct: bool, calls: int = 0, ok: int = 0, ineffective: int = 0) -> dict:
    return {"graded": 1, "reward_sum": 1.0 if correct else -1.0, "correct": int(correct),
            "used_code": int(calls > 0), "correct_with_code": int(calls > 0 and correct),
            "tool_calls": calls, "tool_ok": ok, "tool_ineffective": ineffective}


def test_every_response_metric_is_split_by_the_column_value():
    """Two runners' sums of two kinds: each kind's metrics are computed from its own sums."""
    def runner(rows):
        stats = {"trajectories": len(rows), "failed": 0}
        for kind, sums in rows:
            for key, value in sums.items():
                stats[key] = stats.get(key, 0) + value
                prefix = f"{SPLIT_PREFIX}{split_key(kind)}/{key}"
                stats[prefix] = stats.get(prefix, 0) + value
        return {"stats": stats, "samples": []}

    out = summarize_rollouts([
        runner([("easy", response_sums(True)), ("hard", response_sums(True, calls=2, ok=1))]),
        runner([("easy", response_sums(True, calls=1, ok=1, ineffective=1)), ("hard", response_sums(False))]),
    ], learner_version=0)
    assert out[ACCURACY] == 0.75 and out[CODE_RATIO] == 0.5
    assert out[f"{ACCURACY}/easy"] == 1.0 and out[f"{ACCURACY}/hard"] == 0.5
    assert out[f"{CODE_RATIO}/easy"] == 0.5 and out[f"{CODE_RATIO}/hard"] == 0.5
    assert out[f"{EXECUTABLE_CODE_RATE}/hard"] == 0.5 and out[f"{EXECUTABLE_CODE_RATE}/easy"] == 1.0
    assert out[f"{INEFFECTIVE_CODE_RATE}/easy"] == 1.0 and out[f"{INEFFECTIVE_CODE_RATE}/hard"] == 0.0
    assert out[f"{ACCURACY_WITH_CODE}/hard"] == 1.0 and out[f"{ACCURACY_WITHOUT_CODE}/hard"] == 0.0
    assert out[EXECUTABLE_CODE_RATE] == 2 / 3 and out[INEFFECTIVE_CODE_RATE] == 0.5


def test_code_rates_are_absent_without_code():
    out = summarize_rollouts([{"stats": {"trajectories": 1, **response_sums(True)}, "samples": []}], 0)
    assert math.isnan(out[EXECUTABLE_CODE_RATE]) and math.isnan(out[INEFFECTIVE_CODE_RATE])


def test_split_values_become_safe_metric_names():
    assert split_key("MATH/level 5") == "MATH_level 5"
    assert split_key("") == "_" and split_key(3) == "3"
