"""Trajectories as MLflow traces: records built by hand (as an EnvRunner returns them) are logged
through ``MlflowTracker`` to a real sqlite store and read back with MLflow's own search."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import SpanStatusCode, SpanType, TraceState
from mlflow.exceptions import MlflowException
from mlflow.tracing.constant import TraceMetadataKey

from torl_rllib.rollout.trace_records import (
    SegmentRecord, ToolCallRecord, TraceRecord, gather_traces, select_traced, trace_record,
)
from torl_rllib.tracking import MlflowTracker, TrackingConfig
from torl_rllib.tracking.traces import GRADE_SPAN, LLM_SPAN, ROOT_SPAN, TOOL_SPAN

T0 = 1_780_000_000_000_000_000  # a wall-clock time in ns
MS = 1_000_000
CODE = "print(6 * 7)"
SEGMENT_1 = f"Let me compute.\n```python\n{CODE}\n```\n```output"
SEGMENT_2 = " So the answer is \\boxed{42}."
SANDBOX_ERROR = ("sandbox_failed: SandboxUnavailable: sandbox pool unavailable <- "
                 "RayActorError: The actor died unexpectedly")


def record(problem_id="7", group=0, sample=0, *, error=None, correct=True) -> TraceRecord:
    """A trajectory that wrote code, ran it, answered and was graded: 10 ms per step."""
    ok = error is None
    segments = [SegmentRecord(SEGMENT_1, 40, 25, "stop", T0 + 1 * MS, T0 + 11 * MS)]
    calls = [ToolCallRecord(CODE, "42\n", "42\n", "", True, False, 0, 0.01, 0.004, 0.006,
                            T0 + 12 * MS, T0 + 22 * MS)]
    if ok:
        segments.append(SegmentRecord(SEGMENT_2, 30, 69, "eos", T0 + 23 * MS, T0 + 33 * MS))
    return TraceRecord(
        problem_id=problem_id, source="tiny", problem="What is 6 * 7?", prompt="Question: What is 6 * 7?\n",
        response=SEGMENT_1 + "\n42\n```" + (SEGMENT_2 if ok else ""), gold="42", group=group, sample=sample,
        weights_version=3, start_ns=T0, end_ns=T0 + (34 if ok else 40) * MS,
        segments=segments, tool_calls=[] if error else calls,
        grading_ns=(T0 + 35 * MS, T0 + 45 * MS),
        answer="42" if ok and correct else ("41" if ok else None), reward=(1.0 if correct else -1.0) if ok else None,
        correct=correct if ok else None, used_code=ok,
        grade_reason=("equal" if correct else "wrong") if ok else None,
        error=error, retries={"sandbox_failed": 3} if error else {},
    )


@pytest.fixture
def tracker(tmp_path):
    tracker = MlflowTracker(TrackingConfig(plots=False), run_name="traces", output_dir=tmp_path)
    tracker.start({})
    return tracker


def logged(tracker: MlflowTracker, filter_string: str | None = None) -> list:
    """The run's traces (after the tracker's background writes), oldest first."""
    if tracker._trace_sending is not None:
        tracker._trace_sending.result(timeout=60)
    client = MlflowClient(tracker.tracking_uri)
    return client.search_traces(locations=[tracker.experiment_id], run_id=tracker.run_id,
                                filter_string=filter_string, order_by=["timestamp ASC"])


def spans_by_name(trace) -> dict:
    return {span.name: span for span in trace.data.spans}


def test_spans_match_the_trajectory(tracker):
    tracker.log_traces(5, [record()])
    (trace,) = logged(tracker)
    spans = spans_by_name(trace)
    assert [s.name for s in sorted(trace.data.spans, key=lambda s: s.start_time_ns)] == [
        ROOT_SPAN, LLM_SPAN, TOOL_SPAN, LLM_SPAN, GRADE_SPAN]
    llm = sorted((s for s in trace.data.spans if s.span_type == SpanType.LLM), key=lambda s: s.start_time_ns)
    root, tool, grade = spans[ROOT_SPAN], spans[TOOL_SPAN], spans[GRADE_SPAN]
    assert (root.span_type, tool.span_type, grade.span_type) == (SpanType.AGENT, SpanType.TOOL, SpanType.EVALUATOR)
    assert all(s.parent_id == root.span_id for s in (*llm, tool, grade))
    # The real times of the rollout, in order: segment 1 < tool call < segment 2 < grading.
    assert [(s.start_time_ns - T0) // MS for s in (root, llm[0], tool, llm[1], grade)] == [0, 1, 12, 23, 35]
    assert llm[0].end_time_ns <= tool.start_time_ns < tool.end_time_ns <= llm[1].start_time_ns
    assert llm[1].end_time_ns <= grade.start_time_ns and root.end_time_ns == grade.end_time_ns
    assert trace.info.execution_duration == 45
    # Each segment: its text, token count and finish reason.
    assert [s.outputs for s in llm] == [SEGMENT_1, SEGMENT_2]
    assert [(s.attributes["num_tokens"], s.attributes["finish_reason"]) for s in llm] == [(40, "stop"), (30, "eos")]
    # The tool call: the code, what the model saw, the raw output, exit status and timings.
    assert tool.inputs == {"code": CODE}
    assert tool.outputs == {"observation": "42\n", "stdout": "42\n", "stderr": ""}
    assert {k: tool.attributes[k] for k in ("ok", "exit_code", "timed_out", "jail_s", "wait_s")} == {
        "ok": True, "exit_code": 0, "timed_out": False, "jail_s": 0.004, "wait_s": 0.006}
    assert grade.outputs == {"answer": "42", "correct": True, "reason": "equal", "reward": 1.0}
    # The trajectory: inputs, outputs and tags.
    assert root.inputs == {"problem": "What is 6 * 7?", "prompt": "Question: What is 6 * 7?\n"}
    assert root.outputs["answer"] == "42" and root.outputs["gold"] == "42" and root.outputs["reward"] == 1.0
    assert root.outputs["response"].endswith(SEGMENT_2)
    assert {k: trace.info.tags[k] for k in ("step", "weights_version", "problem_id", "group", "sample", "correct",
                                            "used_code")} == {
        "step": "5", "weights_version": "3", "problem_id": "7", "group": "0", "sample": "0", "correct": "true",
        "used_code": "true"}
    assert "failure_kind" not in trace.info.tags and "benchmark" not in trace.info.tags
    assert trace.info.state == TraceState.OK and trace.info.request_preview == "What is 6 * 7?"
    assert trace.info.trace_metadata[TraceMetadataKey.SOURCE_RUN] == tracker.run_id


def test_a_failed_trajectory_is_an_error_trace_with_its_cause(tracker):
    tracker.log_traces(2, [record(), record(sample=1, error=SANDBOX_ERROR)])
    (trace,) = logged(tracker, "tags.correct = 'false'")
    assert trace.info.state == TraceState.ERROR
    assert trace.info.tags["failure_kind"] == "sandbox_failed"
    root = spans_by_name(trace)[ROOT_SPAN]
    assert root.status.status_code == SpanStatusCode.ERROR
    assert root.status.description == SANDBOX_ERROR  # the exception chain, down to its root cause
    assert set(root.outputs) == {"response", "gold"}  # no answer, grade or reward
    (event,) = root.events
    assert event.name == "exception" and event.attributes["exception.message"] == SANDBOX_ERROR
    # The tool call that never came back is the failed span; nothing was graded.
    tool = spans_by_name(trace)[TOOL_SPAN]
    assert tool.status.status_code == SpanStatusCode.ERROR and tool.start_time_ns == T0 + 11 * MS
    assert [e.attributes["exception.message"] for e in tool.events] == [SANDBOX_ERROR]
    assert GRADE_SPAN not in spans_by_name(trace)
    assert [t.info.state for t in logged(tracker, "tags.failure_kind = 'sandbox_failed'")] == [TraceState.ERROR]


def test_a_session_holds_exactly_one_grpo_group(tracker):
    # Two EnvRunners, each with its share of the step's problems (both number their groups from 0).
    rollouts = [{"stats": {"groups": 2}, "traces": [record("a", g, k) for g in range(2) for k in range(3)]},
                {"stats": {"groups": 1}, "traces": [record("b", 0, k) for k in range(3)]}]
    tracker.log_traces(1, gather_traces(rollouts))
    tracker.log_traces(2, gather_traces(rollouts[1:]))
    sessions = {}
    for trace in logged(tracker):
        sessions.setdefault(trace.info.trace_metadata[TraceMetadataKey.TRACE_SESSION], []).append(trace.info.tags)
    assert len(sessions) == 4
    for tags in sessions.values():  # one step's one group, all G samples
        assert len({(t["step"], t["group"]) for t in tags}) == 1
        assert sorted(t["sample"] for t in tags) == ["0", "1", "2"]
    assert sorted({(t["step"], t["group"], t["problem_id"]) for tags in sessions.values() for t in tags}) == [
        ("1", "0", "a"), ("1", "1", "a"), ("1", "2", "b"), ("2", "0", "b")]


def test_evaluation_traces_carry_their_benchmark(tracker):
    tracker.log_traces(0, [record("p1"), record("p2", group=1, correct=False)], benchmark="tiny_test")
    tracker.log_traces(0, [record("p1")], benchmark="aime24")
    traces = logged(tracker, "tags.benchmark = 'tiny_test'")
    assert sorted(t.info.tags["problem_id"] for t in traces) == ["p1", "p2"]
    assert all("tiny_test" in t.info.trace_metadata[TraceMetadataKey.TRACE_SESSION] for t in traces)
    assert [t.info.tags["problem_id"] for t in logged(tracker, "tags.benchmark = 'aime24'")] == ["p1"]


def test_logging_traces_never_waits_for_the_store(tracker, monkeypatch):
    release = threading.Event()
    from torl_rllib.tracking import tracker as tracker_module

    write = tracker_module.write_traces
    monkeypatch.setattr(tracker_module, "write_traces", lambda *a, **k: (release.wait(30), write(*a, **k)))
    start = time.perf_counter()
    tracker.log_traces(1, [record()])
    assert time.perf_counter() - start < 0.5 and not tracker._trace_sending.done()
    release.set()
    assert len(logged(tracker)) == 1


def test_traces_an_outage_held_back_are_backfilled(tracker, monkeypatch, caplog):
    from mlflow.tracing.client import TracingClient

    start_trace = TracingClient.start_trace

    def down(self, trace_info):
        raise MlflowException("API request failed: connection refused")

    monkeypatch.setattr(TracingClient, "start_trace", down)
    tracker.log_traces(1, [record("1")])
    assert logged(tracker) == []
    monkeypatch.setattr(TracingClient, "start_trace", start_trace)
    tracker.log_traces(2, [record("2")])
    assert sorted(t.info.tags["step"] for t in logged(tracker)) == ["1", "2"]
    assert [r.getMessage().split(" (")[0] for r in caplog.records if r.levelname == "WARNING"] == [
        "MLflow tracking failed in send_traces", "MLflow tracking works again"]


def test_finish_sends_what_is_left_and_traces_can_be_turned_off(tmp_path):
    tracker = MlflowTracker(TrackingConfig(plots=False), run_name="finish", output_dir=tmp_path)
    tracker.start({})
    tracker.log_traces(1, [record()])
    tracker.finish()
    client = MlflowClient(tracker.tracking_uri)
    assert len(client.search_traces(locations=[tracker.experiment_id], run_id=tracker.run_id)) == 1
    off = MlflowTracker(TrackingConfig(plots=False, traces=False), run_name="off", output_dir=tmp_path)
    off.start({})
    off.log_traces(1, [record()])
    off.finish()
    assert client.search_traces(locations=[off.experiment_id], run_id=off.run_id) == []


def test_trace_ids_are_unique_whatever_seeds_the_random_module():
    """Training seeds ``random``; runs (and processes) seeded alike must not repeat trace ids."""
    import random

    from torl_rllib.tracking.traces import build_trace

    ids = set()
    for _ in range(3):
        random.seed(0)
        trace = build_trace(record(), experiment_id="0", run_id="r", step=1)
        ids.add(trace.info.trace_id)
        ids.update(span.span_id for span in trace.data.spans)
    assert len(ids) == 3 * (1 + 5)


def test_every_failed_trajectory_is_kept_and_a_few_others():
    items = [record(sample=k, error=SANDBOX_ERROR if k in (1, 5) else None) for k in range(8)]
    assert [r.sample for r in select_traced(items, 2)] == [0, 1, 2, 5]
    assert [r.sample for r in select_traced(items, 0)] == [1, 5]
    with pytest.raises(ValueError, match="traces_per_step must be >= 0"):
        TrackingConfig(traces_per_step=-1)


def test_the_tool_loop_stamps_the_real_times_of_each_step():
    """A real ``run_trajectory`` (scripted policy, an executor answering like the sandbox): its
    record's segments and tool call follow one another in wall-clock time."""
    from types import SimpleNamespace

    from sandbox.result import ExecutionResult
    from tests.grpo.conftest import ScriptedEngine
    from torl_rllib.rollout.engine import SamplingParams
    from torl_rllib.rollout.tool_loop import ToolLoopConfig, run_trajectory
    from tools.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()

    async def execute(code):
        await asyncio.sleep(0.02)
        return ExecutionResult(stdout="42\n", exit_code=0, duration_s=0.015)

    engine = ScriptedEngine(tokenizer, "Let me compute.\n```python\nprint(6*7)\n```\n```output" + SEGMENT_2)
    prompt = tokenizer.encode("What is 6 * 7?", add_special_tokens=False)
    traj = asyncio.run(run_trajectory(engine, execute, tokenizer, prompt, SamplingParams(max_new_tokens=1),
                                      ToolLoopConfig(max_response_tokens=200), seed=0))
    problem = SimpleNamespace(id=3, source="tiny", problem="What is 6 * 7?", answer="42")
    rec = trace_record(problem, traj, tokenizer, group=0, sample=0, weights_version=0, answer="42")
    (first, second), (call,) = rec.segments, rec.tool_calls
    assert rec.start_ns <= first.start_ns < first.end_ns <= call.start_ns < call.end_ns <= second.start_ns
    assert second.start_ns < second.end_ns <= rec.end_ns
    assert call.end_ns - call.start_ns >= 20 * MS and call.jail_s == 0.015 and call.wait_s >= 0.004
    assert first.text.endswith("```output") and second.text.startswith(" So the answer")
    assert (first.finish_reason, second.finish_reason) == ("stop", "eos")
    observation = tokenizer.encode(call.observation, add_special_tokens=False)
    assert "42" in call.observation and second.context_tokens == len(prompt) + first.num_tokens + len(observation)
    assert rec.used_code and rec.prompt == "What is 6 * 7?"


@pytest.mark.slow
def test_a_short_training_run_logs_its_traces(tmp_path, ray_cluster):
    """Two steps of the tiny demo (2 problems x 4 samples) against a real sqlite store: MLflow
    finds every failed trajectory and ``traces_per_step`` others per step, linked to the run."""
    from tests.conftest import REPO
    from torl_rllib.recipe import load_recipe
    from torl_rllib.tracking.callback import tracking_callback
    from torl_rllib.tracking.step_metrics import RESULT_KEY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["training.prompts_per_step=2", "training.group_size=4", "run.steps=2", "tracking.plots=false",
                 "tracking.log_model=false", "tracking.traces_per_step=3"]
    algo = load_recipe(REPO / "experiments" / "tiny_cpu.yaml", overrides).build_config().tracking(tracking_uri=uri)
    algo = algo.build_algo()
    expected = {}
    for step in (1, 2):
        failed = int(algo.train()[RESULT_KEY].get("failed_trajectories", 0))
        expected[str(step)] = failed + min(3, 8 - failed)
    tracker = tracking_callback(algo).tracker
    algo.stop()
    traces = MlflowClient(uri).search_traces(locations=[tracker.experiment_id], run_id=tracker.run_id)
    steps = [t.info.tags["step"] for t in traces]
    assert {step: steps.count(step) for step in expected} == expected and len(traces) == sum(expected.values())
    for trace in traces:
        names = [s.name for s in trace.data.spans]
        assert names[0] == ROOT_SPAN and LLM_SPAN in names and (GRADE_SPAN in names or trace.info.tags.get(
            "failure_kind")), names
        assert trace.info.trace_metadata[TraceMetadataKey.SOURCE_RUN] == tracker.run_id
        root = spans_by_name(trace)[ROOT_SPAN]
        assert all(root.start_time_ns <= s.start_time_ns <= s.end_time_ns <= root.end_time_ns
                   for s in trace.data.spans)
        session = trace.info.trace_metadata[TraceMetadataKey.TRACE_SESSION]
        assert session == f"step-{trace.info.tags['step']}/group-{trace.info.tags['group']}/run-{tracker.run_id}"
