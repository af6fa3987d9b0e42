"""Alerts on real components: the gateway's rule API on the real engine, the alerts service on the
in-process bus, deliveries to a real SMTP server (aiosmtpd) and real local HTTP servers standing in for
the Telegram, Discord and Slack APIs and a user's webhook (which verifies the HMAC signature)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_alerts.rules import firing_id
from tokenpulse_alerts.service import AlertsService
from tokenpulse_gateway.service import GatewayService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.channels import webhook_secret
from tokenpulse_shared.events import AlertChannel, PriceEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import PRICES

from testkit.receivers import HttpReceiver, SmtpReceiver, verify_signature
from testkit.wiring import keyed_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISCORD = "https://discord.com/api/webhooks/123456789012/tok-abcdefghijklmnop"
SLACK = "https://hooks.slack.com/services/T0ABCDE/B0ABCDE/abcdefghijklmnop"
TELEGRAM_TOKEN = "123456:TEST-token"


@pytest.fixture(scope="module")
def http() -> Any:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def smtp() -> Any:
    with SmtpReceiver() as receiver:
        yield receiver


def settings_for(
    http: HttpReceiver, smtp: SmtpReceiver, gateway: dict[str, Any] | None = None, **alerts: Any
) -> Settings:
    """The alerts section pointed at the loopback receivers, with ``alerts`` on top."""
    values: dict[str, Any] = {
        "smtp_url": smtp.url,
        "telegram_bot_token": TELEGRAM_TOKEN,
        "telegram_api_url": f"{http.url}/tg",
        "discord_api_url": f"{http.url}/discord",
        "slack_api_url": f"{http.url}/slack",
        "webhook_allowlist": ["127.0.0.1"],
        "delivery_backoff_s": 0.05,
        "alerts_signing_key": "test-signing-key",
    }
    runtime, ingest = {"symbols": ["BTC", "ETH"]}, {"live_feed": "off"}
    return Settings(runtime=runtime, ingest=ingest, alerts=values | alerts, gateway=gateway or {})


def message(text: str = "BTC crossed above 100 (now 101)") -> Message:
    return Message("Tokenpulse alert: BTC", text, {"type": "alert", "alerts": [{"message": text}]}, ["f1"], "owner-1")


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_every_channel_delivers_to_its_real_receiver(http: HttpReceiver, smtp: SmtpReceiver) -> None:
    notifier = Notifier(settings_for(http, smtp))
    try:
        channels = {
            "email": AlertChannel(type="email", target="bob@example.com"),
            "telegram": AlertChannel(type="telegram", target="-1001234567"),
            "discord": AlertChannel(type="discord", target=DISCORD),
            "slack": AlertChannel(type="slack", target=SLACK),
            "webhook": AlertChannel(type="webhook", target=f"{http.url}/hook/a"),
        }
        results = {name: await notifier.deliver(ch, message()) for name, ch in channels.items()}
    finally:
        await notifier.close()
    assert {n: (r["status"], r["attempts"]) for n, r in results.items()} == dict.fromkeys(channels, ("delivered", 1))
    assert results["discord"]["target"] == "https://discord.com/…"  # the log never shows a webhook token
    mail = smtp.messages[-1]
    assert mail[1] == ["bob@example.com"] and b"BTC crossed above 100" in mail[2]
    tg = http.received(f"/tg/bot{TELEGRAM_TOKEN}/sendMessage")[-1].json()
    assert str(tg["chat_id"]) == "-1001234567" and "BTC crossed above 100" in tg["text"]
    assert "BTC crossed above 100" in http.received("/discord/123456789012/tok-abcdefghijklmnop")[-1].body.decode()
    assert "BTC crossed above 100" in http.received("/slack/T0ABCDE/B0ABCDE/abcdefghijklmnop")[-1].body.decode()
    hook = http.received("/hook/a")[-1]
    secret = webhook_secret("test-signing-key", "owner-1")
    assert verify_signature(secret, hook.headers["X-Tokenpulse-Signature"], hook.body)
    assert not verify_signature(secret, hook.headers["X-Tokenpulse-Signature"], hook.body + b" ")
    assert hook.headers["X-Tokenpulse-Delivery"] == "f1" and hook.json()["alerts"][0]["message"].startswith("BTC")


async def test_telegram_retry_after_is_honoured(http: HttpReceiver, smtp: SmtpReceiver) -> None:
    busy = (
        b'{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}'
    )
    http.fail_next("/tg", (429, {"Content-Type": "application/json"}, busy))
    notifier = Notifier(settings_for(http, smtp))
    before = len(http.attempts)
    try:
        result = await notifier.deliver(AlertChannel(type="telegram", target="42424242"), message("flood test"))
    finally:
        await notifier.close()
    tries = [r for r in http.attempts[before:] if r.path.startswith("/tg")]
    assert result["status"] == "delivered" and result["attempts"] == 2 and len(tries) == 2
    assert tries[1].at - tries[0].at >= 0.95  # waited as long as Telegram asked, not the 0.05 s backoff


async def test_a_receiver_failing_twice_is_retried_then_logged_delivered(
    http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    http.fail_next("/hook/flaky", (500, {}, b"down"), (503, {"Retry-After": "0"}, b"busy"))
    notifier = Notifier(settings_for(http, smtp))
    try:
        result = await notifier.deliver(AlertChannel(type="webhook", target=f"{http.url}/hook/flaky"), message())
    finally:
        await notifier.close()
    assert (result["status"], result["attempts"], result["error"]) == ("delivered", 3, None)
    assert len([r for r in http.attempts if r.path == "/hook/flaky"]) == 3


async def test_failures_are_bounded_and_private_targets_refused(http: HttpReceiver, smtp: SmtpReceiver) -> None:
    http.fail_next("/hook/dead", *[(500, {}, b"down")] * 3)
    notifier = Notifier(settings_for(http, smtp, delivery_attempts=3))
    try:
        dead = await notifier.deliver(AlertChannel(type="webhook", target=f"{http.url}/hook/dead"), message())
        private = Notifier(settings_for(http, smtp, webhook_allowlist=[]))
        refused = await private.deliver(AlertChannel(type="webhook", target=f"{http.url}/hook/x"), message())
        await private.close()
    finally:
        await notifier.close()
    assert (dead["status"], dead["attempts"], dead["error"]) == ("failed", 3, "HTTP 500 from the webhook")
    assert refused["status"] == "failed" and refused["attempts"] == 1 and "loopback" in refused["error"]
    assert not [r for r in http.attempts if r.path == "/hook/x"]


# ---- the rule API and the service, wired as in embedded mode -------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(
    tmp_path_factory: pytest.TempPathFactory, http: HttpReceiver, smtp: SmtpReceiver
) -> AsyncIterator[tuple[httpx.AsyncClient, Context, AlertsService]]:
    store = await Store(f"chdb://{tmp_path_factory.mktemp('alerts') / 'ch'}").open()
    ctx = Context(
        settings=settings_for(http, smtp, {"max_rules_per_key": 12}, alerts_summary_after=3),
        bus=InMemoryBus(),
        store=store,
        embedded=True,
    )
    gateway, alerts = GatewayService(), AlertsService()
    gateway.register(ctx)
    alerts.register(ctx)
    await ctx.bus.start()
    await alerts.start(ctx)
    assert gateway.app is not None
    async with keyed_client(gateway.app, "alerts") as client:
        yield client, ctx, alerts
    await alerts.stop()
    await ctx.bus.stop()
    await store.close()


async def publish_prices(ctx: Context, *pairs: tuple[float, float | None]) -> list[PriceEvent]:
    events = [PriceEvent(symbol="BTC", ts=datetime.now(UTC), price=p, prev_price=prev) for p, prev in pairs]
    await ctx.bus.publish(PRICES, events)
    return events


async def test_rule_api_validates_and_scopes_rules_to_their_key(system: Any) -> None:
    api, _, _ = system
    ok = {
        "symbol": "btc",
        "condition": {"kind": "price_above", "value": 1e9},
        "channels": [{"type": "email", "target": "a@example.com"}],
    }
    created = await api.post("/v1/alerts", json=ok)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["symbol"] == "BTC" and rule["id"].startswith("rule_") and "webhook_secret" not in rule
    assert (await api.get(f"/v1/alerts/{rule['id']}")).json() == rule
    assert rule["id"] in [r["id"] for r in (await api.get("/v1/alerts")).json()["data"]]
    cases = [
        ({**ok, "condition": {"kind": "change_above", "value": 5}}, 422, "window"),
        ({**ok, "channels": [{"type": "webhook", "target": "https://10.0.0.1/x"}]}, 422, "private"),
        ({**ok, "channels": [{"type": "sms", "target": "1"}]}, 422, "type"),
        ({**ok, "channels": [{"type": "email", "target": "x@example.com"}] * 11}, 422, "channels"),
        ({**ok, "symbol": "NOPE"}, 404, "not tracked"),
        ({**ok, "symbol": "BTC'; DROP TABLE alert_rules; --"}, 422, "symbol"),
    ]
    for body, status, words in cases:
        r = await api.post("/v1/alerts", json=body)
        assert r.status_code == status and words in r.json()["error"]["message"], (body, r.text)
    assert (await api.post("/v1/alerts", json=ok, headers={"X-API-Key": ""})).status_code == 401
    other = (await api.post("/v1/keys", json={"name": "someone else"})).json()["key"]
    assert (await api.get(f"/v1/alerts/{rule['id']}", headers={"X-API-Key": other})).status_code == 404
    assert (await api.delete(f"/v1/alerts/{rule['id']}", headers={"X-API-Key": other})).status_code == 404
    assert (await api.get("/v1/alerts", headers={"X-API-Key": other})).json()["data"] == []
    deleted = await api.delete(f"/v1/alerts/{rule['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": rule["id"], "deleted": True}
    assert (await api.get(f"/v1/alerts/{rule['id']}")).status_code == 404
    limited = {"X-API-Key": other}
    for _ in range(12):
        assert (await api.post("/v1/alerts", json=ok, headers=limited)).status_code == 201
    over = await api.post("/v1/alerts", json=ok, headers=limited)
    assert over.status_code == 403 and over.json()["error"]["code"] == "rule_limit"


async def test_crossings_notify_every_channel_once_and_are_logged(
    system: Any, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    api, ctx, _ = system
    channels = [
        {"type": "webhook", "target": f"{http.url}/hook/e2e"},
        {"type": "email", "target": "carol@example.com"},
        {"type": "telegram", "target": "777"},
        {"type": "discord", "target": DISCORD},
        {"type": "slack", "target": SLACK},
    ]
    body = {"symbol": "BTC", "condition": {"kind": "price_above", "value": 50_000}, "channels": channels, "name": "50k"}
    created = (await api.post("/v1/alerts", json=body)).json()
    secret = created["webhook_secret"]
    mails_before = len(smtp.messages)
    events = await publish_prices(ctx, (49_000.0, 48_000.0), (50_500.0, 49_000.0))
    await publish_prices(ctx, (50_600.0, 50_500.0))  # still above: no new edge
    await ctx.bus.publish(PRICES, events)  # the same events again, as a redelivery would
    await eventually(lambda: http.received("/hook/e2e"))
    page = await eventually_async(
        lambda: api.get("/v1/alerts/events", params={"rule_id": created["id"]}),
        lambda r: r.json()["data"] and r.json()["data"][0]["status"] == "delivered",
    )
    fired = page.json()["data"]
    assert len(fired) == 1 and fired[0]["price"] == 50_500.0 and "50k" in fired[0]["message"]
    assert sorted(d["channel"] for d in fired[0]["deliveries"]) == sorted(c["type"] for c in channels)
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in fired[0]["deliveries"])
    await asyncio.sleep(0.5)  # nothing more arrives
    hooks = http.received("/hook/e2e")
    assert len(hooks) == 1 and verify_signature(secret, hooks[0].headers["X-Tokenpulse-Signature"], hooks[0].body)
    assert hooks[0].json()["alerts"][0]["firing_id"] == fired[0]["id"]
    assert len(smtp.messages) - mails_before == 1 and b"50k" in smtp.messages[-1][2]
    assert len(http.received("/tg/bot123456:TEST-token/sendMessage")) >= 1


async def eventually_async(call: Callable[[], Any], ok: Callable[[Any], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await call()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_many_rules_firing_at_once_send_one_summary(system: Any, http: HttpReceiver) -> None:
    api, ctx, _ = system
    key = (await api.post("/v1/keys", json={"name": "summary"})).json()["key"]
    target = {"type": "webhook", "target": f"{http.url}/hook/summary"}
    ids = []
    for level in (60_000, 60_100, 60_200, 60_300, 60_400):
        body = {"symbol": "BTC", "condition": {"kind": "price_above", "value": level}, "channels": [target]}
        ids.append((await api.post("/v1/alerts", json=body, headers={"X-API-Key": key})).json()["id"])
    await publish_prices(ctx, (61_000.0, 59_000.0))  # one jump crosses all five levels
    await eventually(lambda: http.received("/hook/summary"))
    page = await eventually_async(
        lambda: api.get("/v1/alerts/events", headers={"X-API-Key": key}),
        lambda r: len(r.json()["data"]) == 5 and all(e["status"] == "delivered" for e in r.json()["data"]),
    )
    await asyncio.sleep(0.3)
    hooks = http.received("/hook/summary")
    assert len(hooks) == 1  # 5 firings > alerts_summary_after=3: one message
    payload = hooks[0].json()
    assert payload["type"] == "summary" and sorted(a["rule_id"] for a in payload["alerts"]) == sorted(ids)
    assert {e["rule_id"] for e in page.json()["data"]} == set(ids)
    assert all(e["deliveries"][0]["summary"] for e in page.json()["data"])


async def test_a_restarted_service_rebuilds_rules_and_log_from_the_store(system: Any, http: HttpReceiver) -> None:
    api, ctx, running = system
    body = {
        "symbol": "BTC",
        "condition": {"kind": "price_below", "value": 40_000},
        "channels": [{"type": "webhook", "target": f"{http.url}/hook/restart"}],
    }
    rule = (await api.post("/v1/alerts", json=body)).json()
    events = await publish_prices(ctx, (39_000.0, 41_000.0))
    await eventually(lambda: http.received("/hook/restart"))
    await eventually_async(
        lambda: api.get("/v1/alerts/events", params={"rule_id": rule["id"]}),
        lambda r: r.json()["data"] and r.json()["data"][0]["status"] == "delivered",
    )
    await ctx.bus.drain()  # the writer has stored the firing's outcome
    fresh = AlertsService()  # what a restarted process holds after start(): state from the store only
    fresh.ctx = ctx
    pending = await fresh.restore(ctx)
    assert pending == []
    assert rule["id"] in fresh.book.rules and len(fresh.book) == len(running.book)
    fid = firing_id(rule["id"], events[0].event_id)
    assert fresh.firings[fid] == "delivered"  # so a replayed trigger is not notified again
    assert abs(fresh.book.last_fired[rule["id"]] - events[0].ts.timestamp()) < 0.001  # the cooldown survives
    assert fresh.book.on_price(events[0]) == []
