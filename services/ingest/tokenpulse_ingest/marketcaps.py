"""Market caps from a CoinGecko-style API: per token, the total market, BTC dominance.

Endpoints (CoinGecko API v3): ``GET /coins/markets?vs_currency=usd&ids=...`` (market cap,
24 h volume, ``last_updated`` per coin; up to 250 ids per call), ``GET /global``
(``data.total_market_cap.usd``, ``data.total_volume.usd``, ``data.market_cap_percentage``)
and ``GET /coins/{id}/market_chart?vs_currency=usd&days=N&interval=daily`` (daily history).

* **Cache (TTL).** A fetched token or the global figures are reused for ``cache_ttl_s``;
  a poll asks only for what expired (one ``/coins/markets`` call for the expired ids).
* **Delta.** An event is published only for a figure that changed since the last one
  published (the coin's ``last_updated`` moved or its value differs); the history sync asks
  ``market_chart`` only for the days after the last stored one (``days=N``), nothing when
  the store is up to date.
* **Budget.** Calls per minute (token bucket) and per calendar month (UTC; counted in a
  small JSON file under DATA_DIR so a restart does not reset it). An exhausted month stops
  polling until the next month, said once in the log and in ``/readyz`` status.
* **Stored series.** Events go to ``tokenpulse.marketcaps.v1`` as daily points like the
  bundled history: ``ts`` = 00:00 UTC of the day the snapshot was taken (a later snapshot of
  the same day replaces it in the store), ``symbol`` null for the total market. The scoring
  service reads token caps (Investor Grade), the cycles reads the total; BTC dominance is
  ``100 x cap(BTC) / total`` of the same day, kept in ``dominance``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.events import MarketCapEvent, utcnow, validate_many
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.timeutil import DAY_MS
from tokenpulse_shared.topics import MARKETCAPS

from tokenpulse_ingest.rest.client import RestClient, RestError, Sleep

log = logging.getLogger(__name__)

SOURCE = "coingecko"
COINGECKO_IDS = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "BNB": "binancecoin",
    "XRP": "ripple",
    "ADA": "cardano",
    "DOGE": "dogecoin",
    "SOL": "solana",
    "LTC": "litecoin",
    "USDT": "tether",
    "USDC": "usd-coin",
}


class BudgetExhausted(Exception):
    pass


class MonthlyBudget:
    """Calls per calendar month (UTC), persisted in a JSON file so restarts keep counting."""

    def __init__(self, limit: int, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.path = path
        self.clock = clock
        self.month, self.used = self._month(), 0
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
                if saved.get("month") == self.month:
                    self.used = int(saved.get("calls", 0))
            except (ValueError, OSError) as exc:
                log.warning("market-cap budget file %s unreadable (%s); counting from 0", path, exc)

    def _month(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m")

    def remaining(self) -> int:
        if self._month() != self.month:
            self.month, self.used = self._month(), 0
        return self.limit - self.used

    def spend(self, calls: int) -> None:
        self.remaining()
        self.used += calls
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"month": self.month, "calls": self.used}))


def coingecko_client(settings: Settings, sleep: Sleep | None = None) -> RestClient:
    """A client of the CoinGecko-compatible API, within its calls per minute, with the API key when one is set."""
    key = settings.marketcap.api_key.get_secret_value() if settings.marketcap.api_key else ""
    header = "x-cg-pro-api-key" if "pro-api." in settings.marketcap.url else "x-cg-demo-api-key"
    return RestClient(
        "coingecko",
        settings.marketcap.url,
        capacity=settings.marketcap.calls_per_minute,
        period=60.0,
        max_attempts=3,
        max_wait_s=settings.ingest.rest_max_wait_s,
        headers={header: key} if key else None,
        sleep=sleep,
    )


class _Coin(msgspec.Struct, gc=False):
    id: str
    symbol: str
    market_cap: float | None = None  # null for coins CoinGecko has no supply figure of


RANKING_PAGE = 250  # /coins/markets' largest page
RANKING_PAGES = 4  # the top 1,000 coins: enough for a 1,000-token universe, 4 calls a round


async def market_cap_ranking(settings: Settings, symbols: list[str]) -> dict[str, float]:
    """Market caps by symbol from ``/coins/markets?order=market_cap_desc`` (the largest coins, enough pages for
    ``symbols``): a symbol's configured CoinGecko id decides between coins sharing a ticker, else the largest of
    them. Raises RestError (unreachable, refused) or ValueError (an answer out of shape)."""
    ids = {**COINGECKO_IDS, **settings.marketcap.ids}
    wanted = {ids[s]: s for s in symbols if s in ids}
    pages = min(RANKING_PAGES, max(1, -(-len(symbols) // RANKING_PAGE)))
    caps: dict[str, float] = {}
    client = coingecko_client(settings)
    try:
        for page in range(1, pages + 1):
            query = {"vs_currency": "usd", "order": "market_cap_desc", "per_page": RANKING_PAGE, "page": page}
            body = await client.get("/coins/markets", query)
            try:
                coins = msgspec.convert(body, list[_Coin], strict=False)
            except msgspec.ValidationError as exc:
                raise ValueError(f"coingecko /coins/markets: {exc}") from None
            for coin in coins:
                symbol = wanted.get(coin.id) or coin.symbol.upper()
                cap = coin.market_cap or 0.0
                if math.isfinite(cap) and cap >= 0 and (coin.id in wanted or symbol not in caps):
                    caps[symbol] = cap
    finally:
        await client.aclose()
    return caps


@dataclass
class Figure:
    market_cap: float
    volume: float | None
    updated: str  # the API's last_updated (or the fetch time), for the delta


def _digest(figure: Figure) -> str:
    return hashlib.blake2b(f"{figure.updated}|{figure.market_cap!r}".encode(), digest_size=8).hexdigest()


class MarketCapPoller:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        symbols: list[str] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep | None = None,
        budget_path: Path | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.ids = {**COINGECKO_IDS, **settings.marketcap.ids}
        wanted = symbols if symbols is not None else settings.runtime.symbols
        unknown = [s for s in wanted if s not in self.ids]
        if unknown:
            log.warning("no CoinGecko id for %s: set TOKENPULSE_MARKETCAP_IDS=SYMBOL:id", ", ".join(unknown))
        self.symbols = [s for s in wanted if s in self.ids]
        self.ttl = settings.marketcap.cache_ttl_s
        self.client = coingecko_client(settings, sleep)
        self.budget = MonthlyBudget(settings.marketcap.calls_per_month, budget_path, clock)
        self.cache: dict[str | None, tuple[float, Figure]] = {}  # None: the total market
        self.published: dict[str | None, Figure] = {}
        self.reported_dominance: float | None = None
        self._warned_budget = False

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def calls(self) -> int:
        return self.client.stats.requests

    @property
    def dominance(self) -> float | None:
        """BTC dominance in percent: 100 x BTC market cap / total crypto market cap."""
        btc, total = self.cache.get("BTC"), self.cache.get(None)
        if btc is None or total is None:
            return None
        return 100.0 * btc[1].market_cap / total[1].market_cap

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        if self.budget.remaining() <= 0:
            if not self._warned_budget:
                log.warning(
                    "market-cap call budget of %d for %s used up: polling resumes next month "
                    "(raise TOKENPULSE_MARKETCAP_CALLS_PER_MONTH if your plan allows)",
                    self.budget.limit,
                    self.budget.month,
                )
                self._warned_budget = True
            raise BudgetExhausted(self.budget.month)
        before = self.client.stats.requests
        try:
            return await self.client.get(path, params)
        finally:
            self.budget.spend(self.client.stats.requests - before)

    def _expired(self, key: str | None, now: float) -> bool:
        hit = self.cache.get(key)
        return hit is None or now - hit[0] >= self.ttl

    async def poll_once(self) -> list[MarketCapEvent]:
        """Fetch what the cache lacks, publish what changed; returns the published events."""
        now = self.clock()
        due = [s for s in self.symbols if self._expired(s, now)]
        by_id = {self.ids[s]: s for s in due}
        for start in range(0, len(due), 250):
            chunk = due[start : start + 250]
            rows = await self._get(
                "/coins/markets",
                {"vs_currency": "usd", "ids": ",".join(self.ids[s] for s in chunk), "per_page": 250, "page": 1},
            )
            for row in rows if isinstance(rows, list) else []:
                symbol = by_id.get(row.get("id"))
                cap = row.get("market_cap")
                if symbol is None or not isinstance(cap, int | float) or cap <= 0:
                    continue
                volume = row.get("total_volume")
                figure = Figure(float(cap), float(volume) if volume else None, str(row.get("last_updated") or now))
                self.cache[symbol] = (now, figure)
        if self._expired(None, now):
            body = await self._get("/global")
            data = body.get("data", {}) if isinstance(body, dict) else {}
            total = (data.get("total_market_cap") or {}).get("usd")
            if isinstance(total, int | float) and total > 0:
                volume = (data.get("total_volume") or {}).get("usd")
                updated = str(data.get("updated_at") or now)
                self.cache[None] = (now, Figure(float(total), float(volume) if volume else None, updated))
                self.reported_dominance = (data.get("market_cap_percentage") or {}).get("btc")
        return await self._publish_changes(now)

    async def _publish_changes(self, now: float) -> list[MarketCapEvent]:
        day_ms = int(now * 1000) // DAY_MS * DAY_MS
        produced_at = utcnow()
        rows = []
        changed: list[tuple[str | None, Figure]] = []
        for key, (_, figure) in self.cache.items():
            if self.published.get(key) == figure:
                continue
            changed.append((key, figure))
            rows.append(
                {
                    "symbol": key,
                    "ts": datetime.fromtimestamp(day_ms / 1000, UTC),
                    "market_cap": figure.market_cap,
                    "volume_24h": figure.volume,
                    "source": SOURCE,
                    "produced_at": produced_at,
                    "event_id": f"cap-{key or 'TOTAL'}-{day_ms}-{_digest(figure)}",
                }
            )
        events, rejected = validate_many(MarketCapEvent, rows)
        for index, reason in rejected:
            log.warning("skipping market cap %s: %s", rows[index]["symbol"] or "TOTAL", reason)
        if events:
            await self.bus.publish(MARKETCAPS, events)
        for key, figure in changed:
            self.published[key] = figure
        return events

    async def sync_history(self, last_stored_ms: dict[str, int]) -> int:
        """Delta sync of the daily history: for each token, only the whole days after its last stored
        point (``market_chart?days=N``); none when up to date. Returns the points published."""
        today = int(self.clock() * 1000) // DAY_MS * DAY_MS
        total = 0
        for symbol in self.symbols:
            last = last_stored_ms.get(symbol)
            days = 365 if last is None else (today - last) // DAY_MS  # 365: the demo plan's history depth
            if days <= 1:
                continue  # up to date (today's point comes from the poll)
            body = await self._get(
                f"/coins/{self.ids[symbol]}/market_chart",
                {"vs_currency": "usd", "days": days, "interval": "daily"},
            )
            caps = body.get("market_caps", []) if isinstance(body, dict) else []
            volumes = {int(t) // DAY_MS * DAY_MS: v for t, v in body.get("total_volumes", [])} if caps else {}
            produced_at = utcnow()
            rows = []
            for t, cap in caps:
                day = int(t) // DAY_MS * DAY_MS
                if (last is not None and day <= last) or day >= today or not cap:
                    continue
                rows.append(
                    {
                        "symbol": symbol,
                        "ts": datetime.fromtimestamp(day / 1000, UTC),
                        "market_cap": cap,
                        "volume_24h": volumes.get(day) or None,
                        "source": SOURCE,
                        "produced_at": produced_at,
                        "event_id": f"hist-cap-{symbol}-{day}",
                    }
                )
            events, rejected = validate_many(MarketCapEvent, rows)
            for index, reason in rejected:
                log.warning("skipping %s market cap of %s: %s", symbol, rows[index]["ts"], reason)
            if events:
                await self.bus.publish(MARKETCAPS, events)
            total += len(events)
        return total

    def status(self) -> str:
        dom = self.dominance
        return f"{len(self.cache)} cached, {self.budget.used}/{self.budget.limit} calls in {self.budget.month}" + (
            f", BTC dominance {dom:.1f}%" if dom is not None else ""
        )


async def last_stored_caps(store: Any) -> dict[str, int]:
    """The newest stored market-cap day (epoch ms) per token."""
    rows = await store.query(
        "SELECT symbol, toUnixTimestamp64Milli(max(ts)) FROM market_caps WHERE symbol != '' GROUP BY symbol"
    )
    return {symbol: int(ms) for symbol, ms in rows}


__all__ = [
    "BudgetExhausted",
    "MarketCapPoller",
    "MonthlyBudget",
    "RestError",
    "last_stored_caps",
    "market_cap_ranking",
]
