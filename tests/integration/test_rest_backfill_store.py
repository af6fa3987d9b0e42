"""REST-backfilled candles through the embedded pipeline: fake exchange on loopback -> ingest ->
in-process bus -> store writer -> real chDB ClickHouse -> GET /v1/candles. A bucket the ticks
built keeps the tick-built candle; the gap around it is filled from the exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.events import Interval, TickEvent
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import TICKS

from testkit.rest_exchange import FakeExchange, load_series
from testkit.server import ThreadedServer
from testkit.wiring import embedded, keyed_client

NOON = datetime(2024, 12, 10, 12, tzinfo=UTC)


@pytest.fixture
async def pipeline(store: Store) -> AsyncIterator[tuple[IngestService, httpx.AsyncClient, FakeExchange]]:
    fake = FakeExchange(load_series())
    with ThreadedServer(fake.app()) as server:
        settings = Settings(
            runtime={"symbols": ["BTC"], "backfill_on_start": False},
            ingest={"live_feed": "off"},
            binance={"rest_url": server.url},
        )
        ingest, gateway = IngestService(), GatewayService()
        bus, ctx = embedded(settings, store, ingest, gateway)
        await bus.start()
        await ingest.start(ctx)
        assert gateway.app is not None
        async with keyed_client(gateway.app, "t") as client:
            yield ingest, client, fake
        await ingest.stop()
        await bus.stop()


async def test_backfilled_candles_are_stored_and_served_and_ticks_win_their_bucket(pipeline, store) -> None:
    ingest, api, fake = pipeline
    assert ingest.ctx is not None
    ticks = [
        TickEvent(symbol="BTC", source="coinbase", ts=NOON + timedelta(seconds=s), price=p, size=0.5, trade_id=str(s))
        for s, p in ((10, 97_001.0), (20, 97_050.0), (65, 97_020.0))
    ]
    await ingest.ctx.bus.publish(TICKS, ticks)
    await ingest.ctx.bus.drain()  # the 12:00 minute closed on the watermark: a tick-built candle
    result = await ingest.backfill_gap("binance", "BTC", NOON - timedelta(minutes=10), NOON + timedelta(minutes=10))
    await ingest.ctx.bus.drain()
    assert result.candles["1m"] == 20 and result.candles["1h"] == 1 and result.candles["4h"] == 1

    page = await api.get(
        "/v1/candles/BTC",
        params={"interval": "1m", "start": (NOON - timedelta(minutes=10)).isoformat(), "end": "2024-12-10T12:10:00Z"},
    )
    assert page.status_code == 200, page.text
    served = {c["ts"]: c for c in page.json()["data"]}
    assert len(served) == 20
    minutes = {b.ts_ms: b for b in fake.series[Interval.M1]}
    for ts, candle in served.items():
        ms = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
        if ms == int(NOON.timestamp() * 1000):
            # the bucket the ticks built keeps the tick-built candle (higher version)
            assert (candle["open"], candle["high"], candle["close"]) == (97_001.0, 97_050.0, 97_050.0)
        else:
            bar = minutes[ms]
            assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (
                bar.open,
                bar.high,
                bar.low,
                bar.close,
            )
    rows = await store.query(
        "SELECT source, version FROM candles FINAL WHERE symbol = 'BTC' AND interval = '1m' AND ts = {t:DateTime64(3)}",
        {"t": NOON.replace(tzinfo=None)},
    )
    assert rows[0][0] == "ticks" and rows[0][1] > 1000
    sources = await store.query(
        "SELECT source, count() FROM candles FINAL WHERE interval = '1m' GROUP BY source ORDER BY source"
    )
    assert [tuple(r) for r in sources] == [("binance", 19), ("ticks", 1)]

    # the same gap again: deterministic ids, nothing doubles
    await ingest.backfill_gap("binance", "BTC", NOON - timedelta(minutes=10), NOON + timedelta(minutes=10))
    await ingest.ctx.bus.drain()
    again = await store.query("SELECT count() FROM candles FINAL WHERE interval = '1m'")
    assert again[0][0] == 20

    # start-up backfill: each interval from its own last stored candle to "now"
    published = await ingest.backfill_since_last_stored("binance", now=NOON + timedelta(hours=2, seconds=5))
    await ingest.ctx.bus.drain()
    assert ingest.ctx.status["rest_backfill"].startswith("done")
    counts = dict(
        await store.query("SELECT interval, count() FROM candles FINAL WHERE symbol = 'BTC' GROUP BY interval")
    )
    assert counts["1m"] == 20 + 110  # 12:10 .. 13:59 added after the 20 already there
    assert counts["1h"] == 1 + 2  # 11:00 there; 12:00 and 13:00 added
    # (coarser buckets may also have been closed from the ticks by the idle clock meanwhile: not counted here)
    assert published >= 110 + 2
