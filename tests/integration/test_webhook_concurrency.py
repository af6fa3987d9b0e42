"""Webhook requests in flight per receiving origin are capped (TOKENPULSE_WEBHOOK_CONCURRENCY): a burst of
firings waits its turn instead of opening a connection per firing against one customer's endpoint. Real
HTTP server on loopback (allow-listed) that holds each request briefly and counts how many overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_shared.events import AlertChannel
from tokenpulse_shared.settings import Settings

from testkit.receivers import HttpReceiver


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(hold_s=0.05) as r:
        yield r


async def burst(
    receiver: HttpReceiver, concurrency: int, n: int = 24, left: list[int] | None = None
) -> list[dict[str, object]]:
    """Deliver ``n`` webhooks at once; ``left`` gets the number of origins the notifier still tracks after."""
    notifier = Notifier(Settings(alerts={"webhook_allowlist": ["127.0.0.1"], "webhook_concurrency": concurrency}))
    try:
        messages = [
            Message(
                title="t",
                body="b",
                payload={"type": "alert", "alerts": [{"i": i}]},
                firing_ids=[f"f{i}"],
                owner=f"o{i}",
            )
            for i in range(n)
        ]
        # two paths on one origin share its cap
        channels = [AlertChannel(type="webhook", target=f"{receiver.url}/hook/{i % 2}") for i in range(n)]
        records = await asyncio.gather(*(notifier.deliver(c, m) for c, m in zip(channels, messages, strict=True)))
        if left is not None:
            left.append(len(notifier._origins))
        return records
    finally:
        await notifier.close()


async def test_in_flight_requests_per_origin_are_capped(receiver: HttpReceiver) -> None:
    left: list[int] = []
    records = await burst(receiver, concurrency=3, left=left)
    assert [r["status"] for r in records] == ["delivered"] * 24  # every firing delivered, none dropped
    assert len(receiver.received("/hook")) == 24
    assert receiver.peak_in_flight == 3
    assert left == [0]  # an origin's cap is forgotten once nothing is in flight to it (bounded state)


async def test_a_higher_cap_lets_more_overlap(receiver: HttpReceiver) -> None:
    records = await burst(receiver, concurrency=12)
    assert all(r["status"] == "delivered" for r in records)
    assert 3 < receiver.peak_in_flight <= 12
