"""Security of the gateway on the real engine (chDB) with the real daily history: who gets in, what is kept,
what is refused.

* every ``/v1`` operation of the OpenAPI document (enumerated from it, not from a hand list) refuses a
  missing, an unknown and a revoked key; the admin operations refuse a user key;
* an API key is stored only as its hash: the plain key is in no ClickHouse table and no log record;
* limits: the per-minute limit, the body size, the page size;
* SSRF: webhook targets on loopback, private, link-local (cloud metadata) and other non-public addresses,
  in any spelling, and non-https schemes are refused when a rule is created;
* hostile symbols and parameters (SQL fragments, NUL, unicode, huge values) are a 4xx, and every table
  is intact afterwards (the queries are parameterised).
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = "security-admin-token-5b2e9a"
PER_MINUTE = 40


@dataclass
class Gw:
    store: Store
    api: httpx.AsyncClient
    logs: io.StringIO
    spec: dict[str, Any]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    # every log record of the process, at every level, whatever its logger: where a leaked key would show
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)r"))
    handler.addFilter(lambda r: not r.name.startswith(("httpx", "httpcore")))  # this test's client, not the server
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    store = await Store(f"chdb://{tmp_path_factory.mktemp('security') / 'ch'}").open()
    bus = InMemoryBus()
    settings = Settings(
        runtime={"symbols": ["BTC", "ETH"]},
        ingest={"live_feed": "off"},
        gateway={
            "admin_token": ADMIN,
            "free_limit_per_minute": PER_MINUTE,
            "key_issue_per_hour": 1000,
            "auth_failures_per_minute": 10_000,  # this module sends wrong keys on purpose, all from one address
            "max_body_bytes": 4096,
        },
    )
    g = GatewayService()
    g.register(Context(settings=settings, bus=bus, store=store, embedded=True))
    assert g.app is not None
    await bus.start()
    await publish_history(bus, plan(settings.runtime.bundle_dir, ["BTC", "ETH"], [Interval.D1]))
    await bus.drain()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=g.app), base_url="http://t") as api:
        spec = (await api.get("/openapi.json")).json()
        yield Gw(store, api, logs, spec)
    await bus.stop()
    await store.close()
    root.removeHandler(handler)
    root.setLevel(old_level)


async def new_key(gw: Gw) -> str:
    r = await gw.api.post("/v1/keys", json={"name": "sec"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, concrete path) of every /v1 operation in the OpenAPI document."""
    fill = {"{symbol}": "BTC", "{key_id}": "k_nothing", "{rule_id}": "rule_nothing", "{index_id}": "mcap-top5"}
    out = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method in ops:
            concrete = path
            for k, v in fill.items():
                concrete = concrete.replace(k, v)
            assert "{" not in concrete, f"no value for a path parameter of {path}"
            out.append((method.upper(), concrete))
    return out


async def call(gw: Gw, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {"name": "x"} if method == "POST" else None
    return await gw.api.request(method, path, json=body, headers=headers)


async def test_every_v1_operation_refuses_a_missing_unknown_or_revoked_key(gw: Gw) -> None:
    ops = operations(gw.spec)
    assert len(ops) >= 20
    issued = await gw.api.post(
        "/v1/admin/keys", json={"name": "to revoke", "tier": "pro"}, headers={"X-Admin-Token": ADMIN}
    )
    assert issued.status_code == 201, issued.text
    revoked = issued.json()["key"]
    ok = await gw.api.get("/v1/usage", headers={"X-API-Key": revoked})
    assert ok.status_code == 200
    gone = await gw.api.delete(f"/v1/admin/keys/{issued.json()['key_id']}", headers={"X-Admin-Token": ADMIN})
    assert gone.status_code == 200, gone.text
    user = await new_key(gw)

    wrong: list[str] = []
    for method, path in ops:
        if (method, path) == ("POST", "/v1/keys"):
            continue  # the one public operation: how a key is obtained
        admin = path.startswith("/v1/admin/")
        cases: list[tuple[str, dict[str, str], set[int]]] = [
            ("no key", {}, {401, 403} if admin else {401}),
            ("unknown key", {"X-API-Key": "tp_" + "0" * 40}, {401, 403} if admin else {401}),
            ("unknown bearer", {"Authorization": "Bearer tp_nothing"}, {401, 403} if admin else {401}),
            ("revoked key", {"X-API-Key": revoked}, {401, 403} if admin else {401}),
        ]
        if admin:
            cases += [
                ("a user's key", {"X-API-Key": user}, {401, 403}),
                ("a wrong admin token", {"X-Admin-Token": ADMIN + "x"}, {401, 403}),
            ]
        for what, headers, allowed in cases:
            r = await call(gw, method, path, headers)
            if r.status_code not in allowed or "error" not in r.json():
                wrong.append(f"{method} {path} with {what}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_keys_are_hashed_at_rest_and_never_logged(gw: Gw) -> None:
    key = await new_key(gw)
    issued = await gw.api.post("/v1/admin/keys", json={"name": "acme", "tier": "pro"}, headers={"X-Admin-Token": ADMIN})
    admin_issued = issued.json()["key"]
    for k in (key, admin_issued):
        assert (await gw.api.get("/v1/tokens", headers={"X-API-Key": k})).status_code == 200
        assert (await gw.api.get("/v1/usage", headers={"Authorization": f"Bearer {k}"})).status_code == 200
        assert (await gw.api.get("/v1/stream", params={"api_key": k, "types": "nope"})).status_code == 422
        assert (await gw.api.get("/v1/tokens", headers={"X-API-Key": k[:-1]})).status_code == 401
        await gw.api.get("/v1/nothing", headers={"X-API-Key": k})
    tables = [r[0] for r in await gw.store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]
    assert {"api_keys", "candles", "alert_rules"} <= set(tables)
    for table in tables:
        for k in (key, admin_issued):
            for needle in (k, k[:-1], k[3:]):  # the key, and the parts a careless log/row would keep
                hits = await gw.store.query(
                    f"SELECT count() FROM `{table}` WHERE position(toString(tuple(*)), {{k:String}}) > 0", {"k": needle}
                )
                assert hits[0][0] == 0, f"a plain key is stored in {table}"
    rows = await gw.store.query("SELECT key_hash FROM api_keys")
    assert rows and all(len(r[0]) == 64 for r in rows)
    logged = gw.logs.getvalue()
    assert logged  # the capture works: the gateway logs (key issuance, 404s, ...)
    for k in (key, admin_issued):
        assert k[:-1] not in logged and k[3:20] not in logged


async def test_limits_are_enforced(gw: Gw) -> None:
    key = await new_key(gw)
    codes = [(await gw.api.get("/v1/usage", headers={"X-API-Key": key})).status_code for _ in range(PER_MINUTE + 3)]
    assert codes[:PER_MINUTE] == [200] * PER_MINUTE and codes[PER_MINUTE:] == [429] * 3
    over = await gw.api.get("/v1/usage", headers={"X-API-Key": key})
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert "minute" in over.json()["error"]["message"]
    other = await new_key(gw)  # limits are per key
    big = await gw.api.post(
        "/v1/alerts",
        content=b'{"name": "' + b"x" * 10_000 + b'"}',
        headers={"X-API-Key": other, "content-type": "application/json"},
    )
    assert big.status_code == 413
    page = await gw.api.get("/v1/candles/BTC", params={"limit": 1001}, headers={"X-API-Key": other})
    assert page.status_code == 422


SSRF_TARGETS = [
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://127.1/hook",
    "https://2130706433/hook",  # 127.0.0.1 as one decimal number
    "https://0x7f000001/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://0.0.0.0/hook",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # carrier-grade NAT
    "https://224.0.0.1/hook",
    "https://user@127.0.0.1:8443/hook",
    "http://example.com/hook",  # not https
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://example.com/x",
    "https:///nohost",
    "https://does-not-resolve.invalid/hook",
]


@pytest.mark.parametrize("target", SSRF_TARGETS)
async def test_ssrf_targets_are_refused(gw: Gw, target: str) -> None:
    key = await new_key(gw)
    for channel in ("webhook", "discord", "slack"):
        body = {
            "symbol": "BTC",
            "condition": {"kind": "price_above", "value": 1e6},
            "channels": [{"type": channel, "target": target}],
        }
        r = await gw.api.post("/v1/alerts", json=body, headers={"X-API-Key": key})
        if channel == "webhook" or target.startswith(("http://", "https://")):
            assert 400 <= r.status_code < 500, f"{channel} {target}: {r.status_code} {r.text}"
            assert r.json()["error"]["message"]
    rules = await gw.api.get("/v1/alerts", headers={"X-API-Key": key})
    assert rules.json()["data"] == []


HOSTILE = [
    "BTC' OR '1'='1",
    "BTC'; DROP TABLE candles; --",
    "BTC\x00",
    "\x00",
    "BTC%00",
    "\uff22\uff34\uff23",  # full-width BTC
    "BTC\u202e",
    "🚀",
    "../../etc/passwd",
    "B" * 10_000,
    "{s:String}",
    "BTC) UNION SELECT key_hash FROM api_keys --",
]
HOSTILE_PARAMS = [
    ("/v1/candles/BTC", {"interval": "1d' OR 1=1 --"}),
    ("/v1/candles/BTC", {"interval": "1d", "start": "2020-01-01'; DROP TABLE candles; --"}),
    ("/v1/candles/BTC", {"interval": "1d", "start": "99999-01-01"}),
    ("/v1/candles/BTC", {"interval": "1d", "end": "-1"}),
    ("/v1/candles/BTC", {"interval": "1d", "limit": str(10**30)}),
    ("/v1/candles/BTC", {"interval": "1d", "limit": "-1"}),
    ("/v1/candles/BTC", {"interval": "1d", "cursor": "' OR 1=1 --"}),
    ("/v1/candles/BTC", {"interval": "1d", "cursor": "\x00\x00"}),
    ("/v1/candles/BTC", {"interval": "1d", "cursor": "é🚀"}),
    ("/v1/tokens", {"cursor": "é🚀"}),
    ("/v1/tokens", {"cursor": "%%%"}),
    ("/v1/tokens", {"limit": "1e308"}),
    ("/v1/indicators/BTC", {"interval": "\x00"}),
    ("/v1/grades/BTC", {"start": "2020-13-45"}),
    ("/v1/signals", {"symbol": "BTC' --"}),
    ("/v1/signals", {"symbol": "BTC", "interval": "1d; DROP TABLE signals"}),
    ("/v1/predictions/BTC", {"horizon": "1d' OR '1'='1"}),
    ("/v1/predictions/BTC", {"limit": "99999999999999999999"}),
    ("/v1/cycles/btc", {"confirm_drawdown": "1e308"}),
    ("/v1/cycles/btc", {"start": "0001-01-01"}),
    ("/v1/cycles/btc", {"previous_length_days": str(2**64)}),
    ("/v1/cycles/btc", {"scenario": "moon' OR 1=1"}),
    ("/v1/alerts/events", {"status": "delivered' OR 1=1 --"}),
    ("/v1/stream", {"symbols": "BTC' --", "types": "price"}),
]


async def counts(store: Store) -> dict[str, int]:
    tables = [r[0] for r in await store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]
    return {t: (await store.query(f"SELECT count() FROM `{t}`"))[0][0] for t in tables}


async def test_hostile_symbols_and_parameters_are_4xx_and_harmless(gw: Gw) -> None:
    key = await new_key(gw)
    issued = await gw.api.post(
        "/v1/admin/keys", json={"name": "hostile", "tier": "enterprise"}, headers={"X-Admin-Token": ADMIN}
    )
    headers = {"X-API-Key": issued.json()["key"]}  # enterprise: the per-minute limit is not what answers
    before = await counts(gw.store)
    assert before["candles"] > 5000 and before["api_keys"] >= 2
    wrong = []
    symbol_paths = [p for _, p in operations(gw.spec) if "/BTC" in p and "{" not in p]
    for path in symbol_paths:
        for bad in HOSTILE:
            r = await gw.api.get(path.replace("/BTC", "/" + quote(bad, safe="")), headers=headers)
            if not 400 <= r.status_code < 500:
                wrong.append(f"{path} symbol {bad[:40]!r}: {r.status_code} {r.text[:120]}")
    for path, params in HOSTILE_PARAMS:
        r = await gw.api.get(path, params=params, headers=headers)
        if not 400 <= r.status_code < 500:
            wrong.append(f"{path} {params}: {r.status_code} {r.text[:120]}")
    for bad in HOSTILE:
        body = {"symbol": bad, "condition": {"kind": "price_above", "value": 1}, "name": bad[:100]}
        r = await gw.api.post("/v1/alerts", json=body, headers=headers)
        if not 400 <= r.status_code < 500:
            wrong.append(f"POST /v1/alerts symbol {bad[:40]!r}: {r.status_code} {r.text[:120]}")
        r = await gw.api.post("/v1/keys", json={"name": bad[:100], "email": bad[:100]})
        if r.status_code >= 500:
            wrong.append(f"POST /v1/keys name {bad[:40]!r}: {r.status_code}")
    assert not wrong, "\n".join(wrong)
    after = await counts(gw.store)
    grown = {t for t in before if after[t] != before[t]}
    assert grown <= {"api_keys"}, {t: (before[t], after[t]) for t in grown}  # only the keys created above
    assert set(after) == set(before)
    btc = await gw.api.get(
        "/v1/candles/BTC",
        params={"interval": "1d", "start": "2017-12-17", "end": "2017-12-18"},
        headers={"X-API-Key": key},
    )
    assert btc.json()["data"][0]["close"] == 19378.99
