"""Pair discovery from the venues' listing endpoints (a fake REST exchange on loopback serving each venue's
documented format): what each venue lists now, and the universe's pairs checked against it — a pair listed is
taken, a delisted one dropped, a renamed quote followed, an unreachable venue keeps the file's pairs; and ingest
publishes the discovered pairs on the universe topic."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenpulse_ingest.service import IngestService
from tokenpulse_ingest.venues.registry import fetch_listings, with_listings
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.universe import Token, UniverseFollower

from testkit.fake_exchange import wait_for
from testkit.rest_exchange import FakeExchange, load_series
from testkit.server import ThreadedServer


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeExchange, str]]:
    exchange = FakeExchange(load_series())
    with ThreadedServer(exchange.app()) as server:
        yield exchange, server.url


@pytest.fixture
def fake(served: tuple[FakeExchange, str]) -> Iterator[tuple[FakeExchange, str]]:
    exchange, url = served
    saved = dict(exchange.listings)
    yield exchange, url
    exchange.listings = saved


def settings_for(url: str, **ingest: object) -> Settings:
    venues = {name: {"rest_url": url} for name in ("binance", "coinbase", "kraken")}
    return Settings(ingest={"feed_exchanges": ["binance", "coinbase", "kraken"], **ingest}, **venues)  # type: ignore[arg-type]


async def test_what_each_venue_lists_now(fake: tuple[FakeExchange, str]) -> None:
    _, url = fake
    listed = await fetch_listings(settings_for(url))
    assert listed["binance"] == {  # TRADING only, dollar quotes only, USDT preferred
        "BTC": ["BTCUSDT", "BTCFDUSD"],
        "ETH": ["ETHUSDT"],
        "HYPE": ["HYPEUSDC"],
        "SOL": ["SOLUSDT"],
    }
    assert listed["coinbase"] == {"BTC": ["BTC-USD"], "ETH": ["ETH-USD"], "SOL": ["SOL-USDT"]}  # DOGE delisted
    assert listed["kraken"] == {"BTC": ["BTC/USD"], "ETH": ["ETH/USD"], "DOGE": ["DOGE/USD"]}  # XBT/XDG read as ours


async def test_listed_delisted_renamed_and_unreachable(fake: tuple[FakeExchange, str]) -> None:
    exchange, url = fake
    exchange.listings["kraken"] = None  # kraken does not answer
    tokens = [
        Token("BTC", "Bitcoin", 1, {"binance": "BTCBUSD", "coinbase": "BTC-USD", "kraken": "XBT/USD"}),
        Token("ETH", "Ethereum", 2, {"binance": None, "coinbase": "ETH-USD", "kraken": "ETH/USD"}),
        Token("DOGE", "Dogecoin", 3, {"binance": None, "coinbase": "DOGE-USD", "kraken": "XDG/USD"}),
        Token("LUNA", "Terra", 4, {"binance": "LUNAUSDT"}),
        Token("HYPE", "Hyperliquid", 5, {}),
    ]
    listed = await fetch_listings(settings_for(url))
    assert set(listed) == {"binance", "coinbase"}
    got = {t.symbol: dict(t.pairs) for t in with_listings(tokens, listed)}
    assert got["BTC"] == {"binance": "BTCUSDT", "coinbase": "BTC-USD", "kraken": "XBT/USD"}  # BUSD renamed to USDT
    assert got["ETH"]["binance"] == "ETHUSDT"  # the file said "not listed"; it is now
    assert got["DOGE"] == {"binance": None, "coinbase": None, "kraken": "XDG/USD"}  # delisted; kraken unread: kept
    assert got["LUNA"] == {"binance": None, "coinbase": None}  # trading halted, not listed on coinbase
    assert got["HYPE"] == {"binance": "HYPEUSDC", "coinbase": None}  # listed against USDC only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ingest_publishes_the_discovered_pairs(fake: tuple[FakeExchange, str], tmp_path: Path) -> None:
    _, url = fake
    universe = tmp_path / "universe.csv"
    universe.write_text("symbol,name,binance\nETH,Ethereum,\nLUNA,Terra,LUNAUSDT\n")
    dead = f"ws://127.0.0.1:{free_port()}"  # no exchange stream: auto falls back to synthetic ticks
    settings = settings_for(url, live_feed="auto", feed_connect_timeout_s=0.5, universe_discovery_s=1)
    settings = settings.model_copy(
        update={
            "runtime": settings.runtime.model_copy(update={"universe": universe}),
            "binance": settings.binance.model_copy(update={"ws_url": dead}),
            "coinbase": settings.coinbase.model_copy(update={"ws_url": dead}),
            "kraken": settings.kraken.model_copy(update={"ws_url": dead}),
        }
    )
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest, other = IngestService(), UniverseFollower()
    ingest.register(ctx)
    other.follow(bus, "gateway-universe")
    await bus.start()
    await ingest.start(ctx)
    try:
        await wait_for(lambda: other.tokens["ETH"].pairs.get("binance") == "ETHUSDT", 20, "ETH discovered on binance")
        assert other.tokens["LUNA"].pairs["binance"] is None  # halted there
        assert other.tokens["ETH"].pairs["coinbase"] == "ETH-USD" and ctx.status["universe_listings"]
    finally:
        await ingest.stop()
        await bus.stop()
