"""The venues Tokenpulse speaks, by name: adding one is a module of its own plus one line here.

``build_connectors(settings, sink, on_gap)`` makes one live connector per configured venue
(``TOKENPULSE_FEED_EXCHANGES``) for the tracked tokens (``TOKENPULSE_SYMBOLS``), with the pairs
given by :func:`pairs_for` (each venue's defaults, overridden by ``TOKENPULSE_FEED_PAIRS``); the
REST backfill takes a venue's candle endpoint from :func:`venue`.
"""

from __future__ import annotations

from typing import Any

from tokenpulse_shared.settings import Settings

from tokenpulse_ingest.venues import binance, bybit, ccxt_venue, coinbase, coinbase_advanced, kraken, okx
from tokenpulse_ingest.venues.connector import Connector, GapHook, Pair, TickSink
from tokenpulse_ingest.venues.spec import AnyVenue, feed_pair_overrides

VENUES: dict[str, AnyVenue] = {
    binance.VENUE.name: binance.VENUE,
    coinbase.VENUE.name: coinbase.VENUE,
    kraken.VENUE.name: kraken.VENUE,
    okx.VENUE.name: okx.VENUE,
    bybit.VENUE.name: bybit.VENUE,
    coinbase_advanced.VENUE.name: coinbase_advanced.VENUE,
}


def _no_options(settings: Settings) -> dict[str, Any]:
    return {}


def venue(name: str) -> AnyVenue:
    """A native venue by name, or ``ccxt:<id>``: any exchange ccxt knows."""
    if name.startswith(ccxt_venue.PREFIX):
        return ccxt_venue.venue_for(name)
    found = VENUES.get(name)
    if found is None:
        raise ValueError(f"unknown exchange {name!r}; choose one of {', '.join(VENUES)} or ccxt:<id>")
    return found


def quote_of(name: str, pair: str) -> str:
    """The quote of ``pair`` on venue ``name``; a pair not in the venue's format is a configuration error."""
    quote = venue(name).quote_of(pair)
    if quote is None:
        formats = ", ".join(f"{v.name} {v.default_pair('BTC')}" for v in VENUES.values())
        raise ValueError(f"{name} pair {pair!r} is not in the exchange's format ({formats}): fix TOKENPULSE_FEED_PAIRS")
    return quote


def pairs_for(settings: Settings) -> dict[str, list[Pair]]:
    """Per configured venue, the pairs to subscribe to: defaults, then ``TOKENPULSE_FEED_PAIRS`` overrides."""
    specs = {}
    for name in settings.ingest.feed_exchanges:
        try:
            specs[name] = venue(name)
        except ValueError:
            raise ValueError(
                f"TOKENPULSE_FEED_EXCHANGES names {name!r}; supported exchanges: {', '.join(VENUES)}, ccxt:<id>"
            ) from None
    overrides = feed_pair_overrides(settings)
    unknown = sorted(n for n in overrides if n not in VENUES and not n.startswith(ccxt_venue.PREFIX))
    if unknown:
        raise ValueError(f"TOKENPULSE_FEED_PAIRS names unknown exchange {unknown[0]!r}; use {', '.join(VENUES)}")
    chosen: dict[str, dict[str, str]] = {}
    for name in settings.ingest.feed_exchanges:
        spec = specs[name]
        pairs = {s: spec.default_pair(s) for s in settings.runtime.symbols if s not in spec.not_listed}
        for symbol, pair in overrides.get(name, {}).items():
            if pair == "-":
                pairs.pop(symbol, None)
            else:
                pairs[symbol] = pair
        chosen[name] = pairs
    return {
        name: [Pair(symbol, pair, quote_of(name, pair)) for symbol, pair in sorted(pairs.items())]
        for name, pairs in chosen.items()
        if pairs
    }


def build_connectors(settings: Settings, sink: TickSink, on_gap: GapHook | None = None) -> list[Connector]:
    return [
        venue(name).connector(
            venue(name).ws_url(settings),
            pairs,
            sink,
            on_gap=on_gap,
            stall_s=settings.ingest.feed_stall_s,
            backoff_s=settings.ingest.feed_backoff_s,
            backoff_max_s=settings.ingest.feed_backoff_max_s,
            open_timeout_s=min(10.0, settings.ingest.feed_connect_timeout_s),
            **(venue(name).options or _no_options)(settings),
        )
        for name, pairs in pairs_for(settings).items()
    ]
