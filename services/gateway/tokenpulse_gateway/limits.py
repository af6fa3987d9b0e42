"""Request limits with the `limits` library: per key (per minute and per month) and per IP for key issuance.

Storage: process memory when ``TOKENPULSE_REDIS_URL`` is unset (embedded mode, one
replica: exact), Redis otherwise, so every gateway replica draws from the same
counters. The per-minute limit is a moving window (no burst at a window edge); the
monthly quota is a fixed 30-day window that starts with a key's first request (one
counter in Redis instead of a list of a month of timestamps). In memory the storage
is :class:`WindowMemoryStorage`: the same answers as `limits`' memory storage at a
constant cost per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerMonth
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter
from limits.storage import storage_from_string
from pydantic import SecretStr

from tokenpulse_gateway.tiers import Tier
from tokenpulse_gateway.window_storage import WindowMemoryStorage


class LimiterUnavailable(Exception):
    """The shared limit store (Redis) did not answer."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    """the per-minute limit (X-RateLimit-Limit)"""
    remaining: int
    reset_s: int
    """seconds until the per-minute window has room again (X-RateLimit-Reset)"""
    retry_after_s: int = 0
    scope: str = "minute"
    """which limit refused the request: minute or month"""

    def headers(self) -> dict[str, str]:
        h = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after_s)
        return h


@dataclass(frozen=True)
class Window:
    limit: int
    used: int
    remaining: int
    reset_s: int


def make_storage(redis_url: SecretStr | None) -> Storage:
    url = redis_url.get_secret_value() if redis_url is not None else ""  # may carry a password: never logged
    if not url:
        return WindowMemoryStorage()
    uri = url if url.startswith("async+") else f"async+{url}"
    storage = storage_from_string(uri)
    assert isinstance(storage, Storage)
    return storage


def _secs_until(reset_time: float) -> int:
    return max(0, math.ceil(reset_time - time.time()))


class KeyLimiter:
    def __init__(
        self, redis_url: SecretStr | None = None, issue_per_hour: int = 10, auth_failures_per_minute: int = 20
    ) -> None:
        self.storage = make_storage(redis_url)
        self.shared = not isinstance(self.storage, WindowMemoryStorage)
        self.moving = MovingWindowRateLimiter(self.storage)
        self.fixed = FixedWindowRateLimiter(self.storage)
        self.issue_per_hour = issue_per_hour
        self.issue_item = RateLimitItemPerHour(issue_per_hour)
        self.auth_item = RateLimitItemPerMinute(auth_failures_per_minute)

    @staticmethod
    @lru_cache(maxsize=64)
    def items(tier: Tier) -> tuple[RateLimitItem, RateLimitItem]:
        return RateLimitItemPerMinute(tier.per_minute), RateLimitItemPerMonth(tier.per_month)

    async def hit(self, key_id: str, tier: Tier) -> Verdict:
        """Count one request of ``key_id``; refused (``allowed=False``) when either limit is spent."""
        minute, month = self.items(tier)
        try:
            if not await self.moving.hit(minute, "key", key_id):
                stats = await self.moving.get_window_stats(minute, "key", key_id)
                reset = max(1, _secs_until(stats.reset_time))
                return Verdict(False, minute.amount, 0, reset, reset, "minute")
            if not await self.fixed.hit(month, "key", key_id):
                stats = await self.fixed.get_window_stats(month, "key", key_id)
                reset = max(1, _secs_until(stats.reset_time))
                return Verdict(False, minute.amount, 0, reset, reset, "month")
            stats = await self.moving.get_window_stats(minute, "key", key_id)
        except Exception as exc:  # redis down or unreachable
            raise LimiterUnavailable(str(exc)) from exc
        return Verdict(True, minute.amount, stats.remaining, _secs_until(stats.reset_time))

    async def usage(self, key_id: str, tier: Tier) -> dict[str, Window]:
        minute, month = self.items(tier)
        try:
            m = await self.moving.get_window_stats(minute, "key", key_id)
            mo = await self.fixed.get_window_stats(month, "key", key_id)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return {
            "minute": Window(minute.amount, minute.amount - m.remaining, m.remaining, _secs_until(m.reset_time)),
            "month": Window(month.amount, month.amount - mo.remaining, mo.remaining, _secs_until(mo.reset_time)),
        }

    async def hit_issue(self, client_ip: str) -> int:
        """Count one free-key issuance from ``client_ip``: 0 when allowed, else the seconds to wait."""
        allowed = self.fixed.hit(self.issue_item, "issue", client_ip)
        return await self._wait(allowed, self.fixed, self.issue_item, "issue", client_ip)

    async def auth_throttled(self, client_ip: str) -> int:
        """Seconds until ``client_ip`` may have a key looked up again (0: now): it sent too many wrong ones."""
        allowed = self.moving.test(self.auth_item, "authfail", client_ip)
        return await self._wait(allowed, self.moving, self.auth_item, "authfail", client_ip)

    async def hit_auth_failure(self, client_ip: str) -> int:
        """Count one unknown or revoked key from ``client_ip``: 0 within its allowance, else the seconds to wait."""
        allowed = self.moving.hit(self.auth_item, "authfail", client_ip)
        return await self._wait(allowed, self.moving, self.auth_item, "authfail", client_ip)

    @staticmethod
    async def _wait(
        allowed: Awaitable[bool], strategy: RateLimiter, item: RateLimitItem, namespace: str, client_ip: str
    ) -> int:
        """0 when ``allowed`` says so, else the seconds until ``client_ip``'s window of ``item`` has room."""
        try:
            if await allowed:
                return 0
            stats = await strategy.get_window_stats(item, namespace, client_ip)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return max(1, _secs_until(stats.reset_time))
