"""Issue #3, "gaps backfilled", through the real wiring: a fake Binance WebSocket on loopback (recorded
frames) is cut abruptly; the connector reconnects and resubscribes, reports the hole to
``IngestService.gap_hook``, which backfills its candles from a fake Binance REST API on loopback;
the candles go through the in-process bus and the store writer into chDB and out of ``/v1/candles``.

Timeline: both fakes run on one scripted clock in the recent past, so minutes of "exchange time"
pass without waiting (nothing here depends on how fast the machine is). The WebSocket fake stamps
its trades with that clock, the connector reads the same clock for the reconnect time, and the REST
fake serves the bundled real BTC 1-minute history (Binance, Dec 2024) shifted by whole days so that
it covers the scripted window (a whole-day shift keeps every interval's buckets aligned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.timeutil import DAY_MS
from tokenpulse_shared.topics import CANDLES

from testkit.fake_exchange import FakeExchange as FakeWsExchange
from testkit.fake_exchange import wait_for
from testkit.rest_exchange import FakeExchange as FakeRestExchange
from testkit.rest_exchange import load_series
from testkit.server import ThreadedServer
from testkit.wiring import collected, embedded

MIN = timedelta(minutes=1)


@dataclass
class Clock:
    """The exchanges' scripted "now"."""

    t: datetime

    def __call__(self) -> datetime:
        return self.t


def shifted_series(around: datetime) -> dict[Interval, list[Any]]:
    """The bundled BTC history moved by whole days so that its middle day is ``around``'s day."""
    series = load_series()
    minutes = series[Interval.M1]
    middle = minutes[len(minutes) // 2].ts_ms // DAY_MS
    shift = (int(around.timestamp() * 1000) // DAY_MS - middle) * DAY_MS
    return {i: [replace(b, ts_ms=b.ts_ms + shift) for b in bars] for i, bars in series.items()}


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class Rig:
    ingest: IngestService
    api: httpx.AsyncClient
    ws: FakeWsExchange
    rest: FakeRestExchange
    clock: Clock
    gaps: list[tuple[str, str, datetime, datetime]]
    published: list[CandleEvent]


@pytest.fixture
async def rig(store: Store) -> AsyncIterator[Rig]:
    now = datetime.now(UTC)
    # 30-45 minutes ago, on a quarter hour: every scripted minute below has closed in real time too
    t0 = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) - 30 * MIN
    clock = Clock(t0)
    rest = FakeRestExchange(shifted_series(t0))
    ws = await FakeWsExchange("binance", {"BTC": 97_000.0}, clock=clock).start()
    with ThreadedServer(rest.app()) as server:
        settings = Settings(
            runtime={"symbols": ["BTC"], "backfill_on_start": False},
            ingest={
                "live_feed": "live",
                "feed_exchanges": ["binance"],
                "rest_backfill_gaps": True,  # tests/conftest.py turns it off by default
                "feed_backoff_s": 0.05,
                "feed_backoff_max_s": 1.0,
            },
            binance={"ws_url": ws.url, "rest_url": server.url},
        )
        ingest, gateway = IngestService(), GatewayService()
        bus, ctx = embedded(settings, store, ingest, gateway)
        published: list[CandleEvent] = collected(bus, CANDLES, "test-tap")
        gaps: list[tuple[str, str, datetime, datetime]] = []
        backfill = ingest.gap_hook

        async def recording_hook(exchange: str, symbol: str, since: datetime, until: datetime) -> None:
            gaps.append((exchange, symbol, since, until))
            await backfill(exchange, symbol, since, until)

        ingest.gap_hook = recording_hook
        await bus.start()
        await ingest.start(ctx)
        try:
            (connector,) = ingest.connectors
            connector._now = clock  # the reconnect time is read from the exchanges' clock too
            assert gateway.app is not None
            transport = httpx.ASGITransport(app=gateway.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as api:
                api.headers["X-API-Key"] = (await api.post("/v1/keys", json={"name": "t"})).json()["key"]
                yield Rig(ingest, api, ws, rest, clock, gaps, published)
        finally:
            await ingest.stop()
            await bus.stop()
            await ws.stop()


async def test_abrupt_disconnect_gap_is_backfilled_from_rest_and_served(rig: Rig, store: Store) -> None:
    ingest, ws, clock = rig.ingest, rig.ws, rig.clock
    assert ingest.ctx is not None
    (connector,) = ingest.connectors
    t0 = clock.t
    await wait_for(lambda: ws.clients, 30, "the connector to connect")

    async def trades_at(*offsets: timedelta) -> None:
        for offset in offsets:
            clock.t = t0 + offset
            await ws.emit(1)

    # minutes 0, 1, 2: three trades each, received live
    await trades_at(*(m * MIN + timedelta(seconds=s) for m in range(3) for s in (5, 20, 40)))
    await wait_for(lambda: connector.health.ticks == 9, 30, "the 9 trades before the cut")
    last_before = t0 + 2 * MIN + timedelta(seconds=40)

    # the connection is cut (TCP abort, no close frame) while ~5 minutes of trades happen unseen
    clock.t = t0 + 7 * MIN + timedelta(seconds=10)
    ws.skip("BTC", 50)
    assert await ws.drop() == 1
    await wait_for(lambda: connector.health.connects == 2 and ws.clients, 30, "the reconnect")
    # a reconnect's overlap (the last trades before the cut, sent again), then new trades
    await ws.duplicate(3)
    await trades_at(
        *(timedelta(minutes=7, seconds=s) for s in (10, 30)), *(timedelta(minutes=8, seconds=s) for s in (5, 30))
    )
    await wait_for(lambda: connector.health.ticks == 13, 30, "the 4 trades after the reconnect")

    # the hole reported once, from the last trade received to the reconnect: it covers the disconnect
    assert rig.gaps == [("binance", "BTC", last_before, t0 + 7 * MIN + timedelta(seconds=10))]
    # resubscribed on the new connection, the replayed overlap dropped, the feed goes on
    assert ws.subscriptions == [(1, ["BTCUSDT"]), (2, ["BTCUSDT"])]
    assert connector.health.reconnects >= 1 and connector.health.duplicates == 3 and connector.health.connected

    gap_minutes = [t0 + m * MIN for m in range(3, 7)]  # nothing received in them

    async def served() -> dict[str, dict[str, Any]] | None:
        page = await rig.api.get(
            "/v1/candles/BTC",
            params={"interval": "1m", "start": t0.isoformat(), "end": (t0 + 8 * MIN).isoformat(), "limit": 100},
        )
        assert page.status_code == 200, page.text
        rows = page.json()["data"]
        got = {r["ts"]: r for r in rows}
        assert len(got) == len(rows), f"a minute served twice: {rows}"
        return got if len(got) == 8 else None

    candles = await until(served, 60, "8 one-minute candles in /v1/candles")
    await ingest.ctx.bus.drain()

    # the REST API was asked for the gap's closed minutes once: from the minute of the last trade
    # received to the minute of the reconnect (that one is still open and left to the ticks)
    minute_hits = [h for h in rig.rest.requests("/api/v3/klines") if h.params["interval"] == "1m"]
    assert [(int(h.params["startTime"]), int(h.params["endTime"])) for h in minute_hits] == [
        (ms(t0 + 2 * MIN), ms(t0 + 7 * MIN) - 1)
    ]

    # the gap minutes hold the exchange's candles; the minutes the feed saw keep their tick-built ones
    bars = {b.ts_ms: b for b in rig.rest.series[Interval.M1]}
    for minute in gap_minutes:
        candle = candles[minute.isoformat().replace("+00:00", "Z")]
        bar = bars[ms(minute)]
        assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"]) == (
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
        )
    rows = await store.query(
        "SELECT toUnixTimestamp64Milli(ts), source, trades FROM candles FINAL "
        "WHERE symbol = 'BTC' AND interval = '1m' AND ts >= {a:DateTime64(3)} AND ts < {b:DateTime64(3)} ORDER BY ts",
        {"a": t0.replace(tzinfo=None), "b": (t0 + 8 * MIN).replace(tzinfo=None)},
    )
    by_minute = {t: (source, trades) for t, source, trades in rows}
    assert len(rows) == len(by_minute) == 8
    for m in (0, 1, 2):
        assert by_minute[ms(t0 + m * MIN)] == ("ticks", 3)  # the replayed overlap was not counted twice
    for minute in gap_minutes:
        assert by_minute[ms(minute)] == ("binance", bars[ms(minute)].trades)
    assert by_minute[ms(t0 + 7 * MIN)] == ("ticks", 2)

    # on the candles topic: each backfilled minute published once (the window's first minute too: the
    # store keeps the tick-built candle there, it has the higher version)
    rest_minutes = sorted(ms(c.ts) for c in rig.published if c.interval is Interval.M1 and c.source == "binance")
    assert rest_minutes == [ms(t0 + m * MIN) for m in range(2, 7)]
