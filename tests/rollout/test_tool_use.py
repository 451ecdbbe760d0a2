"""Per-response tool-use facts and the step rates built from them (ToRL's behaviour analysis)."""

from __future__ import annotations

import math

from torl_rllib.algorithms.grpo.rollout_metrics import (
    ACCURACY_WITH_CODE, ACCURACY_WITHOUT_CODE, ERROR_RECOVERY_RATE, TOOL_GROUNDED_ANSWER_RATE,
    summarize_rollouts,
)
from torl_rllib.rollout.tool_loop import ToolCall
from torl_rllib.rollout.tool_use import tool_use


def call(observation: str, ok: bool = True, code: str | None = "print(1)") -> ToolCall:
    return ToolCall(code=code, observation=observation, ok=ok, timed_out=False, latency_s=0.0)


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
    stats = {"trajectories": 4, "failed": 0, "correct": 3, "used_code": 2, "correct_with_code": 2,
             "had_tool_failure": 1, "recovered_from_tool_failure": 1, "answered_with_code": 2,
             "tool_grounded_answer": 1}
    out = summarize_rollouts([{"stats": stats, "samples": []}], learner_version=0)
    assert out[ACCURACY_WITH_CODE] == 1.0 and out[ACCURACY_WITHOUT_CODE] == 0.5
    assert out[ERROR_RECOVERY_RATE] == 1.0 and out[TOOL_GROUNDED_ANSWER_RATE] == 0.5
    quiet = summarize_rollouts([{"stats": {**stats, "had_tool_failure": 0, "recovered_from_tool_failure": 0},
                                 "samples": []}], learner_version=0)
    assert math.isnan(quiet[ERROR_RECOVERY_RATE])
