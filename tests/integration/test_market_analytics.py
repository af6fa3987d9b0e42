"""The market analytics on the real engine and the bundled history, each number checked against an independent
pandas/numpy computation made here from the bundle's files (never the service's code): quant metrics,
correlation, market state and its track record, indices (and their walk-forward), scenarios and the report."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from tokenpulse_gateway.analytics.indices import BY_ID, simulate, weights_of
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.queries.analytics import AnalyticsQueries
from tokenpulse_gateway.service import GatewayService
from tokenpulse_gateway.writer import TABLES, StoreWriter
from tokenpulse_ingest.backfill import plan, publish_history, publish_marketcaps
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import CandleEvent, Direction, GradeEvent, Interval, SignalEvent
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import MARKET_STATE

from testkit.wiring import collected, embedded, keyed_client
from tokenpulse.market_cli import market_record

pytestmark = pytest.mark.asyncio(loop_scope="module")
SYMBOLS = ["BTC", "ETH", "SOL"]
REL = 1e-9
RUN: dict[str, Any] = {}
"""the module's gateway, bus and the market states published on its topic"""


def bundle_closes(symbol: str) -> pd.Series:
    """The bundle's daily closes of one token, indexed by day (what the backfill loads)."""
    bars = next(b for _, _, b in iter_bundle(DEFAULT_BUNDLE, [symbol], [Interval.D1]))
    days = pd.to_datetime([b.ts_ms for b in bars], unit="ms").normalize()
    return pd.Series([b.close for b in bars], index=days, dtype=float)


def bundle_caps(name: str, column: str = "market_cap") -> pd.Series:
    frame = pd.read_csv(DEFAULT_BUNDLE / "marketcap" / name, parse_dates=["date"])
    frame = frame[frame[column] > 0]
    return pd.Series(frame[column].to_numpy(dtype=float), index=frame["date"])


CLOSES = {s: bundle_closes(s) for s in SYMBOLS}


def window(closes: pd.Series, days: int, as_of: pd.Timestamp | None = None) -> pd.Series:
    end = closes.index[-1] if as_of is None else as_of
    return closes[(closes.index >= end - pd.Timedelta(days=days)) & (closes.index <= end)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(module_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        runtime={"symbols": SYMBOLS}, ingest={"live_feed": "off"}, gateway={"free_limit_per_minute": 10_000}
    )
    gateway, scoring = GatewayService(), ScoringService()
    bus, ctx = embedded(settings, module_store, gateway, scoring)
    RUN.update(gateway=gateway, bus=bus, states=collected(bus, MARKET_STATE, "test-market-state"))
    await bus.start()
    await scoring.start(ctx)
    await publish_history(bus, plan(settings.runtime.bundle_dir, SYMBOLS, [Interval.D1]))
    await publish_marketcaps(bus, settings.runtime.bundle_dir, SYMBOLS)
    await bus.drain()
    assert gateway.app is not None
    async with keyed_client(gateway.app) as client:
        yield client
    await bus.stop()


def expected_quant(symbol: str, days: int) -> dict[str, float]:
    """The issue's definitions, computed with pandas/numpy on the bundle's closes."""
    closes = window(CLOSES[symbol], days)
    r = closes.pct_change().dropna()
    btc = window(CLOSES["BTC"], days, closes.index[-1]).pct_change().dropna()
    both = pd.concat([r, btc], axis=1, join="inner").to_numpy()
    span = (closes.index[-1] - closes.index[0]).days
    return {
        "volatility": r.std(ddof=1) * math.sqrt(365),
        "sharpe": r.mean() / r.std(ddof=1) * math.sqrt(365),
        "sortino": r.mean() / math.sqrt((np.minimum(r.to_numpy(), 0) ** 2).mean()) * math.sqrt(365),
        "max_drawdown": (closes / closes.cummax() - 1).min(),
        "cagr": (closes.iloc[-1] / closes.iloc[0]) ** (365 / span) - 1,
        "beta_btc": np.cov(both[:, 0], both[:, 1], ddof=1)[0, 1] / np.var(both[:, 1], ddof=1),
        "corr_btc": np.corrcoef(both[:, 0], both[:, 1])[0, 1],
        "n": len(r),
    }


@pytest.mark.parametrize(("symbol", "window_name"), [("ETH", "90d"), ("SOL", "30d"), ("BTC", "365d"), ("ETH", "365d")])
async def test_quant_metrics_match_an_independent_computation(
    api: httpx.AsyncClient, symbol: str, window_name: str
) -> None:
    r = await api.get(f"/v1/quant/{symbol}", params={"window": window_name})
    assert r.status_code == 200, r.text
    got = r.json()
    expected = expected_quant(symbol, int(window_name[:-1]))
    assert got["as_of"] == CLOSES[symbol].index[-1].date().isoformat()
    assert got["n"] == expected.pop("n")
    assert got["max_drawdown"] < 0
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=REL, abs=1e-12), name


async def test_correlation_matches_pandas_on_common_dates(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/correlation", params={"symbols": "BTC,ETH,SOL", "window": "90d"})
    assert r.status_code == 200, r.text
    got = r.json()
    as_of = min(CLOSES[s].index[-1] for s in SYMBOLS)
    returns = pd.concat({s: window(CLOSES[s], 90, as_of).pct_change() for s in SYMBOLS}, axis=1).dropna()
    assert got["symbols"] == SYMBOLS and got["n"] == len(returns)
    np.testing.assert_allclose(np.array(got["matrix"]), returns.corr().to_numpy(), rtol=1e-9)


async def test_too_little_history_is_a_422_with_the_reason(api: httpx.AsyncClient, module_store: Store) -> None:
    """A token listed ten days ago (candles in the store, nothing else): no number, a 422 that says why."""
    first = datetime(2026, 6, 18, tzinfo=UTC)
    candles = [
        CandleEvent(symbol="NEWC", interval=Interval.D1, ts=first + timedelta(days=i), open=1, high=2, low=1, close=1.5)
        for i in range(10)
    ]
    await StoreWriter(module_store).write(TABLES["candles"], candles)
    r = await api.get("/v1/quant/NEWC", params={"window": "30d"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "insufficient_history" and "9 daily returns" in error["message"]
    assert (await api.get("/v1/quant/NEWC", params={"window": "30d"})).status_code == 422


async def test_market_state_and_its_track_record(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/market", params={"history": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    days = body["history"]
    assert days[-1]["date"] == body["as_of"] and days[-1]["score"] == body["score"]
    defined = [v for v in body["components"].values() if v is not None]
    assert body["score"] == pytest.approx(sum(defined) / len(defined))
    for d in days:
        if d["score"] is not None:
            assert d["state"] == ("bullish" if d["score"] >= 60 else "bearish" if d["score"] <= 40 else "neutral")
            assert 0 <= d["breadth"] <= 1
    # independent: the total market cap's return over the next 30 days, grouped by the day's state
    total = bundle_caps("total_market_cap_coingecko.csv", "total_market_cap")
    frame = pd.DataFrame(days).dropna(subset=["state"])
    frame["d"] = pd.to_datetime(frame["date"])
    # the snapshot of the day, or of the day before when that day's is missing (the methodology's rule)
    frame["now"] = total.reindex(frame["d"], method="ffill", tolerance=pd.Timedelta(days=1)).to_numpy()
    later = frame["d"] + pd.Timedelta(days=30)
    frame["later"] = total.reindex(later, method="ffill", tolerance=pd.Timedelta(days=1)).to_numpy()
    frame = frame.dropna(subset=["now", "later"])
    forward = frame["later"] / frame["now"] - 1
    record = {row["state"]: row for row in body["track_record"]}
    for state, group in forward.groupby(frame["state"]):
        assert record[state]["days"] == len(group)
        assert record[state]["mean_forward_return"] == pytest.approx(group.mean(), rel=1e-9)
        assert record[state]["share_positive"] == pytest.approx((group > 0).mean(), rel=1e-9)
    assert record["all"]["days"] == len(forward)


async def test_the_recorded_track_record_is_what_the_api_serves(api: httpx.AsyncClient) -> None:
    """``tokenpulse market-record`` (docs/market_record.json) replays the bundle itself: the same figures."""
    served = (await api.get("/v1/market")).json()["track_record"]
    recorded = [r.model_dump(mode="json") for r in market_record(DEFAULT_BUNDLE, SYMBOLS)]
    assert [(r["state"], r["days"]) for r in recorded] == [(r["state"], r["days"]) for r in served]
    for mine, theirs in zip(recorded, served, strict=True):
        assert mine["mean_forward_return"] == pytest.approx(theirs["mean_forward_return"], rel=1e-9)


async def test_btc_dominance_is_btc_cap_over_total(api: httpx.AsyncClient) -> None:
    body = (await api.get("/v1/market")).json()
    snap = pd.Timestamp(body["total_market_cap_date"])
    btc = bundle_caps("btc_usd_coingecko.csv")[snap]
    total = bundle_caps("total_market_cap_coingecko.csv", "total_market_cap")[snap]
    assert body["total_market_cap"] == pytest.approx(total)
    assert body["btc_dominance"] == pytest.approx(100 * btc / total, rel=1e-9)


async def test_indices_are_listed_with_their_rules_and_stats(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/v1/indices")).json()["data"]
    assert {i["id"] for i in listed} == {"mcap-top5", "grade-60"}
    detail = (await api.get("/v1/indices/mcap-top5")).json()
    navs = pd.Series([p["nav"] for p in detail["history"]])
    assert detail["stats"]["index"]["max_drawdown"] == pytest.approx((navs / navs.cummax() - 1).min(), rel=1e-9)
    btc = window(CLOSES["BTC"], 10**5)
    start = pd.Timestamp(detail["history"][0]["date"])
    first_btc = btc[btc.index <= start].iloc[-1]
    for point in detail["history"][-5:]:
        assert point["btc"] == pytest.approx(100 * btc[pd.Timestamp(point["date"])] / first_btc, rel=1e-9)
    for rebalance in detail["rebalances"][-3:]:
        assert sum(c["weight"] for c in rebalance["constituents"]) == pytest.approx(1.0)
    assert "0.2%" in detail["rules"] and detail["cost_per_unit_traded"] == 0.002
    missing = await api.get("/v1/indices/nope")
    assert missing.status_code == 404 and "GET /v1/indices" in missing.json()["error"]["message"]


def with_future_changed(data: MarketData, cutoff: date) -> MarketData:
    """The same history with every close, market cap and grade after ``cutoff`` changed, differently per token
    (prices x0.25, x1.25, x2.25, ...; caps the other way; grades flipped around 50): a rule that looked ahead
    would pick or weigh differently before it."""
    factor = {s: 0.25 + i for i, s in enumerate(sorted(data.closes))}

    def bend(series: list[tuple[date, float]], f: float, flip: bool = False) -> list[tuple[date, float]]:
        return [(d, (100 - v if flip else v * f) if d > cutoff else v) for d, v in series]

    return dataclasses.replace(
        data,
        closes={s: bend(v, factor[s]) for s, v in data.closes.items()},
        caps={s: bend(v, 1 / factor.get(s, 1.0) ** 2) for s, v in data.caps.items()},
        trader={s: bend(v, 1.0, flip=True) for s, v in data.trader.items()},
    )


@pytest.mark.parametrize("index_id", ["mcap-top5", "grade-60"])
async def test_indices_do_not_look_ahead(api: httpx.AsyncClient, module_store: Store, index_id: str) -> None:
    """Changing every day after a cutoff leaves every NAV up to it as it was; the cutoffs are rebalance days
    (a Monday, the first of a month), where a rule reading even one day ahead would trade differently."""
    data = await AnalyticsQueries(module_store).market_data()
    rules = BY_ID[index_id]
    before = simulate(data, rules, weights_of(rules))
    for cutoff in (date(2022, 11, 7), date(2021, 6, 1), date(2024, 3, 15)):
        after = simulate(with_future_changed(data, cutoff), rules, weights_of(rules))
        past = [i for i, d in enumerate(before.days) if d <= cutoff]
        assert len(past) > 300
        assert [after.navs[i] for i in past] == [before.navs[i] for i in past], cutoff
        assert after.navs[-1] != before.navs[-1]  # the change did reach the index after the cutoff


async def test_scenarios_from_the_market_cap_data(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/scenarios/ETH", params={"targets": "5000,10000", "price": "10000"})
    assert r.status_code == 200, r.text
    body = r.json()
    caps = bundle_caps("eth_usd_coingecko.csv")
    snap = caps.index[-1]
    supply = caps.iloc[-1] / CLOSES["ETH"][snap - pd.Timedelta(days=1)]
    price = CLOSES["ETH"].iloc[-1]
    total = bundle_caps("total_market_cap_coingecko.csv", "total_market_cap").iloc[-1]
    today = body["today"]
    assert today["circulating_supply"] == pytest.approx(supply, rel=1e-9) and today["price"] == price
    assert today["share_of_total"] == pytest.approx(price * supply / total, rel=1e-9)
    ten_k = body["scenarios"][1]
    assert ten_k["market_cap"] == pytest.approx(10_000 * supply, rel=1e-9)
    assert ten_k["share_of_total"] == pytest.approx(10_000 * supply / total, rel=1e-9)
    assert ten_k["multiple"] == pytest.approx(10_000 / price, rel=1e-9)
    need = body["requirement"]
    assert need["total_market_cap_at_current_share"] == pytest.approx(10_000 * supply / (price * supply / total))
    assert {c["name"] for c in body["cycle"]} == {"bear", "base", "moon"}
    for c in body["cycle"]:
        assert c["price"] == pytest.approx(today["share_of_total"] * c["total_market_cap_target"] / supply)
    assert any("circulating supply" in n for n in body["notes"])


async def test_the_report_assembles_the_numbers_and_links_each_to_its_method(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/reports/ETH")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    text = r.text
    quant = (await api.get("/v1/quant/ETH", params={"window": "90d"})).json()
    assert f"{quant['sharpe']:.2f}" in text and "not financial advice" in text
    for section in ("Grades", "Signal", "Key levels", "Predictions", "Quant metrics", "Scenarios", "Methods"):
        assert f"## {section}" in text, section
    page = await api.get("/v1/reports/ETH", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]
    ids = set(re.findall(r'id="([^"]+)"', page.text))
    targets = set(re.findall(r'href="#([^"]+)"', page.text))
    assert targets and targets <= ids, targets - ids  # every number's link reaches its method
    assert "<script" not in page.text


async def test_bad_parameters_are_4xx_with_a_message(api: httpx.AsyncClient) -> None:
    cases = [
        ("/v1/quant/ETH", {"window": "10y"}, 422),
        ("/v1/quant/eth$", {}, 400),
        ("/v1/correlation", {"symbols": "BTC"}, 400),
        ("/v1/correlation", {"symbols": "BTC,BTC"}, 400),
        ("/v1/correlation", {"symbols": ",".join(["BTC"] * 30)}, 400),
        ("/v1/market", {"start": "2026-01-02", "end": "2026-01-01"}, 400),
        ("/v1/scenarios/ETH", {"price": "-5"}, 422),
        ("/v1/scenarios/ETH", {"price": "nan"}, 422),
        ("/v1/scenarios/ETH", {"targets": "1e400"}, 400),
        ("/v1/scenarios/ETH", {"targets": "abc"}, 400),
        ("/v1/scenarios/FOO", {}, 404),
        ("/v1/reports/FOO", {}, 404),
    ]
    for path, params, status in cases:
        r = await api.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        assert r.json()["error"]["message"], (path, params)


async def test_the_market_state_is_published_when_it_changes(api: httpx.AsyncClient) -> None:
    """Last in the module: it turns the last day bullish. The backfill's state is on the topic; a look with
    nothing new publishes nothing; grades of 100 and bullish signals on the last day publish the change."""
    gateway, bus, states = RUN["gateway"], RUN["bus"], RUN["states"]
    watch = gateway.market_watch
    await watch.idle()
    await bus.drain()
    current = (await api.get("/v1/market")).json()
    assert states, "no market state published after the backfill"
    assert (states[-1].state, states[-1].ts.date().isoformat()) == (current["state"], current["as_of"])
    assert current["state"] != "bullish"
    assert await watch.check() is None

    day = datetime.fromisoformat(current["as_of"]).replace(tzinfo=UTC)
    grades = [GradeEvent(symbol=s, ts=day, trader_grade=100.0, investor_grade=50.0) for s in SYMBOLS]
    signals = [SignalEvent(symbol=s, ts=day, direction=Direction.BULLISH, strength=1.0) for s in SYMBOLS]
    await gateway.writer.write(TABLES["grades"], grades)
    await gateway.writer.write(TABLES["signals"], signals)
    await watch.idle()
    await bus.drain()
    changed = states[-1]
    assert (changed.state, changed.previous_state) == ("bullish", current["state"])
    assert changed.event_id == f"market-state-{current['as_of']}-bullish" and changed.breadth == 1.0
    assert (await api.get("/v1/market")).json()["state"] == "bullish"


async def test_the_latest_grade_and_daily_signal_are_the_newest_rows(
    api: httpx.AsyncClient, module_store: Store
) -> None:
    """What a report quotes: the token's newest grade and newest standing daily signal, not an older one."""
    queries = AnalyticsQueries(module_store)
    ((grade_ms,),) = await module_store.query("SELECT toUnixTimestamp64Milli(max(ts)) FROM grades WHERE symbol = 'BTC'")
    signals = "SELECT toUnixTimestamp64Milli(max(ts)) FROM signals FINAL WHERE symbol = 'BTC' AND interval = '1d'"
    ((signal_ms,),) = await module_store.query(signals + " AND retracted = 0")
    grade, signal = await queries.latest_grade("BTC"), await queries.latest_daily_signal("BTC")
    assert grade is not None and signal is not None
    assert grade["ts"] == datetime.fromtimestamp(grade_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert signal["ts"] == datetime.fromtimestamp(signal_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert signal["direction"] in ("bullish", "bearish") and isinstance(grade["components"], dict)
