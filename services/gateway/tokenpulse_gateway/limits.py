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
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerMonth
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.storage import storage_from_string

from tokenpulse_gateway.tiers import Tier


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


class WindowMemoryStorage(MemoryStorage):
    """`limits`' in-process storage with each moving window kept as a deque of hit times, oldest first.

    The library's memory storage keeps a list, newest first: every hit inserts at its front and a
    clean-up task copies it (in a thread) after every hit, so a request costs time in proportion
    to the requests of the last minute — a third of a hot read at a few thousand per minute. Here
    a hit appends, expired times leave from the left, and fixed-window counters expire when read
    or in a sweep every ``SWEEP_S``: the same answers at a constant cost. Strategies are the
    library's; only the storage differs.
    """

    SWEEP_S = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.windows: dict[str, tuple[int, deque[float]]] = {}
        self._swept = time.time()

    def _current(self, key: str, now: float) -> deque[float] | None:
        found = self.windows.get(key)
        if found is None:
            return None
        expiry, hits = found
        cutoff = now - expiry
        while hits and hits[0] < cutoff:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        """Forget windows with no hit left in them and fixed windows that are over."""
        self._swept = now
        for key, (expiry, hits) in list(self.windows.items()):
            if not hits or hits[-1] < now - expiry:
                del self.windows[key]
        for key, ends in list(self.expirations.items()):
            if ends <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        if now - self._swept > self.SWEEP_S:
            self._sweep(now)
        hits = self._current(key, now)
        if hits is None:
            hits = deque()
            self.windows[key] = (expiry, hits)
        if len(hits) + amount > limit:
            return False
        hits.extend([now] * amount)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        hits = self._current(key, now)
        if hits:
            # like the library: a hit exactly one window old still blocks a new one but no longer counts here
            cutoff, first = now - expiry, 0
            while first < len(hits) and hits[first] <= cutoff:
                first += 1
            if first < len(hits):
                return hits[first], len(hits) - first
        return now, 0

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        # no clean-up task per call (the sweep and reads expire counters); nothing here awaits, so no lock
        now = time.time()
        if self.expirations.get(key, 0) <= now:
            self.storage.pop(key, None)
            self.expirations[key] = now + expiry
        self.storage[key] += amount
        return self.storage[key]

    async def clear(self, key: str) -> None:
        await super().clear(key)
        self.windows.pop(key, None)

    async def reset(self) -> int | None:
        count = max(len(self.windows), await super().reset() or 0)
        self.windows.clear()
        return count


def make_storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return WindowMemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    storage = storage_from_string(uri)
    assert isinstance(storage, Storage)
    return storage


def _secs_until(reset_time: float) -> int:
    return max(0, math.ceil(reset_time - time.time()))


class KeyLimiter:
    def __init__(
        self, redis_url: str | None = None, issue_per_hour: int = 10, auth_failures_per_minute: int = 20
    ) -> None:
        self.storage = make_storage(redis_url)
        self.shared = bool(redis_url)
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
        try:
            if await self.fixed.hit(self.issue_item, "issue", client_ip):
                return 0
            stats = await self.fixed.get_window_stats(self.issue_item, "issue", client_ip)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return max(1, _secs_until(stats.reset_time))

    async def auth_throttled(self, client_ip: str) -> int:
        """Seconds until ``client_ip`` may have a key looked up again (0: now): it sent too many wrong ones."""
        try:
            if await self.moving.test(self.auth_item, "authfail", client_ip):
                return 0
            stats = await self.moving.get_window_stats(self.auth_item, "authfail", client_ip)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return max(1, _secs_until(stats.reset_time))

    async def hit_auth_failure(self, client_ip: str) -> int:
        """Count one unknown or revoked key from ``client_ip``: 0 within its allowance, else the seconds to wait."""
        try:
            if await self.moving.hit(self.auth_item, "authfail", client_ip):
                return 0
            stats = await self.moving.get_window_stats(self.auth_item, "authfail", client_ip)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return max(1, _secs_until(stats.reset_time))
