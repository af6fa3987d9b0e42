"""Exchange frame normalisation throughput (messages/s), Tokenpulse vs cryptofeed 2.4 on the same frames.

The frames are the recorded real ones vendored in data/exchange-samples (see its README):
Binance aggTrade frames, Kraken WS v1 trade-channel frames (trades, heartbeats, status, acks,
as recorded) and Coinbase Exchange ws-feed match/last_match/ticker frames; for OKX, Bybit and
Coinbase Advanced Trade (no recording of their current formats) frames crafted from the
documented formats by the fake exchange's dialects (testkit/venues/): one trade per frame,
four pairs, consecutive ids.

* **tokenpulse** — ``Connector.parse``: msgspec decoding into typed structs, the checks of
  ``RowMaker.add``, each trade a row of the ``TickBatch`` columns (``ts_us`` an integer, no
  per-trade object), trade-id gap tracking.
* **tokenpulse → TickBatch** — ``Connector.handle``, all a frame costs up to the bus: the parse,
  the dedupe, the frame's rows as one ``TickBatch`` handed to the (empty) sink.
* **tokenpulse + pydantic validation** — the parse, then each frame's rows validated by pydantic
  as a ``TickBatch`` (``TickBatch.model_validate``): what building it without validation saves.
* **cryptofeed 2.4** — the exchange class's ``message_handler`` (its JSON parser with
  Decimal floats, a ``Trade`` object per trade, an async callback), symbol tables filled
  from the recorded pairs (no network).
* **cryptofeed 2.4 → TickEvent** — the same, and its callback turns each ``Trade`` into our
  ``TickEvent`` with the same checked fast constructor: what Tokenpulse would run if it were
  built on cryptofeed.

Variants run interleaved in one process, each pass over the whole corpus; the median of
the rounds is reported. Time is the process's CPU time (``BENCH_CLOCK=cpu``, the default: the
bench is single-threaded and CPU-bound, and CPU time leaves out the time other processes hold
the cores, so ratios stay comparable on a shared machine) or wall time (``BENCH_CLOCK=wall``).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tokenpulse_ingest.venues.binance import BinanceConnector
from tokenpulse_ingest.venues.bybit import BybitConnector
from tokenpulse_ingest.venues.coinbase import CoinbaseConnector
from tokenpulse_ingest.venues.coinbase_advanced import CoinbaseAdvancedConnector
from tokenpulse_ingest.venues.connector import Connector, Dedupe, Pair, make_tick
from tokenpulse_ingest.venues.kraken import KrakenConnector
from tokenpulse_ingest.venues.okx import OkxConnector
from tokenpulse_ingest.venues.registry import VENUES, quote_of
from tokenpulse_shared.batches import TICK_COLUMNS, TickBatch
from tokenpulse_shared.events import Side, new_event_id, utcnow

from bench import plot
from testkit.fake_exchange import DIALECTS, SAMPLES, received_frames
from testkit.venues import Trade

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
MIN_MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))  # per round and variant
CLOCK_NAME = os.environ.get("BENCH_CLOCK", "cpu")
clock = time.perf_counter if CLOCK_NAME == "wall" else time.process_time


async def _sink(ticks: TickBatch) -> None:
    return None


CRAFTED_SYMBOLS = ("BTC", "ETH", "SOL", "XRP")
CRAFTED = {"okx": OkxConnector, "bybit": BybitConnector, "coinbase_advanced": CoinbaseAdvancedConnector}


def crafted(kind: str, per_symbol: int = 50) -> list[str]:
    """Trade frames in the venue's documented format (the fake exchange's dialect), numbered as a connection."""
    dialect = DIALECTS[kind]
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    frames = []
    for i in range(per_symbol):
        for k, symbol in enumerate(CRAFTED_SYMBOLS):
            price, size, side = dialect.samples[(i + k) % len(dialect.samples)]
            ts = datetime.fromtimestamp(start + i * 0.25 + k * 0.01, UTC)
            trade = Trade(VENUES[kind].default_pair(symbol), 1000 + i, ts, price / (k + 1), size, side)
            frames.append(dialect.stamp(dialect.trades([trade]), len(frames)))
    return frames


def corpus() -> dict[str, list[str]]:
    return {
        **{kind: crafted(kind) for kind in CRAFTED},
        "binance": received_frames(SAMPLES / "BINANCE.ws.1.0.aggTrade")
        + received_frames(SAMPLES / "BINANCE_FUTURES.ws.1.0.aggTrade"),
        "kraken": received_frames(SAMPLES / "KRAKEN.ws.48.0"),
        "coinbase": [
            f
            for f in received_frames(SAMPLES / "COINBASE.ws.28.0.trades")
            if json.loads(f).get("type") in ("match", "last_match", "ticker")
        ],
    }


def ours(kind: str, frames: list[str]) -> Connector:
    if kind in CRAFTED:
        pairs = [Pair(s, p, quote_of(kind, p)) for s in CRAFTED_SYMBOLS for p in [VENUES[kind].default_pair(s)]]
        return CRAFTED[kind]("ws://bench", pairs, _sink)
    if kind == "binance":
        venues = sorted({json.loads(f)["data"]["s"] for f in frames})
        pairs = [Pair(v.removesuffix("USDT").removesuffix("BTC") or v, v, "USDT") for v in venues]
        return BinanceConnector("ws://bench", pairs, _sink)
    if kind == "kraken":
        venues = sorted({json.loads(f)[-1] for f in frames if f.startswith("[")})
        pairs = [Pair(v.split("/")[0].replace("XBT", "BTC"), v, v.split("/")[1]) for v in venues]
        return KrakenConnector("wss://ws.kraken.com", pairs, _sink)
    venues = sorted({json.loads(f)["product_id"] for f in frames})
    return CoinbaseConnector("ws://bench", [Pair(v.split("-")[0], v, v.split("-")[1]) for v in venues], _sink)


def cryptofeed_handler(
    kind: str, frames: list[str], counter: list[int], convert: bool = False
) -> Callable[[str], object] | None:
    """cryptofeed's own message handler for the exchange, or None when cryptofeed cannot read these frames."""
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import OKX, Binance, Bybit, Coinbase, Kraken
    from cryptofeed.symbols import Symbols

    sides = {"buy": Side.BUY, "sell": Side.SELL}

    async def cb(trade: Any, ts: float) -> None:
        if convert:
            base, quote = trade.symbol.split("-")
            make_tick(
                base,
                kind,
                datetime.fromtimestamp(trade.timestamp, UTC),
                float(trade.price),
                float(trade.amount),
                sides[trade.side],
                trade.id or f"{trade.timestamp}-{trade.price}-{trade.amount}",
                quote,
                datetime.now(UTC),
            )
        counter[0] += 1

    if kind == "binance":
        venues = sorted({json.loads(f)["data"]["s"] for f in frames})
        mapping = {f"{v[:-4]}-USDT" if v.endswith("USDT") else f"{v[:-3]}-BTC": v for v in venues}
        Symbols.set(Binance.id, mapping, {})
        feed = Binance(symbols=sorted(mapping)[:1], channels=[TRADES], callbacks={TRADES: cb})
    elif kind == "kraken":
        venues = sorted({json.loads(f)[-1] for f in frames if f.startswith("[")})
        mapping = {v.replace("/", "-").replace("XBT", "BTC"): v for v in venues}
        Symbols.set(Kraken.id, mapping, {})
        feed = Kraken(symbols=sorted(mapping)[:1], channels=[TRADES], callbacks={TRADES: cb})
    elif kind in CRAFTED:
        cls: Any = {"okx": OKX, "bybit": Bybit, "coinbase_advanced": Coinbase}[kind]
        pairs = [VENUES[kind].default_pair(s) for s in CRAFTED_SYMBOLS]
        # cryptofeed's names: BTC-USDT for BTC-USDT (OKX), BTC/USDT (Bybit spot), BTC-USD (Coinbase)
        mapping = {p if kind != "bybit" else p.replace("USDT", "-USDT"): p for p in pairs}
        if kind == "bybit":
            mapping = {std: p.replace("USDT", "/USDT") for std, p in mapping.items()}
        Symbols.set(cls.id, mapping, {})
        feed = cls(symbols=sorted(mapping)[:1], channels=[TRADES], callbacks={TRADES: cb})
    else:
        return None  # cryptofeed 2.4's Coinbase class speaks Advanced Trade, not the Exchange ws-feed

    conn = type("Conn", (), {"address": "wss://stream.bybit.com/v5/public/spot", "uuid": "bench"})()

    def handle(frame: str) -> object:
        return feed.message_handler(frame, conn, 0.0)

    return handle


def _fresh_stream(c: Connector) -> None:
    """Forget the ids, sequence numbers and trades seen: the next pass replays the same trades as a new stream."""
    c._pending_gaps.clear()
    c._last_id.clear()
    c.dedupe = Dedupe(c.dedupe.size)
    sequence = getattr(c, "_sequence", None)
    if isinstance(sequence, dict):
        sequence.clear()
    else:  # a connection's numbering (Coinbase Advanced): a fresh connection
        c._sequence = None  # type: ignore[attr-defined]


async def _ours(name: str, kind: str, frames: list[str], passes: int) -> tuple[float, int]:
    c = ours(kind, frames)
    rows = c.rows
    n = 0
    t0 = clock()
    for _ in range(passes):
        if name == "tokenpulse → TickBatch":
            for f in frames:
                n += await c.handle(f)
        else:
            validate = name == "tokenpulse + pydantic validation"
            for f in frames:
                c.parse(f)
                if rows:
                    n += len(rows)
                    if validate:
                        columns = {
                            name: list(column)
                            for name, column in zip(TICK_COLUMNS, zip(*rows, strict=True), strict=True)
                        }
                        TickBatch.model_validate(columns | {"event_id": new_event_id(), "produced_at": utcnow()})
                    rows.clear()
        _fresh_stream(c)
    return clock() - t0, n


async def run_variant(name: str, kind: str, frames: list[str], passes: int) -> tuple[float, int]:
    """Seconds for ``passes`` passes over the frames, and the trades produced."""
    if name.startswith("tokenpulse"):
        return await _ours(name, kind, frames, passes)
    counter = [0]
    handle = cryptofeed_handler(kind, frames, counter, convert="TickEvent" in name)
    assert handle is not None
    t0 = clock()
    for _ in range(passes):
        for f in frames:
            await handle(f)  # type: ignore[misc]
    return clock() - t0, counter[0]


async def main() -> None:
    import importlib.metadata as md

    try:
        cf_version = md.version("cryptofeed")
    except md.PackageNotFoundError:
        cf_version = None
    import logging

    logging.disable(logging.WARNING)
    frames_by_kind = corpus()
    variants = [
        "tokenpulse",
        "tokenpulse → TickBatch",
        "tokenpulse + pydantic validation",
        "cryptofeed",
        "cryptofeed → TickEvent",
    ]
    results: dict[tuple[str, str], list[float]] = {}
    trades: dict[tuple[str, str], int] = {}
    for _ in range(ROUNDS):
        for kind, frames in frames_by_kind.items():
            passes = max(1, MIN_MESSAGES // len(frames))
            for v in variants:
                if v.startswith("cryptofeed") and (cf_version is None or cryptofeed_handler(kind, frames, [0]) is None):
                    continue
                secs, n = await run_variant(v, kind, frames, passes)
                results.setdefault((kind, v), []).append(passes * len(frames) / secs)
                trades[(kind, v)] = n // passes
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"Feed normalisation — {now}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, cryptofeed {cf_version or 'not installed'}, {ROUNDS} rounds (median), "
        f"{'wall' if CLOCK_NAME == 'wall' else 'CPU'} time, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| exchange | frames | trades per pass | variant | messages/s | µs per message "
        "| vs cryptofeed | vs cryptofeed → TickEvent |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, frames in frames_by_kind.items():
        bases = [statistics.median(results[(kind, b)]) if (kind, b) in results else None for b in variants[3:]]
        for v in variants:
            if (kind, v) not in results:
                continue
            rate = statistics.median(results[(kind, v)])
            ratios = " | ".join(f"{rate / b:.2f}x" if b else "—" for b in bases)
            print(f"| {kind} | {len(frames)} | {trades[(kind, v)]} | {v} | {rate:,.0f} | {1e6 / rate:.1f} | {ratios} |")
    plot.save(
        "feeds",
        "Exchange frame normalisation: Tokenpulse vs cryptofeed on the recorded frames",
        [
            plot.groups(
                "messages/s (median of rounds)",
                {
                    kind: {v: statistics.median(results[(kind, v)]) for v in variants if (kind, v) in results}
                    for kind in frames_by_kind
                },
                "messages/s",
            )
        ],
        footer=plot.footer(f"cryptofeed {cf_version or 'not installed'}, {ROUNDS} rounds (median)"),
    )


if __name__ == "__main__":
    asyncio.run(main())
