"""A trading venue described in one place: its :class:`Venue` (stream, history, pair naming, limits).

Each venue module (``binance.py``, ``coinbase.py``, ``kraken.py``) ends with its ``VENUE``; the
registry (``registry.py``) lists them, and the live feed, the REST backfill and the command line
find a venue there by name, never by building attribute names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tokenpulse_shared.events import SYMBOL_PATTERN
from tokenpulse_shared.settings import Settings

from tokenpulse_ingest.rest.client import RestClient, Sleep
from tokenpulse_ingest.venues.connector import Connector
from tokenpulse_ingest.venues.history import CandleApi

_SYMBOL = re.compile(SYMBOL_PATTERN)


@dataclass(frozen=True)
class Venue:
    """Everything Tokenpulse knows about one venue.

    ``pair_format`` names a token's default pair (``{symbol}USDT``); ``pair_pattern`` matches a pair
    in the venue's format with its quote as group 1; ``not_listed`` are tokens the venue does not
    list against USD/USDT (left out unless TOKENPULSE_FEED_PAIRS names a pair). ``rest_client``
    builds the REST client with the venue's base URL and rate limits from the settings. A venue's
    listing endpoint (pair discovery) belongs here too, as one more field, when it is built.
    """

    name: str
    connector: type[Connector]
    candles: type[CandleApi]
    ws_url: Callable[[Settings], str]
    rest_client: Callable[[Settings, Sleep | None], RestClient]
    pair_format: str
    pair_pattern: re.Pattern[str]
    not_listed: frozenset[str] = frozenset()

    def default_pair(self, symbol: str) -> str:
        return self.pair_format.format(symbol=symbol)

    def quote_of(self, pair: str) -> str | None:
        """The quote currency of a pair in this venue's format; None when it is not in that format."""
        m = self.pair_pattern.match(pair)
        return m.group(1) if m else None

    def candle_api(self, settings: Settings, *, sleep: Sleep | None = None) -> CandleApi:
        """The venue's candle endpoint within its limits, naming pairs as the live feed does."""
        overrides = {s: p for s, p in feed_pair_overrides(settings).get(self.name, {}).items() if p != "-"}
        return self.candles(self.rest_client(settings, sleep), lambda s: overrides.get(s) or self.default_pair(s))


def feed_pair_overrides(settings: Settings) -> dict[str, dict[str, str]]:
    """``TOKENPULSE_FEED_PAIRS`` (``exchange:SYMBOL=PAIR``, PAIR ``-`` drops the token) per venue name."""
    out: dict[str, dict[str, str]] = {}
    for item in settings.feed_pairs:
        ex, sep, rest = item.partition(":")
        symbol, eq, pair = rest.partition("=")
        ex, symbol, pair = ex.strip().lower(), symbol.strip().upper(), pair.strip().upper()
        if not sep or not eq or not symbol or not pair:
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r} is not `exchange:SYMBOL=PAIR`")
        if not _SYMBOL.fullmatch(symbol):
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r}: {symbol!r} is not an upper-case symbol")
        out.setdefault(ex, {})[symbol] = pair
    return out
