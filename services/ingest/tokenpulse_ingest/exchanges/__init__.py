"""Live exchange connectors (thin clients on ``websockets``): Binance spot, Coinbase Exchange, Kraken.

``build_connectors(settings, sink, on_gap)`` makes one connector per configured exchange
(``TOKENPULSE_FEED_EXCHANGES``) for the tracked tokens (``TOKENPULSE_SYMBOLS``), with the pairs
given by :func:`pairs_for` (defaults below, overridden by ``TOKENPULSE_FEED_PAIRS``).
"""

from __future__ import annotations

import re

from tokenpulse_shared.events import SYMBOL_PATTERN
from tokenpulse_shared.settings import Settings

from tokenpulse_ingest.exchanges.base import (
    BadMessage,
    Connector,
    GapHook,
    Health,
    Pair,
    TickSink,
    log_gap,
)
from tokenpulse_ingest.exchanges.binance import BinanceConnector
from tokenpulse_ingest.exchanges.coinbase import CoinbaseConnector
from tokenpulse_ingest.exchanges.kraken import KrakenConnector

__all__ = [
    "CONNECTORS",
    "BadMessage",
    "BinanceConnector",
    "CoinbaseConnector",
    "Connector",
    "GapHook",
    "Health",
    "KrakenConnector",
    "Pair",
    "TickSink",
    "build_connectors",
    "log_gap",
    "pairs_for",
]

CONNECTORS: dict[str, type[Connector]] = {
    "binance": BinanceConnector,
    "coinbase": CoinbaseConnector,
    "kraken": KrakenConnector,
}

# Tokens an exchange does not list against USD/USDT: left out by default (a PAIR override adds them).
NOT_LISTED = {"coinbase": {"BNB"}, "kraken": {"BNB"}}
_QUOTE = {
    "binance": re.compile(r"^[A-Z0-9]+?(USDT|USDC|FDUSD|TUSD|BUSD|USD|EUR|BTC|ETH)$"),
    "coinbase": re.compile(r"^[A-Z0-9]+-([A-Z0-9]+)$"),
    "kraken": re.compile(r"^[A-Z0-9]+/([A-Z0-9]+)$"),
}
_SYMBOL = re.compile(SYMBOL_PATTERN)


def default_pair(exchange: str, symbol: str) -> str:
    if exchange == "binance":
        return f"{symbol}USDT"
    if exchange == "coinbase":
        return f"{symbol}-USD"
    if exchange == "kraken":
        return f"{symbol}/USD"
    raise ValueError(f"unknown exchange {exchange!r}; choose from {', '.join(CONNECTORS)}")


def quote_of(exchange: str, venue: str) -> str:
    m = _QUOTE[exchange].match(venue)
    if not m:
        raise ValueError(
            f"{exchange} pair {venue!r} is not in the exchange's format "
            "(binance BTCUSDT, coinbase BTC-USD, kraken BTC/USD): fix TOKENPULSE_FEED_PAIRS"
        )
    return m.group(1)


def pairs_for(settings: Settings) -> dict[str, list[Pair]]:
    """Per configured exchange, the pairs to subscribe to: defaults, then ``TOKENPULSE_FEED_PAIRS`` overrides."""
    for name in settings.feed_exchanges:
        if name not in CONNECTORS:
            raise ValueError(f"TOKENPULSE_FEED_EXCHANGES names {name!r}; supported exchanges: {', '.join(CONNECTORS)}")
    venues: dict[str, dict[str, str]] = {
        ex: {s: default_pair(ex, s) for s in settings.symbols if s not in NOT_LISTED.get(ex, set())}
        for ex in settings.feed_exchanges
    }
    for item in settings.feed_pairs:
        ex, sep, rest = item.partition(":")
        symbol, eq, venue = rest.partition("=")
        ex, symbol, venue = ex.strip().lower(), symbol.strip().upper(), venue.strip().upper()
        if not sep or not eq or not symbol or not venue:
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r} is not `exchange:SYMBOL=PAIR`")
        if ex not in CONNECTORS:
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r}: unknown exchange; use {', '.join(CONNECTORS)}")
        if not _SYMBOL.fullmatch(symbol):
            raise ValueError(f"TOKENPULSE_FEED_PAIRS entry {item!r}: {symbol!r} is not an upper-case symbol")
        if ex not in venues:
            continue  # an override for an exchange that is not enabled
        if venue == "-":
            venues[ex].pop(symbol, None)
        else:
            quote_of(ex, venue)
            venues[ex][symbol] = venue
    return {
        ex: [Pair(symbol, venue, quote_of(ex, venue)) for symbol, venue in sorted(m.items())]
        for ex, m in venues.items()
        if m
    }


def ws_url(settings: Settings, exchange: str) -> str:
    return str(getattr(settings, f"{exchange}_ws_url"))


def build_connectors(settings: Settings, sink: TickSink, on_gap: GapHook | None = None) -> list[Connector]:
    return [
        CONNECTORS[ex](
            ws_url(settings, ex),
            pairs,
            sink,
            on_gap=on_gap,
            stall_s=settings.feed_stall_s,
            backoff_s=settings.feed_backoff_s,
            backoff_max_s=settings.feed_backoff_max_s,
            open_timeout_s=min(10.0, settings.feed_connect_timeout_s),
        )
        for ex, pairs in pairs_for(settings).items()
    ]
