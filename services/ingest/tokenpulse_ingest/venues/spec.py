"""A trading venue described in one place: its :class:`Venue` (stream, history, pair naming, limits).

Each venue module (``binance.py``, ``coinbase.py``, ``kraken.py``) ends with its ``VENUE``; the
registry (``registry.py``) lists them, and the live feed, the REST backfill and the command line
find a venue there by name, never by building attribute names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from tokenpulse_shared.events import SYMBOL_PATTERN
from tokenpulse_shared.settings import Settings, VenueSettings

from tokenpulse_ingest.rest.client import RestClient, Sleep, per_second_client
from tokenpulse_ingest.venues.connector import Connector
from tokenpulse_ingest.venues.history import CandleApi

_SYMBOL = re.compile(SYMBOL_PATTERN)
S = TypeVar("S", bound=VenueSettings)
RestClientFactory = Callable[[S, float, "Sleep | None"], RestClient]  # (section, longest Retry-After, sleep)
Listings = dict[str, list[str]]
"""a venue's pairs trading now against a dollar quote, by our symbol of the base asset, the preferred quote first"""
ListingsFetch = Callable[[RestClient], Awaitable[Listings]]
Volumes = dict[str, float]
"""a venue's 24-hour traded volume in its quote currency (dollars for a dollar quote), by pair"""
VolumesFetch = Callable[[RestClient], Awaitable[Volumes]]
MAX_LISTED = 100_000
"""rows a listing or ticker answer may hold (the largest venue lists a few thousand): more is refused whole"""
T = TypeVar("T")


class ListingError(ValueError):
    """A listing or ticker answer not in the venue's documented shape: refused whole, never half-applied."""


def strict(body: Any, shape: type[T], where: str) -> T:
    """``body`` (decoded JSON) as ``shape`` (msgspec Structs; numbers may come quoted, as the venues send
    them), or ListingError naming the first field out of shape."""
    try:
        return msgspec.convert(body, shape, strict=False)
    except msgspec.ValidationError as exc:
        raise ListingError(f"{where}: {exc}") from None


def strict_rows(body: Any, row: type[T], where: str) -> list[T]:
    """``body`` as a list of at most :data:`MAX_LISTED` ``row``, as :func:`strict` does."""
    try:
        return msgspec.convert(body, Annotated[list[row], msgspec.Meta(max_length=MAX_LISTED)], strict=False)  # type: ignore[valid-type]
    except msgspec.ValidationError as exc:
        raise ListingError(f"{where}: {exc}") from None


def volume(value: float, where: str) -> float:
    """A 24-hour volume: finite and not negative, else the answer is out of shape."""
    if not math.isfinite(value) or value < 0:
        raise ListingError(f"{where}: volume {value!r} is not a finite non-negative number")
    return value


def by_base(pairs: Iterable[tuple[str, str, str]], quotes: tuple[str, ...]) -> Listings:
    """(base, quote, pair) rows as :data:`Listings`: only the ``quotes``, in their order of preference."""
    found: dict[str, list[tuple[int, str]]] = {}
    for base, quote, pair in pairs:
        if quote in quotes:
            found.setdefault(base, []).append((quotes.index(quote), pair))
    return {base: [pair for _, pair in sorted(ranked)] for base, ranked in found.items()}


@dataclass(frozen=True)
class PairNaming:
    """How a venue names a token's pair: ``format`` gives the default (``{symbol}USDT``), ``pattern``
    matches any pair of the venue with its quote as group 1; ``not_listed`` are tokens it does not list
    against USD/USDT (left out unless TOKENPULSE_FEED_PAIRS names a pair)."""

    format: str
    pattern: str
    not_listed: frozenset[str] = frozenset()
    aliases: tuple[tuple[str, str], ...] = ()
    """(other name, our name) of assets a venue also spells differently (Kraken's v1 ``XBT`` for BTC):
    a universe file may use either, the feed uses ours"""
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def default(self, symbol: str) -> str:
        return self.format.format(symbol=symbol)

    def canonical(self, pair: str) -> str:
        """``pair`` in the venue's own current spelling (a universe file may hold an older one)."""
        for other, ours in self.aliases:
            pair = re.sub(rf"(?<![A-Z0-9]){other}(?![A-Z0-9])", ours, pair)
        return pair

    def quote(self, pair: str) -> str | None:
        m = self._compiled.match(pair)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Venue(Generic[S]):
    """Everything Tokenpulse knows about one venue: its live connector, its candle endpoint, its settings
    section (WebSocket and REST URLs, limits), how it builds its REST client, how it names pairs. A
    venue's listing endpoint (``listings``: which pairs trade there now) is how the universe discovers pairs."""

    name: str
    connector: type[Connector]
    candles: type[CandleApi]
    section: Callable[[Settings], S]
    pairs: PairNaming
    rest_client: RestClientFactory[S] | None = None
    """how the venue's REST client is built; None: limited in requests per second (the section's
    ``requests_per_s``, as most venues publish their limits), each answer read by ``rest_check``"""
    rest_check: Callable[[Any], None] | None = None
    """raises for the errors a venue answers with HTTP 200 (a rate limit, a refused request)"""
    # the connector's own keyword arguments from the settings (ccxt: poll period, watch or poll)
    options: Callable[[Settings], dict[str, Any]] | None = None
    listings: ListingsFetch | None = None
    volumes: VolumesFetch | None = None
    """the venue's 24-hour volumes per pair (its ticker endpoint), for TOKENPULSE_UNIVERSE_RANK_BY=quote_volume"""

    @property
    def not_listed(self) -> frozenset[str]:
        return self.pairs.not_listed

    def default_pair(self, symbol: str) -> str:
        return self.pairs.default(symbol)

    def quote_of(self, pair: str) -> str | None:
        """The quote currency of a pair in this venue's format; None when it is not in that format."""
        return self.pairs.quote(pair)

    def ws_url(self, settings: Settings) -> str:
        return self.section(settings).ws_url

    def rest(self, settings: Settings, sleep: Sleep | None = None) -> RestClient:
        """The venue's REST client, within the limits of its settings section."""
        section, max_wait_s = self.section(settings), settings.ingest.rest_max_wait_s
        if self.rest_client is not None:
            return self.rest_client(section, max_wait_s, sleep)
        rate: float = section.requests_per_s  # type: ignore[attr-defined]  # every per-second section has it
        check = self.rest_check
        return per_second_client(self.name, section.rest_url, rate, max_wait_s=max_wait_s, sleep=sleep, check=check)

    def candle_api(self, settings: Settings, *, sleep: Sleep | None = None) -> CandleApi:
        """The venue's candle endpoint within its limits, naming pairs as the live feed does."""
        overrides = {s: p for s, p in feed_pair_overrides(settings).get(self.name, {}).items() if p != "-"}
        client = self.rest(settings, sleep)
        return self.candles(client, lambda s: overrides.get(s) or self.default_pair(s))


AnyVenue = Venue[Any]


def feed_pair_overrides(settings: Settings) -> dict[str, dict[str, str]]:
    """``TOKENPULSE_FEED_PAIRS`` (``exchange:SYMBOL=PAIR``, PAIR ``-`` drops the token) per venue name.

    The venue name may hold a colon (``ccxt:gate:BTC=BTC/USDC``): the symbol is what follows the last one."""
    out: dict[str, dict[str, str]] = {}
    for item in settings.ingest.feed_pairs:
        head, eq, pair = item.partition("=")
        ex, sep, symbol = head.rpartition(":")  # the venue may hold a colon itself (ccxt:gate)
        ex, symbol, pair = ex.strip().lower(), symbol.strip().upper(), pair.strip().upper()
        if not sep or not eq or not symbol or not pair:
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r} is not `exchange:SYMBOL=PAIR`")
        if not _SYMBOL.fullmatch(symbol):
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r}: {symbol!r} is not an upper-case symbol")
        out.setdefault(ex, {})[symbol] = pair
    return out
