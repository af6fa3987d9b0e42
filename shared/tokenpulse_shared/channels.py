"""Alert channel targets: what each channel accepts, how the delivery log shows it, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit

from tokenpulse_shared.events import AlertChannel
from tokenpulse_shared.netguard import check_target

DISCORD_RE = re.compile(
    r"^https://(?:discord\.com|discordapp\.com)/api/webhooks/(\d{5,30})/([A-Za-z0-9_\-]{10,200})/?$"
)
SLACK_RE = re.compile(r"^https://hooks\.slack\.com/services/([A-Z0-9]{5,20})/([A-Z0-9]{5,20})/([A-Za-z0-9]{10,64})/?$")
TELEGRAM_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")


def validate_channel(channel: AlertChannel, allowlist: list[str]) -> None:
    """Raise ValueError (with what to do) when a target cannot be right for its channel."""
    t = channel.target.strip()
    if channel.type == "email":
        from email_validator import EmailNotValidError, validate_email

        try:
            validate_email(t, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"email target: {exc}") from exc
    elif channel.type == "telegram":
        if not TELEGRAM_RE.fullmatch(t):
            raise ValueError("telegram target: a chat id (e.g. 123456789 or -100123…) or @channelname")
    elif channel.type == "discord":
        if not DISCORD_RE.fullmatch(t):
            raise ValueError("discord target: the channel's webhook URL, https://discord.com/api/webhooks/ID/TOKEN")
    elif channel.type == "slack":
        if not SLACK_RE.fullmatch(t):
            raise ValueError("slack target: an incoming-webhook URL, https://hooks.slack.com/services/T…/B…/…")
    else:  # the very check (and URL) of every delivery: a target accepted here is one delivery accepts
        check_target(channel.target, allowlist)


def mask(channel: AlertChannel) -> str:
    """What the delivery log shows of a target: enough to recognise it, no tokens."""
    t = channel.target
    if channel.type == "email":
        user, _, domain = t.partition("@")
        return f"{user[:1]}***@{domain}"
    if channel.type == "telegram":
        return t if len(t) <= 4 else f"{t[:2]}***{t[-2:]}"
    parts = urlsplit(t)
    return f"{parts.scheme}://{parts.hostname}/…"


def webhook_secret(signing_key: str, owner: str) -> str:
    """The owner's webhook signing secret (stable; derived, never stored)."""
    return "whsec_" + hmac.new(signing_key.encode(), f"webhook:{owner}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
