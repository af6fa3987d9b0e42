"""Reading the bundled real history (``data/``) into candle events.

Each :class:`SeriesFile` names one CSV, the symbol and interval it holds, the
rows to leave out (partial last bars, known bad windows) and the coarser
intervals to roll up from it. Per (symbol, interval) the files are taken in
the order listed and the first file wins for a given candle time, so the
primary BTC series fills 2011-08..2025-09 and the others only extend it.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.timeutil import DAY_MS


@dataclass(frozen=True)
class SeriesFile:
    path: str
    symbol: str
    interval: Interval
    source: str
    skip_last: bool = False
    rollups: tuple[Interval, ...] = ()
    exclude: tuple[tuple[str, str], ...] = ()  # inclusive ISO date windows to leave out
    note: str = ""


B = "daily/binance/{}usdt_daily.csv"
BUNDLE: tuple[SeriesFile, ...] = (
    SeriesFile(
        "daily/btc_usd_daily.csv",
        "BTC",
        Interval.D1,
        "bitstamp/coinbase",
        skip_last=True,
        note="primary BTC-USD daily; last row is a partial day",
    ),
    SeriesFile(
        "daily/btc_usd_daily_cccagg.csv",
        "BTC",
        Interval.D1,
        "cryptocompare",
        skip_last=True,
        exclude=(("2014-02-01", "2015-12-31"),),
        note="fills 2011-01..08 and 2025-09..2026-01; Mt.Gox-collapse window excluded",
    ),
    SeriesFile(B.format("btc"), "BTC", Interval.D1, "binance"),
    SeriesFile("daily/eth_usd_daily_kraken.csv", "ETH", Interval.D1, "kraken"),
    SeriesFile(B.format("eth"), "ETH", Interval.D1, "binance"),
    *(SeriesFile(B.format(s.lower()), s, Interval.D1, "binance") for s in ("BNB", "XRP", "ADA", "DOGE", "SOL", "LTC")),
    SeriesFile(
        "intraday/btcusd_coinbase_1h_2017-07_2020-10.csv.gz",
        "BTC",
        Interval.H1,
        "coinbase",
        skip_last=True,
        rollups=(Interval.H4,),
    ),
    SeriesFile(
        "intraday/btcusdt_binance_1h_2023-01_2026-02.csv.gz",
        "BTC",
        Interval.H1,
        "binance",
        skip_last=True,
        rollups=(Interval.H4,),
    ),
    SeriesFile(
        "intraday/btcusdt_binance_1m_2024-12.csv.gz", "BTC", Interval.M1, "binance", rollups=(Interval.M5, Interval.M15)
    ),
)


@dataclass(slots=True)
class Bar:
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str
    trades: int = 0


def _day_ms(iso_date: str) -> int:
    d = date.fromisoformat(iso_date)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _instant_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def read_bars(bundle_dir: Path, spec: SeriesFile) -> list[Bar]:
    path = bundle_dir / spec.path
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    col = {name: i for i, name in enumerate(header)}
    parse: Callable[[str], int] = _day_ms
    if "date" in col:
        t_col = col["date"]
    else:
        t_col, parse = col["open_time_utc"], _instant_ms
    o, h, lo, c, v = (col[k] for k in ("open", "high", "low", "close", "volume"))
    src = col.get("source")
    n_col = col.get("trades")
    if spec.skip_last and rows:
        rows = rows[:-1]
    windows = [(_day_ms(a), _day_ms(b) + DAY_MS) for a, b in spec.exclude]
    bars = []
    for row in rows:
        ts = parse(row[t_col])
        if windows and any(a <= ts < b for a, b in windows):
            continue
        bars.append(
            Bar(
                ts,
                float(row[o]),
                float(row[h]),
                float(row[lo]),
                float(row[c]),
                float(row[v] or 0.0),
                row[src] if src is not None and row[src] else spec.source,
                int(float(row[n_col])) if n_col is not None and row[n_col] else 0,
            )
        )
    return bars


def rollup(bars: list[Bar], interval: Interval) -> list[Bar]:
    """Aggregate sorted finer bars into ``interval`` buckets (first open, max high, min low, last close, sum volume)."""
    out: list[Bar] = []
    for bar in bars:
        bucket = interval.bucket_ms(bar.ts_ms)
        if out and out[-1].ts_ms == bucket:
            acc = out[-1]
            acc.high = max(acc.high, bar.high)
            acc.low = min(acc.low, bar.low)
            acc.close = bar.close
            acc.volume += bar.volume
            acc.trades += bar.trades
        else:
            out.append(Bar(bucket, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.source, bar.trades))
    return out


def history_event_id(symbol: str, interval: Interval, ts_ms: int) -> str:
    """Deterministic id: replaying the same history twice yields the same events."""
    return f"hist-{symbol}-{interval.value}-{ts_ms}"


def bar_row(symbol: str, interval: Interval, bar: Bar, produced_at: datetime) -> dict[str, object]:
    """The fields of the candle event for one bar (validated by the caller, in bulk)."""
    return {
        "produced_at": produced_at,
        "event_id": history_event_id(symbol, interval, bar.ts_ms),
        "symbol": symbol,
        "interval": interval,
        "ts": datetime.fromtimestamp(bar.ts_ms / 1000, UTC),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "source": bar.source,
    }


def bar_to_event(symbol: str, interval: Interval, bar: Bar, produced_at: datetime | None = None) -> CandleEvent:
    return CandleEvent(**bar_row(symbol, interval, bar, produced_at or datetime.now(UTC)))  # type: ignore[arg-type]


def iter_bundle(
    bundle_dir: Path,
    symbols: list[str] | None = None,
    intervals: list[Interval] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Iterator[tuple[str, Interval, list[Bar]]]:
    """Yield (symbol, interval, bars) per series after first-file-wins merging and rollups."""
    merged: dict[tuple[str, Interval], dict[int, Bar]] = {}
    for spec in BUNDLE:
        if symbols and spec.symbol not in symbols:
            continue
        wanted = [spec.interval, *spec.rollups]
        if intervals and not any(i in intervals for i in wanted):
            continue
        bars = read_bars(bundle_dir, spec)
        for interval, series in [(spec.interval, bars), *((r, rollup(bars, r)) for r in spec.rollups)]:
            if intervals and interval not in intervals:
                continue
            target = merged.setdefault((spec.symbol, interval), {})
            for bar in series:
                target.setdefault(bar.ts_ms, bar)
    for (symbol, interval), by_ts in merged.items():
        bars = [
            by_ts[t] for t in sorted(by_ts) if (start_ms is None or t >= start_ms) and (end_ms is None or t < end_ms)
        ]
        if bars:
            yield symbol, interval, bars


@dataclass(frozen=True)
class MarketCapFile:
    path: str
    symbol: str | None  # None: the total crypto market
    column: str = "market_cap"
    volume_column: str = "total_volume"


MARKETCAP_FILES: tuple[MarketCapFile, ...] = (
    MarketCapFile("marketcap/total_market_cap_coingecko.csv", None, column="total_market_cap"),
    MarketCapFile("marketcap/btc_usd_coingecko.csv", "BTC"),
    MarketCapFile("marketcap/eth_usd_coingecko.csv", "ETH"),
    MarketCapFile("marketcap/sol_usd_coingecko.csv", "SOL"),
)


@dataclass(slots=True)
class CapPoint:
    ts_ms: int
    market_cap: float
    volume: float | None


def read_marketcaps(bundle_dir: Path, spec: MarketCapFile) -> list[CapPoint]:
    """Daily CoinGecko snapshots (00:00 UTC of ``date``); empty or zero market caps are skipped."""
    out = []
    with open(bundle_dir / spec.path, newline="") as fh:
        for row in csv.DictReader(fh):
            cap = float(row[spec.column] or 0)
            if cap <= 0:
                continue
            volume = float(row[spec.volume_column] or 0) or None
            out.append(CapPoint(_day_ms(row["date"]), cap, volume))
    return out
