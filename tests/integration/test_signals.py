"""Intraday signals and retractions through the real pipeline (in-process bus, scoring, store writer on
chDB, gateway): who may read them, the track record served from the store, and a late candle
correction that withdraws a published signal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_ingest.bundle import Bar, bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval, SignalEvent
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import CANDLES, SIGNALS

from testkit.wiring import collected, embedded

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = "signals-admin-token-5b2e"


@dataclass
class Env:
    bus: InMemoryBus
    store: Store
    api: httpx.AsyncClient
    free: str
    pro: str
    bars4h: list[Bar]
    published: list[SignalEvent]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    store = await Store(f"chdb://{tmp_path_factory.mktemp('signals') / 'ch'}").open()
    settings = Settings(
        runtime={"symbols": ["BTC"]},
        ingest={"live_feed": "off"},
        gateway={"admin_token": ADMIN, "free_limit_per_minute": 600},
    )
    gateway, scoring = GatewayService(), ScoringService()
    bus, ctx = embedded(settings, store, gateway, scoring)
    published: list[SignalEvent] = collected(bus, SIGNALS, "test-observer")
    await bus.start()
    await scoring.start(ctx)
    series = plan(settings.runtime.bundle_dir, ["BTC"], [Interval.D1, Interval.H4])
    await publish_history(bus, series)
    await bus.drain()
    bars4h = next(bars for _, interval, bars in series if interval is Interval.H4)
    assert gateway.app is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://t") as api:
        free = (await api.post("/v1/keys", json={"name": "free"})).json()["key"]
        made = await api.post(
            "/v1/admin/keys",
            json={"name": "Pro", "email": "p@x.example", "tier": "pro"},
            headers={"X-Admin-Token": ADMIN},
        )
        assert made.status_code == 201, made.text
        yield Env(bus, store, api, free, made.json()["key"], bars4h, published)
    await bus.stop()
    await store.close()


async def all_signals(env: Env, key: str, **params: str) -> list[dict]:  # type: ignore[type-arg]
    out, cursor = [], None
    while True:
        q = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        r = await env.api.get("/v1/signals", params=q, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        out += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


async def test_intraday_signals_are_published_and_served_to_tiers_that_have_them(env: Env) -> None:
    published_4h = [e for e in env.published if e.interval is Interval.H4]
    assert len(published_4h) > 100
    assert all(0 <= e.strength <= 1 and e.reasons for e in published_4h)
    served = await all_signals(env, env.pro, interval="4h")
    assert [(s["ts"], s["direction"]) for s in served] == [
        (e.ts.isoformat().replace("+00:00", "Z"), e.direction.value) for e in published_4h
    ]
    # the free tier: 403 with what to do, and its default listing holds daily signals only
    denied = await env.api.get("/v1/signals", params={"interval": "4h"}, headers={"X-API-Key": env.free})
    assert denied.status_code == 403 and "pro tier" in denied.json()["error"]["message"]
    free_default = await all_signals(env, env.free)
    assert free_default and {s["interval"] for s in free_default} == {"1d"}
    pro_default = await all_signals(env, env.pro)
    assert {s["interval"] for s in pro_default} == {"1d", "4h"}
    # a token's headline signal stays its daily one
    tokens = (await env.api.get("/v1/tokens", headers={"X-API-Key": env.pro})).json()["data"]
    btc = next(t for t in tokens if t["symbol"] == "BTC")
    last_daily = [s for s in pro_default if s["interval"] == "1d"][-1]
    assert btc["signal"]["ts"] == last_daily["ts"]


async def test_the_served_track_record_has_the_intraday_signals_of_an_offline_replay(env: Env) -> None:
    from tokenpulse.track_cli import replay

    served = (await env.api.get("/v1/track-record", headers={"X-API-Key": env.pro})).json()
    offline = replay(Settings().runtime.bundle_dir, ["BTC"], intraday=(Interval.H4,)).model_dump(mode="json")
    assert [r["interval"] for r in served["intraday"]] == ["4h"]
    assert served["intraday"] == offline["intraday"]
    assert served["signals"] == offline["signals"]


def _removing_correction(bars: list[Bar]) -> tuple[int, Bar]:
    """A 4h signal among the recent candles and a corrected candle before it that makes it go away
    (found by replaying the real history offline)."""
    entries = [(b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0) for b in bars]
    base = {e[0] for e, u in ScoringService().apply_batch("BTC", Interval.H4, entries) if u.signal}
    for k in range(len(bars) - 30, len(bars) - 1500, -1):
        if bars[k].ts_ms not in base:
            continue
        for factor in (0.9, 1.1, 0.8, 1.2):
            b = bars[k - 1]
            close = b.close * factor
            fixed = Bar(b.ts_ms, b.open, max(b.high, close), min(b.low, close), close, b.volume, b.source)
            fixed_entry = (fixed.ts_ms, fixed.open, fixed.high, fixed.low, close, fixed.volume, 1)
            trial = [*entries[: k - 1], fixed_entry, *entries[k:]]
            got = {e[0] for e, u in ScoringService().apply_batch("BTC", Interval.H4, trial) if u.signal}
            if bars[k].ts_ms not in got:
                return k, fixed
    raise AssertionError("no correction found that removes a recent signal")


async def test_a_late_correction_that_removes_a_signal_publishes_a_retraction_and_stops_serving_it(env: Env) -> None:
    k, fixed = _removing_correction(env.bars4h)
    gone = datetime.fromtimestamp(env.bars4h[k].ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    window = {"interval": "4h", "start": env.bars4h[k - 5].ts_ms, "end": env.bars4h[k + 5].ts_ms}
    params = {
        key: str(v) if key == "interval" else datetime.fromtimestamp(v / 1000, UTC).isoformat()
        for key, v in window.items()
    }  # type: ignore[attr-defined]
    before = await all_signals(env, env.pro, **params)
    assert gone in [s["ts"] for s in before]
    seen = len(env.published)
    corrected = bar_to_event("BTC", Interval.H4, fixed).model_copy(update={"version": 1})  # a later version
    await env.bus.publish(CANDLES, [corrected])
    await env.bus.drain()
    retractions = [e for e in env.published[seen:] if e.retracted]
    assert [(e.interval, e.ts.isoformat().replace("+00:00", "Z")) for e in retractions] == [(Interval.H4, gone)]
    assert "retracted" in retractions[0].reasons[0]
    after = await all_signals(env, env.pro, **params)
    assert gone not in [s["ts"] for s in after]
    stored = await env.store.query(
        "SELECT retracted FROM signals FINAL WHERE interval = '4h' AND ts = fromUnixTimestamp64Milli({t:Int64}, 'UTC')",
        {"t": env.bars4h[k].ts_ms},
    )
    assert stored == [(1,)]
