"""A polite async REST client: client-side token bucket, server weight accounting, retries.

* **Token bucket** (aiolimiter's leaky bucket): ``capacity`` units per ``period`` seconds; a
  request takes ``weight`` units (1 where the exchange does not publish weights).
* **Server weight** (Binance): the ``X-MBX-USED-WEIGHT-1M`` answer header is the weight the
  IP used in the current minute; when the next request would cross ``weight_limit`` the
  client waits for the next minute instead of being answered 429.
* **429 / 418**: waits ``Retry-After`` (seconds or an HTTP date) before retrying, or an
  exponential backoff when the header is missing; a wait above ``max_wait_s`` (a long ban)
  gives up with :class:`RestError`, saying how long the ban is.
* **5xx, timeouts, connection errors**: exponential backoff with full jitter, at most
  ``max_attempts`` tries. Other 4xx: no retry, a :class:`RestError` with the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RestError(Exception):
    """A REST call failed for good (after retries, or on a client error)."""


class RateLimited(Exception):
    """Raised by a response check: the answer is a rate-limit refusal in disguise (Kraken)."""


@dataclass
class CallStats:
    requests: int = 0
    weight: int = 0
    retries: int = 0
    retry_after_waits: list[float] = field(default_factory=list)  # seconds asked by the server, in order
    backoff_waits: list[float] = field(default_factory=list)
    weight_waits: list[float] = field(default_factory=list)
    max_used_weight: int = 0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class RestClient:
    """GETs to ``base_url`` within the limits above (the module docstring says what each setting does)."""

    name: str
    base_url: str
    _: KW_ONLY
    capacity: float
    period: float = 1.0
    weight_header: str | None = None
    weight_limit: int | None = None
    max_attempts: int = 6
    max_wait_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    timeout_s: float = 15.0
    headers: dict[str, str] | None = None
    sleep: Sleep | None = None
    check: Callable[[Any], None] | None = None
    stats: CallStats = field(default_factory=CallStats, init=False)

    def __post_init__(self) -> None:
        self.limiter = AsyncLimiter(self.capacity, self.period)
        self._sleep: Sleep = self.sleep or asyncio.sleep
        self._used = 0  # server-reported weight of the current minute
        self._used_minute = -1
        self._rng = random.Random()
        self.http = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            timeout=self.timeout_s,
            headers={"User-Agent": "tokenpulse-ingest", **(self.headers or {})},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))

    async def _respect_server_weight(self, weight: int) -> None:
        if self.weight_limit is None:
            return
        now = time.time()
        minute = int(now // 60)
        if minute != self._used_minute:
            self._used, self._used_minute = 0, minute
        if self._used + weight > self.weight_limit:
            wait = (minute + 1) * 60 - now + 0.05
            log.info(
                "%s: %d of %d weight used this minute; waiting %.1fs", self.name, self._used, self.weight_limit, wait
            )
            self.stats.weight_waits.append(wait)
            await self._sleep(wait)
            self._used, self._used_minute = 0, minute + 1

    def _note_weight(self, response: httpx.Response) -> None:
        if not self.weight_header:
            return
        raw = response.headers.get(self.weight_header)
        if raw and raw.isdigit():
            self._used, self._used_minute = int(raw), int(time.time() // 60)
            self.stats.max_used_weight = max(self.stats.max_used_weight, self._used)

    async def get(self, path: str, params: dict[str, Any] | None = None, *, weight: int = 1) -> Any:
        """GET ``path`` and return the decoded JSON, within the limits, retrying what can be retried."""
        if weight > self.capacity:
            raise RestError(f"{self.name}: a request of weight {weight} exceeds the bucket of {self.capacity}")
        last = ""
        for attempt in range(self.max_attempts):
            await self.limiter.acquire(weight)
            await self._respect_server_weight(weight)
            self.stats.requests += 1
            self.stats.weight += weight
            try:
                response = await self.http.get(path, params=params)
            except httpx.TransportError as exc:  # timeouts, refused/reset connections
                last = f"{type(exc).__name__}: {exc}"
                await self._retry_backoff(attempt, last)
                continue
            self._note_weight(response)
            code = response.status_code
            if code in (429, 418):
                asked = parse_retry_after(response.headers.get("Retry-After"))
                wait = asked if asked is not None else self._backoff(attempt)
                if wait > self.max_wait_s:
                    raise RestError(
                        f"{self.name} answered {code} ({'IP banned' if code == 418 else 'rate limited'}) for "
                        f"{wait:.0f}s, longer than TOKENPULSE_REST_MAX_WAIT_S={self.max_wait_s:g}: backfill later"
                    )
                log.warning(
                    "%s answered %d on %s; retrying in %.2fs (Retry-After %s)", self.name, code, path, wait, asked
                )
                if asked is not None:
                    self.stats.retry_after_waits.append(asked)
                self.stats.retries += 1
                await self._sleep(wait)
                continue
            if code >= 500:
                last = f"HTTP {code}"
                await self._retry_backoff(attempt, last)
                continue
            if code >= 400:
                raise RestError(f"{self.name} {path} answered {code}: {response.text[:300]}")
            try:
                body = response.json()
            except ValueError as exc:
                last = f"invalid JSON: {exc}"
                await self._retry_backoff(attempt, last)
                continue
            if self.check is not None:
                try:
                    self.check(body)
                except RateLimited as exc:
                    last = str(exc)
                    await self._retry_backoff(attempt + 2, last)  # a longer pause than a plain error
                    continue
            return body
        raise RestError(f"{self.name} {path}: gave up after {self.max_attempts} attempts ({last})")

    async def _retry_backoff(self, attempt: int, why: str) -> None:
        wait = self._backoff(attempt)
        log.warning("%s: %s; retrying in %.2fs", self.name, why, wait)
        self.stats.retries += 1
        self.stats.backoff_waits.append(wait)
        await self._sleep(wait)


def per_second_client(
    name: str,
    base_url: str,
    rate: float,
    *,
    max_wait_s: float,
    sleep: Sleep | None = None,
    check: Callable[[Any], None] | None = None,
) -> RestClient:
    """A client allowed ``rate`` requests per second, as venues without request weights publish their limits."""
    capacity = max(1.0, rate)  # a bucket of at least one request, refilled at ``rate``
    return RestClient(
        name, base_url, capacity=capacity, period=capacity / rate, max_wait_s=max_wait_s, sleep=sleep, check=check
    )
