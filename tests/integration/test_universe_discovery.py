"""Pair discovery from the venues' listing endpoints (a fake REST exchange on loopback serving each venue's
documented format): what each venue lists now, and the universe's pairs checked against it — a pair listed is
taken, a delisted one dropped, a renamed quote followed, an unreachable venue keeps the file's pairs; and ingest
publishes the discovered pairs on the universe topic."""

from __future__ import annotations

import copy
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenpulse_ingest.discovery import Discovery
from tokenpulse_ingest.venues.registry import fetch_listings, with_listings
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.universe import Token

from testkit.fake_exchange import wait_for
from testkit.rest_exchange import FakeExchange
from testkit.wiring import ingest_and_follower

FIRST_THREE = ("binance", "coinbase", "kraken")
NEW_THREE = ("okx", "bybit", "coinbase_advanced")


def settings_for(url: str, exchanges: tuple[str, ...] = FIRST_THREE, **ingest: object) -> Settings:
    venues = {name: {"rest_url": url} for name in (*FIRST_THREE, *NEW_THREE)}
    return Settings(ingest={"feed_exchanges": list(exchanges), **ingest}, **venues)  # type: ignore[arg-type]


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


async def test_what_the_new_venues_list_now(fake: tuple[FakeExchange, str]) -> None:
    _, url = fake
    listed = await fetch_listings(settings_for(url, NEW_THREE))
    # OKX: state live only (SOL suspended, HYPE pre-open), dollar quotes only (ETH-BTC left out), USDT first
    assert listed["okx"] == {"BTC": ["BTC-USDT", "BTC-USDC"], "ETH": ["ETH-USDT"], "DOGE": ["DOGE-USDT"]}
    # Bybit: status Trading only (DOGE closed, HYPE pre-launch)
    assert listed["bybit"] == {"BTC": ["BTCUSDT", "BTCUSDC"], "ETH": ["ETHUSDT"], "SOL": ["SOLUSDT"]}
    # Coinbase Advanced: SPOT online only (SOL trading disabled, DOGE delisted, the BTC future left out)
    assert listed["coinbase_advanced"] == {"BTC": ["BTC-USD", "BTC-USDC"], "ETH": ["ETH-USD"]}


async def test_discovery_maps_the_new_venues_onto_the_universe(fake: tuple[FakeExchange, str]) -> None:
    _, url = fake
    tokens = [
        Token("BTC", "Bitcoin", 1, {"okx": "BTC-USDC"}),  # still listed: kept, though USDT is preferred
        Token("SOL", "Solana", 2, {"okx": "SOL-USDT", "coinbase_advanced": "SOL-USD"}),  # both halted
        Token("DOGE", "Dogecoin", 3, {"bybit": None}),  # the file says "not listed"; it is still not
        Token("ETH", "Ethereum", 4, {}),
    ]
    got = {t.symbol: dict(t.pairs) for t in with_listings(tokens, await fetch_listings(settings_for(url, NEW_THREE)))}
    assert got == {
        "BTC": {"okx": "BTC-USDC", "bybit": "BTCUSDT", "coinbase_advanced": "BTC-USD"},
        "SOL": {"okx": None, "bybit": "SOLUSDT", "coinbase_advanced": None},
        "DOGE": {"okx": "DOGE-USDT", "bybit": None, "coinbase_advanced": None},
        "ETH": {"okx": "ETH-USDT", "bybit": "ETHUSDT", "coinbase_advanced": "ETH-USD"},
    }


async def test_ccxt_venues_list_through_load_markets(fake: tuple[FakeExchange, str]) -> None:
    exchange, url = fake
    exchange.ccxt_pairs = True  # AssetPairs answers what ccxt's kraken loads
    try:
        settings = Settings(ingest={"feed_exchanges": ["ccxt:kraken"]}, ccxt={"rest_url": url})  # type: ignore[arg-type]
        listed = await fetch_listings(settings)
    finally:
        exchange.ccxt_pairs = False
    assert listed == {"ccxt:kraken": {"BTC": ["BTC/USD"], "ETH": ["ETH/USD"]}}  # ccxt's unified names
    token = Token("BTC", "Bitcoin", 1, {"ccxt:kraken": "BTC/USDT"})  # not listed there: the listed pair instead
    assert with_listings([token], listed)[0].pairs == {"ccxt:kraken": "BTC/USD"}


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
    async with ingest_and_follower(settings) as (ctx, other):
        await wait_for(lambda: other.tokens["ETH"].pairs.get("binance") == "ETHUSDT", 20, "ETH discovered on binance")
        assert other.tokens["LUNA"].pairs["binance"] is None  # halted there
        assert other.tokens["ETH"].pairs["coinbase"] == "ETH-USD" and ctx.status["universe_listings"]


ALL_SIX = (*FIRST_THREE, *NEW_THREE)


def rows_of(venue: str, body: Any) -> list[dict[str, Any]]:
    """The rows of a venue's listing answer (a test corrupts one of them)."""
    match venue:
        case "binance":
            return list(body["symbols"])
        case "coinbase":
            return list(body)
        case "kraken":
            return list(body["result"].values())
        case "okx":
            return list(body["data"])
        case "bybit":
            return list(body["result"]["list"])
        case _:
            return list(body["products"])


BASE_FIELD = {"binance": "baseAsset", "coinbase": "base_currency", "kraken": "wsname", "okx": "baseCcy",
              "bybit": "baseCoin", "coinbase_advanced": "base_currency_id"}  # fmt: skip


def wrong_type(venue: str, body: Any) -> Any:
    rows_of(venue, body)[1][BASE_FIELD[venue]] = 5  # one row in the middle: the others are fine
    return body


def missing_field(venue: str, body: Any) -> Any:
    for row in rows_of(venue, body)[1:2]:
        row.pop("status" if venue == "kraken" else BASE_FIELD[venue])  # Kraken: every field is optional but status
        row.pop("wsname", None) if venue == "kraken" else None
        if venue == "kraken":
            row["status"] = ["online"]
    return body


LIMIT = 100_000  # rows a listing may hold (spec.MAX_LISTED; the largest venue lists a few thousand)
SMALL_ROW: dict[str, dict[str, Any]] = {
    "binance": {"symbol": "XUSDT", "status": "TRADING", "baseAsset": "X", "quoteAsset": "USDT"},
    "coinbase": {"id": "X-USD", "base_currency": "X", "quote_currency": "USD", "status": "online"},
    "kraken": {"wsname": "X/USD"},
    "okx": {"instType": "SPOT", "instId": "X-USDT", "baseCcy": "X", "quoteCcy": "USDT", "state": "live"},
    "bybit": {"symbol": "XUSDT", "baseCoin": "X", "quoteCoin": "USDT", "status": "Trading"},
    "coinbase_advanced": {"product_id": "X-USD", "base_currency_id": "X", "quote_currency_id": "USD",
                          "status": "online", "product_type": "SPOT"},
}  # fmt: skip


def huge(venue: str, body: Any) -> Any:
    row = SMALL_ROW[venue]  # a small row in shape keeps the test quick; only the count is wrong
    many = [row] * (LIMIT + 1)
    match venue:
        case "binance":
            body["symbols"] = many
        case "coinbase":
            return many
        case "kraken":
            body["result"] = {f"P{i}": row for i in range(LIMIT + 1)}
        case "okx":
            body["data"] = many
        case "bybit":
            body["result"]["list"] = many
        case _:
            body["products"] = many
    return body


def not_a_listing(venue: str, body: Any) -> Any:
    return {"error": "<html>maintenance</html>"} if venue != "coinbase" else {"message": "maintenance"}


@pytest.mark.parametrize("hostile", [wrong_type, missing_field, huge, not_a_listing])
async def test_a_hostile_listing_is_refused_whole_and_the_old_pairs_kept(
    fake: tuple[FakeExchange, str], hostile: Callable[[str, Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    exchange, url = fake
    settings = settings_for(url, ALL_SIX, live_feed="auto")
    discovery = Discovery()
    assert await discovery.refresh(settings)
    before = {t.symbol: dict(t.pairs) for t in discovery.universe(settings)}
    listed_before = dict(discovery.listed)
    assert set(listed_before) == set(ALL_SIX)
    for venue in ALL_SIX:
        exchange.listings[venue] = hostile(venue, copy.deepcopy(exchange.listings[venue]))
    with caplog.at_level(logging.WARNING, logger="tokenpulse_ingest.venues.registry"):
        assert await fetch_listings(settings) == {}  # none of them half-applied
        assert not await discovery.refresh(settings)
    assert discovery.listed == listed_before
    assert {t.symbol: dict(t.pairs) for t in discovery.universe(settings)} == before
    for venue in ALL_SIX:  # refused by the shape, or earlier by the venue's own error check: either way, said
        assert f"universe: {venue} listing" in caplog.text, caplog.text
