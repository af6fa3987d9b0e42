"""Predictions end to end on the real engine: scoring retrains (child process) from the candles it
saw, publishes forecasts on the bus, the store writer persists them (chDB), the gateway serves them;
too little history is an explicit 422, never a number; past forecasts carry the realised close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_scoring.forecast import live
from tokenpulse_scoring.forecast.walkforward import WalkConfig, day_of
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval
from tokenpulse_shared.predictions import HORIZONS, MIN_HISTORY_DAYS
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.timeutil import DAY_MS as DAY

from testkit.wiring import embedded, keyed_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

CUT = "2023-01-01"  # the fixture's history ends the day before


def window(start: str, end: str) -> tuple[int, int]:
    return day_of(start) * DAY, day_of(end) * DAY


class Env:
    def __init__(self, client: httpx.AsyncClient, bus: InMemoryBus, scoring: ScoringService, settings: Settings):
        self.client, self.bus, self.scoring, self.settings = client, bus, scoring, settings


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    root: Path = tmp_path_factory.mktemp("pred")
    store = await Store(f"chdb://{root / 'ch'}").open()
    settings = Settings(
        runtime={"symbols": ["BTC", "ETH"]},
        ingest={"live_feed": "off"},
        gateway={"free_limit_per_minute": 300},
        scoring={"predictions": True},
        store={"data_dir": root},
    )
    gateway, scoring = GatewayService(), ScoringService()
    bus, ctx = embedded(settings, store, gateway, scoring)
    assert scoring.forecaster is not None
    scoring.forecaster.config = WalkConfig(
        eval_start="2022-01-01", warm_start="2021-06-01", models=("naive", "theta"), min_calib=20, step=3
    )
    await bus.start()
    await scoring.start(ctx)
    await publish_history(bus, plan(settings.runtime.bundle_dir, ["BTC"], [Interval.D1], *window("2020-06-01", CUT)))
    await publish_history(bus, plan(settings.runtime.bundle_dir, ["ETH"], [Interval.D1], *window("2022-11-01", CUT)))
    await bus.drain()
    assert await scoring.forecaster.retrain()
    await bus.drain()
    assert gateway.app is not None
    async with keyed_client(gateway.app, "tests") as client:
        yield Env(client, bus, scoring, settings)
    await scoring.stop()
    await bus.stop()
    await store.close()


async def test_every_horizon_has_a_forecast_with_both_intervals_and_its_record(env: Env) -> None:
    r = await env.client.get("/v1/predictions/btc")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "BTC" and [h["horizon"] for h in body["horizons"]] == list(HORIZONS)
    bars = plan(env.settings.runtime.bundle_dir, ["BTC"], [Interval.D1], *window("2022-12-31", CUT))[0][2]
    last_close = bars[-1].close
    version = (env.settings.store.data_dir / "models" / "predictions" / "CURRENT").read_text()
    for h in body["horizons"]:
        assert h["made_at"] == "2023-01-01T00:00:00Z"  # the close of the last daily candle
        assert h["target_ts"][:10] == {"1d": "2023-01-02", "7d": "2023-01-08", "30d": "2023-01-31"}[h["horizon"]]
        assert h["lower_95"] < h["lower"] <= h["point"] <= h["upper"] < h["upper_95"]
        assert h["interval"] == 0.8 and h["model"].endswith("@" + version)
        assert h["backtest"]["n"] > 0 and 0 < h["backtest"]["coverage"] <= 1 and h["backtest"]["mase"] > 0
        if h["model"].startswith("naive"):
            assert h["point"] == pytest.approx(last_close)
    detail = (await env.client.get("/v1/tokens/BTC")).json()
    assert detail["predictions"] == body["horizons"]


async def test_the_first_version_publishes_its_walk_forward_as_past_forecasts(env: Env) -> None:
    body = (await env.client.get("/v1/predictions/BTC", params={"history": "true", "limit": 1000})).json()
    assert {h["kind"] for h in body["horizons"]} == {"live"}
    wf = [p for p in body["history"] if p["kind"] == "walk-forward"]
    assert {p["horizon"] for p in wf} == set(HORIZONS)
    closes = {
        b.ts_ms + DAY: b.close
        for b in plan(env.settings.runtime.bundle_dir, ["BTC"], [Interval.D1], *window("2021-01-01", CUT))[0][2]
    }
    for p in wf:
        assert p["made_at"] < "2023-01-01" and p["target_ts"] <= "2023-01-01T00:00:00Z"  # known when trained
        assert p["lower_95"] <= p["lower"] <= p["point"] <= p["upper"] <= p["upper_95"]
        target_ms = day_of(p["target_ts"][:10]) * DAY
        assert p["realised"] == pytest.approx(closes[target_ms])
        assert p["inside_80"] == (p["lower"] <= p["realised"] <= p["upper"])


async def test_too_little_history_is_an_explicit_422_never_a_number(env: Env) -> None:
    r = await env.client.get("/v1/predictions/ETH")
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "insufficient_history" and str(MIN_HISTORY_DAYS) in err["message"]
    assert "61 daily candles" in err["message"]
    assert (await env.client.get("/v1/tokens/ETH")).json()["predictions"] == []
    assert (await env.client.get("/v1/predictions/NOPE")).status_code == 404
    bad = await env.client.get("/v1/predictions/BTC", params={"history": "true", "horizon": "2d"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


async def test_daily_close_inference_and_past_forecasts_with_the_realised_close(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "RECENT_MS", 10**13)  # treat the replayed days as live closes
    later = plan(env.settings.runtime.bundle_dir, ["BTC"], [Interval.D1], *window(CUT, "2023-01-11"))
    await publish_history(env.bus, later)
    await env.bus.drain()
    bars = later[0][2]
    body = (await env.client.get("/v1/predictions/BTC", params={"history": "true", "limit": 1000})).json()
    assert {h["made_at"] for h in body["horizons"]} == {"2023-01-11T00:00:00Z"}
    past = {(p["horizon"], p["made_at"]): p for p in body["history"]}
    first = {h: past[(h, "2023-01-01T00:00:00Z")] for h in HORIZONS}
    assert first["1d"]["realised"] == pytest.approx(bars[0].close)  # close of 2023-01-01
    assert first["7d"]["realised"] == pytest.approx(bars[6].close)  # close of 2023-01-07
    assert first["30d"]["realised"] is None and first["30d"]["inside_80"] is None
    one = first["1d"]
    assert one["inside_80"] == (one["lower"] <= one["realised"] <= one["upper"])
    only_7d = (await env.client.get("/v1/predictions/BTC", params={"history": "true", "horizon": "7d"})).json()
    assert only_7d["history"] and {p["horizon"] for p in only_7d["history"]} == {"7d"}
    made = [p["made_at"] for p in only_7d["history"]]
    assert made == sorted(made, reverse=True)
