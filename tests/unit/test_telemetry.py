"""Telemetry in memory: bus metrics (the same families in embedded and distributed mode), the connector
health API, and trace/span ids in log records."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

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
