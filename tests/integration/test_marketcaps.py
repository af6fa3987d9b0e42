"""Market-cap poller against a fake CoinGecko on loopback (real HTTP, real bundled snapshots):
TTL cache saves calls, only changes are published, the call budget holds across restarts, BTC
dominance is right, the delta history sync asks only for missing days, and the stored series
keeps one point per day."""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from tokenpulse_gateway.writer import StoreWriter
from tokenpulse_ingest.marketcaps import BudgetExhausted, MarketCapPoller, last_stored_caps
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import MarketCapEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import MARKETCAPS

from testkit.coingecko import FakeCoinGecko, load_caps
from testkit.server import ThreadedServer
from testkit.wiring import collected

DAY = date(2025, 5, 10)
KEY = "cg-demo-key-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeCoinGecko, str]]:
    fake = FakeCoinGecko(load_caps(), DAY, require_key=KEY)
    with ThreadedServer(fake.app()) as srv:
        yield fake, srv.url + "/api/v3"


@pytest.fixture
def fake(server: tuple[FakeCoinGecko, str]) -> FakeCoinGecko:
    server[0].hits.clear()
    server[0].as_of = DAY
    return server[0]


class Clock:
    def __init__(self, day: date) -> None:
        self.now = datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def make(url: str, bus: InMemoryBus, clock: Clock, tmp_path: Path, **marketcap: object) -> MarketCapPoller:
    settings = Settings(marketcap={"url": url, "api_key": KEY, "cache_ttl_s": 600, **marketcap})
    return MarketCapPoller(bus, settings, symbols=["BTC", "ETH", "SOL"], clock=clock, budget_path=tmp_path / "b.json")


async def collect(bus: InMemoryBus) -> list[MarketCapEvent]:
    got: list[MarketCapEvent] = collected(bus, MARKETCAPS, "test")
    await bus.start()
    return got


async def test_ttl_cache_and_delta_publish(server, fake: FakeCoinGecko, tmp_path: Path) -> None:
    bus, clock = InMemoryBus(), Clock(DAY)
    got = await collect(bus)
    poller = make(server[1], bus, clock, tmp_path)
    first = await poller.poll_once()
    assert sorted(fake.paths()) == ["/api/v3/coins/markets", "/api/v3/global"]
    assert {e.symbol for e in first} == {"BTC", "ETH", "SOL", None}
    clock.now += 300  # within the TTL: no call, nothing new
    assert await poller.poll_once() == []
    assert len(fake.hits) == 2
    clock.now += 400  # TTL passed: fetched again, but nothing changed -> nothing published
    assert await poller.poll_once() == []
    assert len(fake.hits) == 4
    fake.as_of = DAY + timedelta(days=1)  # the API moves on
    clock.now += 86_400
    changed = await poller.poll_once()
    assert {e.symbol for e in changed} == {"BTC", "ETH", "SOL", None}
    assert poller.calls == 6 == len(fake.hits)
    await bus.drain()
    await bus.stop()
    await poller.aclose()
    assert len(got) == 8
    caps = load_caps()
    day_ms = int(datetime(2025, 5, 11, tzinfo=UTC).timestamp() * 1000)
    assert {e.symbol: e.market_cap for e in changed} == {s: caps[s][day_ms][0] for s in ("BTC", "ETH", "SOL", None)}
    assert all(e.ts == datetime(2025, 5, 11, tzinfo=UTC) and e.source == "coingecko" for e in changed)


async def test_btc_dominance_matches_the_bundled_derived_series(server, fake, tmp_path: Path) -> None:
    bus = InMemoryBus()
    poller = make(server[1], bus, Clock(DAY), tmp_path)
    await poller.poll_once()
    await poller.aclose()
    text = (DEFAULT_BUNDLE / "marketcap/btc_dominance_derived.csv").read_text()
    row = next(r for r in csv.DictReader(text.splitlines()) if r["date"] == DAY.isoformat())
    assert poller.dominance == pytest.approx(float(row["btc_dominance_pct"]), abs=1e-4)
    assert poller.dominance == pytest.approx(poller.reported_dominance, rel=1e-12)
    assert "BTC dominance" in poller.status()


async def test_monthly_budget_stops_calls_and_survives_a_restart(server, fake, tmp_path: Path) -> None:
    bus, clock = InMemoryBus(), Clock(DAY)
    poller = make(server[1], bus, clock, tmp_path, calls_per_month=3)
    await poller.poll_once()  # 2 calls
    clock.now += 700
    with pytest.raises(BudgetExhausted):
        await poller.poll_once()  # markets (3rd call) fine, /global refused by the budget
    await poller.aclose()
    assert len(fake.hits) == 3
    again = make(server[1], bus, clock, tmp_path, calls_per_month=3)  # a restart, same data dir
    with pytest.raises(BudgetExhausted):
        await again.poll_once()
    assert len(fake.hits) == 3  # no call went out
    clock.now = datetime(2025, 6, 1, 0, 5, tzinfo=UTC).timestamp()  # a new month
    fake.as_of = date(2025, 5, 18)
    assert again.budget.remaining() == 3
    await again.poll_once()
    await again.aclose()
    assert len(fake.hits) == 5
    assert again.client.limiter.max_rate == 30 and again.client.limiter.time_period == 60  # demo plan per minute


async def test_delta_history_sync_fetches_only_missing_days(server, fake, tmp_path: Path) -> None:
    bus, clock = InMemoryBus(), Clock(DAY)
    got = await collect(bus)
    poller = make(server[1], bus, clock, tmp_path)
    day_ms = int(datetime(2025, 5, 10, tzinfo=UTC).timestamp() * 1000)
    stored = {"BTC": day_ms - 10 * 86_400_000, "ETH": day_ms - 86_400_000}  # SOL: nothing stored
    n = await poller.sync_history(stored)
    assert [(h.path, h.params["days"]) for h in fake.hits] == [
        ("/api/v3/coins/bitcoin/market_chart", "10"),  # ETH is up to date: no call
        ("/api/v3/coins/solana/market_chart", "365"),
    ]
    await bus.drain()
    btc = sorted(e.ts for e in got if e.symbol == "BTC")
    assert btc[0] == datetime(2025, 5, 1, tzinfo=UTC) and btc[-1] == datetime(2025, 5, 9, tzinfo=UTC)
    assert len(btc) == 9 and n == len(got)  # the 9 whole days after the last stored one, today comes from polls
    fake.hits.clear()
    latest = {s: max(int(e.ts.timestamp() * 1000) for e in got if e.symbol == s) for s in ("BTC", "SOL")}
    assert await poller.sync_history({**latest, "ETH": stored["ETH"]}) == 0
    assert fake.hits == []  # up to date: nothing fetched
    await bus.stop()
    await poller.aclose()


async def test_the_key_is_sent_as_a_header_and_never_logged(server, fake, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    bus = InMemoryBus()
    poller = make(server[1], bus, Clock(DAY), tmp_path)
    await poller.poll_once()
    await poller.aclose()
    assert all(h.headers.get("x-cg-demo-api-key") == KEY for h in fake.hits)
    assert all(KEY not in h.path and KEY not in str(h.params) for h in fake.hits)
    assert KEY not in caplog.text
    assert KEY not in repr(Settings(marketcap={"api_key": KEY}))
    wrong = MarketCapPoller(
        bus, Settings(marketcap={"url": server[1], "api_key": "nope"}), symbols=["BTC"], budget_path=None
    )
    with pytest.raises(Exception, match="401"):
        await wrong.poll_once()
    await wrong.aclose()
    assert "nope" not in caplog.text


async def test_snapshots_are_one_point_per_day_in_the_store(server, fake, store: Store, tmp_path: Path) -> None:
    bus, clock = InMemoryBus(), Clock(DAY)
    settings = Settings()
    StoreWriter(store).register(Context(settings=settings, bus=bus, store=store, embedded=True))
    await bus.start()
    poller = make(server[1], bus, clock, tmp_path, cache_ttl_s=0)
    await poller.poll_once()
    fake.as_of = DAY + timedelta(days=1)  # a later snapshot, still the same day on our clock
    clock.now += 3600
    await poller.poll_once()
    await bus.drain()
    rows = await store.query("SELECT symbol, market_cap FROM market_caps FINAL ORDER BY symbol")
    caps = load_caps()
    later = int(datetime(2025, 5, 11, tzinfo=UTC).timestamp() * 1000)
    assert [tuple(r) for r in rows] == [("", caps[None][later][0])] + [
        (s, caps[s][later][0]) for s in ("BTC", "ETH", "SOL")
    ]
    assert await last_stored_caps(store) == {
        s: int(datetime(2025, 5, 10, tzinfo=UTC).timestamp() * 1000) for s in ("BTC", "ETH", "SOL")
    }
    await bus.stop()
    await poller.aclose()


async def test_the_ingest_service_runs_the_poller_when_enabled(server, fake, store: Store, tmp_path: Path) -> None:
    from tokenpulse_ingest.service import IngestService

    settings = Settings(
        runtime={"symbols": ["BTC", "ETH"]},
        ingest={"live_feed": "off"},
        store={"data_dir": tmp_path},
        marketcap={"poll": True, "url": server[1], "api_key": KEY, "poll_s": 1},
    )
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, store=store, embedded=True)
    got: list[MarketCapEvent] = collected(bus, MARKETCAPS, "test")
    ingest = IngestService()
    ingest.register(ctx)
    await bus.start()
    await ingest.start(ctx)
    try:
        for _ in range(600):
            if "BTC dominance" in ctx.status.get("marketcaps", "") and {e.symbol for e in got} >= {"BTC", "ETH", None}:
                break
            await asyncio.sleep(0.05)
        assert {e.symbol for e in got} >= {"BTC", "ETH", None}, got
        # history sync first: nothing stored, so the last 365 days of each token, then the polls
        assert [p for p in fake.paths() if p.endswith("market_chart")] == [
            "/api/v3/coins/bitcoin/market_chart",
            "/api/v3/coins/ethereum/market_chart",
        ]
        assert (tmp_path / "marketcap-budget.json").exists()
    finally:
        await ingest.stop()
        await bus.stop()
