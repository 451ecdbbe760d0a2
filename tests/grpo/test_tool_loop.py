"""ToRL's tool loop (``run_trajectory``) with a real nsjail sandbox: C semantics (a policy that
writes code C+1 times gets exactly C executions), token-exactness of the response, the
response budget, the stop without a code block, the last block of a segment, and failures
that mark the trajectory instead of raising."""

from __future__ import annotations

import pytest

from torl_rllib.rollout.observation import format_observation
from torl_rllib.rollout.tool_loop import STOP_STRING, last_python_block

from .conftest import ANSWER, CODE_SEGMENT, SandboxExecutor, ScriptedEngine, run_tool_loop

PROMPT = "What is 6 * 7?\nAssistant:"


def code_turn(k: int) -> str:
    """One reasoning step with the k-th code block, ending at the stop string."""
    return f"Step {k}.\n```python\nprint({k} * 1000 + 7)\n```\n{STOP_STRING}"


def loop(engine, execute, tokenizer, **config):
    return run_tool_loop(engine, execute, tokenizer, PROMPT, **config)


def obs_ids(tokenizer, result) -> list[int]:
    return tokenizer.encode(format_observation(result), add_special_tokens=False)


@pytest.mark.parametrize("calls", [0, 1, 2])
def test_c_tool_calls_execute_exactly_c_of_c_plus_1_blocks(tokenizer, sandbox, calls):
    # When the stop string is not passed the model writes its own (imagined) output and goes on.
    script = "".join(code_turn(k) + "\nimagined\n```\n" for k in range(1, calls + 2)) + ANSWER
    engine = ScriptedEngine(tokenizer, script)
    traj = loop(engine, sandbox, tokenizer, max_tool_calls=calls, max_response_tokens=2000)

    assert traj.error is None, traj.error
    assert [code for code, _ in sandbox.executed] == [f"print({k} * 1000 + 7)\n" for k in range(1, calls + 1)], (
        f"with C={calls} exactly the first {calls} blocks must run, in order"
    )
    assert [r.stdout for _, r in sandbox.executed] == [f"{k * 1000 + 7}\n" for k in range(1, calls + 1)]
    assert len(traj.tool_calls) == calls and all(c.ok for c in traj.tool_calls)
    stops = [params.stop for _, params, _ in engine.calls]
    assert stops == [(STOP_STRING,)] * calls + [()], (
        f"the stop string must be passed for the first {calls} segments only, got {stops}"
    )
    last = tokenizer.decode(engine.calls[-1][2].token_ids, skip_special_tokens=True)
    assert f"print({calls + 1} * 1000 + 7)" in last and last.endswith(ANSWER), (
        "after C calls the rest, including the unexecuted block, is plain generation"
    )
    assert traj.finish_reason == "eos"


def test_response_is_sampled_ids_plus_observation_ids(tokenizer, sandbox):
    script = code_turn(1) + "Now an error:\n```python\nprint('x')\n1/0\n```\n" + STOP_STRING + ANSWER
    engine = ScriptedEngine(tokenizer, script)
    traj = loop(engine, sandbox, tokenizer, max_tool_calls=2, max_response_tokens=2000)

    assert traj.error is None, traj.error
    segments = [out for _, _, out in engine.calls]
    observations = [obs_ids(tokenizer, result) for _, result in sandbox.executed]
    assert len(segments) == 3 and len(observations) == 2
    expected_ids, expected_mask, expected_lp = [], [], []
    for k, seg in enumerate(segments):
        # Each segment was generated from exactly the prompt plus everything appended so far.
        assert engine.calls[k][0] == traj.prompt_ids + expected_ids, f"segment {k} saw a different context"
        expected_ids += seg.token_ids
        expected_mask += [1] * len(seg.token_ids)
        expected_lp += seg.logprobs
        if k < len(observations):
            expected_ids += observations[k]
            expected_mask += [0] * len(observations[k])
            expected_lp += [0.0] * len(observations[k])
    assert traj.response_ids == expected_ids, "response ids must be the sampled ids and observation ids, in order"
    assert traj.loss_mask == expected_mask, "loss mask must be 0 exactly on observation ids"
    assert traj.logprobs == expected_lp, "logprobs must be the sampled ones, 0.0 on observation ids"
    assert [c.observation for c in traj.tool_calls] == ["\n1007\n```\n", "\nZeroDivisionError: division by zero\n```\n"]
    assert [c.ok for c in traj.tool_calls] == [True, False]


# The char tokenizer has one token per character: the code segment, its observation
# "\n42\n```\n" (8 tokens), then ANSWER and EOS. Budgets cut each part, at and around its ends.
SEGMENT = len(CODE_SEGMENT)


@pytest.mark.parametrize("budget", [20, SEGMENT - 1, SEGMENT, SEGMENT + 3, SEGMENT + 8, SEGMENT + 20, 500])
def test_budget_counts_tool_output(tokenizer, sandbox, budget):
    full = tokenizer.encode(CODE_SEGMENT + "\n42\n```\n" + ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]
    traj = loop(ScriptedEngine(tokenizer, CODE_SEGMENT + ANSWER), sandbox, tokenizer,
                max_tool_calls=1, max_response_tokens=budget)

    assert traj.error is None, traj.error
    assert len(traj.response_ids) <= budget, f"{len(traj.response_ids)} tokens exceed the budget {budget}"
    assert traj.response_ids == full[:budget], "a cut response is the uncut one, cut at the budget"
    assert traj.finish_reason == ("length" if len(full) > budget else "eos")
    if budget != SEGMENT:  # at exactly SEGMENT no output could be shown: running it or not are both fine
        assert len(sandbox.executed) == int(budget > SEGMENT), "code runs only when its segment reached the stop string"


def test_budget_can_exclude_tool_output(tokenizer, sandbox):
    budget = SEGMENT + 5
    traj = loop(ScriptedEngine(tokenizer, CODE_SEGMENT + ANSWER), sandbox, tokenizer,
                max_tool_calls=1, max_response_tokens=budget, budget_counts_tool_output=False)

    observation = len(obs_ids(tokenizer, sandbox.executed[0][1]))
    assert traj.num_model_tokens == budget, "the budget applies to model tokens only"
    assert len(traj.response_ids) == budget + observation
    assert traj.finish_reason == "length"


def test_stop_without_code_block_gets_no_code_observation(tokenizer, sandbox):
    script = f"I should check this.\n{STOP_STRING}\nimagined\n```\n" + ANSWER
    engine = ScriptedEngine(tokenizer, script)
    traj = loop(engine, sandbox, tokenizer, max_tool_calls=1, max_response_tokens=2000)

    assert sandbox.executed == [], "nothing may reach the sandbox without a python block"
    assert len(traj.tool_calls) == 1
    call = traj.tool_calls[0]
    assert call.code is None and not call.ok
    assert call.observation == "\nSyntaxError: no ```python code block before ```output\n```\n"
    first_segment = len(engine.calls[0][2].token_ids)
    shown = traj.response_ids[first_segment : first_segment + len(tokenizer.encode(call.observation))]
    assert tokenizer.decode(shown) == call.observation
    assert engine.calls[1][1].stop == (), "the stop without code used up the C=1 budget"


def test_only_the_last_block_of_a_segment_runs(tokenizer, sandbox):
    script = "```python\nprint('first')\n```\nBetter:\n```python\nprint('second')\n```\n" + STOP_STRING + ANSWER
    traj = loop(ScriptedEngine(tokenizer, script), sandbox, tokenizer, max_tool_calls=1, max_response_tokens=2000)

    assert [code for code, _ in sandbox.executed] == ["print('second')\n"]
    assert traj.tool_calls[0].observation == "\nsecond\n```\n"


@pytest.mark.parametrize("text, code", [
    ("no code here", None),
    ("```python\nprint(1)\n", None),  # not closed
    ("```python\na = 1\n```\n```python\nprint(a)\n```\n```output", "print(a)\n"),
    ("```python   \nprint(2)```", "print(2)"),
])
def test_last_python_block(text, code):
    assert last_python_block(text) == code


def test_executor_exception_marks_the_trajectory_after_its_retries(tokenizer):
    calls = []

    async def broken(code):
        calls.append(code)
        raise ConnectionError("sandbox actor died")

    traj = loop(ScriptedEngine(tokenizer, CODE_SEGMENT + ANSWER), broken, tokenizer,
                max_tool_calls=1, max_response_tokens=2000, infra_retries=2, retry_backoff_s=0.01)

    assert traj.error == "sandbox_failed: ConnectionError: sandbox actor died"
    assert len(calls) == 3 and len(set(calls)) == 1, "the same snippet, tried 1 + 2 times"
    assert traj.retries == {"sandbox_failed": 2}
    assert traj.tool_calls == [] and 0 not in traj.loss_mask, "no observation after a failed call"


def test_infrastructure_failures_that_recover_leave_the_trajectory_unchanged(tokenizer, sandbox):
    """A generation that raised is asked again with the same request (seed included), a tool
    call whose pool failed runs the same snippet again: the trajectory is the undisturbed one."""
    undisturbed = loop(ScriptedEngine(tokenizer, CODE_SEGMENT + ANSWER), sandbox, tokenizer,
                       max_tool_calls=1, max_response_tokens=2000)

    class FlakyEngine(ScriptedEngine):
        failed = False

        async def generate(self, prompt_ids, params):
            if not self.failed:
                self.failed = True
                raise RuntimeError("engine core restarted")
            return await super().generate(prompt_ids, params)

    seen, tries = [], []

    async def flaky_sandbox(code):
        tries.append(code)
        if len(tries) == 1:
            raise ConnectionError("pool restarting")
        return await sandbox(code)

    engine = FlakyEngine(tokenizer, CODE_SEGMENT + ANSWER)
    original = engine.generate

    async def recording(prompt_ids, params):
        seen.append(params)
        return await original(prompt_ids, params)

    engine.generate = recording
    traj = loop(engine, flaky_sandbox, tokenizer, max_tool_calls=1, max_response_tokens=2000, retry_backoff_s=0.01)
    assert traj.error is None, traj.error
    assert traj.retries == {"engine_failed": 1, "sandbox_failed": 1}
    assert seen[0] == seen[1], "the retried generation is the same request, seed included"
    assert tries[0] == tries[1]
    assert traj.response_ids == undisturbed.response_ids and traj.loss_mask == undisturbed.loss_mask


def test_a_failure_keeps_its_exception_chain_to_the_root(tokenizer):
    class ChainedFailure(ScriptedEngine):
        async def generate(self, prompt_ids, params):
            try:
                raise OverflowError("can't serialize ints < -2**63 or > 2**64 - 1")
            except OverflowError as exc:
                raise LookupError() from exc  # an empty message, as vLLM's EngineGenerateError

    traj = loop(ChainedFailure(tokenizer, ANSWER), None, tokenizer, max_tool_calls=1, max_response_tokens=50,
                infra_retries=0)
    assert traj.error == "engine_failed: LookupError <- OverflowError: can't serialize ints < -2**63 or > 2**64 - 1"


def test_sandbox_failure_marks_the_trajectory(tokenizer):
    from sandbox import SandboxConfig, WarmJailPool

    pool = WarmJailPool(SandboxConfig(jails=1, timeout_s=3.0))
    pool.close()  # a dead pool answers with failed results (ExecutionResult.error), never raises
    traj = loop(ScriptedEngine(tokenizer, CODE_SEGMENT + ANSWER), SandboxExecutor(pool), tokenizer,
                max_tool_calls=1, max_response_tokens=2000, retry_backoff_s=0.01)

    assert traj.error is not None and traj.error.startswith("sandbox_failed: "), traj.error
    assert traj.tool_calls == []
