"""ToRL's observation formatting (``format_result`` / ``format_observation``) on real sandbox
results: stdout on success, only the last traceback line on failure, a message for empty
output, and 256+ characters shown as the first 128 + "..." + the last 128."""

from __future__ import annotations

import pytest

from sandbox import ExecutionResult
from torl_rllib.rollout.observation import EMPTY_OUTPUT_MESSAGE, format_observation, format_result

DIGITS = "".join(str(i % 10) for i in range(1000))


@pytest.mark.parametrize("code, shown", [
    ("print(6*7)", "42"),
    ("print('a')\nprint('b')", "a\nb"),
    ("print('partial')\n1/0", "ZeroDivisionError: division by zero"),
    ("def f():\n    raise ValueError('bad input')\nf()", "ValueError: bad input"),
    ("x = 1", EMPTY_OUTPUT_MESSAGE),
    (f"print('{DIGITS[:255]}')", DIGITS[:255]),
    (f"print('{DIGITS[:256]}')", DIGITS[:128] + "..." + DIGITS[128:256]),
    (f"print('{DIGITS}')", DIGITS[:128] + "..." + DIGITS[-128:]),
    (f"raise RuntimeError('{DIGITS[:400]}')", ("RuntimeError: " + DIGITS[:400])[:128] + "..." + DIGITS[400 - 128 : 400]),
])
def test_torl_formatting_of_real_results(jail_pool, code, shown):
    result = jail_pool.execute(code)
    assert result.error is None, result.error
    assert format_result(result) == shown
    assert format_observation(result) == f"\n{shown}\n```\n", "the observation closes ToRL's output fence"


def test_only_the_last_traceback_line_is_shown(jail_pool):
    result = jail_pool.execute("def f(n):\n    return 1 / n\nf(0)")
    assert "Traceback" in result.stderr and result.stderr.count("\n") > 2
    assert format_result(result) == "ZeroDivisionError: division by zero"
    full = format_result(result, "full")
    assert full == result.stderr.strip() and full.startswith("Traceback"), "style 'full' keeps the traceback"


def test_full_style_does_not_truncate(jail_pool):
    result = jail_pool.execute(f"print('{DIGITS}')")
    assert format_result(result, "full") == DIGITS


def test_timeout_has_its_own_message():
    text = format_result(ExecutionResult(stdout="partial\n", timed_out=True))
    assert text.startswith("Timeout") and "partial" not in text


def test_unknown_style_is_refused(jail_pool):
    with pytest.raises(ValueError, match="unknown observation style 'verbose'"):
        format_result(jail_pool.execute("print(1)"), "verbose")
