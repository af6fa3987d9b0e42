"""The ccxt venue (``ccxt:<id>``) against local fakes, no internet: ccxt's Kraken speaking to the fake Kraken REST
API (testkit/rest_exchange.py, through ccxt's URL override) and ccxt.pro's Kraken to the fake Kraken WebSocket
(testkit/fake_exchange.py, v2). Live trades watched and polled, history through fetch_ohlcv, strict trades."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tokenpulse_ingest.venues import ccxt_venue
from tokenpulse_ingest.venues.connector import Pair, tick_batch
from tokenpulse_ingest.venues.registry import pairs_for, venue
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import Interval, TickEvent
from tokenpulse_shared.settings import Settings

from testkit.fake_exchange import FakeExchange as WsExchange
from testkit.fake_exchange import wait_for
from testkit.rest_exchange import FakeExchange, load_series
from testkit.server import ThreadedServer
from tests.integration.test_rest_backfill import as_rows, expected, run_backfill

PRICES = {"BTC": 97_000.0, "ETH": 3_500.0}
# waits sized for a loaded machine: every (re)connect loads ccxt's markets anew, at ccxt's 1 request/s for Kraken
PAIRS = [Pair("BTC", "BTC/USD", "USD"), Pair("ETH", "ETH/USD", "USD")]


@pytest.fixture(scope="module")
def rest() -> Iterator[tuple[FakeExchange, str]]:
    exchange = FakeExchange(load_series(), ccxt_pairs=True)
    with ThreadedServer(exchange.app()) as server:
        yield exchange, server.url


class Rig:
    def __init__(self, rest_url: str, ws_url: str = "", pairs: list[Pair] = PAIRS, **options: Any) -> None:
        self.ticks: list[TickEvent] = []
        self.gaps: list[tuple[str, str, datetime, datetime]] = []
        spec = venue("ccxt:kraken")
        self.conn: Any = spec.connector(
            ws_url, pairs, self.sink, on_gap=self.on_gap, backoff_s=0.05, backoff_max_s=0.2, rng=random.Random(1),
            rest_url=rest_url, **options,
        )  # fmt: skip

    async def sink(self, ticks: TickBatch) -> None:
        self.ticks.extend(ticks.to_events())

    async def on_gap(self, exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        self.gaps.append((exchange, symbol, since, until))


def kraken_row(trade_id: int, at: float, price: float = 97_000.0) -> list[Any]:
    return [f"{price:.1f}", "0.25", f"{at:.4f}", "b" if trade_id % 2 else "s", "m", "", trade_id]


async def test_watch_trades_through_ccxt_pro_dedupes_and_reconnects_with_a_gap(rest) -> None:
    ws = await WsExchange("kraken", PRICES, heartbeat_s=0.5).start()
    r = Rig(rest[1], ws.url, watch=True)
    task = asyncio.create_task(r.conn.run())
    try:
        await wait_for(lambda: len({v for _, vs in ws.subscriptions for v in vs}) == 2, 60, what="subscribed")
        assert r.conn.mode == "watch"
        sent = await ws.emit(2)
        await ws.duplicate(2)  # the same frames again: dropped
        await wait_for(lambda: len(r.ticks) == len(sent), 60, what="ticks")
        await asyncio.sleep(0.3)
        assert len(r.ticks) == len(sent) and r.conn.health.duplicates == 2
        for s in sent:
            (t,) = [t for t in r.ticks if t.symbol == s.symbol and t.trade_id == str(s.trade_id)]
            assert (t.source, t.quote) == ("ccxt:kraken", "USD") and t.price == pytest.approx(s.price, rel=1e-6)
            assert abs((t.ts - s.ts).total_seconds()) < 0.002
        await ws.drop()
        await wait_for(lambda: r.conn.health.reconnects == 1 and r.conn.health.connected, 60, what="reconnect")
        await wait_for(lambda: len(r.gaps) == len(PRICES), 60, what="the reconnect's gaps")
        assert {g[1] for g in r.gaps} == set(PRICES) and {g[0] for g in r.gaps} == {"ccxt:kraken"}
        await wait_for(lambda: ws.connections >= 2 and len(ws.clients) == 1, 60, what="a new connection")
        await wait_for(lambda: sum(1 for c, _ in ws.subscriptions if c == ws.connections) == 2, 60, what="resubscribed")
        after = await ws.emit(1)
        await wait_for(lambda: len(r.ticks) == len(sent) + len(after), 60, what="ticks after the reconnect")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ws.stop()


async def test_a_pair_the_exchange_does_not_list_is_left_out_and_the_others_flow(rest, caplog) -> None:
    """ccxt refuses a symbol missing from the exchange's markets; that must not take the listed pairs down with it."""
    ws = await WsExchange("kraken", PRICES, heartbeat_s=0.5).start()
    r = Rig(rest[1], ws.url, pairs=[*PAIRS, Pair("SOL", "SOL/USD", "USD")], watch=True)
    task = asyncio.create_task(r.conn.run())
    try:
        await wait_for(lambda: len({v for _, vs in ws.subscriptions for v in vs}) == 2, 60, what="subscribed")
        sent = await ws.emit(2)
        await wait_for(lambda: len(r.ticks) == len(sent), 60, what="ticks of the listed pairs")
        await asyncio.sleep(1.0)  # long enough for the refused symbol to have failed the connection
        assert r.conn.health.reconnects == 0 and r.conn.health.last_error is None and r.conn.health.connected
        said = [m for m in caplog.messages if "does not list SOL/USD" in m]
        assert len(said) == 1 and "TOKENPULSE_FEED_PAIRS=ccxt:kraken:SOL=" in said[0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ws.stop()


def test_a_task_group_failure_is_reported_by_its_first_cause() -> None:
    group = ExceptionGroup("tasks", [ExceptionGroup("inner", [ValueError("kraken does not have market symbol X")])])
    cause = ccxt_venue.first_cause(group)
    assert isinstance(cause, ValueError) and "market symbol X" in str(cause)


@contextlib.asynccontextmanager
async def polling(
    exchange: FakeExchange, url: str, monkeypatch: pytest.MonkeyPatch, now: float, ids: tuple[int, ...], latest: bool
) -> AsyncIterator[Rig]:
    """A rig polling Kraken in pages of 3, BTC's first trades ``ids`` (ETH none), running while the block runs;
    ``latest``: the exchange answers its newest trades whatever ``since``."""
    exchange.trades_latest = latest
    exchange.trades["XXBTZUSD"] = [kraken_row(i, now - 60 + i) for i in ids]
    exchange.trades["XETHZUSD"] = []
    monkeypatch.setattr(ccxt_venue, "POLL_LIMIT", 3)
    r = Rig(url, watch=False, poll_s=0.1)
    task = asyncio.create_task(r.conn.run())
    try:
        yield r
    finally:
        exchange.trades_latest = False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_polling_fetch_trades_walks_forward_from_the_last_trade_without_loss(rest, monkeypatch) -> None:
    exchange, url = rest
    now = time.time()
    async with polling(exchange, url, monkeypatch, now, (1, 2, 3), latest=False) as r:
        await wait_for(lambda: len(r.ticks) == 3, 60, what="the first page")
        assert r.conn.mode == "poll" and [t.trade_id for t in r.ticks] == ["1", "2", "3"]
        exchange.trades["XXBTZUSD"] += [kraken_row(i, now - 50 + i) for i in range(4, 12)]  # 8 new, pages of 3
        await wait_for(lambda: len(r.ticks) == 11, 60, what="every trade, page after page")
        assert [t.trade_id for t in r.ticks] == [str(i) for i in range(1, 12)] and r.gaps == []
        assert r.conn.health.duplicates > 0  # each page starts at the last trade seen: dropped again
        polls = [h for h in exchange.requests("/0/public/Trades") if h.params["pair"] == "XXBTZUSD"]
        assert "since" not in polls[0].params and all("since" in h.params for h in polls[1:])


async def test_polling_a_full_page_that_stops_short_of_the_last_trade_is_a_gap(rest, monkeypatch) -> None:
    exchange, url = rest
    now = time.time()
    # the exchange answers its newest trades, whatever `since`
    async with polling(exchange, url, monkeypatch, now, (1, 2), latest=True) as r:
        await wait_for(lambda: len(r.ticks) == 2, 60, what="the first page")
        exchange.trades["XXBTZUSD"] += [kraken_row(i, now - 50 + i) for i in range(3, 9)]  # 6 new: 3..5 never seen
        await wait_for(lambda: r.gaps, 60, what="the gap")
        ((name, symbol, since, until),) = r.gaps
        assert (name, symbol) == ("ccxt:kraken", "BTC")
        assert abs(since.timestamp() - (now - 58)) < 0.002  # the last trade we have ...
        assert abs(until.timestamp() - (now - 44)) < 0.002  # ... to the oldest of the page (trade 6)
        assert [t.trade_id for t in r.ticks] == ["1", "2", "6", "7", "8"]


async def test_history_through_fetch_ohlcv_with_ccxt_rate_limiting(rest, monkeypatch) -> None:
    exchange, url = rest
    monkeypatch.setenv("TOKENPULSE_FEED_PAIRS", "ccxt:kraken:BTC=BTC/USD")
    until = datetime.fromtimestamp(exchange.end_ms / 1000, UTC) - timedelta(hours=2)
    since = until - timedelta(days=3)
    got, backfiller = await run_backfill(url, "ccxt:kraken", since, until, [Interval.H1, Interval.H4])
    for interval in (Interval.H1, Interval.H4):
        assert as_rows(got, interval) == expected(interval, since, until), interval
    assert {e.source for e in got} == {"ccxt:kraken"}
    assert exchange.requests("/0/public/OHLC")[-1].params["pair"] == "XXBTZUSD"
    assert backfiller.exchanges["ccxt:kraken"].client.exchange.enableRateLimit  # type: ignore[attr-defined]


def test_strict_trades_missing_a_field_are_bad_messages_never_ticks(rest) -> None:
    r = Rig(rest[1])
    good = {"id": "7", "timestamp": 1_765_000_000_000, "symbol": "BTC/USD", "side": "buy", "price": 97e3, "amount": 0.1}
    broken = [{**good, k: None} for k in ("id", "timestamp", "side", "price", "amount")]
    broken += [{**good, "timestamp": 0}, {**good, "amount": 0.0}, {**good, "symbol": "DOGE/USD"}, {**good, "id": ""}]
    ticks = tick_batch(r.conn.ticks([*broken, good])).to_events()
    assert [t.trade_id for t in ticks] == ["7"] and r.conn.health.bad_messages == len(broken)


def test_ccxt_venues_by_name_pairs_and_overrides() -> None:
    assert venue("ccxt:kraken").name == "ccxt:kraken" and venue("ccxt:kraken") is venue("ccxt:kraken")
    with pytest.raises(ValueError, match="ccxt knows no exchange"):
        venue("ccxt:mtgox")
    s = Settings(
        runtime={"symbols": ["BTC", "ETH"]},
        ingest={"feed_exchanges": ["okx", "ccxt:kraken"], "feed_pairs": ["ccxt:kraken:BTC=BTC/USD", "okx:ETH=-"]},
    )
    pairs = pairs_for(s)
    assert pairs["ccxt:kraken"] == [Pair("BTC", "BTC/USD", "USD"), Pair("ETH", "ETH/USDT", "USDT")]
    assert pairs["okx"] == [Pair("BTC", "BTC-USDT", "USDT")]
    with pytest.raises(ValueError):
        Settings(ingest={"rest_backfill_exchange": "ccxt"})
    assert Settings(ingest={"rest_backfill_exchange": "ccxt:gate"}).ingest.rest_backfill_exchange == "ccxt:gate"
