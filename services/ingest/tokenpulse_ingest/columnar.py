"""Bulk candle history as Arrow tables: read, merge, roll up, validate and store without a Python object per row.

The columnar backfill path (issue 22, item 4) for the bundled files, a user's CSV and an exchange's REST
history. pyarrow reads the CSVs (its multithreaded C++ reader; already installed as the Arrow format that
clickhouse-connect's ``insert_arrow`` takes), ``pyarrow.compute`` applies :data:`RULES` — the
:class:`~tokenpulse_shared.events.CandleEvent` model's rules, row for row (tests/unit/test_columnar.py
proves the verdicts equal with hypothesis) — and the valid rows go to ClickHouse in blocks of
``BLOCK_ROWS`` with a deduplication token made from their content, so re-running a backfill inserts nothing
twice (and the ``ReplacingMergeTree(version)`` keeps one row per candle whatever happens).

A table here has the columns of :data:`INPUT`: numbers may still be text (a CSV cell as written); text
that is not a number, a missing price, a time that is not a whole millisecond — every such row is
rejected with its reason (:class:`Rejects`), never defaulted or silently dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv
from tokenpulse_shared.events import SYMBOL_PATTERN, Interval

BLOCK_ROWS = 50_000  # rows per insert: large enough that the engine's per-insert cost vanishes
PRICES = ("open", "high", "low", "close")
NUMBERS = (*PRICES, "volume")
STORE_COLUMNS = (
    "symbol", "interval", "ts", "open", "high", "low", "close", "volume", "trades", "source", "version",
    "event_id", "produced_at",
)  # fmt: skip
# what :func:`validate` takes: ts in epoch ms, numbers as float64 or text, trades as int64 or text
INPUT = ("symbol", "interval", "ts", *NUMBERS, "trades", "source")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)  # what a datetime can hold
MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_TS = pa.timestamp("ms", tz="UTC")
_INT64_MAX = str(2**63 - 1)
_INTERVALS = pa.array([i.value for i in Interval])
_MILLIS = {i.value: i.millis for i in Interval}
_FLOAT_TEXT = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"


@dataclass
class Rejects:
    """Rows refused by the validation: how many, why (a count per reason), and the first few whole."""

    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    keep: int = 20
    tables: list[pa.Table] = field(default_factory=list)  # every rejected row, as read, with its reason

    def add(self, rows: pa.Table, reasons: pa.Array) -> None:
        self.count += rows.num_rows
        text = pa.table({name: pc.cast(rows[name], pa.string()) for name in rows.column_names})
        self.tables.append(text.append_column("reason", reasons))
        for reason, n in zip(*_value_counts(reasons), strict=True):
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        room = self.keep - len(self.examples)
        if room > 0:
            examples = rows.slice(0, room).append_column("reason", reasons.slice(0, room)).to_pylist()
            self.examples.extend(examples)

    def write(self, path: Path) -> None:
        """Every rejected row, as read, with its reason, as CSV (the backfill's error file)."""
        if self.tables:
            pacsv.write_csv(pa.concat_tables(self.tables, promote_options="permissive"), path)


def _value_counts(values: pa.Array) -> tuple[list[str], list[int]]:
    counts = pc.value_counts(values)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def to_float(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text (or numbers) as float64 as pydantic reads a float from text — surrounding whitespace, a sign,
    decimals, an exponent, inf/infinity/nan in any case — except digit-group underscores (``1_000``), which
    pydantic takes and this refuses (a CSV export never writes them). Unreadable text becomes null."""
    column = _combined(column)
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        return pc.cast(column, pa.float64())
    try:
        return pc.cast(column, pa.float64())  # every cell a plain number: Arrow's parser, no regex
    except pa.ArrowInvalid:
        pass
    text = pc.utf8_trim_whitespace(column)
    readable = pc.match_substring_regex(text, _FLOAT_TEXT)
    return pc.cast(pc.if_else(readable, text, pa.scalar(None, pa.string())), pa.float64())


def to_int(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text (or numbers) as int64 as pydantic reads an int: a sign and digits, a whole decimal (``5.0``)
    too, a float only when whole; anything else, or beyond int64, becomes null."""
    column = _combined(column)
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_floating(column.type):
        whole = pc.and_(pc.is_finite(column), pc.equal(pc.floor(column), column))
        fits = pc.and_(pc.greater_equal(column, -(2.0**63)), pc.less(column, 2.0**63))
        return pc.cast(pc.if_else(pc.and_(whole, fits), column, None), pa.int64())
    if pc.all(pc.match_substring_regex(column, r"^-?[0-9]{1,18}$")).as_py() is not False:
        return pc.cast(column, pa.int64())  # every cell plain digits (or null): no rewriting needed
    text = pc.utf8_trim_whitespace(column)
    text = pc.replace_substring_regex(text, r"\.0+$", "")  # 5.00 -> 5
    shaped = pc.match_substring_regex(text, r"^[+-]?[0-9]+$")
    text = pc.replace_substring_regex(text, r"^\+", "")  # Arrow's cast takes no plus sign
    text = pc.replace_substring_regex(text, r"^(-?)0+([0-9])", r"\1\2")  # 0005 -> 5
    short = pc.match_substring_regex(text, r"^-?[0-9]{1,18}$")
    long = pc.and_(pc.match_substring_regex(text, r"^[0-9]{19}$"), pc.less_equal(text, _INT64_MAX))  # same length
    readable = pc.and_(shaped, pc.or_(short, long))
    return pc.cast(pc.if_else(readable, text, pa.scalar(None, pa.string())), pa.int64())


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


Rule = tuple[str, Callable[[dict[str, pa.Array]], pa.Array]]  # (reason, columns -> true where the row breaks it)


def _not(mask: pa.Array) -> pa.Array:
    return pc.invert(pc.fill_null(mask, False))


RULES: tuple[Rule, ...] = (
    ("symbol: not an upper-case symbol", lambda c: _not(pc.match_substring_regex(c["symbol"], SYMBOL_PATTERN))),
    ("interval: unknown", lambda c: _not(pc.is_in(c["interval"], value_set=_INTERVALS))),
    ("ts: missing or not a whole millisecond", lambda c: pc.is_null(c["ts"])),
    ("ts: out of range", lambda c: _not(pc.and_(pc.greater_equal(c["ts"], MIN_MS), pc.less_equal(c["ts"], MAX_MS)))),
    *(
        (f"{name}: missing, not a number, not finite or not > 0", lambda c, n=name: _not(_positive(c[n])))
        for name in PRICES
    ),
    ("volume: not a number, not finite or < 0", lambda c: _not(_at_least_zero(c["volume"]))),
    ("trades: not an integer >= 0", lambda c: _not(pc.greater_equal(c["trades"], 0))),
    ("source: longer than 64 characters", lambda c: _not(pc.less_equal(pc.utf8_length(c["source"]), 64))),
    ("high must be >= open, close and low", lambda c: pc.less(c["high"], pc.max_element_wise(*_ocl(c)))),
    ("low must be <= open and close", lambda c: pc.greater(c["low"], pc.min_element_wise(c["open"], c["close"]))),
    ("ts must be aligned to the interval", lambda c: pc.not_equal(_remainder(c["ts"], c["interval"]), 0)),
)  # fmt: skip


def _ocl(c: dict[str, pa.Array]) -> tuple[pa.Array, pa.Array, pa.Array]:
    return c["open"], c["close"], c["low"]


def _at_least_zero(values: pa.Array) -> pa.Array:
    return pc.and_(pc.is_finite(values), pc.greater_equal(values, 0.0))


def _positive(values: pa.Array) -> pa.Array:
    return pc.and_(pc.is_finite(values), pc.greater(values, 0.0))


def _remainder(ts: pa.Array, interval: pa.Array) -> pa.Array:
    """ts modulo the interval's milliseconds, exact in integers (zero exactly when aligned)."""
    millis = pc.fill_null(_map(interval, _MILLIS), 1)
    return pc.subtract(ts, pc.multiply(pc.divide(ts, millis), millis))


def _map(keys: pa.Array, mapping: dict[str, int]) -> pa.Array:
    index = pc.index_in(keys, value_set=pa.array(list(mapping)))
    return pc.take(pa.array(list(mapping.values()), pa.int64()), index)


def normalised(table: pa.Table) -> dict[str, pa.Array]:
    """The :data:`INPUT` columns as typed arrays (unreadable numbers as null): what the rules read."""
    cols = {name: _combined(table[name]) for name in INPUT}
    for name in NUMBERS:
        cols[name] = to_float(cols[name])
    cols["trades"] = to_int(cols["trades"])
    cols["ts"] = to_int(cols["ts"])
    for name in ("symbol", "interval", "source"):
        cols[name] = pc.cast(cols[name], pa.string())
    return cols


def validate(table: pa.Table) -> tuple[dict[str, pa.Array], pa.Array]:
    """(typed columns, reason per row: null where the row is valid). The first rule a row breaks names it."""
    cols = normalised(table)
    reason = pa.nulls(len(table), pa.string())
    for text, breaks in reversed(RULES):  # the first rule in RULES wins: applied last
        reason = pc.if_else(pc.fill_null(breaks(cols), True), pa.scalar(text), reason)
    return cols, reason


def split(table: pa.Table, rejects: Rejects) -> dict[str, pa.Array]:
    """The valid rows' typed columns; the others are added to ``rejects``."""
    cols, reason = validate(table)
    bad = pc.is_valid(reason)
    if pc.any(bad).as_py():
        rejects.add(table.filter(bad), reason.filter(bad))
        good = pc.invert(bad)
        cols = {name: values.filter(good) for name, values in cols.items()}
    return cols


def store_table(cols: dict[str, pa.Array], event_prefix: str, version: int, produced_at: datetime) -> pa.Table:
    """Valid typed columns as the candles table's Arrow table; event ids ``{prefix}{symbol}-{interval}-{ts}``
    as the per-event paths make them (``hist-`` for the bundled history, ``rest-EXCHANGE-`` for REST)."""
    n = len(cols["ts"])
    ts_text = pc.cast(cols["ts"], pa.string())
    event_id = pc.binary_join_element_wise(pa.scalar(event_prefix), cols["symbol"], cols["interval"], ts_text, "-")
    event_id = pc.replace_substring(event_id, f"{event_prefix}-", event_prefix, max_replacements=1)
    produced = pa.array([produced_at] * 1, _TS).take(pa.array([0] * n)) if n else pa.array([], _TS)
    return pa.table(
        {
            "symbol": cols["symbol"], "interval": cols["interval"], "ts": pc.cast(cols["ts"], _TS),
            **{name: cols[name] for name in NUMBERS}, "trades": pc.cast(cols["trades"], pa.uint32()),
            "source": cols["source"], "version": pa.array([version] * n, pa.uint64()), "event_id": event_id,
            "produced_at": produced,
        }
    )  # fmt: skip


def content_token(table: pa.Table) -> str:
    """A deduplication token of a block's content: the same rows again are skipped by the engine, a
    corrected block (other prices, another version) is not."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("symbol", "interval", "ts", *NUMBERS, "trades", "source", "version"):
        for buffer in _combined(table[name]).buffers():
            if buffer is not None:
                h.update(buffer)
    return h.hexdigest()


def blocks(table: pa.Table, rows: int = BLOCK_ROWS) -> Iterable[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def read_csv(path: Path, *, time_column: str | None = None) -> pa.Table:
    """A candle CSV (plain or .gz), column types inferred by pyarrow's reader: a column holding a cell that
    is not a number comes as text, so no cell fails the whole file (rows are judged by :func:`validate`).
    The time is ``date`` (a UTC day), ``open_time_utc`` (an ISO instant) or ``ts`` (epoch ms, or µs when
    above 10^14), added as ``ts_ms`` (epoch ms; null when unreadable)."""
    options = pacsv.ReadOptions(use_threads=False, block_size=1 << 22)  # one thread: on 2 cores threads cost more
    table = pacsv.read_csv(path, read_options=options)
    name = time_column or next((c for c in ("date", "open_time_utc", "ts") if c in table.column_names), None)
    if name is None:
        raise ValueError(f"{path}: no time column (date, open_time_utc or ts)")
    return table.append_column("ts_ms", epoch_ms(table[name], name))


def epoch_ms(column: pa.ChunkedArray, kind: str) -> pa.Array:
    """The time column as int64 epoch ms; an unreadable time is null (rejected by :func:`validate`)."""
    column = _combined(column)
    if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
        return pc.cast(
            pc.cast(column, pa.timestamp("ms", tz="UTC") if pa.types.is_date(column.type) else _TS), pa.int64()
        )
    if kind in ("date", "open_time_utc"):
        text = pc.replace_substring_regex(pc.utf8_trim_whitespace(pc.cast(column, pa.string())), r"(Z|\+00:00)$", "")
        form = "%Y-%m-%d" if kind == "date" else "%Y-%m-%dT%H:%M:%S"
        return pc.cast(pc.strptime(text, format=form, unit="ms", error_is_null=True), pa.int64())
    values = to_int(column)
    micros = pc.greater_equal(values, 10**14)
    whole = pc.equal(pc.if_else(micros, _mod(values, 1000), 0), 0)
    ms = pc.if_else(micros, pc.divide(values, 1000), values)
    return pc.if_else(whole, ms, pa.scalar(None, pa.int64()))


def _mod(values: pa.Array, by: int) -> pa.Array:
    return pc.subtract(values, pc.multiply(pc.divide(values, by), by))
