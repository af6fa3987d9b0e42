"""The columnar backfill: bundled history, a user's CSV or REST bars → validated Arrow tables → the candles table.

Same result as the event path (:mod:`tokenpulse_ingest.backfill`: the same rows, event ids, versions,
first-file-wins merge and roll-ups) without a Python object per row: pyarrow reads and rolls up, the
vectorised rules of :mod:`tokenpulse_ingest.columnar` validate, ``insert_arrow`` stores 50,000 rows at a
time with a content deduplication token. Rejected rows are counted with their reason, the first ones kept
(and written to an error file by the command line), never dropped silently. A roll-up bucket that would
include a rejected row is rejected too, so no coarser candle is built from part of its data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tokenpulse_shared.events import Interval, utcnow
from tokenpulse_shared.store import Store

from tokenpulse_ingest.bundle import BUNDLE, DAY_MS, Bar, SeriesFile, _day_ms
from tokenpulse_ingest.columnar import INPUT, NUMBERS, Rejects, blocks, content_token, read_csv, split, store_table

Progress = Callable[[str, int, int], None]  # (label, rows done, rows in all)
Columns = dict[str, pa.Array]


@dataclass
class BulkResult:
    series: int = 0
    candles: int = 0  # rows inserted (a re-run's rows are skipped by the engine, but counted here)
    rejects: Rejects = field(default_factory=Rejects)

    @property
    def rejected(self) -> int:
        return self.rejects.count


def csv_input(table: pa.Table, symbol: str, interval: Interval, source: str) -> pa.Table:
    """A candle CSV (every column text, ``ts_ms`` added by :func:`read_csv`) as the validation's input.
    An empty volume or trades cell is 0, as the model's defaults and the event path's reader make it."""
    n = table.num_rows
    given = {name: table[name].combine_chunks() for name in table.column_names if name != "ts_ms"}
    zero = pa.array(["0"] * n, pa.string())

    def or_zero(name: str) -> pa.Array:
        if name not in given:
            return zero
        values = given[name]
        if pa.types.is_string(values.type):
            return pc.if_else(pc.equal(values, ""), zero, values)
        return pc.fill_null(values, 0)

    sources = pa.array([source] * n, pa.string())
    if "source" in given:
        named = pc.cast(given["source"], pa.string())
        sources = pc.if_else(pc.fill_null(pc.equal(named, ""), True), sources, named)
    missing = pa.nulls(n, pa.string())
    return pa.table(
        {
            "symbol": pa.array([symbol] * n, pa.string()),
            "interval": pa.array([interval.value] * n, pa.string()),
            "ts": table["ts_ms"],
            **{name: given.get(name, missing) for name in ("open", "high", "low", "close")},
            "volume": or_zero("volume"),
            "trades": or_zero("trades"),
            "source": sources,
        }
    )


def read_series(bundle_dir: Path, spec: SeriesFile) -> pa.Table:
    """One bundled file as validation input, its partial last row and excluded windows left out. Its trade
    counts are not loaded, as the event path (``bundle.bar_row``) leaves them out."""
    raw = read_csv(bundle_dir / spec.path)
    if "trades" in raw.column_names:
        raw = raw.drop_columns(["trades"])
    table = csv_input(raw, spec.symbol, spec.interval, spec.source)
    if spec.skip_last and table.num_rows:
        table = table.slice(0, table.num_rows - 1)
    for first, last in spec.exclude:
        ts = table["ts"]
        inside = pc.and_(pc.greater_equal(ts, _day_ms(first)), pc.less(ts, _day_ms(last) + DAY_MS))
        table = table.filter(pc.invert(pc.fill_null(inside, False)))
    return table


def rollup(cols: Columns, interval: Interval, rejected_ts: pa.Array) -> Columns:
    """Valid finer candles (sorted by time) into ``interval`` buckets: first open, max high, min low, last
    close, sums of volume and trades, the first source. Buckets holding a rejected finer row are left out."""
    table = pa.table(cols)
    bucket = pc.subtract(table["ts"], _mod(table["ts"], interval.millis))
    table = table.append_column("bucket", bucket)
    aggregates = [("open", "first"), ("high", "max"), ("low", "min"), ("close", "last"), ("volume", "sum")]
    aggregates += [("trades", "sum"), ("source", "first"), ("symbol", "first")]
    out = table.group_by("bucket", use_threads=False).aggregate(aggregates)
    if len(rejected_ts):
        spoilt = pc.subtract(rejected_ts, _mod(rejected_ts, interval.millis))
        out = out.filter(pc.invert(pc.is_in(out["bucket"], value_set=spoilt)))
    rolled = {name: out[f"{name}_{how}"].combine_chunks() for name, how in aggregates}
    rolled["ts"] = out["bucket"].combine_chunks()
    rolled["interval"] = pa.array([interval.value] * out.num_rows, pa.string())
    return rolled


def _mod(values: pa.Array | pa.ChunkedArray, by: int) -> pa.Array:
    """values mod ``by``, never negative (epoch ms before 1970 bucket down, as ``Interval.bucket_ms`` does)."""
    rem = pc.subtract(values, pc.multiply(pc.divide(values, by), by))
    return pc.if_else(pc.less(rem, 0), pc.add(rem, by), rem)


def first_wins(parts: list[Columns]) -> Columns:
    """Merge the series of one (symbol, interval) from several files: the earlier part wins a candle time."""
    tables = [pa.table(p).append_column("rank", pa.array([i] * len(p["ts"]), pa.int32())) for i, p in enumerate(parts)]
    merged = pa.concat_tables(tables, promote_options="permissive").sort_by(
        [("ts", "ascending"), ("rank", "ascending")]
    )
    ts = merged["ts"].combine_chunks()
    if len(ts) > 1:
        new = pc.not_equal(ts.slice(1), ts.slice(0, len(ts) - 1))
        merged = merged.filter(pa.concat_arrays([pa.array([True]), new]))
    return {name: merged[name].combine_chunks() for name in merged.column_names if name != "rank"}


def bundle_series(
    bundle_dir: Path,
    symbols: list[str] | None = None,
    intervals: list[Interval] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    rejects: Rejects | None = None,
) -> list[tuple[str, Interval, Columns]]:
    """Valid columns per (symbol, interval) of the bundled history, as :func:`bundle.iter_bundle` merges it."""
    rejects = rejects if rejects is not None else Rejects()
    parts: dict[tuple[str, Interval], list[Columns]] = {}
    for spec in BUNDLE:
        wanted = [spec.interval, *spec.rollups]
        if (symbols and spec.symbol not in symbols) or (intervals and not any(i in intervals for i in wanted)):
            continue
        table = read_series(bundle_dir, spec)
        before = rejects.count
        cols = split(table, rejects)
        rejected_ts = _rejected_times(table, cols, rejects.count - before)
        order = pc.sort_indices(cols["ts"])
        cols = {name: values.take(order) for name, values in cols.items()}
        for interval in wanted:
            if intervals and interval not in intervals:
                continue
            series = cols if interval is spec.interval else rollup(cols, interval, rejected_ts)
            parts.setdefault((spec.symbol, interval), []).append(series)
    out = []
    for (symbol, interval), pieces in parts.items():
        cols = first_wins(pieces)
        keep = pa.array([True] * len(cols["ts"]))
        if start_ms is not None:
            keep = pc.and_(keep, pc.greater_equal(cols["ts"], start_ms))
        if end_ms is not None:
            keep = pc.and_(keep, pc.less(cols["ts"], end_ms))
        cols = {name: values.filter(keep) for name, values in cols.items()}
        if len(cols["ts"]):
            out.append((symbol, interval, cols))
    return out


def _rejected_times(table: pa.Table, valid: Columns, count: int) -> pa.Array:
    """The candle times of the rows ``split`` rejected (readable ones), so roll-ups can leave their buckets out."""
    if not count:
        return pa.array([], pa.int64())
    kept = pc.is_in(table["ts"], value_set=valid["ts"])
    times = pc.cast(table["ts"], pa.int64(), safe=False).filter(pc.invert(pc.fill_null(kept, False)))
    return times.drop_null().combine_chunks() if isinstance(times, pa.ChunkedArray) else times.drop_null()


def history_table(
    series: Iterable[tuple[str, Interval, Columns]], *, event_prefix: str = "hist-", version: int = 0,
    produced_at: datetime | None = None,
) -> pa.Table:  # fmt: skip
    """Every series as one table in the candles table's columns (event ids as the event path makes them)."""
    at = produced_at or utcnow()
    tables = [store_table(cols, event_prefix, version, at) for _, _, cols in series]
    return pa.concat_tables(tables) if tables else store_table(_empty(), event_prefix, version, at)


def _empty() -> Columns:
    table = pa.table({name: pa.array([], pa.string()) for name in INPUT})
    return split(table, Rejects())


async def insert_history(store: Store, table: pa.Table, *, progress: Progress | None = None, label: str = "") -> int:
    """Insert ``table`` in blocks of ``BLOCK_ROWS``, each with its content token (a re-run inserts nothing)."""
    done = 0
    for block in blocks(table):
        await store.insert_arrow("candles", block, dedup=content_token(block))
        done += block.num_rows
        if progress:
            progress(label, done, table.num_rows)
    return done


async def load_bundle(
    store: Store,
    bundle_dir: Path,
    symbols: list[str] | None = None,
    intervals: list[Interval] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    progress: Progress | None = None,
) -> BulkResult:
    """The bundled history into the store, columnar end to end."""
    result = BulkResult()
    series = await asyncio.to_thread(bundle_series, bundle_dir, symbols, intervals, start_ms, end_ms, result.rejects)
    table = history_table(series)
    result.series = len(series)
    result.candles = await insert_history(store, table, progress=progress, label="bundled history")
    return result


async def load_csv(
    store: Store, path: Path, symbol: str, interval: Interval, source: str, *, progress: Progress | None = None
) -> BulkResult:
    """A user's candle CSV (``date``, ``open_time_utc`` or ``ts`` epoch ms/µs; ``open,high,low,close``;
    optional ``volume``, ``trades``, ``source``) into the store as ``csv-SYMBOL-INTERVAL-OPENMS`` candles."""
    result = BulkResult(series=1)
    table = await asyncio.to_thread(lambda: csv_input(read_csv(path), symbol, interval, source))
    cols = await asyncio.to_thread(split, table, result.rejects)
    rows = store_table(cols, "csv-", 0, utcnow())
    result.candles = await insert_history(store, rows, progress=progress, label=path.name)
    return result


def bars_input(bars: list[Bar], symbol: str, interval: Interval) -> pa.Table:
    """Bars from a venue's REST answers as the validation's input (numbers already typed by the row parser)."""
    n = len(bars)
    return pa.table(
        {
            "symbol": pa.array([symbol] * n, pa.string()),
            "interval": pa.array([interval.value] * n, pa.string()),
            "ts": pa.array([b.ts_ms for b in bars], pa.int64()),
            **{name: pa.array([getattr(b, name) for b in bars], pa.float64()) for name in NUMBERS},
            "trades": pa.array([b.trades for b in bars], pa.int64()),
            "source": pa.array([b.source for b in bars], pa.string()),
        }
    )


async def store_bars(
    store: Store, bars: list[Bar], symbol: str, interval: Interval, *, event_prefix: str, version: int, rejects: Rejects
) -> int:
    """REST bars into the store by the columnar path; returns the rows inserted."""
    cols = split(bars_input(bars, symbol, interval), rejects)
    return await insert_history(store, store_table(cols, event_prefix, version, utcnow()))
