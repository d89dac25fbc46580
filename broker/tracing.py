"""OpenTelemetry traces of one request's life (issue 18.7): proposal, decision, approvals,
collection and completion in one trace, every span carrying ``jitgate.request_id``.

These steps arrive in different HTTP calls (the agent's, each approver's click, a CLI), often
on different replicas, so no incoming context joins them. The trace is **derived from the
request id**: trace id = the first 16 bytes of ``SHA-256("jitgate.request\\0" + id)``, and every
span of the request is a child of the same remote parent span (the next 8 bytes), the request
itself. Any replica, and a collector or a person holding only the request id, finds the trace
(:func:`trace_id_for`) without anything stored.

* :func:`traced` wraps a lifecycle operation in a span. ``submit`` learns its request id only
  once the request exists, so its span (``jitgate.propose``) and the ``jitgate.decision`` span
  inside it are recorded with their real start and end times and emitted when it returns.
* :func:`step` times a part of an operation (the policy decision) as a child span.
* Off unless configured: with no tracer (:data:`_tracer` None) the wrappers call straight through
  and :func:`step` is a shared no-op context; no OpenTelemetry object is made.
* :func:`configure` turns it on from the standard variables: an OTLP exporter when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set (``pip install
  'jitgate[otel]'``), the service name from ``OTEL_SERVICE_NAME``; ``OTEL_SDK_DISABLED=true``
  keeps it off. Tests call :func:`enable` with their own provider (an in-memory exporter).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, TypeVar
from urllib.parse import unquote

from .errors import ConfigError

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None  # the SDK provider configure() built (flushed at shutdown)
ATTR = "jitgate.request_id"

T = TypeVar("T")


def _ids(request_id: str) -> tuple[int, int]:
    d = hashlib.sha256(b"jitgate.request\0" + request_id.encode()).digest()
    return int.from_bytes(d[:16], "big") or 1, int.from_bytes(d[16:24], "big") or 1


def trace_id_for(request_id: str) -> str:
    """The trace id (32 hex digits) of a request's trace: what to search a tracing backend for."""
    return f"{_ids(request_id)[0]:032x}"


def request_context(request_id: str):
    """An OpenTelemetry context whose current span is the request's (remote) root."""
    from opentelemetry import trace  # noqa: PLC0415 - only while tracing is on

    trace_id, span_id = _ids(request_id)
    sc = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(sc))


def enabled() -> bool:
    return _tracer is not None


def enable(provider) -> None:
    """Trace with ``provider`` (an SDK ``TracerProvider``) from now on."""
    global _tracer
    _tracer = provider.get_tracer("jitgate")


def disable() -> None:
    global _tracer, _provider
    _tracer = None
    if _provider is not None:
        _provider.shutdown()  # flushes what the batch processor holds
        _provider = None


def shutdown() -> None:
    """Flush and stop what :func:`configure` started (a provider a test enabled stays)."""
    if _provider is not None:
        disable()


def configure(env: Mapping[str, str]) -> bool:
    """Turn tracing on when the standard OTLP variables ask for it; True when on. Raises
    :class:`ConfigError` when an endpoint is set but the exporter is not installed."""
    global _provider
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return False
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    module = f"opentelemetry.exporter.otlp.proto.{'grpc' if protocol == 'grpc' else 'http'}.trace_exporter"
    try:
        exporter_class = importlib.import_module(module).OTLPSpanExporter
    except ImportError:
        raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
                          "pip install 'jitgate[otel]' (or unset it to run without traces)") from None
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    # The settings may come from .env, which never reaches os.environ (where the exporter would
    # look): the endpoint and headers are passed explicitly, as the OTLP spec defines them.
    traces_endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    base = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    endpoint = traces_endpoint or (base if protocol == "grpc" else base.rstrip("/") + "/v1/traces")
    kwargs: dict[str, Any] = {"endpoint": endpoint}
    headers = _headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or "")
    if headers:
        kwargs["headers"] = headers
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "jitgate"}))
    provider.add_span_processor(BatchSpanProcessor(exporter_class(**kwargs)))
    _provider = provider
    enable(provider)
    return True


def _headers(text: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``key=value`` pairs, comma-separated, values URL-encoded."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(value.strip())
    return out


# ---------------------------------------------------------------------- spans recorded for later
@dataclass
class _Step:
    name: str
    start_ns: int
    end_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


_pending: contextvars.ContextVar[list[_Step] | None] = contextvars.ContextVar("jitgate_pending_spans", default=None)


class _NoStep:
    """What :func:`step` gives while tracing is off: attributes go nowhere."""

    def __enter__(self) -> "_NoStep":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        return None


_NO_STEP = _NoStep()


class _LiveStep:
    """A child span of the current request span, or a step recorded for a span emitted later;
    outside a traced operation (no request to attach it to) it records nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.record: _Step | None = None
        self.cm: Any = None
        self.span: Any = None

    def __enter__(self) -> "_LiveStep":
        pending = _pending.get()
        if pending is not None:
            self.record = _Step(self.name, time.time_ns())
            pending.append(self.record)
            return self
        from opentelemetry import trace  # noqa: PLC0415

        rid = (getattr(trace.get_current_span(), "attributes", None) or {}).get(ATTR)
        if rid:
            self.cm = _tracer.start_as_current_span(self.name, attributes={ATTR: rid}, record_exception=True,
                                                    set_status_on_exception=True)
            self.span = self.cm.__enter__()
        return self

    def set(self, **attributes: Any) -> None:
        attrs = {f"jitgate.{k}": _attr(v) for k, v in attributes.items() if v is not None}
        if self.record is not None:
            self.record.attributes.update(attrs)
        elif self.span is not None:
            self.span.set_attributes(attrs)

    def __exit__(self, et, e, tb) -> None:
        if self.record is not None:
            self.record.end_ns = time.time_ns()
            self.record.error = e
        elif self.cm is not None:
            self.cm.__exit__(et, e, tb)


def step(name: str):
    """Time a part of a traced operation as a child span (``with step("jitgate.decision") as s:
    ... s.set(outcome=...)``); a shared no-op while tracing is off."""
    if _tracer is None:
        return _NO_STEP
    return _LiveStep(name)


def traced_step(name: str, describe: Callable[[Any], dict]):
    """Wrap a synchronous function (the policy decision) in :func:`step`; ``describe(result)``
    gives the attributes. Calls straight through while tracing is off."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if _tracer is None:
                return fn(*args, **kwargs)
            with _LiveStep(name) as st:
                result = fn(*args, **kwargs)
                st.set(**describe(result))
                return result

        return inner

    return wrap


def _attr(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


# ---------------------------------------------------------------------- wrapping operations
def traced(name: str, *, attributes: Callable[..., dict] | None = None, result_id: Callable[[Any], str | None] | None = None):
    """Wrap an async lifecycle method (``self, request_id, ...``) in the span ``name`` of its
    request's trace. ``attributes(*args, **kwargs)`` adds attributes from the call; with
    ``result_id`` the request id comes from the result (``submit``): the span and the steps
    inside it are emitted once it returns."""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        # Not itself a coroutine function: while tracing is off it hands back the operation's own
        # coroutine, so the caller's `await` costs no extra frame.
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            if _tracer is None:
                return fn(self, *args, **kwargs)
            try:
                extra = attributes(*args, **kwargs) if attributes is not None else {}
            except (TypeError, AttributeError, IndexError):  # called another way: the span goes without them
                extra = {}
            if result_id is not None:
                return _deferred(name, fn, self, args, kwargs, extra, result_id)
            return _live(name, fn, self, args, kwargs, extra)

        return inner

    return wrap


async def _live(name, fn, self, args, kwargs, extra):
    rid = args[0] if args else kwargs.get("request_id")
    if not isinstance(rid, str):
        return await fn(self, *args, **kwargs)
    attrs = {ATTR: rid, **{f"jitgate.{k}": _attr(v) for k, v in extra.items() if v is not None}}
    with _tracer.start_as_current_span(name, context=request_context(rid), attributes=attrs, record_exception=True,
                                       set_status_on_exception=True) as span:
        result = await fn(self, *args, **kwargs)
        status = getattr(result, "status", None)
        if isinstance(status, str):
            span.set_attribute("jitgate.status", status)
        return result


async def _deferred(name, fn, self, args, kwargs, extra, result_id):
    from opentelemetry import trace  # noqa: PLC0415

    steps: list[_Step] = []
    token = _pending.set(steps)
    start = time.time_ns()
    try:
        result = await fn(self, *args, **kwargs)
    finally:
        _pending.reset(token)
    rid = result_id(result)
    if not rid:
        return result  # nothing was recorded: no request to follow
    attrs = {ATTR: rid, **{f"jitgate.{k}": _attr(v) for k, v in extra.items() if v is not None}}
    req = result[0] if isinstance(result, tuple) else result
    status = getattr(req, "status", None)
    if isinstance(status, str):
        attrs["jitgate.status"] = status
    span = _tracer.start_span(name, context=request_context(rid), attributes=attrs, start_time=start)
    ctx = trace.set_span_in_context(span)
    for s in steps:
        child = _tracer.start_span(s.name, context=ctx, attributes={ATTR: rid, **s.attributes}, start_time=s.start_ns)
        if s.error is not None:
            child.record_exception(s.error)
            child.set_status(trace.Status(trace.StatusCode.ERROR, s.error.__class__.__name__))
        child.end(end_time=s.end_ns or time.time_ns())
    span.end()
    return result


@contextlib.contextmanager
def enabled_with(provider):
    """Trace with ``provider`` inside the block (tests)."""
    enable(provider)
    try:
        yield
    finally:
        disable()
