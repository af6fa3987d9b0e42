"""Telemetry in memory: bus metrics (the same families in embedded and distributed mode), the connector
health API, trace/span ids in log records, and exceptions logged as one bounded line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from tokenpulse_shared import telemetry
from tokenpulse_shared.bus import RawMessage
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Event, PriceEvent
from tokenpulse_shared.topics import PRICES


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_bus_counts_consumed_published_dead_letters_and_times_batches() -> None:
    group = "metrics-test"
    labels = {"group": group, "topic": PRICES.name}
    before = {
        "consumed": value("tokenpulse_events_consumed_total", **labels),
        "dead": value("tokenpulse_dead_letters_total", **labels),
        "batches": value("tokenpulse_batch_processing_seconds_count", **labels),
        "published": value("tokenpulse_events_published_total", topic=PRICES.name),
        "age": value("tokenpulse_event_age_seconds_count", **labels),
    }
    bus = InMemoryBus()
    got: list[Event] = []

    async def handler(events: list[Event]) -> None:
        got.extend(events)

    bus.subscribe(PRICES, group, handler)
    await bus.start()
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    await bus.publish(PRICES, [PriceEvent(symbol="BTC", ts=ts, price=float(i + 1)) for i in range(5)])
    await bus.publish_raw(PRICES, [RawMessage(b"garbage", key="BTC")])
    await bus.drain()
    await bus.stop()
    assert len(got) == 5
    assert value("tokenpulse_events_consumed_total", **labels) - before["consumed"] == 5
    assert value("tokenpulse_dead_letters_total", **labels) - before["dead"] == 1
    assert value("tokenpulse_events_published_total", topic=PRICES.name) - before["published"] == 6
    batches = value("tokenpulse_batch_processing_seconds_count", **labels) - before["batches"]
    assert 1 <= batches <= 2  # one or two batches, each timed
    assert value("tokenpulse_event_age_seconds_count", **labels) - before["age"] >= 1


def test_connector_health_api() -> None:
    telemetry.set_connector_health("test-exchange", True)
    assert value("tokenpulse_connector_up", connector="test-exchange") == 1
    telemetry.connector_delivered("test-exchange", 3)
    telemetry.connector_delivered("test-exchange", 0)  # nothing delivered: no stamp, no count
    assert value("tokenpulse_connector_events_total", connector="test-exchange") == 3
    stamp = value("tokenpulse_connector_last_event_timestamp_seconds", connector="test-exchange")
    assert abs(stamp - datetime.now(UTC).timestamp()) < 60
    telemetry.set_connector_health("test-exchange", False)
    assert value("tokenpulse_connector_up", connector="test-exchange") == 0


def test_json_logs_carry_the_current_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.setup_logging("INFO", "json")
    try:
        tracer = TracerProvider().get_tracer("test")
        log = logging.getLogger("tokenpulse.test")
        log.info("outside any span")
        with tracer.start_as_current_span("work") as span:
            log.warning("inside a span")
            ctx = span.get_span_context()
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    outside = next(r for r in lines if r["event"] == "outside any span")
    inside = next(r for r in lines if r["event"] == "inside a span")
    assert "trace_id" not in outside and "span_id" not in outside
    assert inside["trace_id"] == format(ctx.trace_id, "032x") and inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["level"] == "warning" and inside["timestamp"].endswith("Z")


def _logged(capsys: pytest.CaptureFixture[str], fmt: str, emit: Callable[[], None]) -> list[str]:
    telemetry.setup_logging("INFO", fmt)
    try:
        emit()
        return capsys.readouterr().err.splitlines()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def _fail(secret: str) -> None:
    headers = {"x-api-key": secret}  # a local a traceback renderer with locals would print
    try:
        headers["missing"]
    except KeyError as exc:
        raise RuntimeError(f"lookup failed for\n{secret} " + "x" * 5000) from exc


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_an_exception_is_one_bounded_line_without_locals_or_keys(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    secret = "tp_" + "S3cr3tK3y-0123456789abcdefghijklmnopqrstuvw"

    def emit() -> None:
        try:
            _fail(secret)
        except RuntimeError:
            logging.getLogger("tokenpulse.test").exception("the worker crashed")

    lines = _logged(capsys, fmt, emit)
    assert len(lines) == 1, lines[:20]
    line = lines[0]
    assert secret[3:15] not in line and "x-api-key" not in line and "Traceback" not in line
    assert len(line) < 1500
    assert "RuntimeError: lookup failed for" in line and "tp_[redacted]" in line
    assert "KeyError" in line  # the cause
    assert "test_telemetry:" in line and "_fail" in line  # where it was raised
    if fmt == "json":
        fields = json.loads(line)
        assert fields["event"] == "the worker crashed" and fields["level"] == "error"
        assert len(fields["error"]) <= telemetry.MAX_ERROR_CHARS and fields["cause"].startswith("KeyError")
        assert fields["where"].endswith("_fail")


def test_the_request_boundary_logs_one_line_with_request_and_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """An exception the app lets through: a 500 quoting the request id, one log line with the id, the route's
    method and path, and the trace id of the span the request runs in; what the app logged before carries the
    request id too."""
    from tokenpulse_gateway.errors import RequestBoundary

    async def app(scope: Any, receive: Any, send: Any) -> None:
        logging.getLogger("tokenpulse.test").warning("about to fail")
        raise ValueError("boom")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/v1/x", "headers": [(b"x-request-id", b"req-42")]}
    tracer = TracerProvider().get_tracer("test")
    trace_ids: list[str] = []

    def emit() -> None:
        with tracer.start_as_current_span("request") as span:
            asyncio.run(RequestBoundary(app)(scope, receive, send))
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))

    lines = _logged(capsys, "json", emit)
    assert len(lines) == 2, lines
    assert json.loads(lines[0])["request_id"] == "req-42"
    fields = json.loads(lines[1])
    assert fields["request_id"] == "req-42" and fields["method"] == "GET" and fields["route"] == "/v1/x"
    assert fields["error"] == "ValueError: boom" and fields["trace_id"] == trace_ids[0]
    assert sent[0]["status"] == 500 and (b"x-request-id", b"req-42") in sent[0]["headers"]
    assert "req-42" in json.loads(sent[1]["body"])["error"]["message"]
