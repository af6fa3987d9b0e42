"""Tracing, metrics and logging setup shared by every service.

Traces: the OpenTelemetry SDK with a resource naming the service; both buses put
W3C ``traceparent`` in message headers (one PRODUCER span per published batch, one
CONSUMER span per handled batch) and the gateway adds FastAPI instrumentation, so
one tick can be followed from ingest to a gateway response. Metrics:
prometheus-client, the ``tokenpulse_*`` families below (every service serves them on
``/metrics``). Logs: structlog, console or JSON lines, with the current trace and
span ids; an exception is one line (``error``, ``cause``, ``where``), never a rendered
traceback with locals (see :func:`compact_exceptions`).
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import Counter, Gauge, Histogram
from structlog.typing import EventDict

_provider: TracerProvider | None = None

# --- metrics (prometheus-client, default registry) ------------------------------------------------
# Bus metrics are recorded by both buses (shared code in bus/base.py and the adapters), so embedded
# and distributed mode expose the same families; label ``group`` is the consumer group's service part
# (``ingest``, ``scoring``, ``writer`` ...), ``topic`` the full topic name.

EVENTS_CONSUMED = Counter(
    "tokenpulse_events_consumed",
    "Events handed to a handler (valid ones), per consumer group and topic",
    ["group", "topic"],
)
EVENTS_PUBLISHED = Counter("tokenpulse_events_published", "Events published, per topic", ["topic"])
BATCH_SECONDS = Histogram(
    "tokenpulse_batch_processing_seconds",
    "Time one handled batch took (validation excluded, retries and dead-lettering included)",
    ["group", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_AGE_SECONDS = Histogram(
    "tokenpulse_event_age_seconds",
    "Seconds from an event's creation (its `produced_at`) to the end of its processing, per batch's oldest event",
    ["group", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DEAD_LETTERS = Counter(
    "tokenpulse_dead_letters",
    "Messages sent to the dead-letter topic, per consumer group and topic",
    ["group", "topic"],
)
CONSUMER_LAG = Gauge(
    "tokenpulse_consumer_lag",
    "Messages between a consumer's position and the partition's end, measured at each fetched batch (Kafka)",
    ["group", "topic", "partition"],
)
CONNECTOR_UP = Gauge(
    "tokenpulse_connector_up",
    "1 while an ingest connector (exchange feed) is connected and delivering, else 0",
    ["connector"],
)
CONNECTOR_LAST_EVENT = Gauge(
    "tokenpulse_connector_last_event_timestamp_seconds",
    "Unix time of the last event a connector delivered",
    ["connector"],
)
CONNECTOR_EVENTS = Counter("tokenpulse_connector_events", "Events (ticks) a connector delivered", ["connector"])


def set_connector_health(connector: str, up: bool) -> None:
    """For ingest connectors: report connected-and-delivering (True) or down/reconnecting (False)."""
    CONNECTOR_UP.labels(connector).set(1 if up else 0)


def connector_delivered(connector: str, events: int = 1) -> None:
    """For ingest connectors: count delivered events and stamp the time of the last one."""
    if events > 0:
        CONNECTOR_EVENTS.labels(connector).inc(events)
        CONNECTOR_LAST_EVENT.labels(connector).set_to_current_time()


def setup_tracing(
    service_name: str, exporter: str = "none", extra_processors: list[SpanProcessor] | None = None
) -> TracerProvider:
    """Install (once per process) and return the global tracer provider."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter == "console":
            _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    for processor in extra_processors or []:
        _provider.add_span_processor(processor)
    return _provider


REQUEST_ID: ContextVar[str | None] = ContextVar("tokenpulse_request_id", default=None)
"""the id of the request being served (the gateway sets it): every log line made meanwhile carries it"""


def add_request_id(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: the current request's ``request_id`` (a plain ContextVar: a few ns per request,
    where structlog's ``bound_contextvars`` costs microseconds on every request, logged or not)."""
    rid = REQUEST_ID.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


def add_trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` (hex, as trace viewers show them)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


# --- logs -----------------------------------------------------------------------------------------
MAX_ERROR_CHARS = 300
"""an exception's ``type: message`` is cut here: enough to recognise it, never a page of input"""
MAX_VALUE_CHARS = 2000
"""any other string of a log line is cut here"""
OWN_FRAMES = 6
"""``where`` names at most this many of our own frames (innermost), plus the frame that raised"""
OWN_MODULES = ("tokenpulse",)
# the gateway's API keys (``tp_`` + 43 URL-safe characters): blanked wherever a message quotes one
KEY_SHAPED = re.compile(r"tp_[A-Za-z0-9_-]{16,}")


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def _clip(text: str, limit: int) -> str:
    text = KEY_SHAPED.sub("tp_[redacted]", text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(exc: BaseException) -> str:
    """``Type: message``, one line, at most ``MAX_ERROR_CHARS`` (a message that cannot be printed says so)."""
    try:
        message = str(exc)
    except Exception:
        message = "<message not printable>"
    return _clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, MAX_ERROR_CHARS)


def error_frames(tb: TracebackType | None) -> str:
    """Where an exception went: our innermost frames and the one that raised, as ``module:line function``.
    Code objects only (no source file is read, no local is looked at), so it costs microseconds."""
    frames: list[tuple[str, int, str]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((str(tb.tb_frame.f_globals.get("__name__", "?")), tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    if not frames:
        return ""
    own = [i for i, f in enumerate(frames) if f[0].startswith(OWN_MODULES)][-OWN_FRAMES:]
    shown = [f"{m}:{line} {fn}" for m, line, fn in (frames[i] for i in own)]
    if not own or own[-1] != len(frames) - 1:  # raised in a library: name that frame too
        m, line, fn = frames[-1]
        shown += ["…", f"{m}:{line} {fn}"] if own else [f"{m}:{line} {fn}"]
    return " > ".join(shown)


def compact_exceptions(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: an exception becomes ``error`` (type and message), ``cause`` (the exception it
    came from) and ``where`` (frames), each bounded; every string is one line with API keys blanked.
    Why not a traceback: rendered with locals (structlog's default when rich is installed) it printed request
    headers, keys among them, and took seconds of the event loop; a bounded line costs microseconds and still
    says what failed and where."""
    exc = _exception_of(event.pop("exc_info", None))
    event.pop("stack_info", None)
    if exc is not None:
        event.setdefault("error", describe_error(exc))
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if cause is not None:
            event.setdefault("cause", describe_error(cause))
        event.setdefault("where", error_frames(exc.__traceback__))
    for name, value in event.items():
        if isinstance(value, str) and not name.startswith("_"):
            event[name] = _clip(value.rstrip("\n"), MAX_VALUE_CHARS)
    return event


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Root logging through structlog: every record, ours or a library's (uvicorn, asyncio, aiokafka), is
    one line, console or JSON; exceptions as :func:`compact_exceptions` renders them."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_request_id,
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, compact_exceptions, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
