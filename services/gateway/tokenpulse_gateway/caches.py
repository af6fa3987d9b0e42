"""What the gateway keeps in memory between requests: each cache says what it keeps and when it drops it.

Hot answers (``/v1/tokens/{symbol}``; ``/v1/tokens`` in ``token_board.py``) are kept serialised per version
of the live state, not made once per request; history pages (candles, indicators) for at most
``TOKENPULSE_HISTORY_CACHE_TTL_S``, dropped at once when the bus brings a new candle (or indicator) of that
token and interval; what is derived from the whole stored history (track record, cycles) until the
store's data version changes (the market analytics: quant, correlation, market state, indices, scenarios,
with their answers).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tokenpulse_shared.events import SYMBOL_PATTERN

from tokenpulse_gateway.analytics.cycles import CycleData
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.answers import Encoded
from tokenpulse_gateway.errors import ApiError

T = TypeVar("T")
SYMBOL_RE = re.compile(SYMBOL_PATTERN)


class PageCache:
    """History pages by query, each for at most ``ttl_s`` and at most ``max_bytes`` of bodies in all
    (least recently used dropped first); :meth:`invalidate` drops a token's pages of one interval."""

    def __init__(self, ttl_s: float, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.size = 0
        self._pages: OrderedDict[tuple[Any, ...], tuple[float, Encoded]] = OrderedDict()
        self._stale_at: dict[tuple[str, str, str], float] = {}
        """when (kind, symbol, interval) last had news: a page read before that is not kept"""

    def get(self, key: tuple[Any, ...]) -> Encoded | None:
        """``key`` is (kind, symbol, interval, ...): the first three say which bus events make it stale."""
        hit = self._pages.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.ttl_s:
            self._drop(key)
            return None
        self._pages.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[Any, ...], enc: Encoded, made_at: float) -> None:
        """Keep ``enc``, computed from what the store held at ``made_at`` (monotonic, taken before the query)."""
        if self.ttl_s <= 0 or len(enc.body) > self.max_bytes // 4 or self._stale_at.get(key[:3], -1.0) >= made_at:
            return
        self._drop(key)
        self._pages[key] = (made_at, enc)
        self.size += len(enc.body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def invalidate(self, kind: str, pairs: set[tuple[str, str]]) -> None:
        """Drop the ``kind`` pages of these (symbol, interval) pairs."""
        now = time.monotonic()
        for symbol, interval in pairs:
            self._stale_at[(kind, symbol, interval)] = now
        for key in [k for k in self._pages if k[0] == kind and (k[1], k[2]) in pairs]:
            self._drop(key)

    def _drop(self, key: tuple[Any, ...]) -> None:
        hit = self._pages.pop(key, None)
        if hit is not None:
            self.size -= len(hit[1].body)


class TokenDetails:
    """The serialised ``/v1/tokens/{symbol}`` answers by symbol, each kept while the live state keeps the
    version it was made from, and for at most ``max_age_s`` (its ROI and levels come from the store)."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._answers: dict[str, tuple[int, float, Encoded]] = {}

    def get(self, symbol: str, version: int) -> Encoded | None:
        hit = self._answers.get(symbol)
        if hit and hit[0] == version and time.monotonic() - hit[1] < self.max_age_s:
            return hit[2]
        return None

    def put(self, symbol: str, version: int, made_at: float, enc: Encoded) -> None:
        self._answers[symbol] = (version, made_at, enc)


class StoredPredictions:
    """Forecasts read from the store by symbol, for a token none came for over the bus since a restart;
    each read again after ``max_age_s``."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._read: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def get(self, symbol: str) -> list[dict[str, Any]] | None:
        got = self._read.get(symbol)
        if got is None or time.monotonic() - got[0] >= self.max_age_s:
            return None
        return got[1]

    def put(self, symbol: str, read_at: float, predictions: list[dict[str, Any]]) -> None:
        self._read[symbol] = (read_at, predictions)


class ByVersion(Generic[T]):
    """One value derived from the stored history, kept while the store's data version (counts and last write
    times read from the store) is the one it was made from."""

    def __init__(self) -> None:
        self._version: Hashable = None
        self._value: T | None = None
        self.loading = asyncio.Lock()
        """one load at a time: requests that find the data changed wait for the first one's load"""

    def get(self, version: Hashable) -> T | None:
        return self._value if version == self._version else None

    def put(self, version: Hashable, value: T) -> None:
        self._version, self._value = version, value

    async def current(self, version_of: Callable[[], Awaitable[Hashable]], load: Callable[[], Awaitable[T]]) -> T:
        """The value for the store's current data version, loaded with ``load`` only when that version changed."""
        async with self.loading:
            version = await version_of()
            value = self.get(version)
            if value is None:
                value = await load()
                self.put(version, value)
            return value


class CycleHistory(ByVersion[CycleData]):
    """The cycle model's daily series (BTC, altcoins, total market cap), kept until a daily candle or a market
    cap is added; with the answer for the default parameters, dropped with them."""

    def __init__(self) -> None:
        super().__init__()
        self.default_answer: dict[str, Any] | None = None

    def put(self, version: Hashable, value: CycleData) -> None:
        super().put(version, value)
        self.default_answer = None


class MarketHistory(ByVersion[MarketData]):
    """The market analytics' daily history (closes, market caps, grades, signals), kept until one of them is
    added; with the answers computed from it (at most ``max_answers``, least recently used dropped first)."""

    def __init__(self, max_answers: int = 256) -> None:
        super().__init__()
        self.max_answers = max_answers
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()

    def put(self, version: Hashable, value: MarketData) -> None:
        super().put(version, value)
        self._answers.clear()

    def answer(self, key: Hashable) -> Any | None:
        hit = self._answers.get(key)
        if hit is not None:
            self._answers.move_to_end(key)
        return hit

    def keep(self, key: Hashable, value: Any) -> None:
        self._answers[key] = value
        while len(self._answers) > self.max_answers:
            self._answers.popitem(last=False)


class KnownSymbols:
    """Resolves a client's symbol: tracked live, configured, or with candles in the store. The store's
    symbols are read again at most every ``refresh_s``, and only when asked for one not known yet."""

    def __init__(
        self,
        configured: list[str],
        is_live: Callable[[str], bool],
        read_stored: Callable[[], Awaitable[set[str]]],
        refresh_s: float = 10.0,
    ) -> None:
        self.configured = set(configured)
        self.is_live = is_live
        self.read_stored = read_stored
        self.refresh_s = refresh_s
        self._symbols = set(configured)
        self._read_at = 0.0

    async def resolve(self, symbol: str) -> str:
        """``symbol`` upper-cased, or a 400 (not a symbol) or a 404 (not tracked)."""
        symbol = symbol.upper()
        if not SYMBOL_RE.fullmatch(symbol):  # match() would take a trailing newline ($)
            raise ApiError(400, "invalid_symbol", "symbols are upper-case base assets such as BTC")
        if self.is_live(symbol) or symbol in self._symbols:  # tracked: no store query on the hot path
            return symbol
        if time.monotonic() - self._read_at > self.refresh_s:
            self._symbols = self.configured | await self.read_stored()
            self._read_at = time.monotonic()
        if symbol not in self._symbols:
            raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked; see GET /v1/tokens")
        return symbol


@dataclass(frozen=True)
class Caches:
    history: PageCache
    details: TokenDetails
    predictions: StoredPredictions
    track_record: ByVersion[dict[str, Any]] = field(default_factory=ByVersion)
    """the track record's answer, until a daily candle, a market cap, a grade or a signal is added"""
    cycles: CycleHistory = field(default_factory=CycleHistory)
    market: MarketHistory = field(default_factory=MarketHistory)
