"""Exchange connectors against fake exchanges: real WebSocket servers on loopback replaying recorded real
messages (testkit/fake_exchange.py), with scripted faults. Offline; no real exchange is reached."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from prometheus_client import REGISTRY
from tokenpulse_ingest.venues.connector import Connector, Pair
from tokenpulse_ingest.venues.registry import VENUES, quote_of
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import TickEvent

from testkit.fake_exchange import FakeExchange, wait_for

PRICES = {"BTC": 97_000.0, "ETH": 3_500.0}


@dataclass
class Rig:
    fake: FakeExchange
    conn: Connector
    ticks: list[TickEvent] = field(default_factory=list)
    gaps: list[tuple[str, str, datetime, datetime]] = field(default_factory=list)

    def ids(self, symbol: str) -> list[int]:
        return [int(t.trade_id or 0) for t in self.ticks if t.symbol == symbol]


async def rig(kind: str, *, heartbeat_s: float | None = None, stall_s: float = 30.0) -> Rig:
    fake = await FakeExchange(kind, PRICES, heartbeat_s=heartbeat_s).start()
    r = Rig(fake, None)  # type: ignore[arg-type]

    async def sink(ticks: TickBatch) -> None:
        r.ticks.extend(ticks.to_events())

    async def on_gap(exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        r.gaps.append((exchange, symbol, since, until))

    spec = VENUES[kind]
    pairs = [Pair(s, spec.default_pair(s), quote_of(kind, spec.default_pair(s))) for s in PRICES]
    r.conn = spec.connector(
        fake.url, pairs, sink, on_gap=on_gap, stall_s=stall_s, backoff_s=0.05, backoff_max_s=0.2, rng=random.Random(1)
    )
    return r


@pytest.fixture(params=sorted(VENUES))
async def any_rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    r = await rig(request.param)
    task = asyncio.create_task(r.conn.run())
    await wait_for(lambda: r.conn.health.connected and len(r.fake.subscriptions) == expected_subs(r), 20, "subscribe")
    yield r
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await r.fake.stop()


def expected_subs(r: Rig) -> int:
    """Subscriptions the fake must have seen once every connection so far subscribed (at least one)."""
    per_connection = len(PRICES) if r.fake.kind == "coinbase" else 1  # coinbase: one subscribe per product
    return per_connection * max(1, r.fake.connections)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_trades_are_normalised_with_exchange_time_side_and_quote(any_rig: Rig) -> None:
    r = any_rig
    sent = await r.fake.emit(3)
    await wait_for(lambda: len(r.ticks) == len(sent), what="ticks")
    spec = VENUES[r.fake.kind]
    quote = quote_of(spec.name, spec.default_pair("BTC"))
    by_key = {(t.symbol, int(t.trade_id or 0)): t for t in r.ticks}
    for s in sent:
        tick = by_key[(s.symbol, s.trade_id)]
        assert tick.source == r.fake.kind and tick.quote == quote
        assert abs(tick.ts.timestamp() - s.ts.timestamp()) < 0.002  # exchange time, ms resolution
        assert tick.price == pytest.approx(s.price, rel=1e-6)
        assert tick.side.value in ("buy", "sell") and tick.size > 0
        assert TickEvent.model_validate(tick.model_dump()) == tick
    assert r.conn.health.snapshot()["ticks"] == len(sent)


async def test_abrupt_disconnect_reconnects_resubscribes_and_reports_the_gap(any_rig: Rig) -> None:
    r = any_rig
    before = await r.fake.emit(2)
    await wait_for(lambda: len(r.ticks) == 4, what="first ticks")
    last_ts = {s.symbol: s.ts for s in before}
    assert await r.fake.drop() == 1
    await wait_for(lambda: r.fake.connections == 2 and len(r.fake.subscriptions) == expected_subs(r), what="resub")
    await wait_for(lambda: r.conn.health.connected and len(r.gaps) == len(PRICES), what="reconnect gaps")
    venues = {n: sorted(v for c, vs in r.fake.subscriptions if c == n for v in vs) for n in (1, 2)}
    assert venues[1] == venues[2] and len(venues[1]) == len(PRICES)  # the same subscriptions again
    for exchange, symbol, since, until in r.gaps:
        assert exchange == r.fake.kind
        assert abs((since - last_ts[symbol]).total_seconds()) < 0.002  # from the last trade we have
        assert until >= since
    after = await r.fake.emit(2)
    await wait_for(lambda: len(r.ticks) == 8, what="ticks after the reconnect")
    assert {(t.symbol, int(t.trade_id or 0)) for t in r.ticks[4:]} == {(s.symbol, s.trade_id) for s in after}
    assert r.conn.health.reconnects == 1 and len(r.gaps) == len(PRICES)  # the resumed ids are no second gap


async def test_duplicates_and_reconnect_overlap_never_publish_a_tick_twice(any_rig: Rig) -> None:
    r = any_rig
    dup_before = metric("tokenpulse_feed_duplicate_ticks_total", exchange=r.fake.kind)
    sent = await r.fake.emit(5)
    await r.fake.duplicate(4)  # the same frames again on the same connection
    sent += await r.fake.emit(3, reverse=True)  # out of order: newest first
    await wait_for(lambda: len(r.ticks) >= len(sent), what="ticks")
    await asyncio.sleep(0.2)
    gaps_before = len(r.gaps)  # (the newest-first frames may have looked like a trade id jump)
    for symbol in PRICES:
        r.fake.skip(symbol, 5)  # trades made while the connection is down
    await r.fake.drop()
    await wait_for(lambda: r.fake.connections == 2 and r.conn.health.connected, what="reconnect")
    await wait_for(lambda: len(r.fake.subscriptions) == expected_subs(r), what="resubscribe")
    await r.fake.duplicate(6)  # the new connection replays what the old one already delivered
    sent += await r.fake.emit(1)
    await wait_for(lambda: len(r.ticks) >= len(sent), what="ticks after the overlap")
    await asyncio.sleep(0.2)
    keys = [(t.symbol, t.trade_id) for t in r.ticks]
    assert len(keys) == len(set(keys)) == len(sent)
    assert set(keys) == {(s.symbol, str(s.trade_id)) for s in sent}
    assert r.conn.health.duplicates == 10
    assert metric("tokenpulse_feed_duplicate_ticks_total", exchange=r.fake.kind) - dup_before == 10
    # one gap per pair, the reconnect's: the replayed trades are not taken for the new baseline
    assert len(r.gaps) == gaps_before + len(PRICES)


def bad_messages_counted(exchange: str) -> float:
    """tokenpulse_feed_bad_messages_total of one exchange, over every reason."""
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "tokenpulse_feed_bad_messages"
        for s in m.samples
        if s.name.endswith("_total") and s.labels["exchange"] == exchange
    )


async def test_garbage_frames_are_counted_and_skipped_and_the_connector_survives(any_rig: Rig) -> None:
    r = any_rig
    kind = r.fake.kind
    before = bad_messages_counted(kind)
    n = await r.fake.garbage()
    await wait_for(lambda: r.conn.health.bad_messages == n, what="bad messages counted")
    after = bad_messages_counted(kind)
    assert after - before == n
    sent = await r.fake.emit(1)
    await wait_for(lambda: len(r.ticks) == len(sent), what="a good trade after the junk")
    assert r.fake.connections == 1 and r.conn.health.reconnects == 0 and r.conn.health.connected


@pytest.mark.parametrize("kind", ["binance", "coinbase", "kraken", "okx", "coinbase_advanced"])
async def test_a_trade_id_jump_calls_on_gap_with_the_missing_window(kind: str) -> None:
    r = await rig(kind)
    task = asyncio.create_task(r.conn.run())
    try:
        await wait_for(lambda: len(r.fake.subscriptions) == expected_subs(r), what="subscribe")
        before = await r.fake.emit(2, ["BTC"])
        await wait_for(lambda: len(r.ticks) == 2, what="ticks")
        r.fake.skip("BTC", 5)
        after = await r.fake.emit(1, ["BTC"])
        await wait_for(lambda: r.gaps, what="on_gap")
        assert len(r.gaps) == 1
        exchange, symbol, since, until = r.gaps[0]
        assert (exchange, symbol) == (kind, "BTC")
        assert abs((since - before[-1].ts).total_seconds()) < 0.002  # the last trade we have ...
        assert abs((until - after[0].ts).total_seconds()) < 0.002  # ... to the first after the hole
        assert r.ids("BTC") == [before[0].trade_id, before[1].trade_id, after[0].trade_id]
        assert metric("tokenpulse_feed_gaps_total", exchange=kind, cause="trade_id") >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.fake.stop()


async def test_coinbase_heartbeat_reveals_missed_trades_without_a_later_trade() -> None:
    r = await rig("coinbase", heartbeat_s=0.1)
    task = asyncio.create_task(r.conn.run())
    try:
        await wait_for(lambda: len(r.fake.subscriptions) == len(PRICES), what="subscribe")
        before = await r.fake.emit(1, ["ETH"])
        await wait_for(lambda: len(r.ticks) == 1, what="tick")
        r.fake.skip("ETH", 3)  # three trades happen, none is sent; the heartbeat's last_trade_id tells
        await wait_for(lambda: r.gaps, what="gap from the heartbeat")
        exchange, symbol, since, until = r.gaps[0]
        assert (exchange, symbol) == ("coinbase", "ETH") and abs((since - before[0].ts).total_seconds()) < 0.002
        assert until > since
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.fake.stop()


@pytest.mark.parametrize("kind", ["coinbase", "kraken", "okx", "bybit", "coinbase_advanced"])
async def test_a_silent_stall_is_detected_and_the_connector_reconnects(kind: str) -> None:
    r = await rig(kind, heartbeat_s=0.1, stall_s=3.0)
    task = asyncio.create_task(r.conn.run())
    stalls_before = metric("tokenpulse_feed_reconnects_total", exchange=kind, reason="stall")
    try:
        await wait_for(lambda: len(r.fake.subscriptions) == expected_subs(r), what="subscribe")
        await r.fake.emit(1)
        await asyncio.sleep(4.0)  # heartbeats keep a quiet market alive: no stall
        assert r.conn.health.stalls == 0 and r.fake.connections == 1
        r.fake.stall()  # the connection stays open but goes silent
        await wait_for(lambda: r.fake.connections == 2 and len(r.fake.subscriptions) == expected_subs(r), 20, "redo")
        assert r.conn.health.stalls == 1
        assert metric("tokenpulse_feed_reconnects_total", exchange=kind, reason="stall") - stalls_before == 1
        sent = await r.fake.emit(1)
        await wait_for(lambda: len(r.ticks) == len(PRICES) + len(sent), what="ticks after the stall")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.fake.stop()


async def test_an_unreachable_exchange_is_retried_with_backoff_and_reported_down() -> None:
    fake = FakeExchange("binance", PRICES)
    # reserve a port, then close it: connections are refused until the fake starts there
    await fake.start()
    url = fake.url
    await fake.stop()
    ticks: list[TickEvent] = []

    async def sink(t: TickBatch) -> None:
        ticks.extend(t.to_events())

    pairs = [Pair(s, VENUES["binance"].default_pair(s), "USDT") for s in PRICES]
    conn = VENUES["binance"].connector(url, pairs, sink, backoff_s=0.05, backoff_max_s=0.4, rng=random.Random(3))
    task = asyncio.create_task(conn.run())
    try:
        await wait_for(lambda: conn.health.reconnects >= 4, what="retries")
        assert not conn.connected.is_set() and conn.health.last_error
        assert metric("tokenpulse_feed_connected", exchange="binance") == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_kraken_v1_protocol_over_the_wire() -> None:
    """A Kraken URL without /v2 speaks v1 (the recorded format): XBT/USD subscriptions, array trade frames."""
    fake = await FakeExchange("kraken", PRICES, heartbeat_s=0.2).start()
    ticks: list[TickEvent] = []

    async def sink(t: TickBatch) -> None:
        ticks.extend(t.to_events())

    pairs = [Pair(s, VENUES["kraken"].default_pair(s), "USD") for s in PRICES]
    conn = VENUES["kraken"].connector(f"ws://127.0.0.1:{fake.port}", pairs, sink, backoff_s=0.05)
    task = asyncio.create_task(conn.run())
    try:
        await wait_for(lambda: fake.subscriptions, what="subscribe")
        assert sorted(fake.subscriptions[0][1]) == ["ETH/USD", "XBT/USD"]
        sent = await fake.emit(2)
        await wait_for(lambda: len(ticks) == len(sent), what="v1 ticks")
        assert {t.symbol for t in ticks} == set(PRICES) and all(t.source == "kraken" for t in ticks)
        for s in sent:
            match = [t for t in ticks if t.symbol == s.symbol and abs((t.ts - s.ts).total_seconds()) < 1e-5]
            assert len(match) == 1
        await asyncio.sleep(0.5)  # v1 heartbeats and acks are control frames, not bad ones
        assert conn.health.bad_messages == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()


async def test_a_failing_publish_is_reported_as_a_gap_and_the_connector_goes_on() -> None:
    fake = await FakeExchange("binance", PRICES).start()
    ticks: list[TickEvent] = []
    gaps: list[tuple[str, datetime, datetime]] = []
    calls = [0]

    async def sink(t: TickBatch) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("bus unavailable")
        ticks.extend(t.to_events())

    async def on_gap(exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        gaps.append((symbol, since, until))

    pairs = [Pair(s, VENUES["binance"].default_pair(s), "USDT") for s in PRICES]
    conn = VENUES["binance"].connector(fake.url, pairs, sink, on_gap=on_gap, backoff_s=0.05)
    task = asyncio.create_task(conn.run())
    try:
        await wait_for(lambda: conn.health.connected and fake.subscriptions, what="subscribe")
        (lost,) = await fake.emit(1, ["BTC"])
        await wait_for(lambda: gaps, what="the lost tick reported as a gap")
        assert gaps == [("BTC", gaps[0][1], gaps[0][2])] and abs((gaps[0][1] - lost.ts).total_seconds()) < 0.002
        sent = await fake.emit(1)
        await wait_for(lambda: len(ticks) == len(sent), what="ticks after the failure")
        assert conn.health.reconnects == 0 and fake.connections == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()


async def test_coinbase_advanced_sequence_jump_reports_every_pair_once() -> None:
    """Coinbase dropped messages (its sequence_num jumps): each pair is reported from its last trade, and the
    trade-id jump that follows is not a second report."""
    r = await rig("coinbase_advanced")
    task = asyncio.create_task(r.conn.run())
    try:
        await wait_for(lambda: r.conn.health.connected and r.fake.subscriptions, what="subscribe")
        before = await r.fake.emit(1)
        await wait_for(lambda: len(r.ticks) == len(PRICES), what="ticks")
        (ws,) = r.fake.clients
        r.fake.sequence_of[ws] += 3  # three messages Coinbase never sent us ...
        r.fake.skip("BTC", 2)  # ... two of them BTC trades
        after = await r.fake.emit(1)
        await wait_for(lambda: len(r.ticks) == 2 * len(PRICES), what="ticks after the drop")
        await asyncio.sleep(0.1)
        assert sorted(g[1] for g in r.gaps) == sorted(PRICES)
        last = {s.symbol: s.ts for s in before}
        for _exchange, symbol, since, until in r.gaps:
            assert abs((since - last[symbol]).total_seconds()) < 0.002 and until >= since
        assert metric("tokenpulse_feed_gaps_total", exchange="coinbase_advanced", cause="sequence") >= len(PRICES)
        assert {(t.symbol, int(t.trade_id or 0)) for t in r.ticks[len(PRICES) :]} == {
            (s.symbol, s.trade_id) for s in after
        }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.fake.stop()
