"""Tiers (the contract other services import) and the gateway middleware's limits, on an in-memory ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from tokenpulse_gateway.middleware import GatewayMiddleware
from tokenpulse_gateway.tiers import TIER_NAMES, Tier, effective_tier, tier_of


def test_tiers_grow_and_free_limits_come_from_settings() -> None:
    free, pro, ent = (tier_of(n) for n in ("free", "pro", "enterprise"))
    assert TIER_NAMES == ("free", "pro", "enterprise")
    assert isinstance(free, Tier) and tier_of("PRO") is pro
    assert free.per_minute < pro.per_minute < ent.per_minute
    assert free.per_month < pro.per_month < ent.per_month
    assert free.max_alert_rules < pro.max_alert_rules < ent.max_alert_rules
    assert (free.intraday, pro.intraday, ent.intraday) == (False, True, True)
    assert effective_tier("free", 7, 70).per_minute == 7 and effective_tier("free", 7, 70).per_month == 70
    assert effective_tier("pro", 7, 70) == pro
    with pytest.raises(ValueError, match="free, pro, enterprise"):
        tier_of("gold")
    with pytest.raises(AttributeError):
        free.per_minute = 1  # type: ignore[misc]


async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/slow":
        await asyncio.sleep(30)
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_slow_requests_get_504_and_big_bodies_413() -> None:
    app = GatewayMiddleware(slow_app, max_body_bytes=1024, timeout_s=0.2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.get("/fast")
        assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
        slow = await c.get("/slow")
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        big = await c.post("/fast", content=b"x" * 2048)
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(4):
                yield b"x" * 512

        chunked = await c.post("/fast", content=chunks())
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"


def test_the_stream_buffer_keeps_increasing_ids_and_knows_what_it_dropped() -> None:
    from tokenpulse_gateway.live import StreamHub

    hub = StreamHub(capacity=3)
    q = hub.subscribe()
    ids = [hub.publish("price", "BTC", {"price": float(i)}).id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [e.id for e in hub.since(ids[2])] == ids[3:]
    assert hub.evicted_id == ids[1]  # a client resuming after ids[0] has missed ids[1]
    assert q.qsize() == 5 and [q.get_nowait().id for _ in range(5)] == ids  # type: ignore[union-attr]
    hub.unsubscribe(q)
    slow = StreamHub(capacity=10, queue_size=2)
    lagging = slow.subscribe()
    for i in range(3):
        slow.publish("price", "BTC", {"price": float(i)})
    assert lagging not in slow.subscribers  # fell behind: ended (None last), it resumes by id
    items = [lagging.get_nowait() for _ in range(lagging.qsize())]
    assert items[-1] is None


def test_a_stream_of_some_symbols_is_handed_only_their_events() -> None:
    """At 1,000 tokens a price event reaches only the streams that asked for its symbol (or for all): the cost
    of an event is the streams that want it, not every open stream."""
    from tokenpulse_gateway.live import StreamHub

    hub = StreamHub(capacity=100, queue_size=10)
    narrow = [hub.subscribe({f"T{i}", "BTC"}) for i in range(1000)]
    everything = hub.subscribe()
    hub.publish("price", "T7", {"price": 1.0})
    assert [q.qsize() for q in narrow].count(1) == 1 and narrow[7].qsize() == 1 and everything.qsize() == 1
    hub.publish("price", "BTC", {"price": 2.0})
    assert all(q.qsize() >= 1 for q in narrow) and everything.qsize() == 2
    hub.unsubscribe(narrow[7])
    hub.publish("price", "T7", {"price": 3.0})
    assert narrow[7].qsize() == 2 and "T7" not in hub.by_symbol  # no stream wants T7 any more
    for _ in range(10):  # narrow streams that fall behind are ended like any other
        hub.publish("price", "BTC", {"price": 4.0})
    assert "BTC" not in hub.by_symbol and everything not in hub.subscribers
    ended = [narrow[0].get_nowait() for _ in range(narrow[0].qsize())]
    assert ended[-1] is None
