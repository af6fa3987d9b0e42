"""Tracing, metrics and logging setup shared by every service.

Traces: the OpenTelemetry SDK with a resource naming the service; both buses put
W3C ``traceparent`` in message headers (one PRODUCER span per published batch, one
CONSUMER span per handled batch) and the gateway adds FastAPI instrumentation, so
one tick can be followed from ingest to a gateway response. Metrics:
prometheus-client, the ``tokenpulse_*`` families below (every service serves them on
``/metrics``). Logs: structlog, console or JSON lines, with the current trace and
span ids.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import Counter, Gauge, Histogram

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


def add_trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` (hex, as trace viewers show them)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
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
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
