"""The columnar backfill on the real engine (chDB): the bundled history stored exactly as the event path
makes it, a re-run inserting nothing, and a user's CSV whose bad rows are rejected with their reason."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bulk import load_bundle, load_csv
from tokenpulse_ingest.bundle import bar_row
from tokenpulse_shared.events import CandleEvent, Interval, validate_many
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

ROWS = (
    "SELECT event_id, symbol, interval, toUnixTimestamp64Milli(ts), open, high, low, close, volume, trades, source, "
    "version"
)


# BTC's daily candles come from three files (first file wins), ETH's from two; 4h and 5m are rolled up
SYMBOLS, INTERVALS = ["BTC", "ETH"], [Interval.D1, Interval.H4, Interval.M5]


def event_path_rows(bundle_dir: Path) -> set[tuple[object, ...]]:
    """What the event path (bar → pydantic candle event → store writer) stores for that part of the bundle."""
    now = datetime.now(UTC)
    out: set[tuple[object, ...]] = set()
    for symbol, interval, bars in plan(bundle_dir, SYMBOLS, INTERVALS):
        events, _ = validate_many(CandleEvent, [bar_row(symbol, interval, b, now) for b in bars])
        out |= {
            (e.event_id, e.symbol, e.interval.value, int(e.ts.timestamp() * 1000), e.open, e.high, e.low, e.close,
             e.volume, e.trades, e.source, e.version)
            for e in events
        }  # fmt: skip
    return out


async def test_bundle_is_stored_as_the_event_path_stores_it_and_a_rerun_adds_nothing(store: Store) -> None:
    bundle_dir = Settings().runtime.bundle_dir
    progress: list[tuple[int, int]] = []
    result = await load_bundle(
        store, bundle_dir, SYMBOLS, INTERVALS, progress=lambda _label, done, of: progress.append((done, of))
    )
    stored = set(await store.query(f"{ROWS} FROM candles FINAL"))
    assert stored == event_path_rows(bundle_dir)
    assert {r[2] for r in stored} == {"1d", "4h", "5m"} and {r[1] for r in stored} == {"BTC", "ETH"}
    assert result.candles == len(stored) and progress[-1] == (len(stored), len(stored))
    # the rows a later file repeats but an earlier one already gives are still judged: reported, not stored
    assert result.rejected == sum(result.rejects.reasons.values()) and result.rejects.examples
    physical = (await store.query("SELECT count() FROM candles"))[0][0]
    again = await load_bundle(store, bundle_dir, SYMBOLS, INTERVALS)
    assert again.candles == result.candles
    assert (await store.query("SELECT count() FROM candles"))[0][0] == physical  # every block skipped


async def test_a_users_csv_keeps_its_good_rows_and_reports_the_bad_ones(store: Store, tmp_path: Path) -> None:
    rows = [
        ["ts", "open", "high", "low", "close", "volume"],
        ["1733011200000", "1", "2", "0.5", "1.5", "3"],  # good
        ["1733011260000000", "1", "2", "0.5", "1.5", ""],  # good: µs, volume empty means 0
        ["1733011320000", "1", "0.2", "0.5", "1.5", "3"],  # high below low
        ["1733011380000", "abc", "2", "0.5", "1.5", "3"],  # text for a price
        ["1733011440001", "1", "2", "0.5", "1.5", "3"],  # not on the minute
        ["", "1", "2", "0.5", "1.5", "3"],  # no time
        ["1733011500000", "nan", "2", "0.5", "1.5", "3"],
        ["1733011560000", "1", "2", "0.5", "1.5", "-1"],
    ]
    path = tmp_path / "pepe.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = await load_csv(store, path, "PEPE", Interval.M1, "mine")
    stored = await store.query(f"{ROWS} FROM candles FINAL WHERE symbol = 'PEPE' ORDER BY ts")
    assert [(r[0], r[3], r[8], r[10]) for r in stored] == [
        ("csv-PEPE-1m-1733011200000", 1733011200000, 3.0, "mine"),
        ("csv-PEPE-1m-1733011260000", 1733011260000, 0.0, "mine"),
    ]
    assert result.rejected == 6 and result.candles == 2
    errors = tmp_path / "rejected.csv"
    result.rejects.write(errors)
    with errors.open() as fh:
        written = list(csv.DictReader(fh))
    assert [(w["ts"], w["reason"].split(":")[0]) for w in written] == [
        ("1733011320000", "high must be >= open, close and low"),
        ("1733011380000", "open"),
        ("1733011440001", "ts must be aligned to the interval"),
        ("", "ts"),
        ("1733011500000", "open"),
        ("1733011560000", "volume"),
    ]


async def test_rest_history_into_the_store_equals_the_event_path(store: Store) -> None:
    """The same Binance answers (fake exchange on loopback, one row spoilt) by both paths: the same candles."""
    from datetime import timedelta

    from tokenpulse_ingest.rest_backfill import RestBackfiller
    from tokenpulse_shared.bus.memory import InMemoryBus
    from tokenpulse_shared.topics import CANDLES

    from testkit.rest_exchange import FakeExchange, load_series
    from testkit.server import ThreadedServer
    from testkit.wiring import collected

    exchange = FakeExchange(load_series())

    def spoil_fifth_low(venue: str, rows: list[list[object]]) -> list[list[object]]:
        if len(rows) > 5:
            rows[5] = [*rows[5][:3], "99999999", *rows[5][4:]]  # a low above the high
        return rows

    exchange.mangle = spoil_fifth_low
    with ThreadedServer(exchange.app()) as server:
        settings = Settings(binance={"rest_url": server.url})
        until = datetime.fromtimestamp(exchange.end_ms / 1000, UTC)
        since = until - timedelta(hours=6)
        bus = InMemoryBus()
        events: list[CandleEvent] = collected(bus, CANDLES, "test")
        await bus.start()
        by_events = RestBackfiller(bus, settings, intervals=[Interval.M1, Interval.H1])
        by_store = RestBackfiller(InMemoryBus(), settings, intervals=[Interval.M1, Interval.H1], store=store)
        try:
            published = await by_events.backfill_gap("binance", "BTC", since, until, now=until)
            await bus.drain()
            stored = await by_store.backfill_gap("binance", "BTC", since, until, now=until)
        finally:
            await by_events.aclose()
            await by_store.aclose()
            await bus.stop()
    rows = set(await store.query(f"{ROWS} FROM candles FINAL"))
    expected = {
        (e.event_id, e.symbol, e.interval.value, int(e.ts.timestamp() * 1000), e.open, e.high, e.low, e.close,
         e.volume, e.trades, e.source, e.version)
        for e in events
    }  # fmt: skip
    assert rows == expected and len(rows) == published.total == stored.total > 300
    assert stored.rejected == published.rejected >= 1  # the spoilt row, by both paths
