"""MLflow traces from trajectory records (``torl_rllib.rollout.trace_records``).

A trace is one trajectory. Its root span ``trajectory`` (AGENT) has the problem and the prompt as
inputs and the response, answer, gold answer and reward as outputs; under it, an LLM span
``generate`` per generation segment, a TOOL span ``python`` per code execution and an EVALUATOR
span ``grade``, each with the wall-clock times recorded during the rollout. A failed trajectory's
trace is an ERROR whose root span holds the exception chain; the span of the step that failed is
an ERROR too. The G trajectories of a GRPO group share one MLflow session.

The spans are built in memory with MLflow's span classes over a private OpenTelemetry tracer (no
global tracing state, nothing exported on its own), and ``write_traces`` sends them with the
caller's client: a store that is down raises, so the tracker can hold them back and try again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

from mlflow import MlflowClient
from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode, SpanType, Trace, TraceData, TraceInfo
from mlflow.entities import TraceLocation, TraceState
from mlflow.entities.span import LiveSpan
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (
    TRACE_REQUEST_RESPONSE_PREVIEW_MAX_LENGTH_OSS, TRACE_SCHEMA_VERSION, TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey, TraceMetadataKey, TraceTagKey,
)
from mlflow.tracing.utils import generate_mlflow_trace_id_from_otel_trace_id
from opentelemetry import trace as otel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator

from torl_rllib.rollout.failures import ENGINE_FAILED, GRADING_FAILED, SANDBOX_FAILED, failure_kind

if TYPE_CHECKING:
    from torl_rllib.rollout.trace_records import TraceRecord

__all__ = ["build_trace", "session_id", "write_traces", "ROOT_SPAN", "LLM_SPAN", "TOOL_SPAN", "GRADE_SPAN"]

ROOT_SPAN, LLM_SPAN, TOOL_SPAN, GRADE_SPAN = "trajectory", "generate", "python", "grade"
MAX_TAG_CHARS = 250  # MLflow's limit on a trace metadata value (the session id)
# The span in flight when a trajectory failed, by failure kind (prompt_too_long: none ran).
FAILED_SPAN = {ENGINE_FAILED: LLM_SPAN, SANDBOX_FAILED: TOOL_SPAN, GRADING_FAILED: GRADE_SPAN}


class _OsRandomIds(IdGenerator):
    """Trace and span ids from the OS's randomness. OpenTelemetry's default draws them from the
    ``random`` module, which training seeds: every run would repeat the same trace ids."""

    def generate_span_id(self) -> int:
        return int.from_bytes(os.urandom(8), "big") or 1

    def generate_trace_id(self) -> int:
        return int.from_bytes(os.urandom(16), "big") or 1


# No resource: the store would turn its attributes (service.name, ...) into tags of every trace.
_tracer = TracerProvider(resource=Resource.get_empty(), id_generator=_OsRandomIds()).get_tracer(__name__)


def session_id(run_id: str, step: int, record: TraceRecord, benchmark: str | None = None) -> str:
    """The MLflow session of a trajectory: its run, step and GRPO group (for an evaluation, its
    benchmark and problem, whose k samples form the group)."""
    group = f"{benchmark}/problem-{record.problem_id}" if benchmark else f"group-{record.group}"
    run = f"/run-{run_id}"  # keeps sessions of different runs apart
    return f"step-{step}/{group}"[: MAX_TAG_CHARS - len(run)] + run


def _flag(value: bool | None) -> str:
    return "true" if value else "false"


def _preview(text: str) -> str:
    limit = TRACE_REQUEST_RESPONSE_PREVIEW_MAX_LENGTH_OSS
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Spans:
    """The spans of one trace under construction, all children of its root."""

    def __init__(self, record: TraceRecord):
        root = _tracer.start_span(ROOT_SPAN, start_time=record.start_ns)
        self.trace_id = generate_mlflow_trace_id_from_otel_trace_id(root.get_span_context().trace_id)
        self.root = LiveSpan(root, self.trace_id, SpanType.AGENT)
        self._context = otel.set_span_in_context(root)
        self.children: list[LiveSpan] = []

    def child(self, name: str, span_type: str, start_ns: int, end_ns: int, inputs: Any, outputs: Any = None,
              attributes: dict | None = None, error: str | None = None, failure: tuple[str, str] | None = None):
        """A finished child span; ``error``: its ERROR status; ``failure``: (kind, exception chain)
        of the infrastructure failure that ended the trajectory here."""
        span = LiveSpan(_tracer.start_span(name, context=self._context, start_time=start_ns), self.trace_id, span_type)
        span.set_inputs(inputs)
        span.set_attributes(attributes or {})
        if error is not None:
            span.set_status(SpanStatus(SpanStatusCode.ERROR, error))
        if failure is not None:
            _failed(span, *failure, at_ns=end_ns)
        span.end(outputs=outputs, end_time_ns=max(start_ns, end_ns))
        self.children.append(span)


def _failed(span: LiveSpan, kind: str, error: str, at_ns: int) -> None:
    """Mark ``span`` as where a trajectory failed: ERROR, with the exception chain as its event."""
    span.set_status(SpanStatus(SpanStatusCode.ERROR, error))
    span.add_event(SpanEvent("exception", timestamp=at_ns, attributes={
        "exception.type": kind, "exception.message": error}))


def build_trace(record: TraceRecord, *, experiment_id: str, run_id: str, step: int,
                benchmark: str | None = None) -> Trace:
    """The MLflow trace of one trajectory record (see the module docstring), tagged with ``step``
    (and ``benchmark`` for an evaluation). Its metadata names ``run_id`` as its source run, as
    for a trace made inside an active run: MLflow lists it with that run's traces."""
    spans = _Spans(record)
    last_ns = record.start_ns  # where the step that failed began: the end of the one before
    for i, segment in enumerate(record.segments):
        spans.child(LLM_SPAN, SpanType.LLM, segment.start_ns, segment.end_ns,
                    inputs={"segment": i, "context_tokens": segment.context_tokens}, outputs=segment.text,
                    attributes={"num_tokens": segment.num_tokens, "finish_reason": segment.finish_reason,
                                SpanAttributeKey.CHAT_USAGE: {
                                    "input_tokens": segment.context_tokens, "output_tokens": segment.num_tokens,
                                    "total_tokens": segment.context_tokens + segment.num_tokens}})
        last_ns = max(last_ns, segment.end_ns)
    for call in record.tool_calls:
        spans.child(TOOL_SPAN, SpanType.TOOL, call.start_ns, call.end_ns, inputs={"code": call.code},
                    outputs={"observation": call.observation, "stdout": call.stdout, "stderr": call.stderr},
                    attributes={"ok": call.ok, "exit_code": call.exit_code, "timed_out": call.timed_out,
                                "latency_s": call.latency_s, "jail_s": call.jail_s, "wait_s": call.wait_s},
                    error=None if call.ok else (call.stderr.strip().splitlines() or [call.observation])[-1])
        last_ns = max(last_ns, call.end_ns)
    kind = failure_kind(record.error) if record.error else None
    failure = (kind, record.error) if kind else None
    failed_span = FAILED_SPAN.get(kind)
    if record.grading_ns is not None and (kind is None or failed_span == GRADE_SPAN):
        spans.child(GRADE_SPAN, SpanType.EVALUATOR, *record.grading_ns, inputs={"gold": record.gold},
                    outputs=None if kind else {"answer": record.answer, "correct": record.correct,
                                               "reason": record.grade_reason, "reward": record.reward},
                    failure=failure)
    elif failed_span is not None:
        spans.child(failed_span, SpanType.LLM if failed_span == LLM_SPAN else SpanType.TOOL, last_ns,
                    record.end_ns, inputs={"failure_kind": kind}, failure=failure)
    end_ns = max([record.end_ns, *(s.end_time_ns for s in spans.children)])

    root = spans.root
    inputs = {"problem": record.problem, "prompt": record.prompt}
    outputs = {"response": record.response, "answer": record.answer, "gold": record.gold,
               "reward": record.reward, "correct": record.correct}
    outputs = {key: value for key, value in outputs.items() if value is not None}  # none: failed, or no reward
    root.set_inputs(inputs)
    root.set_attributes({"problem_id": record.problem_id, "source": record.source, "group": record.group,
                         "sample": record.sample, "weights_version": record.weights_version, "step": step,
                         "grade_reason": record.grade_reason, "retries": record.retries})
    if failure:
        _failed(root, *failure, at_ns=record.end_ns)
    root.end(outputs=outputs, end_time_ns=end_ns)

    tags = {TraceTagKey.TRACE_NAME: ROOT_SPAN, "step": str(step), "weights_version": str(record.weights_version),
            "problem_id": record.problem_id, "group": str(record.group), "sample": str(record.sample),
            "correct": _flag(record.correct), "used_code": _flag(record.used_code)}
    if kind:
        tags["failure_kind"] = kind
    if benchmark:
        tags["benchmark"] = benchmark
    info = TraceInfo(
        trace_id=spans.trace_id, trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=record.start_ns // 1_000_000, execution_duration=(end_ns - record.start_ns) // 1_000_000,
        state=TraceState.ERROR if record.error else TraceState.OK,
        request_preview=_preview(record.problem), response_preview=_preview(record.error or record.response),
        trace_metadata={TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION), TraceMetadataKey.SOURCE_RUN: run_id,
                        TraceMetadataKey.TRACE_SESSION: session_id(run_id, step, record, benchmark)},
        tags=tags,
    )
    return Trace(info, TraceData(spans=[s.to_immutable_span() for s in (root, *spans.children)]))


def write_traces(client: MlflowClient, traces: Sequence[Trace]) -> None:
    """Write ``traces`` (of one experiment) to ``client``'s store: each trace's info, then all
    their spans in one call (a store that keeps no spans, e.g. a file store, gets them as each
    trace's artifact instead, as MLflow's own exporter does). Raises when the store fails;
    writing the same traces again is harmless."""
    if not traces:
        return
    tracing = TracingClient(client.tracking_uri)
    infos = [tracing.start_trace(trace.info) for trace in traces]
    try:
        tracing.log_spans(traces[0].info.experiment_id, [span for t in traces for span in t.data.spans])
    except NotImplementedError:
        for info, trace in zip(infos, traces):
            tracing._upload_trace_data(info, trace.data)
