"""OpenTelemetry traces (issue 18.7): one trace follows one request from proposal through the
decision, the approvals, the collection and the completion, every span carrying the request
id; off (no OpenTelemetry at all) unless configured. Checked with the SDK's in-memory exporter."""

from __future__ import annotations

import sys
import types

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker import tracing
from broker.errors import ConfigError


@pytest.fixture
def spans():
    """Tracing on, into an in-memory exporter, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.enabled_with(provider):
        yield exporter
    provider.shutdown()


async def _lifecycle(h) -> str:
    rid = (await h.propose()).json()["id"]
    await h.approve(rid, "bob")
    await h.approve(rid, "erin")
    assert (await h.collect(rid)).status_code == 200
    assert (await h.complete(rid)).status_code == 200
    return rid


async def test_a_request_lifecycle_is_one_trace_with_the_request_id_on_every_span(harness, spans):
    """Issue 18.7: propose -> two approvals -> collect -> complete, across separate calls, make
    one trace (its id derived from the request id) whose every span carries jitgate.request_id."""
    rid = await _lifecycle(harness)
    got = [s for s in spans.get_finished_spans() if s.attributes.get(tracing.ATTR) == rid]
    names = [s.name for s in got]
    for name in ("jitgate.propose", "jitgate.decision", "jitgate.collect", "jitgate.complete"):
        assert names.count(name) >= 1, names
    assert names.count("jitgate.approve") == 2
    assert len(spans.get_finished_spans()) == len(got)  # no span without the request id
    assert {f"{s.context.trace_id:032x}" for s in got} == {tracing.trace_id_for(rid)}
    propose = next(s for s in got if s.name == "jitgate.propose")
    decision = next(s for s in got if s.name == "jitgate.decision")
    assert decision.parent.span_id == propose.context.span_id  # the decision inside the proposal
    assert propose.start_time <= decision.start_time <= decision.end_time <= propose.end_time
    assert decision.attributes["jitgate.outcome"] == "require_approval"
    assert propose.attributes["jitgate.agent"] == "deploy-bot" and propose.attributes["jitgate.status"] == "pending"
    approvers = sorted(s.attributes["jitgate.approver"] for s in got if s.name == "jitgate.approve")
    assert approvers == ["bob", "erin"]
    roots = {s.parent.span_id for s in got if s.name != "jitgate.decision"}
    assert len(roots) == 1  # every step hangs from the same request root


async def test_two_requests_are_two_traces(harness, spans):
    """Issue 18.7: each request has its own trace."""
    a = (await harness.propose()).json()["id"]
    b = (await harness.propose(justification="another task")).json()["id"]
    ids = {s.attributes[tracing.ATTR]: s.context.trace_id for s in spans.get_finished_spans()}
    assert a != b and ids[a] != ids[b]


async def test_a_refused_step_is_a_span_with_an_error(harness, spans):
    """Issue 18.7: a step the broker refuses (collecting before approval) shows as an error span
    of the request's trace."""
    rid = (await harness.propose()).json()["id"]
    assert (await harness.collect(rid)).status_code >= 400
    collect = next(s for s in spans.get_finished_spans() if s.name == "jitgate.collect")
    assert collect.status.status_code.name == "ERROR" and collect.attributes[tracing.ATTR] == rid


async def test_tracing_off_makes_no_spans_and_no_opentelemetry_objects(harness):
    """Issue 18.7 (zero overhead when off): without configuration no tracer exists, the
    wrappers call straight through and the steps are one shared no-op."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert not tracing.enabled()
    await _lifecycle(harness)
    assert exporter.get_finished_spans() == ()
    assert tracing.step("x") is tracing.step("y")


def test_an_otlp_endpoint_without_the_exporter_refuses_to_start(monkeypatch):
    """Issue 18.7: OTEL_EXPORTER_OTLP_ENDPOINT set but the `otel` extra missing is a clear
    ConfigError naming it, never a broker that silently traces nothing."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"jitgate\[otel\]"):
        tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.enabled()
    assert tracing.configure({}) is False
    assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}) is False


def test_the_otlp_exporter_gets_the_endpoint_and_headers_from_the_settings(monkeypatch):
    """Issue 18.7: settings read from .env never reach os.environ, so the OTLP exporter is given
    the endpoint (with /v1/traces for http/protobuf) and headers the broker's settings hold."""
    made: list[dict] = []

    class Exporter(InMemorySpanExporter):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            made.append(kwargs)

    fake = types.ModuleType("fake_otlp")
    fake.OTLPSpanExporter = Exporter
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", fake)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", fake)
    try:
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                                  "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=a%3Db, other = c"})
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
    try:
        tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    finally:
        tracing.shutdown()
    assert made == [{"endpoint": "http://collector:4318/v1/traces", "headers": {"x-api-key": "a=b", "other": "c"}},
                    {"endpoint": "http://collector:4317"}]


def test_the_trace_id_is_derived_from_the_request_id():
    """Issue 18.7: any replica (or a person with the request id) finds the trace."""
    assert tracing.trace_id_for("r-1") == tracing.trace_id_for("r-1") != tracing.trace_id_for("r-2")
    assert len(tracing.trace_id_for("r-1")) == 32
