"""The venues Tokenpulse speaks, by name: adding one is a module of its own plus one line here.

``build_connectors(settings, sink, on_gap)`` makes one live connector per configured venue
(``TOKENPULSE_FEED_EXCHANGES``) for the tracked tokens (``TOKENPULSE_SYMBOLS``), with the pairs
given by :func:`pairs_for` (each venue's defaults, overridden by ``TOKENPULSE_FEED_PAIRS``); the
REST backfill takes a venue's candle endpoint from :func:`venue`.
"""

from __future__ import annotations

from tokenpulse_shared.settings import Settings

from tokenpulse_ingest.venues import binance, coinbase, kraken
from tokenpulse_ingest.venues.connector import Connector, GapHook, Pair, TickSink
from tokenpulse_ingest.venues.spec import AnyVenue, feed_pair_overrides

VENUES: dict[str, AnyVenue] = {
    binance.VENUE.name: binance.VENUE,
    coinbase.VENUE.name: coinbase.VENUE,
    kraken.VENUE.name: kraken.VENUE,
}


def venue(name: str) -> AnyVenue:
    found = VENUES.get(name)
    if found is None:
        raise ValueError(f"unknown exchange {name!r}; choose one of {', '.join(VENUES)}")
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
    for name in settings.ingest.feed_exchanges:
        if name not in VENUES:
            raise ValueError(f"TOKENPULSE_FEED_EXCHANGES names {name!r}; supported exchanges: {', '.join(VENUES)}")
    overrides = feed_pair_overrides(settings)
    unknown = sorted(set(overrides) - set(VENUES))
    if unknown:
        raise ValueError(f"TOKENPULSE_FEED_PAIRS names unknown exchange {unknown[0]!r}; use {', '.join(VENUES)}")
    chosen: dict[str, dict[str, str]] = {}
    for name in settings.ingest.feed_exchanges:
        spec = VENUES[name]
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
        VENUES[name].connector(
            VENUES[name].ws_url(settings),
            pairs,
            sink,
            on_gap=on_gap,
            stall_s=settings.ingest.feed_stall_s,
            backoff_s=settings.ingest.feed_backoff_s,
            backoff_max_s=settings.ingest.feed_backoff_max_s,
            open_timeout_s=min(10.0, settings.ingest.feed_connect_timeout_s),
        )
        for name, pairs in pairs_for(settings).items()
    ]
