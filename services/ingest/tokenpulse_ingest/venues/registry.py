"""The venues Tokenpulse speaks, by name: adding one is a module of its own plus one line here.

``build_connectors(settings, sink, on_gap)`` makes one live connector per configured venue
(``TOKENPULSE_FEED_EXCHANGES``) for the tracked tokens (the universe), with the pairs
given by :func:`pairs_for` (the universe's, else each venue's defaults, overridden by ``TOKENPULSE_FEED_PAIRS``); the
REST backfill takes a venue's candle endpoint from :func:`venue`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tokenpulse_shared.settings import Settings
from tokenpulse_shared.universe import Token, configured

from tokenpulse_ingest.rest.client import RestClient
from tokenpulse_ingest.venues import binance, bybit, ccxt_venue, coinbase, coinbase_advanced, kraken, okx
from tokenpulse_ingest.venues.connector import Connector, GapHook, Pair, TickSink
from tokenpulse_ingest.venues.spec import AnyVenue, ListingError, Listings, Volumes, feed_pair_overrides

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def universe_pairs(spec: AnyVenue, tokens: Sequence[Token]) -> dict[str, str]:
    """A venue's pair of each token: the universe's where it names one (none where it says "not listed"),
    the venue's default naming where it says nothing about the venue."""
    pairs: dict[str, str] = {}
    for token in tokens:
        if spec.name in token.pairs:
            listed = token.pairs[spec.name]
            if listed is not None:
                pairs[token.symbol] = spec.pairs.canonical(listed)
        elif token.symbol not in spec.not_listed:
            pairs[token.symbol] = spec.default_pair(token.symbol)
    return pairs


def pairs_for(
    settings: Settings, tokens: Sequence[Token] | None = None, owns: Callable[[str], bool] | None = None
) -> dict[str, list[Pair]]:
    """Per configured venue, the pairs to subscribe to for ``tokens`` (default: the configured universe):
    the universe's pairs or the venue's defaults, then ``TOKENPULSE_FEED_PAIRS`` overrides; with ``owns``, only
    the pairs of the symbols it owns (an ingest replica's share of the feeds)."""
    tokens = configured(settings) if tokens is None else tokens
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
        pairs = universe_pairs(spec, tokens)
        for symbol, pair in overrides.get(name, {}).items():
            if pair == "-":
                pairs.pop(symbol, None)
            else:
                pairs[symbol] = pair
        chosen[name] = {symbol: pair for symbol, pair in pairs.items() if owns is None or owns(symbol)}
    return {
        name: [Pair(symbol, pair, quote_of(name, pair)) for symbol, pair in sorted(pairs.items())]
        for name, pairs in chosen.items()
        if pairs
    }


def build_connectors(
    settings: Settings,
    sink: TickSink,
    on_gap: GapHook | None = None,
    tokens: Sequence[Token] | None = None,
    owns: Callable[[str], bool] | None = None,
) -> list[Connector]:
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
        for name, pairs in pairs_for(settings, tokens, owns).items()
    ]


def _listing_venues(settings: Settings) -> list[AnyVenue]:
    """The feed exchanges with a listing endpoint (every native venue, and ccxt's through load_markets)."""
    specs = []
    for name in settings.ingest.feed_exchanges:
        try:
            spec = venue(name)
        except ValueError:
            continue  # an unknown name is reported where the feeds are built
        if spec.listings is not None:
            specs.append(spec)
    return specs


async def _ask(spec: AnyVenue, settings: Settings, fetch: Callable[[RestClient], Awaitable[T]], timeout_s: float) -> T:
    client = spec.rest(settings)
    try:
        return await asyncio.wait_for(fetch(client), timeout_s)
    finally:
        await client.aclose()


async def fetch_listings(settings: Settings, timeout_s: float = 15.0) -> dict[str, Listings]:
    """What each feed exchange lists now (its listing endpoint), for those that answer within ``timeout_s``
    in their documented shape; any other answer is left out whole, so that venue keeps its previous pairs."""

    async def one(spec: AnyVenue) -> Listings | None:
        assert spec.listings is not None
        try:
            listed = await _ask(spec, settings, spec.listings, timeout_s)
        except ListingError as exc:
            log.warning("universe: %s listing refused, none of it applied (%s); keeping its pairs", spec.name, exc)
            return None
        except Exception as exc:  # unreachable, refused, timed out: the universe keeps the file's pairs there
            log.warning("universe: %s listings not read (%s); keeping the configured pairs there", spec.name, exc)
            return None
        if not listed:  # an empty answer would delist every pair there: not believed
            log.warning("universe: %s lists no dollar pair; answer ignored, keeping its pairs", spec.name)
            return None
        return listed

    specs = _listing_venues(settings)
    found = await asyncio.gather(*(one(spec) for spec in specs))
    return {spec.name: listed for spec, listed in zip(specs, found, strict=True) if listed}


async def fetch_volumes(
    settings: Settings, listings: dict[str, Listings], timeout_s: float = 15.0
) -> dict[str, float] | None:
    """Each token's 24-hour volume in dollars, summed over its listed dollar pairs on every venue with a ticker
    endpoint that answers (its ``volumes``); None when none of them answers."""

    async def one(spec: AnyVenue) -> Volumes | None:
        assert spec.volumes is not None
        try:
            return await _ask(spec, settings, spec.volumes, timeout_s)
        except Exception as exc:  # unreachable or out of shape: that venue's volume is left out of the sums
            log.warning("universe: %s 24h volumes not read (%s); left out of the ranking", spec.name, exc)
            return None

    specs = [venue(name) for name in listings if venue(name).volumes is not None]
    answers = await asyncio.gather(*(one(spec) for spec in specs))
    if all(a is None for a in answers):
        return None
    totals: dict[str, float] = {}
    for spec, volumes in zip(specs, answers, strict=True):
        for symbol, pairs in listings[spec.name].items():
            if volumes is not None:
                totals[symbol] = totals.get(symbol, 0.0) + sum(volumes.get(pair, 0.0) for pair in pairs)
    return totals


def with_listings(tokens: Sequence[Token], listings: dict[str, Listings]) -> list[Token]:
    """The universe's pairs checked against what the venues list now: a configured pair still listed stays; one
    no longer listed (delisted, or its quote renamed) gives way to the venue's preferred pair of the token, or
    to "not listed there"; a token the file says nothing or "not listed" about gets the listed pair."""
    out = []
    for token in tokens:
        pairs = dict(token.pairs)
        for name, listed in listings.items():
            spec = venue(name)
            current = pairs.get(name)
            offered = listed.get(token.symbol, [])
            if current is not None and spec.pairs.canonical(current) in offered:
                continue
            pairs[name] = offered[0] if offered else None
        out.append(Token(token.symbol, token.name, token.rank, pairs))
    return out
