"""Webhook deliveries go where the guard looked, under the creation policy, however the rule arrived.

Real local receivers (plain HTTP, and HTTPS with a trustme certificate) stand in for users' webhooks;
the system resolver is replaced by one whose answers the test chooses, so a host name can change its
address between the guard's check and the connection (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import pytest
import trustme
from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_alerts.service import AlertsService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import AlertChannel, AlertCondition, AlertFiredEvent, AlertRuleEvent, PriceEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import ALERT_RULES, ALERTS, PRICES

from testkit.receivers import HttpReceiver, LoopbackServer

pytestmark = pytest.mark.asyncio

REAL_GETADDRINFO = socket.getaddrinfo
PUBLIC = "93.184.215.14"  # a public address (the guard lets it through); never reached: see Nat below


class Resolver:
    """``socket.getaddrinfo`` with scripted answers: per name, a list of answers used in turn (the last
    one repeats); other names resolve as usual. ``asked`` counts the questions per name."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: dict[str, int] = {}

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        turn = self.asked.get(name, 0)
        self.asked[name] = turn + 1
        addresses = self.answers[name][min(turn, len(self.answers[name]) - 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0))) for a in addresses]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[list[str]]]], Resolver]:
    def install(answers: dict[str, list[list[str]]]) -> Resolver:
        r = Resolver(answers)
        monkeypatch.setattr(socket, "getaddrinfo", r)
        return r

    return install


def message() -> Message:
    return Message("Tokenpulse alert: BTC", "BTC crossed", {"type": "alert", "alerts": []}, ["f1"], "owner-1")


def settings(**alerts: Any) -> Settings:
    return Settings(alerts={"alerts_signing_key": "pin-test-key", "delivery_backoff_s": 0.05, **alerts})


async def test_a_host_rebinding_after_the_check_is_still_reached_at_the_checked_address(
    resolver: Callable[..., Resolver],
) -> None:
    checked = HttpReceiver()
    # the same port on 127.0.0.2 plays an internal service the attacker wants to reach
    with checked, HttpReceiver(host="127.0.0.2", port=checked.port) as internal:
        dns = resolver({"hooks.rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
        notifier = Notifier(settings(webhook_allowlist=["127.0.0.1/32"], delivery_attempts=1))
        try:
            url = f"http://hooks.rebind.test:{checked.port}/hook"
            result = await notifier.deliver(AlertChannel(type="webhook", target=url), message())
        finally:
            await notifier.close()
    assert dns.asked["hooks.rebind.test"] == 1  # resolved once, by the guard
    assert result["status"] == "delivered", result
    assert [r.headers["Host"] for r in checked.attempts] == [f"hooks.rebind.test:{checked.port}"]
    assert internal.attempts == []


class TlsReceiver(LoopbackServer):
    """An HTTPS server on 127.0.0.1 with a certificate for ``names`` only."""

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.paths: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append((self.headers["Host"], self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


async def test_tls_is_verified_on_the_host_name_and_never_shared_between_names(
    resolver: Callable[..., Resolver],
) -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with TlsReceiver(ca, "hooks.tls.test") as tls:
        resolver({"hooks.tls.test": [["127.0.0.1"]], "other.tls.test": [["127.0.0.1"]]})
        notifier = Notifier(settings(webhook_allowlist=["127.0.0.1/32"], delivery_attempts=1), verify=client_context)
        try:
            good = await notifier.deliver(
                AlertChannel(type="webhook", target=f"https://hooks.tls.test:{tls.port}/a"), message()
            )
            # same address, a name the certificate does not cover: a pooled connection of hooks.tls.test must
            # not carry it, and a new one must fail its certificate check
            other = await notifier.deliver(
                AlertChannel(type="webhook", target=f"https://other.tls.test:{tls.port}/b"), message()
            )
        finally:
            await notifier.close()
    assert good["status"] == "delivered", good
    assert other["status"] == "failed" and "CERTIFICATE" in other["error"].upper(), other
    assert tls.paths == [(f"hooks.tls.test:{tls.port}", "/a")]


class Nat(httpcore.AsyncNetworkBackend):
    """The network under the pin, standing in for the internet: a connection to PUBLIC reaches the local
    receiver, so a delivery that should have been refused would arrive there."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connected: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        return await self.inner.connect_tcp("127.0.0.1" if host == PUBLIC else host, port, *args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_a_plain_http_webhook_arriving_on_the_rules_topic_is_refused_at_delivery(
    resolver: Callable[..., Resolver],
) -> None:
    fired: list[AlertFiredEvent] = []
    with HttpReceiver() as receiver:
        resolver({"hooks.plain.test": [[PUBLIC]]})
        ctx = Context(
            settings=Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}, alerts=settings().alerts),
            bus=InMemoryBus(),
            store=None,
            embedded=True,
        )
        alerts = AlertsService()
        alerts.register(ctx)

        async def collect(events: list[AlertFiredEvent]) -> None:
            fired.extend(e for e in events if e.status != "pending")

        ctx.bus.subscribe(ALERTS, "test-collector", collect)
        await ctx.bus.start()
        await alerts.start(ctx)
        assert alerts.notifier is not None
        await alerts.notifier.close()
        nat = Nat()
        alerts.notifier = Notifier(ctx.settings, network=nat)
        try:
            # not through the API (which refuses it): straight onto the topic, as any producer with access could
            rule = AlertRuleEvent(
                rule_id="rule_plainhttp",
                owner="owner-1",
                symbol="BTC",
                condition=AlertCondition(kind="price_above", value=100.0),
                channels=[AlertChannel(type="webhook", target=f"http://hooks.plain.test:{receiver.port}/hook")],
            )
            await ctx.bus.publish(ALERT_RULES, [rule])
            await asyncio.sleep(0.2)
            await ctx.bus.publish(
                PRICES, [PriceEvent(symbol="BTC", ts=datetime.now(UTC), price=101.0, prev_price=99.0)]
            )
            for _ in range(200):
                if fired:
                    break
                await asyncio.sleep(0.05)
        finally:
            await alerts.stop()
            await ctx.bus.stop()
    assert len(fired) == 1, fired
    (delivery,) = fired[0].deliveries
    assert delivery["status"] == "failed" and delivery["attempts"] == 1, delivery
    assert "https" in delivery["error"], delivery
    assert receiver.attempts == [] and nat.connected == []
