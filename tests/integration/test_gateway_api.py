"""The gateway API on the real engine: keys, candles with pagination, tokens, and 4xx for bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history, publish_marketcaps
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import INDICATOR_FIELDS, Interval
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

from testkit.wiring import embedded, keyed_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(module_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        runtime={"symbols": ["BTC", "ETH"]}, ingest={"live_feed": "off"}, gateway={"free_limit_per_minute": 300}
    )
    gateway, scoring = GatewayService(), ScoringService()
    bus, ctx = embedded(settings, module_store, gateway, scoring)
    await bus.start()
    await scoring.start(ctx)
    await publish_history(bus, plan(settings.runtime.bundle_dir, ["BTC", "ETH"], [Interval.D1]))
    await publish_marketcaps(bus, settings.runtime.bundle_dir, ["BTC", "ETH"])
    await bus.drain()
    assert gateway.app is not None
    async with keyed_client(gateway.app) as client:
        yield client
    await bus.stop()


async def test_keys_are_required_and_stored_hashed(api: httpx.AsyncClient, module_store: Store) -> None:
    key = api.headers["X-API-Key"]
    no_key = await api.get("/v1/tokens", headers={"X-API-Key": ""})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"
    bad = await api.get("/v1/tokens", headers={"X-API-Key": "tp_nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    bearer = await api.get("/v1/tokens", headers={"X-API-Key": "", "Authorization": f"Bearer {key}"})
    assert bearer.status_code == 200
    stored = await module_store.query("SELECT key_hash FROM api_keys")
    assert key not in str(stored) and len(stored[0][0]) == 64


async def every_page(api: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """The daily rows of ``path``, following next_cursor through pages of 1,000."""
    rows, cursor = [], None
    while True:
        params = {"interval": "1d", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(path, params=params)).json()
        rows += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


async def test_candles_page_through_the_whole_real_history(api: httpx.AsyncClient) -> None:
    expected = next(bars for s, i, bars in iter_bundle(Settings().runtime.bundle_dir, ["BTC"], [Interval.D1]))
    got = await every_page(api, "/v1/candles/BTC")
    assert len(got) == len(expected)
    assert got[0]["ts"] == "2011-01-01T00:00:00Z"
    assert [(c["open"], c["high"], c["low"], c["close"]) for c in got] == [
        (b.open, b.high, b.low, b.close) for b in expected
    ]


async def test_candles_honour_start_and_end(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/candles/BTC", params={"interval": "1d", "start": "2017-12-16", "end": "2017-12-18"})
    data = r.json()["data"]
    assert [c["ts"] for c in data] == ["2017-12-16T00:00:00Z", "2017-12-17T00:00:00Z"]
    assert data[1]["close"] == 19378.99
    assert r.json()["next_cursor"] is None


async def test_tokens_list_and_detail(api: httpx.AsyncClient) -> None:
    tokens = (await api.get("/v1/tokens")).json()
    assert [t["symbol"] for t in tokens["data"]] == ["BTC", "ETH"]
    btc = tokens["data"][0]
    assert btc["name"] == "Bitcoin" and btc["price"] > 0
    assert set(btc) >= {
        "symbol",
        "name",
        "price",
        "change_24h",
        "volume_24h",
        "trader_grade",
        "investor_grade",
        "signal",
    }
    detail = (await api.get("/v1/tokens/btc")).json()
    assert set(detail["roi"]) == {"24h", "7d", "30d", "1y"}
    assert detail["roi"]["24h"] is not None  # daily candles give a 24h reference
    assert detail["updated_at"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/candles/FOO", {}, 404, "unknown_symbol"),
        ("/v1/candles/B$C", {}, 400, "invalid_symbol"),
        ("/v1/candles/BTC", {"interval": "2m"}, 422, "invalid_request"),
        ("/v1/candles/BTC", {"start": "yesterday"}, 400, "invalid_time"),
        ("/v1/candles/BTC", {"start": "2020-01-02", "end": "2020-01-01"}, 400, "invalid_range"),
        ("/v1/candles/BTC", {"cursor": "%%%"}, 400, "invalid_cursor"),
        ("/v1/candles/BTC", {"limit": 0}, 422, "invalid_request"),
        ("/v1/candles/BTC", {"limit": 5000}, 422, "invalid_request"),
        ("/v1/tokens/NOPE", {}, 404, "unknown_symbol"),
        ("/v1/nothing", {}, 404, "not_found"),
    ],
)
async def test_client_mistakes_get_a_4xx_in_the_contract_format(
    api: httpx.AsyncClient, path: str, params: dict[str, object], status: int, code: str
) -> None:
    r = await api.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


async def test_key_request_is_validated(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/keys", json={"name": "", "email": "not-an-email"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def test_ops_endpoints(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": True, "bus": True}
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    spec = (await api.get("/openapi.json")).json()
    assert "/v1/candles/{symbol}" in spec["paths"]


async def test_over_the_limit_a_key_gets_429_with_retry_after(api: httpx.AsyncClient) -> None:
    other = (await api.post("/v1/keys", json={"name": "burst"})).json()["key"]
    codes = [(await api.get("/v1/tokens", headers={"X-API-Key": other})).status_code for _ in range(301)]
    assert codes[:300] == [200] * 300
    assert codes[300] == 429
    r = await api.get("/v1/tokens", headers={"X-API-Key": other})
    assert r.json()["error"]["code"] == "rate_limited" and 1 <= int(r.headers["Retry-After"]) <= 60
    # other keys are not affected
    assert (await api.get("/v1/tokens")).status_code == 200


async def test_cycles_serve_runs_projection_track_record_and_seasons(api: httpx.AsyncClient) -> None:
    body = (await api.get("/v1/cycles/btc")).json()
    halvings = body["halvings"]
    assert [h["date"] for h in halvings] == ["2012-11-28", "2016-07-09", "2020-05-11", "2024-04-20"]
    assert {"date", "height", "price", "peak_date", "peak_price", "multiple", "days_to_peak"} <= set(halvings[0])
    assert halvings[0]["multiple"] > 90, halvings[0]
    assert halvings[2]["peak_date"] == "2021-11-08"
    projection = body["projection"]
    assert {"start", "previous_length_days", "previous_roi", "scenarios"} <= set(projection)
    assert [s["name"] for s in projection["scenarios"]] == ["bear", "base", "moon"]
    assert all(s["total_market_cap_target"] > 0 for s in projection["scenarios"])
    assert {t["run"] for t in body["track_record"]} == {2, 3, 4}
    assert [a["symbol"] for a in body["altcoin_season"][2]["altcoins"]] == ["ETH"]


async def test_cycles_overrides_are_applied_and_echoed(api: httpx.AsyncClient) -> None:
    r = await api.get(
        "/v1/cycles/btc",
        params={"base_length_multiplier": 2, "previous_length_days": 500, "scenario": "base", "basis": "halving"},
    )
    body = r.json()
    assert body["parameters"]["previous_length_days"] == 500
    assert body["parameters"]["scenarios"] == {"base": [2.0, 2.0]}
    (base,) = body["projection"]["scenarios"]
    assert base["end_date"] == "2027-01-15"  # 2024-04-20 + 1000 days


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"previous_length_days": -5}, 422, "invalid_request"),
        ({"bear_roi_reduction": 0}, 422, "invalid_request"),
        ({"scenario": "sideways"}, 400, "unknown_scenario"),
        ({"as_of": "2010-01-01"}, 400, "invalid_parameters"),
        ({"as_of": "2022-01-01", "start": "2023-01-01"}, 400, "invalid_parameters"),
        ({"basis": "top"}, 422, "invalid_request"),
        ({"as_of": "not-a-date"}, 422, "invalid_request"),
    ],
)
async def test_cycles_bad_overrides_get_a_4xx(
    api: httpx.AsyncClient, params: dict[str, object], status: int, code: str
) -> None:
    r = await api.get("/v1/cycles/btc", params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_indicators_served_through_the_pipeline_match_talib(api: httpx.AsyncClient) -> None:
    import numpy as np
    import talib

    bars = next(b for s, i, b in iter_bundle(Settings().runtime.bundle_dir, ["BTC"], [Interval.D1]))
    close = np.array([b.close for b in bars])
    served = await every_page(api, "/v1/indicators/BTC")
    assert len(served) == len(bars)
    assert served[0]["rsi_14"] is None and served[0]["sma_200"] is None  # warm-up is null, not 0
    rsi = np.array([np.nan if r["rsi_14"] is None else r["rsi_14"] for r in served])
    sma = np.array([np.nan if r["sma_200"] is None else r["sma_200"] for r in served])
    np.testing.assert_allclose(rsi[14:], talib.RSI(close, 14)[14:], rtol=1e-6)
    np.testing.assert_allclose(sma[199:], talib.SMA(close, 200)[199:], rtol=1e-6)
    assert set(served[-1]) == {"ts", *INDICATOR_FIELDS}


async def test_a_grades_components_are_an_object_of_numbers(api: httpx.AsyncClient) -> None:
    """The store keeps a grade's components as JSON text; the answer has them as an object, as the contract says."""
    g = (await api.get("/v1/grades/BTC", params={"start": "2024-01-01", "limit": 1})).json()["data"][0]
    assert isinstance(g["components"], dict) and isinstance(g["components"]["trader.rsi"], float)


async def test_grades_signals_and_levels_are_served(api: httpx.AsyncClient) -> None:
    grades = (await api.get("/v1/grades/BTC", params={"start": "2024-01-01", "limit": 5})).json()
    assert len(grades["data"]) == 5 and grades["next_cursor"]
    g = grades["data"][0]
    assert 0 <= g["trader_grade"] <= 100 and 0 <= g["investor_grade"] <= 100
    assert g["method"] == "v1" and "trader.rsi" in g["components"] and "investor.fundamentals" in g["components"]
    signals = (await api.get("/v1/signals", params={"symbol": "BTC", "limit": 1000})).json()["data"]
    assert signals and {s["direction"] for s in signals} == {"bullish", "bearish"}
    assert all(0 <= s["strength"] <= 1 and s["symbol"] == "BTC" for s in signals)
    levels = (await api.get("/v1/levels/BTC")).json()
    assert levels["support"] and levels["resistance"]
    assert all(s["price"] < levels["price"] < r["price"] for s in levels["support"] for r in levels["resistance"])
    detail = (await api.get("/v1/tokens/BTC")).json()
    assert detail["levels"]["key_support"] == levels["key_support"]
    tokens = (await api.get("/v1/tokens")).json()["data"]
    btc = next(t for t in tokens if t["symbol"] == "BTC")
    assert btc["trader_grade"] is not None and btc["signal"]["direction"] in ("bullish", "bearish")


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/grades/NOPE", {}, 404, "unknown_symbol"),
        ("/v1/grades/BTC", {"start": "2024-02-01", "end": "2024-01-01"}, 400, "invalid_range"),
        ("/v1/signals", {"symbol": "NOPE"}, 404, "unknown_symbol"),
        ("/v1/signals", {"cursor": "zzz"}, 400, "invalid_cursor"),
        ("/v1/levels/NOPE", {}, 404, "unknown_symbol"),
        ("/v1/indicators/BTC", {"interval": "7m"}, 422, "invalid_request"),
    ],
)
async def test_analytics_endpoints_answer_client_mistakes_with_4xx(
    api: httpx.AsyncClient, path: str, params: dict[str, object], status: int, code: str
) -> None:
    r = await api.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_track_record_from_the_store_equals_an_offline_replay(api: httpx.AsyncClient) -> None:
    from tokenpulse.track_cli import replay

    served = (await api.get("/v1/track-record")).json()
    offline = replay(Settings().runtime.bundle_dir, ["BTC", "ETH"]).model_dump(mode="json")
    assert [s["symbol"] for s in served["signals"]] == ["BTC", "ETH"]
    assert served["signals"] == offline["signals"]
    assert served["grades"][0]["mean_ic"] is None  # two tokens: too few for a cross-sectional IC
