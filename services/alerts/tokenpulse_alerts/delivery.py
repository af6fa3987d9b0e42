"""Delivery of firings: apprise for e-mail, Telegram, Discord and Slack; signed JSON for webhooks.

Every channel goes through the same policy: per-target pacing (flood control:
one Telegram message per second per chat, as Telegram asks; a ``retry after``
answer from Telegram, or a 429/503 ``Retry-After`` from a webhook, pauses that
target for as long as asked), retries with exponential backoff, and after
``delivery_attempts`` failures the delivery is recorded as failed — the record
(attempts, last error) goes into the firing log either way.

Webhooks are signed like Stripe's: ``X-Tokenpulse-Signature: t=<unix>,v1=<hex>``
where ``v1 = HMAC-SHA256(secret, "<t>.<body>")``; the secret belongs to the API
key that owns the rule (shown when the rule is created), derived from the
server's ``TOKENPULSE_ALERTS_SIGNING_KEY``. ``X-Tokenpulse-Delivery`` carries
the firing id(s) so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import apprise
import httpcore
import httpx
from tokenpulse_shared.channels import DISCORD_RE, SLACK_RE, mask, sign, webhook_secret
from tokenpulse_shared.events import AlertChannel
from tokenpulse_shared.netguard import TargetRefused, check_target
from tokenpulse_shared.settings import Settings

from tokenpulse_alerts.pinning import PinnedTransport, pinned

log = logging.getLogger(__name__)

PACING_S = {"telegram": 1.0, "discord": 0.5, "slack": 1.0, "email": 0.2, "webhook": 0.0}
WEBHOOK_DEADLINE_S = 15.0  # one delivery attempt, connect to last byte read
WEBHOOK_RESPONSE_BYTES = 64 * 1024  # of a receiver's answer, only the status and headers matter
RETRY_AFTER_RE = re.compile(r"retry after (\d+(?:\.\d+)?)", re.IGNORECASE)


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass
class Message:
    title: str
    body: str
    payload: dict[str, Any]
    firing_ids: list[str]
    owner: str


@dataclass(slots=True)
class _OriginCap:
    """Requests in flight to one webhook origin: the cap, and the deliveries holding or awaiting it."""

    slots: asyncio.Semaphore
    users: int = 0


class Notifier:
    def __init__(
        self,
        settings: Settings,
        network: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.settings = settings
        self.signing_key = settings.require_signing_key()
        # webhooks connect only to the addresses the guard checked (``network`` is the layer under the pin);
        # no proxy from the environment: a proxy would resolve the host again, out of the guard's sight
        self.client = httpx.AsyncClient(
            transport=PinnedTransport(network, verify),
            timeout=httpx.Timeout(10.0),
            follow_redirects=False,
            trust_env=False,
        )
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # requests in flight per webhook origin (TOKENPULSE_WEBHOOK_CONCURRENCY): the rest wait here, cheaply,
        # not in httpcore's pool queue, whose request assignment scans every queued request against every
        # connection (docs/benchmarks.md, alerts); an origin's entry lives while a delivery to it is in
        # flight, so the map stays bounded
        self._origins: dict[str, _OriginCap] = {}
        # point apprise's services at the configured API bases (the public ones by default)
        from apprise.plugins.discord import NotifyDiscord
        from apprise.plugins.slack import NotifySlack
        from apprise.plugins.telegram import NotifyTelegram

        NotifyTelegram.notify_url = settings.alerts.telegram_api_url.rstrip("/") + "/bot"
        NotifyDiscord.notify_url = settings.alerts.discord_api_url.rstrip("/")
        NotifySlack.webhook_url = settings.alerts.slack_api_url.rstrip("/")

    async def close(self) -> None:
        await self.client.aclose()

    async def deliver(self, channel: AlertChannel, msg: Message) -> dict[str, Any]:
        """Deliver with pacing and retries; return the delivery record for the firing log."""
        key = f"{channel.type}:{channel.target}"
        attempts = 0
        error: str | None = None
        status = "failed"
        while attempts < self.settings.alerts.delivery_attempts:
            attempts += 1
            await self._pace(key, PACING_S[channel.type])
            try:
                await self._send(channel, msg)
                status, error = "delivered", None
                break
            except DeliveryFailed as exc:
                error = str(exc)[:500]
                if exc.permanent:
                    break
                delay = self.settings.alerts.delivery_backoff_s * 2 ** (attempts - 1)
                if exc.retry_after is not None:
                    self._next[key] = time.monotonic() + exc.retry_after
                    delay = max(delay, exc.retry_after)
                if attempts < self.settings.alerts.delivery_attempts:
                    log.info("delivery to %s failed (%s); retry %d in %.1fs", channel.type, error, attempts, delay)
                    await asyncio.sleep(delay)
        if status == "failed":
            log.warning("delivery to %s %s failed after %d attempts: %s", channel.type, mask(channel), attempts, error)
        return {
            "channel": channel.type,
            "target": mask(channel),
            "status": status,
            "attempts": attempts,
            "error": error,
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "summary": len(msg.firing_ids) > 1,
        }

    async def _pace(self, key: str, interval: float) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            wait = self._next.get(key, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next[key] = time.monotonic() + interval

    async def _send(self, channel: AlertChannel, msg: Message) -> None:
        if channel.type == "webhook":
            await self._webhook(channel.target, msg)
        else:
            url = self._apprise_url(channel)
            await asyncio.to_thread(self._apprise, url, msg.title, msg.body)

    def _apprise_url(self, channel: AlertChannel) -> str:
        t = channel.target.strip()
        s = self.settings
        if channel.type == "email":
            smtp = s.alerts.smtp_url.get_secret_value() if s.alerts.smtp_url else ""
            if not smtp:
                raise DeliveryFailed("e-mail is not configured on this server (TOKENPULSE_SMTP_URL)", permanent=True)
            return f"{smtp}{'&' if '?' in smtp else '?'}to={quote(t)}"
        if channel.type == "telegram":
            bot = s.alerts.telegram_bot_token.get_secret_value() if s.alerts.telegram_bot_token else ""
            if not bot:
                raise DeliveryFailed("Telegram is not configured (TOKENPULSE_TELEGRAM_BOT_TOKEN)", permanent=True)
            return f"tgram://{bot}/{t}"
        if channel.type == "discord":
            m = DISCORD_RE.fullmatch(t)
            if not m:
                raise DeliveryFailed("not a Discord webhook URL", permanent=True)
            return f"discord://{m.group(1)}/{m.group(2)}"
        m = SLACK_RE.fullmatch(t)
        if not m:
            raise DeliveryFailed("not a Slack webhook URL", permanent=True)
        return f"slack://{m.group(1)}/{m.group(2)}/{m.group(3)}"

    @staticmethod
    def _apprise(url: str, title: str, body: str) -> None:
        notifier = apprise.Apprise()
        if not notifier.add(url):
            raise DeliveryFailed("the notification service refused the target", permanent=True)
        with apprise.LogCapture(level=apprise.logging.WARNING, fmt="%(message)s") as captured:
            ok = notifier.notify(body=body, title=title)
        if not ok:
            text = captured.getvalue()
            found = RETRY_AFTER_RE.search(text)
            reason = text.strip().splitlines()[-1] if text.strip() else "the service did not accept the message"
            raise DeliveryFailed(reason[-300:], retry_after=float(found.group(1)) if found else None)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST under one overall deadline, reading at most ``WEBHOOK_RESPONSE_BYTES`` of the answer: a
        receiver that trickles its answer or sends a huge one costs neither time nor memory."""
        async with asyncio.timeout(WEBHOOK_DEADLINE_S):
            async with self.client.stream("POST", url, content=body, headers=headers) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= WEBHOOK_RESPONSE_BYTES:
                        break
                return response

    async def _webhook(self, url: str, msg: Message) -> None:
        try:  # the policy of rule creation, scheme included, whichever way the rule arrived
            target = await asyncio.to_thread(check_target, url, self.settings.alerts.webhook_allowlist)
        except TargetRefused as exc:
            raise DeliveryFailed(str(exc), permanent=True) from exc
        body = json.dumps(msg.payload, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Tokenpulse-Webhook/1",
            "X-Tokenpulse-Event": "alert.fired",
            "X-Tokenpulse-Delivery": ",".join(msg.firing_ids),
            "X-Tokenpulse-Signature": sign(webhook_secret(self.signing_key, msg.owner), ts, body),
        }
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        cap = self._origins.get(origin)
        if cap is None:
            cap = self._origins[origin] = _OriginCap(asyncio.Semaphore(self.settings.alerts.webhook_concurrency))
        cap.users += 1
        try:
            async with cap.slots:
                with pinned(target.host, target.addresses):
                    response = await self._post(url, body, headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise DeliveryFailed(f"the webhook did not answer within {WEBHOOK_DEADLINE_S:g} s") from exc
        finally:
            cap.users -= 1
            if cap.users == 0:  # nobody holds or awaits it: the next delivery to the origin makes a new one
                del self._origins[origin]
        if response.is_success:
            return
        code = response.status_code
        retry_after = None
        if "retry-after" in response.headers:
            try:
                retry_after = min(float(response.headers["retry-after"]), 3600.0)
            except ValueError:
                retry_after = None
        permanent = 400 <= code < 500 and code not in (408, 409, 425, 429)
        raise DeliveryFailed(f"HTTP {code} from the webhook", retry_after=retry_after, permanent=permanent)
