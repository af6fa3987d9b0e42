"""The top-N cut by 24-hour quote volume (the venues' tickers, on a fake REST exchange in each venue's documented
format) or by market cap (a fake CoinGecko): the sums across venues, a volume or market-cap change reordering the
cut on the universe topic (the token falling out removed, the one entering added), and the fallback to rank while
no figures can be read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from tokenpulse_ingest.discovery import Discovery
from tokenpulse_ingest.venues.registry import fetch_listings, fetch_volumes
from tokenpulse_shared.settings import Settings

from testkit.coingecko import FakeCoinGecko, load_caps
from testkit.fake_exchange import wait_for
from testkit.rest_exchange import FakeExchange
from testkit.server import ThreadedServer
from testkit.wiring import ingest_and_follower

VENUES = ("binance", "coinbase", "kraken", "okx", "bybit", "coinbase_advanced")
UNIVERSE = "symbol,name\nSOL,Solana\nDOGE,Dogecoin\nETH,Ethereum\nBTC,Bitcoin\n"  # by rank: SOL, DOGE


@pytest.fixture(scope="module")
def gecko() -> Iterator[tuple[FakeCoinGecko, str]]:
    fake = FakeCoinGecko(load_caps(), date(2025, 5, 10))
    with ThreadedServer(fake.app()) as server:
        yield fake, f"{server.url}/api/v3"


def settings_for(url: str, tmp_path: Path, *, by: str, top: int = 2, gecko_url: str = "") -> Settings:
    universe = tmp_path / "universe.csv"
    universe.write_text(UNIVERSE)
    venues = {name: {"rest_url": url, "ws_url": "ws://127.0.0.1:9"} for name in VENUES}
    return Settings(
        runtime={"universe": universe, "universe_top_n": top, "universe_rank_by": by},
        ingest={"feed_exchanges": list(VENUES), "live_feed": "auto", "universe_discovery_s": 1,
                "feed_connect_timeout_s": 0.5},
        marketcap={"url": gecko_url or f"{url}/nothing-here"},
        **venues,
    )  # type: ignore[arg-type]  # fmt: skip


def ticker(exchange: FakeExchange, symbol: str, quote_volume: str) -> None:
    for row in exchange.listings["binance_tickers"]:
        if row["symbol"] == symbol:
            row["quoteVolume"] = quote_volume


async def test_volumes_are_summed_over_each_tokens_dollar_pairs_on_every_venue(
    fake: tuple[FakeExchange, str], tmp_path: Path
) -> None:
    _, url = fake
    settings = settings_for(url, tmp_path, by="quote_volume")
    volumes = await fetch_volumes(settings, await fetch_listings(settings))
    assert volumes is not None
    # BTC: binance USDT+FDUSD, okx USDT+USDC, bybit USDT+USDC, coinbase_advanced USD (+ USDC at 0); the future left out
    assert volumes["BTC"] == pytest.approx(2.0e9 + 0.7e9 + 0.9e9 + 0.05e9 + 0.6e9 + 0.02e9 + 1.2e9)
    assert volumes["ETH"] == pytest.approx(1.0e9 + 0.4e9 + 0.3e9 + 0.5e9)  # ETH-BTC is no dollar pair
    assert volumes["SOL"] == pytest.approx(0.6e9 + 0.1e9)  # suspended on okx, disabled on coinbase_advanced
    assert volumes["DOGE"] == pytest.approx(0.08e9)


async def test_a_volume_change_reorders_the_cut_on_the_universe_topic(
    fake: tuple[FakeExchange, str], tmp_path: Path
) -> None:
    exchange, url = fake
    exchange.listings["binance_tickers"] = [dict(r) for r in exchange.listings["binance_tickers"]]
    settings = settings_for(url, tmp_path, by="quote_volume")
    async with ingest_and_follower(settings) as (ctx, other):
        await wait_for(lambda: set(other.tokens) == {"BTC", "ETH"}, 20, "the top 2 by volume: BTC, ETH")
        ticker(exchange, "SOLUSDT", "9000000000")  # SOL's volume passes BTC's and ETH's
        await wait_for(lambda: set(other.tokens) == {"SOL", "BTC"}, 20, "SOL in, ETH out")
        assert "ETH" in other.removed and "SOL" not in other.removed  # ETH removed cleanly (deleted, tombstoned)
        assert "quote_volume" in ctx.status["universe_listings"]


async def test_the_cut_by_market_cap_follows_coingecko(
    fake: tuple[FakeExchange, str], gecko: tuple[FakeCoinGecko, str], tmp_path: Path
) -> None:
    _, url = fake
    cg, cg_url = gecko
    cg.ranking = [
        {"id": "bitcoin", "symbol": "btc", "market_cap": 1.9e12},
        {"id": "solana", "symbol": "sol", "market_cap": 1.1e11},
        {"id": "sol-impostor", "symbol": "sol", "market_cap": 1.0e6},  # a smaller coin with the same ticker
        {"id": "ethereum", "symbol": "eth", "market_cap": 4.3e11},
        {"id": "dogecoin", "symbol": "doge", "market_cap": 6.0e10},
    ]
    settings = settings_for(url, tmp_path, by="market_cap", gecko_url=cg_url)
    discovery = Discovery()
    assert await discovery.refresh(settings)
    assert discovery.score is not None and discovery.score["SOL"] == 1.1e11
    assert {t.symbol for t in discovery.universe(settings)} == {"BTC", "ETH"}  # by rank it would be SOL, DOGE
    cg.ranking[1]["market_cap"] = 5.0e11  # SOL passes ETH
    assert await discovery.refresh(settings)
    assert {t.symbol for t in discovery.universe(settings)} == {"BTC", "SOL"}
    assert any(h.params.get("order") == "market_cap_desc" for h in cg.hits)


async def test_unreachable_figures_fall_back_to_rank_with_a_warning(
    fake: tuple[FakeExchange, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exchange, url = fake
    for name in ("binance_tickers", "okx_tickers", "bybit_tickers", "coinbase_advanced"):
        exchange.listings[name] = {"unavailable": True}  # an error page: no venue gives a volume
    settings = settings_for(url, tmp_path, by="quote_volume")
    discovery = Discovery()
    with caplog.at_level(logging.WARNING):
        await discovery.refresh(settings)
        assert [t.symbol for t in discovery.universe(settings)] == ["SOL", "DOGE"]  # the file's first two
        assert "no quote_volume figures for the top 2; cutting by rank" in caplog.text
        caplog.clear()
        await discovery.refresh(settings_for(url, tmp_path, by="market_cap"))  # CoinGecko unreachable too
        assert "market_cap figures not read" in caplog.text
    assert discovery.score is None
