"""`auto` back from its synthetic fallback, at the ingest service: the exchange (a fake Binance on loopback
replaying recorded frames, a real WebSocket) is down at start, so ingest publishes synthetic ticks; brought up
on the same port, its first trades stop the synthetic feed for good: per token, no synthetic tick follows a
live one on the bus, the status says live again and the log says so."""

from __future__ import annotations

import logging
import socket
from collections import defaultdict

import pytest
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.bus import rows_as_events
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import TICKS_V2

from testkit.fake_exchange import FakeExchange, wait_for

PRICES = {"BTC": 97_000.0, "ETH": 3_500.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ingest_switches_back_to_live_and_stops_the_synthetic_ticks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokenpulse_ingest")
    port = free_port()
    settings = Settings(
        runtime={"symbols": list(PRICES)},
        ingest={
            "live_feed": "auto",
            "feed_exchanges": ["binance"],
            "feed_connect_timeout_s": 1.0,
            "feed_backoff_s": 0.1,
            "feed_backoff_max_s": 0.5,
            "synthetic_tick_s": 0.1,
            "rest_backfill_gaps": False,
        },
        binance={"ws_url": f"ws://127.0.0.1:{port}"},
    )
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest = IngestService()
    ingest.register(ctx)
    seen: dict[str, list[str]] = defaultdict(list)  # per token, the source of every tick in bus order

    async def ticks(events: list[TickEvent]) -> None:
        for t in events:
            seen[t.symbol].append(t.source)

    bus.subscribe(TICKS_V2, "test", rows_as_events(ticks))
    await bus.start()
    await ingest.start(ctx)
    fake = FakeExchange("binance", PRICES, port=port)
    try:
        await wait_for(lambda: ctx.status.get("feed") == "synthetic-fallback", 20, "the synthetic fallback")
        await wait_for(lambda: all(seen[s].count("synthetic") >= 3 for s in PRICES), 20, "synthetic ticks")
        refused = ingest.connectors[0].health.reconnects
        await wait_for(lambda: ingest.connectors[0].health.reconnects > refused, 20, "probing on the fallback")
        assert "still trying binance" in ctx.status["feed_detail"]

        await fake.start()  # the exchange comes back on the address ingest keeps trying
        fake.stream(0.05)
        await wait_for(lambda: ctx.status.get("feed") == "live", 20, "the switch back to live")
        await wait_for(lambda: all(seen[s].count("binance") >= 20 for s in PRICES), 20, "live ticks")
        for symbol, sources in seen.items():
            first_live = sources.index("binance")
            assert set(sources[:first_live]) == {"synthetic"}, symbol
            assert set(sources[first_live:]) == {"binance"}, symbol  # no synthetic tick after a live one
        assert ingest.feed is None and ctx.status["feed_detail"] == "live trades from binance"
        assert "feed_back_to_live_at" in ctx.status
        switched = [r for r in caplog.records if "switched back from SYNTHETIC ticks to live trades" in r.message]
        assert len(switched) == 1 and switched[0].levelno == logging.WARNING
        assert "binance" in switched[0].getMessage()
    finally:
        await ingest.stop()
        await bus.stop()
        await fake.stop()
