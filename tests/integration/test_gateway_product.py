"""The gateway as a product on the real engine (chDB), the in-process bus and a real Redis: tiers and admin
keys, limits and their headers, usage, caching, security headers, CORS, the live state and the event stream."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import (
    AlertFiredEvent,
    CandleEvent,
    Event,
    Interval,
    PredictionEvent,
    PriceEvent,
    SignalEvent,
)
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import ALERTS, CANDLES, PREDICTIONS, PRICES, SIGNALS, Topic

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = "test-admin-token-7c1f"


@dataclass
class Gw:
    bus: InMemoryBus
    store: Store
    app: FastAPI  # memory limits, admin token, fast heartbeats
    api: httpx.AsyncClient
    bare: httpx.AsyncClient  # a second app on the same store: no admin token, CORS for one origin, 2 keys/hour


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    store = await Store(f"chdb://{tmp_path_factory.mktemp('product') / 'ch'}").open()
    bus = InMemoryBus()
    base: dict[str, Any] = {"runtime": {"symbols": ["BTC", "ETH"]}, "ingest": {"live_feed": "off"}}
    s1 = Settings(
        gateway={
            "free_limit_per_minute": 20,
            "admin_token": ADMIN,
            "key_issue_per_hour": 1000,
            "stream_heartbeat_s": 0.3,
        },
        **base,
    )
    s2 = Settings(gateway={"persist": False, "cors_origins": ["https://ok.example"], "key_issue_per_hour": 2}, **base)
    apps = []
    for settings in (s1, s2):
        g = GatewayService()
        g.register(Context(settings=settings, bus=bus, store=store, embedded=True))
        assert g.app is not None
        apps.append(g.app)
    await bus.start()
    await publish_history(bus, plan(s1.runtime.bundle_dir, ["BTC", "ETH"], [Interval.D1]))
    await bus.drain()
    async with client(apps[0]) as api, client(apps[1]) as bare:
        yield Gw(bus, store, apps[0], api, bare)
    await bus.stop()
    await store.close()


async def new_key(gw: Gw, name: str = "t") -> str:
    r = await gw.api.post("/v1/keys", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_every_v1_answer_carries_rate_limit_headers_and_429_has_retry_after(gw: Gw) -> None:
    key = await new_key(gw)
    first = await gw.api.get("/v1/tokens", headers=h(key))
    assert first.headers["X-RateLimit-Limit"] == "20"
    assert first.headers["X-RateLimit-Remaining"] == "19"
    assert 0 <= int(first.headers["X-RateLimit-Reset"]) <= 60
    other = await gw.api.get("/v1/candles/BTC", headers=h(key), params={"limit": 2})  # a store-backed answer too
    assert other.headers["X-RateLimit-Remaining"] == "18"
    statuses = [(await gw.api.get("/v1/tokens", headers=h(key))).status_code for _ in range(18)]
    assert statuses == [200] * 18
    over = await gw.api.get("/v1/tokens", headers=h(key))
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited" and "retry in" in over.json()["error"]["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["X-RateLimit-Remaining"] == "0"


async def test_usage_shows_the_callers_minute_and_month(gw: Gw) -> None:
    key = await new_key(gw, "usage")
    for _ in range(3):
        await gw.api.get("/v1/tokens", headers=h(key))
    body = (await gw.api.get("/v1/usage", headers=h(key))).json()
    assert body["tier"] == {
        "name": "free",
        "per_minute": 20,
        "per_month": 10000,
        "max_alert_rules": 10,
        "intraday": False,
        "max_streams": 2,
    }
    assert body["usage"]["minute"] == {**body["usage"]["minute"], "limit": 20, "used": 4, "remaining": 16}
    assert body["usage"]["month"]["used"] == 4 and body["usage"]["month"]["remaining"] == 9996
    assert body["shared"] is False
    assert (await gw.api.get("/v1/usage")).status_code == 401


async def test_admin_issues_tiers_and_revokes_at_once(gw: Gw) -> None:
    body = {"name": "Acme", "email": "ops@acme.example", "tier": "pro"}
    assert (await gw.api.post("/v1/admin/keys", json=body)).status_code == 401
    wrong = await gw.api.post("/v1/admin/keys", json=body, headers={"X-Admin-Token": "nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "invalid_admin_token"
    bad_tier = await gw.api.post("/v1/admin/keys", json={**body, "tier": "gold"}, headers={"X-Admin-Token": ADMIN})
    assert bad_tier.status_code == 422 and "tier" in bad_tier.json()["error"]["message"]
    made = await gw.api.post("/v1/admin/keys", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert made.status_code == 201, made.text
    pro = made.json()
    assert pro["tier"] == "pro" and pro["limits"]["per_minute"] == 500 and pro["limits"]["intraday"] is True
    r = await gw.api.get("/v1/tokens", headers=h(pro["key"]))
    assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "500"
    record = (await gw.api.get(f"/v1/admin/keys/{pro['key_id']}", headers={"X-Admin-Token": ADMIN})).json()
    assert record["tier"] == "pro" and record["revoked"] is False and "key" not in record
    gone = await gw.api.delete(f"/v1/admin/keys/{pro['key_id']}", headers={"X-Admin-Token": ADMIN})
    assert gone.json() == {"key_id": pro["key_id"], "revoked": True}
    refused = await gw.api.get("/v1/tokens", headers=h(pro["key"]))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    missing = await gw.api.delete("/v1/admin/keys/0000", headers={"X-Admin-Token": ADMIN})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_key"
    assert (await gw.api.get("/v1/admin/keys/0000", headers={"X-Admin-Token": ADMIN})).status_code == 404


async def test_without_an_admin_token_the_admin_api_is_off(gw: Gw) -> None:
    r = await gw.bare.post("/v1/admin/keys", json={"name": "x"}, headers={"X-Admin-Token": "anything"})
    assert r.status_code == 403 and "TOKENPULSE_ADMIN_TOKEN" in r.json()["error"]["message"]


async def test_free_keys_are_limited_per_address(gw: Gw) -> None:
    codes = [(await gw.bare.post("/v1/keys", json={"name": f"k{i}"})).status_code for i in range(3)]
    assert codes == [201, 201, 429]
    r = await gw.bare.post("/v1/keys", json={"name": "again"})
    assert r.json()["error"]["code"] == "too_many_keys" and int(r.headers["Retry-After"]) >= 1


async def test_intraday_signals_need_a_tier_that_has_them(gw: Gw) -> None:
    key = await new_key(gw)
    r = await gw.api.get("/v1/signals", params={"interval": "1h"}, headers=h(key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "tier_required"
    ok = await gw.api.get("/v1/signals", params={"interval": "1d", "limit": 5}, headers=h(key))
    assert ok.status_code == 200 and all(s["interval"] == "1d" for s in ok.json()["data"])


async def test_history_has_an_etag_and_answers_304_when_unchanged(gw: Gw) -> None:
    key = await new_key(gw)
    params = {"interval": "1d", "start": "2017-12-01", "end": "2017-12-10"}
    first = await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.headers["Cache-Control"].startswith("private, max-age=")
    again = await gw.api.get("/v1/candles/BTC", params=params, headers={**h(key), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    other = await gw.api.get(
        "/v1/candles/BTC", params={**params, "end": "2017-12-11"}, headers={**h(key), "If-None-Match": etag}
    )
    assert other.status_code == 200 and other.headers["ETag"] != etag
    for path in ("/v1/grades/BTC", "/v1/levels/BTC", "/v1/indicators/BTC", "/v1/signals"):
        r = await gw.api.get(path, headers=h(key))
        assert r.status_code == 200 and "ETag" in r.headers, path


async def test_security_headers_and_strict_cors(gw: Gw) -> None:
    key = await new_key(gw)
    api = await gw.api.get("/v1/tokens", headers={**h(key), "Origin": "https://evil.example"})
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["X-Frame-Options"] == "DENY" and api.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in api.headers["Content-Security-Policy"]
    assert "access-control-allow-origin" not in api.headers  # no origins configured: no CORS
    page = await gw.api.get("/dashboard")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-eval" not in csp
    ok = await gw.bare.options(
        "/v1/tokens", headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "GET"}
    )
    assert ok.headers["access-control-allow-origin"] == "https://ok.example"
    evil = await gw.bare.options(
        "/v1/tokens", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in evil.headers


async def test_request_bodies_are_size_limited(gw: Gw) -> None:
    r = await gw.api.post(
        "/v1/keys", content=json.dumps({"name": "x" * 70_000}), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_tokens_come_from_memory_kept_current_by_the_bus(gw: Gw) -> None:
    key = await new_key(gw)
    await gw.api.get("/v1/tokens", headers=h(key))  # the cold start has loaded from the store
    now = datetime.now(UTC)
    await gw.bus.publish(PRICES, [PriceEvent(symbol="ETH", ts=now, price=4321.5, sources=["test"])])
    await gw.bus.publish(
        PREDICTIONS,
        [
            PredictionEvent(
                symbol="ETH",
                horizon="7d",
                made_at=now,
                target_ts=now.replace(year=now.year + 1),
                point=4400.0,
                lower=4000.0,
                upper=4800.0,
                model="test",
            )
        ],
    )
    await gw.bus.drain()
    queries = 0
    original = gw.store.query

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal queries
        queries += 1
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    gw.store.query = counting  # type: ignore[method-assign]
    try:
        tokens = (await gw.api.get("/v1/tokens", headers=h(key))).json()["data"]
    finally:
        gw.store.query = original  # type: ignore[method-assign]
    eth = next(t for t in tokens if t["symbol"] == "ETH")
    assert eth["price"] == 4321.5 and eth["change_24h"] is not None
    assert queries == 0  # answered from memory
    detail = (await gw.api.get("/v1/tokens/ETH", headers=h(key))).json()
    assert detail["price"] == 4321.5
    assert [(p["horizon"], p["point"], p["lower"], p["upper"]) for p in detail["predictions"]] == [
        ("7d", 4400.0, 4000.0, 4800.0)
    ]


class QueryCounter:
    """Counts the store queries made inside the ``with`` block."""

    def __init__(self, store: Store) -> None:
        self.store, self.original, self.count = store, store.query, 0

    def __enter__(self) -> QueryCounter:
        async def counting(*args: object, **kwargs: object) -> object:
            self.count += 1
            return await self.original(*args, **kwargs)  # type: ignore[arg-type]

        self.store.query = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.query = self.original  # type: ignore[method-assign]


async def test_hot_answers_are_reused_until_the_live_state_changes(gw: Gw) -> None:
    key = await new_key(gw)
    first = await gw.api.get("/v1/tokens", headers=h(key))
    again = await gw.api.get("/v1/tokens", headers=h(key))
    assert first.content == again.content and first.headers["ETag"] == again.headers["ETag"]
    detail = await gw.api.get("/v1/tokens/BTC", headers=h(key))
    with QueryCounter(gw.store) as counted:  # the page of a token is kept too: no store query to repeat it
        assert (await gw.api.get("/v1/tokens/BTC", headers=h(key))).content == detail.content
    assert counted.count == 0
    price = (first.json()["data"][0]["price"] or 1.0) * 1.5
    symbol = first.json()["data"][0]["symbol"]
    await gw.bus.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=price, sources=["t"])])
    await gw.bus.drain()
    moved = await gw.api.get("/v1/tokens", headers=h(key), params={"limit": 1})
    assert moved.json()["data"][0]["price"] == price
    after = await gw.api.get("/v1/tokens", headers={**h(key), "If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != first.headers["ETag"]  # a new version, a new tag
    assert (await gw.api.get(f"/v1/tokens/{symbol}", headers=h(key))).json()["price"] == price


async def test_candle_pages_are_cached_and_dropped_when_a_new_candle_arrives(gw: Gw) -> None:
    """Pages are reused (no store query) until the bus brings a candle of that token and interval."""
    key = await new_key(gw)
    params = {"interval": "4h", "start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}
    empty = await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))
    assert empty.status_code == 200 and empty.json()["data"] == []
    with QueryCounter(gw.store) as counted:
        assert (await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))).content == empty.content
    assert counted.count == 0
    candle = CandleEvent(
        symbol="BTC", interval=Interval.H4, ts=datetime(2020, 1, 1, 4, tzinfo=UTC), open=7200.0, high=7300.0,
        low=7150.0, close=7250.0, volume=12.5, source="test",
    )  # fmt: skip
    eth = candle.model_copy(update={"symbol": "ETH", "event_id": "eth-candle-0001"})
    await gw.bus.publish(CANDLES, [eth])  # another token
    await gw.bus.drain()
    with QueryCounter(gw.store) as counted:
        assert (await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))).json()["data"] == []
    assert counted.count == 0  # ETH's candle leaves BTC's pages alone
    await gw.bus.publish(CANDLES, [candle])  # the store writer persists it, the gateway drops BTC 4h pages
    await gw.bus.drain()
    fresh = await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))
    assert [(c["ts"], c["close"]) for c in fresh.json()["data"]] == [("2020-01-01T04:00:00Z", 7250.0)]
    assert fresh.headers["ETag"] != empty.headers["ETag"]


async def test_a_page_read_before_the_store_has_a_new_candle_is_dropped_when_it_is_stored(gw: Gw) -> None:
    """The bus brings a candle to the live state (which drops the pages of its series) before the store
    writer has inserted it: a page read in between holds the rows from before. The insert drops it
    again, so the next read has the candle (not only after the cache's TTL)."""
    from tokenpulse_gateway.writer import TABLES

    key = await new_key(gw)
    params = {"interval": "4h", "start": "2020-02-01T00:00:00Z", "end": "2020-02-02T00:00:00Z"}
    candle = CandleEvent(
        symbol="BTC", interval=Interval.H4, ts=datetime(2020, 2, 1, 8, tzinfo=UTC), open=9300.0, high=9400.0,
        low=9250.0, close=9350.0, volume=3.5, source="test",
    )  # fmt: skip
    await gw.app.state.live.on_candles([candle])  # the live state hears of it first ...
    before = await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))
    assert before.status_code == 200 and before.json()["data"] == []  # ... the store has not got it yet
    await gw.app.state.writer.write(TABLES["candles"], [candle])  # then the writer's insert
    after = await gw.api.get("/v1/candles/BTC", params=params, headers=h(key))
    assert [(c["ts"], c["close"]) for c in after.json()["data"]] == [("2020-02-01T08:00:00Z", 9350.0)]


async def test_metrics_count_requests_by_route_template_and_status_class(gw: Gw) -> None:
    key = await new_key(gw)
    await gw.api.get("/v1/tokens/BTC", headers=h(key))
    await gw.api.get("/v1/tokens/NOPE1", headers=h(key))
    await gw.api.get("/v1/no-such-path", headers=h(key))
    text = (await gw.api.get("/metrics")).text
    totals = {
        (s.labels["handler"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "http_requests"
        for s in family.samples
        if s.name == "http_requests_total"
    }
    assert totals[("/v1/tokens/{symbol}", "GET", "2xx")] >= 1
    assert totals[("/v1/tokens/{symbol}", "GET", "4xx")] >= 1  # an unknown token: 404 on a known route
    assert totals[("none", "GET", "4xx")] >= 1  # no route: one label for every unknown path
    assert not any(handler == "/metrics" for handler, _, _ in totals)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"http_request_duration_highr_seconds", "http_request_duration_seconds"} <= names


class Server:
    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, port=self.port, log_config=None, access_log=False, lifespan="off")
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def read_events(resp: httpx.Response, want: int, pings: list[str]) -> list[tuple[int, str, dict[str, object]]]:
    out: list[tuple[int, str, dict[str, object]]] = []
    ev: dict[str, str] = {}
    lines = resp.aiter_lines()
    while len(out) < want:
        line = await asyncio.wait_for(anext(lines), 10)
        if line.startswith(":"):
            pings.append(line)
        elif line == "":
            if ev.get("event") and ev["event"] != "hello":
                out.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
            ev = {}
        else:
            field, _, value = line.partition(":")
            ev[field] = value.strip()
    return out


async def test_stream_filters_fans_out_own_alerts_and_resumes_from_last_event_id(gw: Gw) -> None:
    key = await new_key(gw, "streamer")
    key_id = (await gw.api.get("/v1/usage", headers=h(key))).json()["key_id"]
    now = datetime.now(UTC)

    async def feed() -> None:
        await asyncio.sleep(0.3)
        fired = dict(rule_id="r1", symbol="BTC", ts=now, price=101_000.0, message="BTC above 100000")
        steps: list[tuple[Topic, list[Event]]] = [
            (PRICES, [PriceEvent(symbol="ETH", ts=now, price=1.0)]),  # filtered out: another symbol
            (PRICES, [PriceEvent(symbol="BTC", ts=now, price=101_000.0)]),
            (SIGNALS, [SignalEvent(symbol="BTC", ts=now, interval=Interval.H1, direction="bullish", strength=0.5)]),
            (SIGNALS, [SignalEvent(symbol="BTC", ts=now, direction="bearish", strength=0.7)]),
            (ALERTS, [AlertFiredEvent(owner="someone-else", **fired)]),  # type: ignore[arg-type]
            (ALERTS, [AlertFiredEvent(owner=key_id, **fired)]),  # type: ignore[arg-type]
            (PRICES, [PriceEvent(symbol="BTC", ts=now, price=102_000.0)]),
        ]
        for topic, events in steps:  # one at a time: the in-process bus orders within a topic only
            await gw.bus.publish(topic, events)
            await gw.bus.drain()

    pings: list[str] = []
    async with Server(gw.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        bad = await http.get("/v1/stream", params={"api_key": key, "types": "price,weather"})
        assert bad.status_code == 422 and "weather" in bad.json()["error"]["message"]
        assert (await http.get("/v1/stream")).status_code == 401
        params = {"api_key": key, "symbols": "btc", "types": "price,signal,alert"}
        async with http.stream("GET", "/v1/stream", params=params) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["X-RateLimit-Limit"] == "20"
            task = asyncio.create_task(feed())
            events = await read_events(resp, 4, pings)
            await task
            await read_events_until_ping(resp, pings)
        kinds = [(t, d.get("price"), d.get("direction"), d.get("rule_id")) for _, t, d in events]
        # free tier: the 1h signal is not streamed; only the caller's own alert
        assert kinds == [
            ("price", 101_000.0, None, None),
            ("signal", None, "bearish", None),
            ("alert", 101_000.0, None, "r1"),
            ("price", 102_000.0, None, None),
        ]
        ids = [i for i, _, _ in events]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert pings  # heartbeats while idle
        async with http.stream("GET", "/v1/stream", params=params, headers={"Last-Event-ID": str(ids[1])}) as resp:
            resumed = await read_events(resp, 2, [])
        assert [i for i, _, _ in resumed] == ids[2:]


async def read_events_until_ping(resp: httpx.Response, pings: list[str]) -> None:
    lines = resp.aiter_lines()
    while not pings:
        line = await asyncio.wait_for(anext(lines), 10)
        if line.startswith(":"):
            pings.append(line)


async def test_keys_never_reach_the_logs(gw: Gw, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = await new_key(gw, "secret-keeper")
    await gw.api.get("/v1/tokens", headers=h(key))
    await gw.api.get("/v1/nothing", headers=h(key))
    await gw.api.get("/v1/stream", params={"api_key": key, "types": "nope"})
    await gw.api.get("/v1/tokens", headers=h(key[:-1]))
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not this client's
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in server_side)
    assert key[:-1] not in text


async def test_openapi_has_an_example_for_every_endpoint(gw: Gw) -> None:
    spec = (await gw.api.get("/openapi.json")).json()
    missing = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in ops.items():
            ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
            has_example = any("example" in c for r in ok.values() for c in r.get("content", {}).values())
            if not has_example:
                missing.append(f"{method.upper()} {path}")
    assert missing == []
    for path in ("/v1/admin/keys", "/v1/usage", "/v1/stream", "/v1/admin/keys/{key_id}"):
        assert path in spec["paths"]


def replica(store: Store, **gateway: object) -> FastAPI:
    settings = Settings(
        runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}, gateway={"persist": False, **gateway}
    )
    g = GatewayService()
    g.register(Context(settings=settings, bus=InMemoryBus(), store=store, embedded=True))
    assert g.app is not None
    return g.app


async def test_two_gateways_share_one_limit_through_redis(gw: Gw, redis_url: str) -> None:
    """Two gateway apps (as two replicas) on the same store and one real Redis: one key, one budget."""
    a_app, b_app = (replica(gw.store, redis_url=redis_url, free_limit_per_minute=7) for _ in range(2))
    async with client(a_app) as a, client(b_app) as b:
        key = (await a.post("/v1/keys", json={"name": "replicas"})).json()["key"]
        seen = []
        for i in range(7):
            r = await (a if i % 2 else b).get("/v1/tokens", headers=h(key))
            seen.append((r.status_code, r.headers["X-RateLimit-Remaining"]))
        assert seen == [(200, str(6 - i)) for i in range(7)]
        assert (await a.get("/v1/tokens", headers=h(key))).status_code == 429
        assert (await b.get("/v1/tokens", headers=h(key))).status_code == 429


async def test_a_revoked_key_is_refused_by_other_replicas_within_the_cache_ttl(gw: Gw) -> None:
    other = replica(gw.store, key_cache_ttl_s=0.5)
    made = await gw.api.post(
        "/v1/admin/keys", json={"name": "r", "tier": "enterprise"}, headers={"X-Admin-Token": ADMIN}
    )
    key, key_id = made.json()["key"], made.json()["key_id"]
    async with client(other) as b:
        assert (await b.get("/v1/tokens", headers=h(key))).status_code == 200  # now cached there
        await gw.api.delete(f"/v1/admin/keys/{key_id}", headers={"X-Admin-Token": ADMIN})
        assert (await gw.api.get("/v1/tokens", headers=h(key))).status_code == 401  # at once here
        for _ in range(100):  # and on the other replica once its cached lookup expires (0.5 s)
            if (await b.get("/v1/tokens", headers=h(key))).status_code == 401:
                break
            await asyncio.sleep(0.1)
        assert (await b.get("/v1/tokens", headers=h(key))).status_code == 401


async def test_an_unreachable_redis_is_a_503_not_unlimited_access(gw: Gw) -> None:
    key = await new_key(gw, "redis-down")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    async with client(replica(gw.store, redis_url=dead)) as c:
        r = await c.get("/v1/tokens", headers=h(key))
        assert r.status_code == 503 and r.json()["error"]["code"] == "limiter_unavailable"
        assert r.headers["Retry-After"] == "5"
        assert (await c.post("/v1/keys", json={"name": "x"})).status_code == 503
