"""REST backfill against a fake exchange on loopback (real HTTP, real bundled 1-minute BTC history):
gaps filled exactly, Retry-After honoured, faults survived, rate budgets kept."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tokenpulse_ingest.rest.client import RestError
from tokenpulse_ingest.rest_backfill import REST_VERSION, RestBackfiller, plan_windows
from tokenpulse_ingest.venues.registry import VENUES
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import CANDLES

from testkit.rest_exchange import FakeExchange, load_series
from testkit.server import ThreadedServer
from testkit.wiring import collected

SERIES = load_series()


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeExchange, str]]:
    exchange = FakeExchange(SERIES)
    with ThreadedServer(exchange.app()) as server:
        yield exchange, server.url


@pytest.fixture
def exchange(fake: tuple[FakeExchange, str]) -> FakeExchange:
    ex = fake[0]
    ex.faults.clear()
    ex.hits.clear()
    ex.weight_offset = 0
    ex.mangle = None
    return ex


def settings_for(url: str, **venues: dict[str, Any]) -> Settings:
    """Every venue's REST base at ``url``, with these settings of their sections (limits) on top."""
    sections = {name: {"rest_url": url, **venues.get(name, {})} for name in [*VENUES, "ccxt"]}
    return Settings(ingest={"rest_backfill_max_bars": 10_000}, **sections)


async def run_backfill(
    url: str, exchange: str, since: datetime, until: datetime, intervals: list[Interval], **venues: dict[str, Any]
) -> tuple[list[CandleEvent], RestBackfiller]:
    bus = InMemoryBus()
    got: list[CandleEvent] = collected(bus, CANDLES, "test")
    await bus.start()
    backfiller = RestBackfiller(bus, settings_for(url, **venues), intervals=intervals)
    try:
        await backfiller.backfill_gap(exchange, "BTC", since, until, now=until + timedelta(days=1))
        await bus.drain()
    finally:
        await backfiller.aclose()
        await bus.stop()
    return got, backfiller


def expected(interval: Interval, since: datetime, until: datetime) -> list[tuple[int, float, float, float, float]]:
    lo = interval.bucket_ms(int(since.timestamp() * 1000))
    hi = interval.bucket_ms(int(until.timestamp() * 1000))
    return [(b.ts_ms, b.open, b.high, b.low, b.close) for b in SERIES[interval] if lo <= b.ts_ms < hi]


def as_rows(events: list[CandleEvent], interval: Interval) -> list[tuple[int, float, float, float, float]]:
    return sorted(
        (int(e.ts.timestamp() * 1000), e.open, e.high, e.low, e.close) for e in events if e.interval is interval
    )


SINCE = datetime(2024, 12, 9, 22, 17, 30, tzinfo=UTC)
UNTIL = datetime(2024, 12, 12, 1, 40, 10, tzinfo=UTC)


async def test_binance_gap_is_filled_exactly_over_many_pages(fake: tuple[FakeExchange, str], exchange) -> None:
    intervals = [Interval.M1, Interval.M5, Interval.H1, Interval.H4, Interval.D1]
    got, backfiller = await run_backfill(fake[1], "binance", SINCE, UNTIL, intervals)
    keys = Counter((e.interval, e.ts) for e in got)
    assert max(keys.values()) == 1, "no candle twice"
    for interval in intervals:
        want = expected(interval, SINCE, UNTIL)
        assert want, interval
        assert as_rows(got, interval) == want, interval  # every closed bucket of the gap, nothing else
    one_minute = [e for e in got if e.interval is Interval.M1]
    assert len(one_minute) > 3000  # 4 pages of 1,000
    assert {e.source for e in got} == {"binance"} and {e.version for e in got} == {REST_VERSION}
    assert all(e.event_id == f"rest-binance-BTC-{e.interval.value}-{int(e.ts.timestamp() * 1000)}" for e in got)
    assert all(e.trades > 0 for e in one_minute)
    assert backfiller.exchanges["binance"].client.stats.retries == 0


async def test_retry_after_is_honoured_on_429_and_418(fake: tuple[FakeExchange, str], exchange) -> None:
    exchange.script(("429", 1), ("418", 2), ("500",), ("429", None))
    since, until = datetime(2024, 12, 20, tzinfo=UTC), datetime(2024, 12, 20, 3, tzinfo=UTC)
    got, backfiller = await run_backfill(fake[1], "binance", since, until, [Interval.M1])
    assert as_rows(got, Interval.M1) == expected(Interval.M1, since, until)
    hits = exchange.requests("/api/v3/klines")
    assert [h.status for h in hits] == [429, 418, 500, 429, 200]
    # measured at the server: the next request came no earlier than the Retry-After asked
    assert hits[1].at - hits[0].at >= 1.0
    assert hits[2].at - hits[1].at >= 2.0
    stats = backfiller.exchanges["binance"].client.stats
    assert stats.retry_after_waits == [1.0, 2.0]
    assert stats.retries == 4


async def test_a_ban_longer_than_the_limit_gives_up_with_a_clear_error(fake, exchange) -> None:
    exchange.script(("418", 7200))
    with pytest.raises(RestError, match=r"418 \(IP banned\) for 7200s.*REST_MAX_WAIT_S"):
        await run_backfill(fake[1], "binance", SINCE, UNTIL, [Interval.H1])


async def test_slow_answers_time_out_and_are_retried(fake: tuple[FakeExchange, str], exchange) -> None:
    exchange.script(("slow", 3.0), ("slow", 0.2))
    since, until = datetime(2024, 12, 3, tzinfo=UTC), datetime(2024, 12, 4, tzinfo=UTC)
    bus = InMemoryBus()
    backfiller = RestBackfiller(bus, settings_for(fake[1]), intervals=[Interval.H1])
    backfiller.exchange("coinbase").client.http.timeout = httpx.Timeout(1.0)
    got: list[CandleEvent] = collected(bus, CANDLES, "test")
    await bus.start()
    await backfiller.backfill_gap("coinbase", "BTC", since, until, now=until)
    await bus.drain()
    await bus.stop()
    await backfiller.aclose()
    assert as_rows(got, Interval.H1) == expected(Interval.H1, since, until)
    assert backfiller.exchanges["coinbase"].client.stats.retries == 1  # the 3 s answer timed out once


async def test_coinbase_pages_of_300_and_4h_rolled_up(fake: tuple[FakeExchange, str], exchange) -> None:
    intervals = [Interval.M1, Interval.H4]
    got, _ = await run_backfill(fake[1], "coinbase", SINCE, UNTIL, intervals)
    for interval in intervals:
        assert as_rows(got, interval) == expected(interval, SINCE, UNTIL)
    pages = exchange.requests("/products/BTC-USD/candles")
    assert {h.params["granularity"] for h in pages} == {"60", "3600"}  # no native 4h at Coinbase
    assert len([h for h in pages if h.params["granularity"] == "60"]) == -(
        -len(expected(Interval.M1, SINCE, UNTIL)) // 300
    )


async def test_coinbase_budget_is_kept(fake: tuple[FakeExchange, str], exchange) -> None:
    rate = 4.0
    since, until = datetime(2024, 12, 14, tzinfo=UTC), datetime(2024, 12, 16, 12, tzinfo=UTC)
    got, _ = await run_backfill(fake[1], "coinbase", since, until, [Interval.M1], coinbase={"requests_per_s": rate})
    assert as_rows(got, Interval.M1) == expected(Interval.M1, since, until)
    # this backfill's requests (a straggler of the previous test's backfill may reach the server late)
    hits = [
        h
        for h in exchange.requests("/products")
        if h.params.get("granularity") == "60" and since <= datetime.fromisoformat(h.params["start"]) < until
    ]
    times = [h.at for h in hits]
    # 12 pages; a request that timed out on a loaded machine is retried (same page, again within the budget)
    assert len({tuple(sorted(h.params.items())) for h in hits}) == 12 <= len(times)
    # a token bucket of `rate` per second: any window of one second holds at most the burst plus the refill
    # (one more allowed for arrival jitter); without the limiter all 12 arrive within a fraction of a second
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 2 * rate + 1
    assert times[-1] - times[0] >= (len(times) - rate) / rate - 0.3  # a full bucket of 4, then 4 per second


async def test_binance_waits_for_the_next_minute_rather_than_cross_the_reported_weight(fake, exchange) -> None:
    """The server reports the IP's used weight; near the limit the client waits for the minute to roll over."""
    settings = settings_for(fake[1], binance={"weight_per_minute": 100})
    exchange.weight_offset = 95  # other clients on this IP used 95 of 100 this minute
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    bus = InMemoryBus()
    await bus.start()
    backfiller = RestBackfiller(bus, settings, intervals=[Interval.M1], sleep=no_sleep)
    since, until = datetime(2024, 12, 21, tzinfo=UTC), datetime(2024, 12, 23, tzinfo=UTC)
    result = await backfiller.backfill_gap("binance", "BTC", since, until, now=until)
    await backfiller.aclose()
    await bus.stop()
    stats = backfiller.exchanges["binance"].client.stats
    assert result.total == 2880 and stats.requests == 3
    assert stats.max_used_weight >= 97
    assert len(stats.weight_waits) == 2  # before the 2nd and the 3rd request: 97 + 2 > 100
    assert all(0 < w <= 60.05 for w in stats.weight_waits)
    assert [h.status for h in exchange.requests("/api/v3/klines")] == [200, 200, 200]  # never refused


async def test_kraken_rate_limit_error_is_retried_and_old_candles_are_reported_unavailable(fake, exchange) -> None:
    end = datetime.fromtimestamp(exchange.end_ms / 1000, UTC) - timedelta(minutes=1)  # its last minute is open
    exchange.script(("kraken-rate",))
    since = end - timedelta(hours=20)  # Kraken keeps 720 1-minute candles = 12 h
    got, backfiller = await run_backfill(fake[1], "kraken", since, end, [Interval.M1, Interval.H1])
    one_minute = as_rows(got, Interval.M1)
    kept_from = Interval.M1.bucket_ms(exchange.end_ms - 1) - 719 * 60_000
    assert one_minute == [r for r in expected(Interval.M1, since, end) if r[0] >= kept_from]
    assert len(one_minute) == 719  # 720 kept by Kraken, the newest one still open
    assert as_rows(got, Interval.H1) == expected(Interval.H1, since, end)
    assert backfiller.exchanges["kraken"].client.stats.retries == 1


async def test_unknown_symbol_is_a_clear_error_not_a_retry_loop(fake, exchange) -> None:
    bus = InMemoryBus()
    backfiller = RestBackfiller(bus, settings_for(fake[1]), intervals=[Interval.H1])
    with pytest.raises(RestError, match="Invalid symbol"):
        await backfiller.backfill_gap("binance", "NOPE", SINCE, UNTIL, now=UNTIL)
    await backfiller.aclose()
    assert len(exchange.requests("/api/v3/klines")) == 1
    with pytest.raises(ValueError, match="unknown exchange"):
        backfiller.exchange("mtgox")


def test_plan_windows_only_closed_candles_and_at_most_max_bars() -> None:
    since = int(datetime(2024, 12, 1, 0, 0, 30, tzinfo=UTC).timestamp() * 1000)
    now = int(datetime(2024, 12, 1, 5, 30, 45, tzinfo=UTC).timestamp() * 1000)
    windows = {i: (a, b) for i, a, b in plan_windows(since, now + 10**9, list(Interval), 100, now)}
    h = 3_600_000
    assert windows[Interval.H1] == (since - 30_000, since - 30_000 + 5 * h)  # 00:00..05:00, the 05:00 one is open
    assert Interval.D1 not in windows  # no daily candle has closed yet
    assert windows[Interval.M1][1] - windows[Interval.M1][0] == 100 * 60_000  # the newest 100


async def test_concurrent_gaps_on_one_exchange_run_one_at_a_time(fake, exchange) -> None:
    bus = InMemoryBus()
    await bus.start()
    backfiller = RestBackfiller(bus, settings_for(fake[1]), intervals=[Interval.H1])
    a = backfiller.backfill_gap("binance", "BTC", SINCE, UNTIL, now=UNTIL)
    b = backfiller.backfill_gap("binance", "BTC", SINCE, UNTIL, now=UNTIL)
    ra, rb = await asyncio.gather(a, b)
    await backfiller.aclose()
    await bus.stop()
    assert ra.total == rb.total == len(expected(Interval.H1, SINCE, UNTIL))


async def test_okx_pages_of_100_back_in_time_and_its_rate_limit_answer_is_retried(fake, exchange) -> None:
    exchange.script(("okx-rate",))
    since, until = datetime(2024, 12, 19, 20, 30, tzinfo=UTC), datetime(2024, 12, 20, 4, 10, tzinfo=UTC)
    intervals = [Interval.M1, Interval.H4, Interval.D1]
    got, backfiller = await run_backfill(fake[1], "okx", since, until, intervals)
    for interval in intervals:
        assert as_rows(got, interval) == expected(interval, since, until), interval
    pages = [h for h in exchange.requests("/api/v5/market/history-candles") if h.status == 200]
    assert len(expected(Interval.M1, since, until)) == 460
    assert len(pages) == 5 + 1 + 1 + 1  # 1m in pages of 100, 4H, 1Dutc, and the rate-limited answer (HTTP 200)
    assert {h.params["bar"] for h in pages} == {"1m", "4H", "1Dutc"}
    assert backfiller.exchanges["okx"].client.stats.retries == 1


async def test_bybit_pages_of_1000_back_in_time_and_its_rate_limit_answer_is_retried(fake, exchange) -> None:
    exchange.script(("bybit-rate",))
    intervals = [Interval.M1, Interval.H4, Interval.D1]
    got, backfiller = await run_backfill(fake[1], "bybit", SINCE, UNTIL, intervals)
    for interval in intervals:
        assert as_rows(got, interval) == expected(interval, SINCE, UNTIL), interval
    minutes = [h for h in exchange.requests("/v5/market/kline") if h.params["interval"] == "1"]
    assert len(expected(Interval.M1, SINCE, UNTIL)) == 3083
    assert len(minutes) == 4 + 1  # four pages of at most 1,000, and the rate-limited answer (HTTP 200)
    assert backfiller.exchanges["bybit"].client.stats.retries == 1


async def test_coinbase_advanced_pages_of_350_and_4h_rolled_up(fake: tuple[FakeExchange, str], exchange) -> None:
    exchange.script(("500",))
    intervals = [Interval.M1, Interval.H4]
    got, backfiller = await run_backfill(fake[1], "coinbase_advanced", SINCE, UNTIL, intervals)
    for interval in intervals:
        assert as_rows(got, interval) == expected(interval, SINCE, UNTIL), interval
    pages = [h for h in exchange.requests("/market/products/BTC-USD/candles") if h.status == 200]
    assert {h.params["granularity"] for h in pages} == {"ONE_MINUTE", "ONE_HOUR"}  # no native 4h
    assert len([h for h in pages if h.params["granularity"] == "ONE_MINUTE"]) == -(-3083 // 350)
    assert backfiller.exchanges["coinbase_advanced"].client.stats.retries == 1


# where each part of a candle sits in each venue's answer row
ROW_FIELDS = {
    "binance": {"time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "trades": 8},
    "coinbase": {"time": 0, "low": 1, "high": 2, "open": 3, "close": 4, "volume": 5},
    "kraken": {"time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 6, "trades": 7},
    "okx": {"time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5},
    "bybit": {"time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5},
}
MANGLES = {"missing": None, "null": None, "text": "abc", "bool": True, "nested": [1]}
ROW_CASES = [
    (venue, part, how)
    for venue, parts in ROW_FIELDS.items()
    for part in parts
    for how in (MANGLES if part in ("time", "close") else ("missing", "null"))
]


def mangle_once(venue: str, index: int, how: str) -> Any:
    """Spoil one field of the fourth row of the venue's first answer."""
    done: list[bool] = []

    def mangle(name: str, rows: list[Any]) -> list[Any]:
        if name != venue or done or len(rows) < 4:
            return rows
        done.append(True)
        row = list(rows[3])
        rows[3] = row[:index] if how == "missing" else [*row[:index], MANGLES[how], *row[index + 1 :]]
        return rows

    return mangle


async def backfill_last_minutes(url: str, venue: str, end_ms: int, minutes: int = 60) -> tuple[list[CandleEvent], Any]:
    bus = InMemoryBus()
    got: list[CandleEvent] = collected(bus, CANDLES, "test")
    await bus.start()
    fast = {"requests_per_s": 100}  # these tests are about rows, not rate limits
    backfiller = RestBackfiller(bus, settings_for(url, kraken=fast, coinbase=fast), intervals=[Interval.M1])
    until = datetime.fromtimestamp(end_ms / 1000, UTC)
    try:
        result = await backfiller.backfill_gap(venue, "BTC", until - timedelta(minutes=minutes), until, now=until)
        await bus.drain()
    finally:
        await backfiller.aclose()
        await bus.stop()
    return got, result


@pytest.mark.parametrize(("venue", "part", "how"), ROW_CASES, ids=[f"{v}-{p}-{h}" for v, p, h in ROW_CASES])
async def test_a_candle_row_missing_or_garbling_a_field_is_rejected_never_defaulted(
    fake: tuple[FakeExchange, str], exchange: FakeExchange, venue: str, part: str, how: str
) -> None:
    clean, clean_result = await backfill_last_minutes(fake[1], venue, exchange.end_ms)
    exchange.mangle = mangle_once(venue, ROW_FIELDS[venue][part], how)
    got, result = await backfill_last_minutes(fake[1], venue, exchange.end_ms)
    assert clean_result.rejected == 0 and result.rejected == 1  # the spoilt row, counted
    assert len(got) == len(clean) - 1  # and only it is missing: nothing stands in for it
    assert {values(e) for e in got} <= {values(e) for e in clean}


def values(e: CandleEvent) -> tuple[Any, ...]:
    return e.event_id, e.ts, e.open, e.high, e.low, e.close, e.volume, e.trades


@pytest.mark.parametrize("venue", list(ROW_FIELDS))
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
async def test_a_candle_row_with_a_bad_price_is_rejected(
    fake: tuple[FakeExchange, str], exchange: FakeExchange, venue: str, value: str
) -> None:
    clean, _ = await backfill_last_minutes(fake[1], venue, exchange.end_ms)
    index = ROW_FIELDS[venue]["low"]

    def mangle(name: str, rows: list[Any]) -> list[Any]:
        if len(rows) > 3:
            rows[3] = [*rows[3][:index], value, *rows[3][index + 1 :]]
        return rows

    exchange.mangle = mangle
    got, result = await backfill_last_minutes(fake[1], venue, exchange.end_ms)
    assert result.rejected >= 1 and len(got) == len(clean) - result.rejected
