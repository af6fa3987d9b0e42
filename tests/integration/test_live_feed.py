"""Embedded mode (the app `tokenpulse up` runs: all four services, in-process bus, chDB) against fake
exchanges on loopback (recorded real trades, or frames crafted from the documented formats), every venue
and ccxt: live prices with their sources in /v1/tokens and `feed: live` in /readyz; with the exchanges
unreachable, `auto` falls back to synthetic ticks and says so."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tokenpulse_shared.settings import Settings

from testkit.fake_exchange import FakeExchange
from testkit.rest_exchange import FakeExchange as RestFake
from testkit.rest_exchange import load_series
from testkit.server import ThreadedServer
from tokenpulse.runtime import SERVICES, Runtime, ops_app

PRICES = {"BTC": 97_000.0, "ETH": 3_500.0}


@asynccontextmanager
async def embedded(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = Runtime(settings, list(SERVICES), embedded=True)
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=runtime.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
            key = (await client.post("/v1/keys", json={"name": "feeds"})).json()["key"]
            client.headers["X-API-Key"] = key
            yield runtime, client
    finally:
        await runtime.stop()


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def base_settings(tmp_path: Path, ws_urls: dict[str, str], **ingest: Any) -> Settings:
    """Embedded mode on loopback: the venues' streams at ``ws_urls``, these ingest settings."""
    return Settings(
        runtime={"symbols": list(PRICES), "backfill_on_start": False},
        store={"data_dir": tmp_path / "data"},
        gateway={"free_limit_per_minute": 1000},
        ingest=ingest,
        **{venue: {"ws_url": url} for venue, url in ws_urls.items()},
    )


async def test_embedded_mode_serves_live_prices_from_three_exchanges(tmp_path: Path) -> None:
    fakes = {
        "binance": FakeExchange("binance", PRICES),
        "coinbase": FakeExchange("coinbase", PRICES, heartbeat_s=1.0),
        "kraken": FakeExchange("kraken", PRICES, drift=1.05, heartbeat_s=1.0),  # one source 5% dearer
    }
    for f in fakes.values():
        await f.start()
        f.stream(0.1)
    settings = base_settings(tmp_path, {name: fake.url for name, fake in fakes.items()}, live_feed="auto")
    try:
        async with embedded(settings) as (_runtime, api):

            async def ready_live() -> dict[str, Any] | None:
                body = (await api.get("/readyz")).json()
                feeds = body.get("feeds", {})
                ok = body.get("feed") == "live" and len(feeds) == 3 and all(f["ticks"] > 0 for f in feeds.values())
                return body if ok else None

            body = await until(ready_live, 60, "/readyz to report the live feed")
            assert all(f["connected"] and f["last_message_age_s"] < 10 for f in body["feeds"].values())
            assert "binance" in body["feed_detail"] and body["feed"] == "live"

            async def tokens_without_the_drifter() -> dict[str, Any] | None:
                rows = {t["symbol"]: t for t in (await api.get("/v1/tokens")).json()["data"]}
                ok = all(set(rows.get(s, {}).get("sources") or []) == {"binance", "coinbase"} for s in PRICES)
                return rows if ok else None

            # reconciliation: kraken, 5% away from the two others, is left out of the reference price
            rows = await until(tokens_without_the_drifter, 60, "prices from binance and coinbase in /v1/tokens")
            for symbol, target in PRICES.items():
                row = rows[symbol]
                assert "synthetic" not in row["sources"] and row["stale"] is False
                # the recorded trades, rescaled around the target price
                assert 0.5 * target < row["price"] < 1.6 * target, row
                age = datetime.now(UTC) - datetime.fromisoformat(row["updated_at"].replace("Z", "+00:00"))
                assert age.total_seconds() < 30

            metrics = (await api.get("/metrics")).text
            assert 'tokenpulse_feed_connected{exchange="kraken"} 1.0' in metrics
            assert "tokenpulse_feed_ticks_total" in metrics

            # one exchange dies: its health says so, the others keep the feed live
            await fakes["binance"].stop()

            async def binance_down() -> dict[str, Any] | None:
                body = (await api.get("/readyz")).json()
                return body if not body["feeds"]["binance"]["connected"] else None

            body = await until(binance_down, 30, "binance to be reported disconnected")
            assert body["feed"] == "live" and body["feeds"]["coinbase"]["connected"]
            assert "binance" not in body["feed_detail"] and "kraken" in body["feed_detail"]
            assert body["feeds"]["binance"]["reconnects"] >= 1
    finally:
        for f in fakes.values():
            await f.stop()


def refused_url() -> str:
    with socket.socket() as s:  # a loopback port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def test_auto_falls_back_to_synthetic_ticks_when_no_exchange_answers(tmp_path: Path) -> None:
    refused = {"binance": refused_url(), "coinbase": refused_url(), "kraken": refused_url() + "/v2"}
    settings = base_settings(tmp_path, refused, live_feed="auto", feed_connect_timeout_s=1.5, synthetic_tick_s=0.2)
    async with embedded(settings) as (_runtime, api):

        async def fallback() -> dict[str, Any] | None:
            body = (await api.get("/readyz")).json()
            return body if body.get("feed") == "synthetic-fallback" else None

        body = await until(fallback, 30, "the synthetic fallback in /readyz")
        assert "no exchange answered" in body["feed_detail"]
        assert all(not f["connected"] and f["last_error"] for f in body["feeds"].values())

        async def synthetic_prices() -> dict[str, Any] | None:
            rows = {t["symbol"]: t for t in (await api.get("/v1/tokens")).json()["data"]}
            return rows if all(rows.get(s, {}).get("sources") == ["synthetic"] for s in PRICES) else None

        await until(synthetic_prices, 30, "synthetic prices")


async def test_live_mode_never_falls_back(tmp_path: Path) -> None:
    settings = base_settings(
        tmp_path, {"binance": refused_url()}, live_feed="live", feed_connect_timeout_s=0.5, feed_exchanges=["binance"]
    )
    async with embedded(settings) as (_runtime, api):
        await asyncio.sleep(1.5)
        body = (await api.get("/readyz")).json()
        assert body["feed"] == "connecting" and body["feeds"]["binance"]["reconnects"] >= 1
        rows = (await api.get("/v1/tokens")).json()["data"]
        assert all(not r["sources"] for r in rows)  # no synthetic ticks sneak in


async def test_auto_switches_back_to_live_when_the_exchange_becomes_reachable(tmp_path: Path) -> None:
    """Issue #3: the exchange is down at start (synthetic fallback); brought up on the same port, its trades
    switch the feed back to live: synthetic ticks stop, /readyz says live, prices and candles hold no synthetic."""
    url = refused_url()
    port = int(url.rsplit(":", 1)[1])
    settings = base_settings(
        tmp_path,
        {"binance": url},
        live_feed="auto",
        feed_exchanges=["binance"],
        feed_connect_timeout_s=1.0,
        feed_backoff_s=0.1,
        feed_backoff_max_s=0.5,
        synthetic_tick_s=0.2,
        price_stale_after_s=600.0,  # the synthetic quote must leave the reference price at the switch, not age out
    )
    fake: FakeExchange | None = None
    try:
        async with embedded(settings) as (runtime, api):

            async def synthetic_rows() -> dict[str, Any] | None:
                body = (await api.get("/readyz")).json()
                rows = {t["symbol"]: t for t in (await api.get("/v1/tokens")).json()["data"]}
                ok = body.get("feed") == "synthetic-fallback" and all(
                    rows.get(s, {}).get("sources") == ["synthetic"] for s in PRICES
                )
                return rows if ok else None

            rows = await until(synthetic_rows, 30, "the synthetic fallback with synthetic prices")
            body = (await api.get("/readyz")).json()
            assert "still trying binance" in body["feed_detail"]
            assert body["feeds"]["binance"]["reconnects"] >= 1  # probing goes on while on the fallback
            # live prices 20x the synthetic ones: a candle holding both would span the threshold
            synthetic = {s: rows[s]["price"] for s in PRICES}
            live_prices = {s: p * 20 for s, p in synthetic.items()}
            threshold = {s: p * 5 for s, p in synthetic.items()}

            fake = FakeExchange("binance", live_prices, port=port)
            await fake.start()
            fake.stream(0.1)

            async def back_live() -> dict[str, Any] | None:
                body = (await api.get("/readyz")).json()
                return body if body.get("feed") == "live" else None

            body = await until(back_live, 30, "/readyz to say the feed is live again")
            assert body["feeds"]["binance"]["connected"] and "binance" in body["feed_detail"]
            assert "feed_back_to_live_at" in body
            # the ops /readyz a service serves in `tokenpulse run ingest` says the same
            ops = httpx.AsyncClient(transport=httpx.ASGITransport(app=ops_app(runtime)), base_url="http://ops")
            async with ops:
                ops_body = (await ops.get("/readyz")).json()
            assert ops_body["feed"] == "live" and ops_body["feeds"]["binance"]["connected"]

            async def live_rows() -> dict[str, Any] | None:
                rows = {t["symbol"]: t for t in (await api.get("/v1/tokens")).json()["data"]}
                return rows if all(rows.get(s, {}).get("sources") == ["binance"] for s in PRICES) else None

            rows = await until(live_rows, 30, "reference prices from binance alone")
            for s in PRICES:
                assert rows[s]["price"] > threshold[s], (s, rows[s], synthetic[s])

            # the synthetic feed has stopped: no synthetic tick is delivered any more
            def synthetic_delivered() -> float:
                from prometheus_client import REGISTRY

                value = REGISTRY.get_sample_value("tokenpulse_connector_events_total", {"connector": "synthetic"})
                return value or 0.0

            before = synthetic_delivered()
            await asyncio.sleep(1.0)  # 5 synthetic periods
            assert synthetic_delivered() == before

            # no candle mixes the two: the open ones (every interval) and the closed ones in the store
            ingest = next(s for s in runtime.services if s.name == "ingest")
            open_candles = ingest.builder.flush_all()  # type: ignore[attr-defined]
            assert {c.symbol for c in open_candles} == set(PRICES)
            for c in open_candles:
                assert c.low > threshold[c.symbol] or c.high < threshold[c.symbol], c
            for s in PRICES:
                stored = (await api.get(f"/v1/candles/{s}", params={"interval": "1m"})).json()["data"]
                for c in stored:
                    assert c["low"] > threshold[s] or c["high"] < threshold[s], c
    finally:
        if fake is not None:
            await fake.stop()


NATIVE = ["binance", "coinbase", "kraken", "okx", "bybit", "coinbase_advanced"]
CCXT_PAIRS = [f"ccxt:kraken:{s}={s}/USD" for s in PRICES]  # the fake Kraken lists USD pairs


async def test_six_venues_and_ccxt_feed_the_reference_price(tmp_path: Path) -> None:
    """Issue #25: every native venue and a ccxt one (ccxt's Kraken against the fake Kraken REST API and
    WebSocket) stream their trades into the reference price of each token, all of them kept."""
    fakes = {name: FakeExchange(name, PRICES, heartbeat_s=1.0) for name in NATIVE}
    fakes["ccxt:kraken"] = FakeExchange("kraken", PRICES, heartbeat_s=1.0)
    for f in fakes.values():
        await f.start()
        f.stream(0.1)
    rest = RestFake(load_series(), ccxt_pairs=True)
    with ThreadedServer(rest.app()) as rest_server:
        settings = Settings(
            runtime={"symbols": list(PRICES), "backfill_on_start": False},
            store={"data_dir": tmp_path / "data"},
            gateway={"free_limit_per_minute": 1000},
            ingest={"live_feed": "live", "feed_exchanges": [*NATIVE, "ccxt:kraken"], "feed_pairs": CCXT_PAIRS},
            ccxt={"ws_url": fakes["ccxt:kraken"].url, "rest_url": rest_server.url},
            **{name: {"ws_url": fakes[name].url} for name in NATIVE},
        )
        try:
            async with embedded(settings) as (_runtime, api):

                async def every_venue_in_every_price() -> dict[str, Any] | None:
                    rows = {t["symbol"]: t for t in (await api.get("/v1/tokens")).json()["data"]}
                    ok = all(set(rows.get(s, {}).get("sources") or []) == set(fakes) for s in PRICES)
                    return rows if ok else None

                rows = await until(every_venue_in_every_price, 90, "all seven sources in /v1/tokens")
                for symbol, target in PRICES.items():
                    assert 0.5 * target < rows[symbol]["price"] < 1.6 * target and rows[symbol]["stale"] is False
                body = (await api.get("/readyz")).json()
                assert set(body["feeds"]) == set(fakes) and body["feed"] == "live"
                assert all(f["connected"] and f["ticks"] > 0 and f["bad_messages"] == 0 for f in body["feeds"].values())
        finally:
            for f in fakes.values():
                await f.stop()
