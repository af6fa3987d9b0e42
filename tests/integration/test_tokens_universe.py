"""``/v1/tokens`` over the shipped 1,000-token universe (real gateway app on chDB and the in-process bus): every
member listed with its name from the universe topic, paged with cursors (no row twice, none missed), each
sort both ways with missing values last, each filter, and clear 4xx answers for bad values; a token removed
from the universe leaves the list."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tokenpulse_gateway.service import GatewayService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import (
    CandleEvent,
    Direction,
    GradeEvent,
    Interval,
    MarketCapEvent,
    PriceEvent,
    SignalEvent,
)
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import CANDLES, GRADES, MARKETCAPS, PRICES, SIGNALS, UNIVERSE
from tokenpulse_shared.universe import UniversePublisher, load_file

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKENS = load_file(DEFAULT_BUNDLE / "universe" / "top1000.csv")
SORTS = ["market_cap", "volume_24h", "change_24h", "trader_grade", "investor_grade"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryBus]]:
    store = await Store(f"chdb://{tmp_path_factory.mktemp('tokens') / 'ch'}").open()
    bus = InMemoryBus()
    settings = Settings(
        runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}, gateway={"free_limit_per_minute": 100_000}
    )
    gateway = GatewayService()
    gateway.register(Context(settings=settings, bus=bus, store=store, embedded=True))
    assert gateway.app is not None
    await bus.start()
    await UniversePublisher(bus).publish(TOKENS)
    await bus.publish(PRICES, [*market(NOW - timedelta(hours=24)), *market(NOW)])
    await bus.publish(CANDLES, [*candles()])
    await bus.publish(MARKETCAPS, [*caps()])
    await bus.publish(GRADES, [*grades()])
    await bus.publish(SIGNALS, [*signals()])
    await bus.drain()
    for _ in range(600):  # the first answer reads the 24 h references from the store: wait for the writer
        if (await store.query("SELECT count() FROM prices"))[0][0] >= 2 * len(TOKENS):
            break
        await asyncio.sleep(0.1)
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        key = (await client.post("/v1/keys", json={"name": "t"})).json()["key"]
        client.headers["X-API-Key"] = key
        yield client, bus
    await bus.stop()
    await store.close()


NOW = datetime.now(UTC)
rng = random.Random(3)
# most tokens get every value; some miss some (no grade yet, no market cap): they must come last
HAS = {t.symbol: rng.random() > 0.1 for t in TOKENS}


def market(at: datetime) -> list[PriceEvent]:
    return [PriceEvent(symbol=t.symbol, ts=at, price=rng.uniform(0.01, 1000)) for t in TOKENS]


def candles() -> list[CandleEvent]:
    at = (NOW - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    return [
        CandleEvent(symbol=t.symbol, interval=Interval.H1, ts=at, open=1.0, high=2.0, low=0.5, close=1.5, volume=v)
        for t in TOKENS
        if HAS[t.symbol] and (v := rng.uniform(1, 1e6))
    ]


def caps() -> list[MarketCapEvent]:
    return [MarketCapEvent(symbol=t.symbol, ts=NOW, market_cap=1e12 / (t.rank or 1)) for t in TOKENS if HAS[t.symbol]]


def grades() -> list[GradeEvent]:
    return [
        GradeEvent(symbol=t.symbol, ts=NOW, trader_grade=rng.uniform(0, 100), investor_grade=rng.uniform(0, 100))
        for t in TOKENS
        if HAS[t.symbol]
    ]


def signals() -> list[SignalEvent]:
    out = []
    for t in TOKENS[::3]:
        direction = Direction.BULLISH if (t.rank or 0) % 2 else Direction.BEARISH
        out.append(SignalEvent(symbol=t.symbol, interval=Interval.D1, ts=NOW, direction=direction, strength=0.5))
    return out


async def every_page(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = await client.get("/v1/tokens", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pages never end")


async def test_pages_cover_the_whole_universe_once(api: tuple[httpx.AsyncClient, InMemoryBus]) -> None:
    client, _ = api
    rows = await every_page(client, limit=77)
    symbols = [r["symbol"] for r in rows]
    assert symbols == sorted(t.symbol for t in TOKENS)  # default: by symbol, every member exactly once
    names = {t.symbol: t.name for t in TOKENS}
    assert all(r["name"] == names[r["symbol"]] for r in rows)  # names from the universe topic
    first = (await client.get("/v1/tokens", params={"limit": 100})).json()
    assert len(first["data"]) == 100 and first["next_cursor"]


@pytest.mark.parametrize("field", SORTS)
@pytest.mark.parametrize("descending", [False, True])
async def test_each_sort_orders_all_rows_with_missing_values_last(
    api: tuple[httpx.AsyncClient, InMemoryBus], field: str, descending: bool
) -> None:
    client, _ = api
    rows = await every_page(client, limit=150, sort=("-" if descending else "") + field)
    assert len(rows) == len(TOKENS) and len({r["symbol"] for r in rows}) == len(TOKENS)
    values = [r[field] for r in rows]
    present = [v for v in values if v is not None]
    assert values[: len(present)] == present  # every missing value after every present one
    assert present == sorted(present, reverse=descending) and len(present) > 500
    if field == "market_cap" and descending:
        assert rows[0]["symbol"] == "BTC"


async def test_filters(api: tuple[httpx.AsyncClient, InMemoryBus]) -> None:
    client, _ = api
    found = await every_page(client, q="bitcoin")
    assert {"BTC", "BCH"} <= {r["symbol"] for r in found}
    assert all("bitcoin" in r["name"].lower() or "BITCOIN" in r["symbol"] for r in found)
    assert (await every_page(client, q="eth", sort="-market_cap"))[0]["symbol"] == "ETH"
    good = await every_page(client, min_trader_grade=80, limit=50)
    assert good and all(r["trader_grade"] >= 80 for r in good)
    bulls = await every_page(client, signal="bullish", limit=40)
    assert len(bulls) > 100 and all(r["signal"]["direction"] == "bullish" for r in bulls)
    both = await every_page(client, signal="bearish", min_trader_grade=50, sort="-trader_grade")
    assert all(r["signal"]["direction"] == "bearish" and r["trader_grade"] >= 50 for r in both)
    assert [r["trader_grade"] for r in both] == sorted((r["trader_grade"] for r in both), reverse=True)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"sort": "price"}, 400, "invalid_sort"),
        ({"sort": "--market_cap"}, 400, "invalid_sort"),
        ({"sort": "x" * 21}, 422, "invalid_request"),
        ({"q": "x" * 51}, 422, "invalid_request"),
        ({"q": "bit\x00coin"}, 400, "invalid_query"),
        ({"min_trader_grade": "101"}, 422, "invalid_request"),
        ({"min_trader_grade": "nan"}, 422, "invalid_request"),
        ({"min_trader_grade": "high"}, 422, "invalid_request"),
        ({"signal": "sideways"}, 422, "invalid_request"),
        ({"limit": "0"}, 422, "invalid_request"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, 400, "invalid_cursor"),
    ],
)
async def test_bad_values_are_a_clear_4xx(
    api: tuple[httpx.AsyncClient, InMemoryBus], params: dict[str, str], status: int, code: str
) -> None:
    client, _ = api
    r = await client.get("/v1/tokens", params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


async def test_a_cursor_of_another_sort_is_refused(api: tuple[httpx.AsyncClient, InMemoryBus]) -> None:
    client, _ = api
    cursor = (await client.get("/v1/tokens", params={"sort": "-market_cap", "limit": 10})).json()["next_cursor"]
    r = await client.get("/v1/tokens", params={"sort": "volume_24h", "cursor": cursor})
    assert r.status_code == 400 and "another sort or filter" in r.json()["error"]["message"]


async def test_a_removed_token_leaves_the_list(api: tuple[httpx.AsyncClient, InMemoryBus]) -> None:
    client, bus = api
    publisher = UniversePublisher(bus)
    publisher.published = {t.symbol: t for t in TOKENS}
    assert "DOGE" in {r["symbol"] for r in await every_page(client, limit=1000)}  # the list is built and held
    await publisher.publish([t for t in TOKENS if t.symbol != "DOGE"])
    await bus.drain()
    rows = await every_page(client, limit=1000)
    assert len(rows) == len(TOKENS) - 1 and "DOGE" not in {r["symbol"] for r in rows}
    assert UNIVERSE.compacted
