"""Wire formats for the ticks hot path, side by side in one run (docs/design/0001-batch-hot-path.md).

Per tick, on the same trades: the producer side (validated trade values -> message bytes), the consumer side
(bytes -> validated values a handler can use), bytes on the wire; then the cost of feeding the result to
ingest's candle builder and price reconciler (per-event objects vs a per-row loop over columns), of inserting
it into the embedded ClickHouse (clickhouse-connect ``insert`` with columns vs ``insert_arrow``), and a round
trip through a real Kafka broker.

Formats:

* ``per-event`` -- today: one JSON message per trade, a ``TickEvent`` made as the connectors make it, written
  by pydantic, read by pydantic (the msgspec fast path in front of it was removed);
* ``json-cols`` -- a columnar JSON batch (``tokenpulse_shared.batches.TickBatch``: one list per column,
  integer epoch-microsecond times), read by msgspec with every value's bounds checked in C while decoding,
  the distinct symbols and quotes matched once each (``decode_tick_batch``);
* ``json-cols-numpy`` -- the same bytes, read by msgspec into plain lists and checked with numpy;
* ``json-cols-pydantic`` -- the same document, written and validated by pydantic alone (the bus's
  ``encode_event``, ``TickBatch.model_validate_json``);
* ``msgpack-cols`` -- the same columns as MessagePack (msgspec), checked in C like ``json-cols``;
* ``json-rows`` -- one JSON array per trade in one message, read by msgspec into checked tuples;
* ``arrow`` -- an Arrow IPC stream of one RecordBatch (dictionary-encoded strings, timestamp[us]), checked
  with ``pyarrow.compute``; ``arrow+lists`` adds turning its columns into Python lists (what a per-row loop
  needs).

Data: ``btc`` -- BTCUSDT trades at Binance's real density: each real 1-minute bar of December 2024
(``data/intraday/btcusdt_binance_1m_2024-12.csv.gz``) gives its real trade count, prices within its real
high/low from its open to its close, sizes summing to about its real volume, millisecond trade times
(``data/exchange-samples`` holds real frames of small altcoins only, no BTC trade); ``zipf`` -- 1,000
symbols with Zipf-distributed rates (s = 1), three venues, 20,000 ticks/s of event time.

CPU time of this thread (``time.thread_time``) for the in-process steps, process CPU time and wall time for
the ClickHouse inserts (the engine runs threads of its own) and the Kafka round trip; medians over rounds,
formats interleaved within a round. Run: ``.venv/bin/python -m bench.batch_formats [--quick] [--json OUT]``
(Kafka: ``TOKENPULSE_TEST_KAFKA`` or a broker of its own, see bench/broker.py; ``--no-kafka`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import gzip
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from msgspec import Meta, Struct
from pydantic import TypeAdapter, ValidationError
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_shared.batches import MAX_BATCH_ROWS, MAX_TS_US, TICK_COLUMNS, TickBatch, epoch_us
from tokenpulse_shared.bus.base import RawMessage, decode_message, encode_event
from tokenpulse_shared.events import (
    SYMBOL_PATTERN,
    PriceEvent,
    Side,
    TickEvent,
    UtcDatetime,
    new_event_id,
    trusted,
)
from tokenpulse_shared.topics import PRICES

from bench.broker import send_batches

ROOT = Path(__file__).resolve().parents[1]
BARS = ROOT / "data" / "intraday" / "btcusdt_binance_1m_2024-12.csv.gz"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH_SIZES = (10, 100, 1_000, 5_000)
PARTITIONS = 6

Trade = tuple[str, str, int, float, float, Side, str | None, str]  # the TICK_COLUMNS of one trade
clock = time.thread_time


# --- data ----------------------------------------------------------------------------------------------------


def btc_trades(n: int, seed: int = 7) -> list[Trade]:
    """Trades at the real density of BTCUSDT on Binance (see the module doc)."""
    rng = random.Random(seed)
    out: list[Trade] = []
    trade_id = 4_300_000_000
    with gzip.open(BARS, "rt") as f:
        for bar in csv.DictReader(f):
            start_us = epoch_us(datetime.fromisoformat(bar["open_time_utc"].replace("Z", "+00:00")))
            k = int(bar["trades"])
            o, h, lo, c, v = (float(bar[x]) for x in ("open", "high", "low", "close", "volume"))
            for j, ms in enumerate(sorted(rng.randrange(60_000) for _ in range(k))):
                price = o if j == 0 else c if j == k - 1 else round(rng.uniform(lo, h), 2)
                size = max(round(rng.expovariate(k / v), 5), 0.00001)
                side = Side.BUY if rng.random() < 0.5 else Side.SELL
                out.append(("BTC", "binance", start_us + ms * 1000, price, size, side, str(trade_id), "USDT"))
                trade_id += 1
                if len(out) >= n:
                    return out
    return out


VENUES = (("binance", "USDT", 1000), ("coinbase", "USD", 1), ("kraken", "USD", 1))  # time resolution in us


def symbol_names(count: int, rng: random.Random) -> list[str]:
    names: dict[str, None] = {}
    while len(names) < count:
        names["".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=rng.choice((3, 3, 4, 4, 5))))] = None
    return list(names)


def zipf_trades(n: int, symbols: int = 1000, rate: int = 20_000, seed: int = 11) -> list[Trade]:
    """Trades over ``symbols`` tokens with Zipf-distributed rates, ``rate`` ticks/s of event time."""
    rng = random.Random(seed)
    names = symbol_names(symbols, rng)
    prices = {s: 10 ** rng.uniform(-4, 5) for s in names}
    ids: dict[tuple[str, str], int] = defaultdict(lambda: rng.randrange(10**6, 10**9))
    t0 = epoch_us(datetime(2026, 11, 3, tzinfo=UTC))
    out: list[Trade] = []
    for i, sym in enumerate(rng.choices(names, [1 / (r + 1) for r in range(symbols)], k=n)):
        source, quote, resolution = rng.choice(VENUES)
        ts = t0 + i * 1_000_000 // rate
        prices[sym] *= 1 + rng.gauss(0, 0.0005)
        price = float(f"{prices[sym]:.6g}")
        size = float(f"{rng.expovariate(1.0) * 1000 / price:.6g}")
        ids[(source, sym)] += 1
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        out.append((sym, source, ts - ts % resolution, price, size, side, str(ids[(source, sym)]), quote))
    return out


def from_us(ts_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts_us)


def chunks(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# --- formats -------------------------------------------------------------------------------------------------


class Format:
    """A wire format: ``encode`` the trades of one message (or one message per trade), ``decode`` messages."""

    name = ""
    batched = True

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        raise NotImplementedError

    def decode(self, messages: list[bytes]) -> list[Any]:
        raise NotImplementedError


_TICK_FIELDS = set(TickEvent.model_fields)


class PerEvent(Format):
    name, batched = "per-event", False

    def __init__(self) -> None:
        self.produced_at = datetime.now(UTC)
        self.decode_one = TickEvent.model_validate_json

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        return [encode_event(self.event(row)) for row in rows]

    def event(self, row: Trade) -> TickEvent:
        """As ``make_tick`` builds it: the model's fields, trusted."""
        sym, src, ts_us, price, size, side, tid, quote = row
        fields = {"event_id": f"{src}-{sym}-{tid}", "schema_version": 1, "produced_at": self.produced_at}
        fields |= {"symbol": sym, "source": src, "ts": from_us(ts_us), "price": price, "size": size, "side": side}
        fields |= {"trade_id": tid, "quote": quote}
        return trusted(TickEvent, fields, _TICK_FIELDS)

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [self.decode_one(m) for m in messages]


_encoder = msgspec.json.Encoder()


def encode_tick_batch(batch: TickBatch) -> bytes:
    """The batch's JSON, written by msgspec from the columns: the document ``model_dump_json`` writes (the
    same values; a float's text may differ, e.g. ``1e308`` for pydantic's ``1e+308``)."""
    doc = {"event_id": batch.event_id, "schema_version": batch.schema_version, "produced_at": batch.produced_at}
    doc |= {name: getattr(batch, name) for name in TICK_COLUMNS}
    return _encoder.encode(doc)


# --- the msgspec decoder measured as json-cols (the prototype; no service runs it) ---

_MAX = sys.float_info.max  # bounds a float above: 1e400 decodes to inf, which no model accepts
_SYMBOL = re.compile(SYMBOL_PATTERN.replace("$", r"\Z"))  # Python's `$` also matches before a final newline
_QUOTE = re.compile(r"^[A-Z0-9]{2,10}\Z")
_PRODUCED_AT: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


class _TickColumns(Struct, forbid_unknown_fields=True, gc=False):
    event_id: Annotated[str, Meta(min_length=8, max_length=128)]
    produced_at: msgspec.Raw  # one per batch: pydantic's own datetime parser reads it, so times mean the same
    symbol: list[str]
    source: list[Annotated[str, Meta(min_length=1, max_length=64)]]
    ts_us: list[Annotated[int, Meta(ge=0, le=MAX_TS_US)]]
    price: list[Annotated[float, Meta(gt=0, le=_MAX)]]
    size: list[Annotated[float, Meta(ge=0, le=_MAX)]]
    side: list[Side]
    trade_id: list[Annotated[str, Meta(max_length=128)] | None]
    quote: list[str]
    schema_version: Annotated[int, Meta(ge=1)] = 1


if set(_TickColumns.__struct_fields__) != set(TickBatch.model_fields):
    raise TypeError("the fast decoder of TickBatch is out of date with the model's fields")
_decoder = msgspec.json.Decoder(_TickColumns)
_MATCHED: dict[re.Pattern[str], set[str]] = {_SYMBOL: set(), _QUOTE: set()}
_MATCHED_MAX = 100_000  # strings remembered per pattern; a universe holds a few thousand symbols


def _all_match(pattern: re.Pattern[str], values: list[str]) -> bool:
    """Every value matches ``pattern``: each distinct one not seen before is matched once (a batch repeats
    its symbols, and a market has far fewer symbols than rows)."""
    known = _MATCHED[pattern]
    new = set(values) - known
    if not all(map(pattern.match, new)):
        return False
    if len(known) + len(new) > _MATCHED_MAX:
        known.clear()
    known |= new
    return True


def _fast(raw: bytes) -> TickBatch:
    try:
        cols = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from exc
    c = cols
    lengths = {len(c.symbol), len(c.source), len(c.ts_us), len(c.price), len(c.size), len(c.side), len(c.trade_id)}
    lengths.add(len(c.quote))
    if len(lengths) != 1 or not 1 <= len(c.symbol) <= MAX_BATCH_ROWS:
        raise ValueError("ragged or empty columns")
    if not _all_match(_SYMBOL, c.symbol) or not _all_match(_QUOTE, c.quote):
        raise ValueError("a symbol or quote does not match its pattern")
    fields = msgspec.structs.asdict(cols)
    try:
        fields["produced_at"] = _PRODUCED_AT.validate_json(bytes(c.produced_at), strict=True)
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc
    return trusted(TickBatch, fields)


def decode_tick_batch(raw: bytes) -> TickBatch:
    """Parse and validate one ``tokenpulse.ticks.v2`` message; raise ``ValueError`` with pydantic's reasons."""
    try:
        return _fast(raw)
    except ValueError:
        pass  # pydantic decides, with its own reasons
    try:
        return TickBatch.model_validate_json(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(f"schema validation failed for TickBatch: {detail}") from exc


class JsonCols(Format):
    name = "json-cols"

    def __init__(self) -> None:
        self.produced_at = datetime.now(UTC)

    def batch(self, rows: Sequence[Trade]) -> TickBatch:
        return TickBatch.of_columns(
            list(zip(*rows, strict=True)), event_id=new_event_id(), produced_at=self.produced_at
        )

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        return [encode_tick_batch(self.batch(rows))]

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [decode_tick_batch(m) for m in messages]


class JsonColsPydantic(JsonCols):
    """The same document, written and read by pydantic alone (the bus's ``encode_event``, ``model_validate_json``)."""

    name = "json-cols-pydantic"

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        return [encode_event(self.batch(rows))]

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [TickBatch.model_validate_json(m) for m in messages]


class _PlainColumns(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: str
    schema_version: int
    produced_at: str
    symbol: list[str]
    source: list[str]
    ts_us: list[int]
    price: list[float]
    size: list[float]
    side: list[str]
    trade_id: list[str | None]
    quote: list[str]


_SIDES = {s.value for s in Side}
_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,15}\Z")
_QUOTE_RE = re.compile(r"[A-Z0-9]{2,10}\Z")
_MATCHED: dict[re.Pattern[str], set[str]] = {_SYMBOL_RE: set(), _QUOTE_RE: set()}


def matches(pattern: re.Pattern[str], values: Any) -> bool:
    """As ``batches._all_match``: each distinct value not matched before is matched once."""
    new = set(values) - _MATCHED[pattern]
    if not all(map(pattern.match, new)):
        return False
    _MATCHED[pattern] |= new
    return True


class JsonColsNumpy(JsonCols):
    """msgspec into plain lists, then the model's checks on numpy arrays and on the distinct strings."""

    name = "json-cols-numpy"
    decoder = msgspec.json.Decoder(_PlainColumns)

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [self.check(self.decoder.decode(m)) for m in messages]

    @staticmethod
    def check(cols: _PlainColumns) -> dict[str, Any]:
        n = len(cols.symbol)
        if not 1 <= n <= MAX_BATCH_ROWS or any(len(getattr(cols, c)) != n for c in TICK_COLUMNS):
            raise ValueError("ragged columns")
        price, size = np.asarray(cols.price, np.float64), np.asarray(cols.size, np.float64)
        ts = np.asarray(cols.ts_us, np.int64)
        ok = (price > 0).all() and np.isfinite(price).all() and (size >= 0).all() and np.isfinite(size).all()
        ok = ok and ts.min() >= 0 and ts.max() <= MAX_TS_US and set(cols.side) <= _SIDES
        ok = ok and all(len(t) <= 128 for t in cols.trade_id if t is not None)
        ok = ok and matches(_SYMBOL_RE, cols.symbol) and matches(_QUOTE_RE, cols.quote)
        ok = ok and all(1 <= len(s) <= 64 for s in set(cols.source))
        if not ok:
            raise ValueError("a value is out of its bounds")
        return {"cols": cols, "price": price, "size": size, "ts_us": ts}


class _MsgpackColumns(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: Annotated[str, Meta(min_length=8, max_length=128)]
    schema_version: Annotated[int, Meta(ge=1)]
    produced_at: Annotated[datetime, Meta(tz=True)]
    symbol: list[str]
    source: list[Annotated[str, Meta(min_length=1, max_length=64)]]
    ts_us: list[Annotated[int, Meta(ge=0, le=MAX_TS_US)]]
    price: list[Annotated[float, Meta(gt=0, le=sys.float_info.max)]]
    size: list[Annotated[float, Meta(ge=0, le=sys.float_info.max)]]
    side: list[Side]
    trade_id: list[Annotated[str, Meta(max_length=128)] | None]
    quote: list[str]


class MsgpackCols(JsonCols):
    name = "msgpack-cols"
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(_MsgpackColumns)

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        b = self.batch(rows)
        doc = {"event_id": b.event_id, "schema_version": 1, "produced_at": b.produced_at}
        return [self.encoder.encode(doc | {c: getattr(b, c) for c in TICK_COLUMNS})]

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [check_distinct(self.decoder.decode(m)) for m in messages]


def check_distinct(cols: Any) -> Any:
    n = len(cols.symbol)
    if not 1 <= n <= MAX_BATCH_ROWS or any(len(getattr(cols, c)) != n for c in TICK_COLUMNS):
        raise ValueError("ragged columns")
    if not matches(_SYMBOL_RE, cols.symbol) or not matches(_QUOTE_RE, cols.quote):
        raise ValueError("a symbol or quote does not match")
    return cols


_RowTuple = tuple[
    str,
    Annotated[str, Meta(min_length=1, max_length=64)],
    Annotated[int, Meta(ge=0, le=MAX_TS_US)],
    Annotated[float, Meta(gt=0, le=sys.float_info.max)],
    Annotated[float, Meta(ge=0, le=sys.float_info.max)],
    Side,
    Annotated[str, Meta(max_length=128)] | None,
    str,
]


class _Rows(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: Annotated[str, Meta(min_length=8, max_length=128)]
    schema_version: Annotated[int, Meta(ge=1)]
    produced_at: Annotated[datetime, Meta(tz=True)]
    rows: Annotated[list[_RowTuple], Meta(min_length=1, max_length=MAX_BATCH_ROWS)]


class JsonRows(JsonCols):
    name = "json-rows"
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(_Rows)

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        doc = {"event_id": new_event_id(), "schema_version": 1, "produced_at": self.produced_at, "rows": rows}
        return [self.encoder.encode(doc)]

    def decode(self, messages: list[bytes]) -> list[Any]:
        out = []
        for m in messages:
            batch = self.decoder.decode(m)
            if not matches(_SYMBOL_RE, [r[0] for r in batch.rows]) or not matches(
                _QUOTE_RE, [r[7] for r in batch.rows]
            ):
                raise ValueError("a symbol or quote does not match")
            out.append(batch)
        return out


_DICT = pa.dictionary(pa.int32(), pa.string())
ARROW_SCHEMA = pa.schema(
    [
        ("symbol", _DICT),
        ("source", _DICT),
        ("ts_us", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("side", _DICT),
        ("trade_id", pa.string()),
        ("quote", _DICT),
    ]
)


class Arrow(JsonCols):
    """One RecordBatch in an Arrow IPC stream; batch identity and time in the schema metadata."""

    name = "arrow"

    def encode(self, rows: Sequence[Trade]) -> list[bytes]:
        cols = list(zip(*rows, strict=True))
        arrays = [
            pa.array(col, pa.string()).dictionary_encode() if f.type == _DICT else pa.array(col, f.type)
            for col, f in zip(cols, ARROW_SCHEMA, strict=True)
        ]
        meta = {"event_id": new_event_id(), "produced_at": self.produced_at.isoformat()}
        batch = pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA.with_metadata(meta))
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return [sink.getvalue().to_pybytes()]

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [self.check(ipc.open_stream(m).read_next_batch()) for m in messages]

    @staticmethod
    def check(batch: pa.RecordBatch, max_rows: int = MAX_BATCH_ROWS) -> pa.RecordBatch:
        """The model's checks, vectorised: types, nulls, bounds, patterns on dictionary values."""
        if not batch.schema.equals(ARROW_SCHEMA) or not 1 <= batch.num_rows <= max_rows:
            raise ValueError("schema or size")
        if any(batch.column(i).null_count for i in (0, 1, 2, 3, 4, 5, 7)):
            raise ValueError("nulls")
        price, size, ts = batch.column(3), batch.column(4), batch.column(2).cast(pa.int64())
        numbers = pc.min_max(price), pc.min_max(size), pc.min_max(ts)
        ok = numbers[0]["min"].as_py() > 0 and numbers[1]["min"].as_py() >= 0 and numbers[2]["min"].as_py() >= 0
        ok = ok and pc.all(pc.is_finite(price)).as_py() and pc.all(pc.is_finite(size)).as_py()
        ok = ok and numbers[2]["max"].as_py() <= MAX_TS_US
        ok = (
            ok and _all_match(batch.column(0), r"^[A-Z0-9]{1,15}$") and _all_match(batch.column(7), r"^[A-Z0-9]{2,10}$")
        )
        ok = ok and _all_match(batch.column(5), r"^(buy|sell|unknown)$")
        sources = pc.utf8_length(batch.column(1).dictionary)
        ok = ok and pc.min(sources).as_py() >= 1 and pc.max(sources).as_py() <= 64
        tid = pc.max(pc.utf8_length(batch.column(6))).as_py()
        if not ok or (tid is not None and tid > 128):
            raise ValueError("a value is out of its bounds")
        return batch


def _all_match(column: pa.DictionaryArray, pattern: str) -> bool:
    """Every value used of a dictionary column matches: the dictionary checked, its indices in range."""
    used = pc.unique(column.indices)
    return bool(pc.all(pc.match_substring_regex(column.dictionary.take(used), pattern)).as_py())


class ArrowLists(Arrow):
    name = "arrow+lists"

    def decode(self, messages: list[bytes]) -> list[Any]:
        return [arrow_lists(b) for b in super().decode(messages)]


def arrow_lists(batch: pa.RecordBatch) -> list[list[Any]]:
    out = []
    for i, field in enumerate(batch.schema):
        col = batch.column(i)
        if field.type == _DICT:
            values = col.dictionary.to_pylist()
            out.append([values[k] for k in col.indices.to_numpy().tolist()])
        elif i == 2:
            out.append(col.cast(pa.int64()).to_numpy().tolist())
        elif i == 6:
            out.append(col.to_pylist())
        else:
            out.append(col.to_numpy().tolist())
    return out


FORMATS: tuple[Format, ...] = (
    PerEvent(),
    JsonCols(),
    JsonColsNumpy(),
    JsonColsPydantic(),
    MsgpackCols(),
    JsonRows(),
    Arrow(),
    ArrowLists(),
)


# --- consumers: the candle builder and the reconciler over columns ------------------------------------------


# --- measurements --------------------------------------------------------------------------------------------


def rotated(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` starting at ``k``: each round runs the variants in another order."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def per_row_us(seconds: float, rows: int) -> float:
    return seconds / rows * 1e6


def time_format(fmt: Format, batches: list[Sequence[Trade]]) -> tuple[float, float, int]:
    """CPU seconds to encode and to decode every batch, and the bytes on the wire."""
    gc_collect()
    t = clock()
    messages = [fmt.encode(b) for b in batches]
    encoded = clock() - t
    gc_collect()
    t = clock()
    for m in messages:
        fmt.decode(m)
    return encoded, clock() - t, sum(len(x) for m in messages for x in m)


def gc_collect() -> None:
    gc.collect()


def measure_formats(datasets: dict[str, list[Trade]], rounds: int) -> list[dict[str, Any]]:
    samples: dict[tuple[str, str, int], list[tuple[float, float, int]]] = defaultdict(list)
    for r in range(rounds):
        for name, trades in datasets.items():
            for size in BATCH_SIZES:
                batches = chunks(trades, size)
                for fmt in rotated(FORMATS, r):
                    if fmt.batched or size == BATCH_SIZES[0]:  # one message per trade whatever the batch size
                        samples[(name, fmt.name, size if fmt.batched else 1)].append(time_format(fmt, batches))
    out = []
    for (name, fmt_name, size), runs in samples.items():
        n = len(datasets[name])
        enc = per_row_us(statistics.median(r[0] for r in runs), n)
        dec = per_row_us(statistics.median(r[1] for r in runs), n)
        row = {"data": name, "format": fmt_name, "rows_per_message": size, "encode_us": enc, "decode_us": dec}
        out.append(row | {"bytes_per_row": runs[0][2] / n})
    return out


@dataclass
class Fed:
    """Inputs of one dataset at one batch size, in both forms, and the wall time each batch is handled at."""

    events: list[list[TickEvent]]
    batches: list[TickBatch]
    walls: list[float]


def fed(trades: list[Trade], size: int) -> Fed:
    per_event, cols = PerEvent(), JsonCols()
    parts = chunks(trades, size)
    walls = [part[-1][2] / 1e6 + 0.001 for part in parts]
    return Fed([[per_event.event(t) for t in part] for part in parts], [cols.batch(p) for p in parts], walls)


def run_builders(f: Fed) -> tuple[list[float], list[list[Any]]]:
    """CPU seconds of ingest's candle builder fed per event and fed the batches' columns (``add_batch``), and
    what each emitted."""
    old, new = CandleBuilder(), CandleBuilder()
    gc_collect()
    t = clock()
    a = [c for evs, w in zip(f.events, f.walls, strict=True) for c in old.add(evs, w).candles]
    per_event = clock() - t
    gc_collect()
    t = clock()
    b = [c for batch, w in zip(f.batches, f.walls, strict=True) for c in new.add_batch(batch, w).candles]
    return [per_event, clock() - t], [a, b]


def run_reconcilers(f: Fed) -> tuple[list[float], list[list[Any]]]:
    old, new = PriceReconciler(), PriceReconciler()
    gc_collect()
    t = clock()
    a = [p for evs, w in zip(f.events, f.walls, strict=True) for p in old.update(evs, w)]
    per_event = clock() - t
    gc_collect()
    t = clock()
    b = [p for batch, w in zip(f.batches, f.walls, strict=True) for p in new.update_batch(batch, w)]
    return [per_event, clock() - t], [a, b]


def price_event_costs(prices: list[PriceEvent]) -> tuple[float, float, float]:
    """CPU seconds to write every price event as one message and to read each back as the bus does, and the
    share pydantic refuses (none: kept for the run file's column)."""
    gc_collect()
    t = clock()
    messages = [encode_event(p) for p in prices]
    encoded = clock() - t
    t = clock()
    for m in messages:
        decode_message(PRICES, RawMessage(m))
    decoded = clock() - t
    return encoded, decoded, sum(1 for m in messages if not _fast_ok(m)) / len(messages)


def _fast_ok(message: bytes) -> bool:
    try:
        PriceEvent.model_validate_json(message)
    except ValidationError:
        return False
    return True


def same_events(a: list[Any], b: list[Any]) -> bool:
    strip = {"produced_at"}
    return [e.model_dump(exclude=strip) for e in a] == [e.model_dump(exclude=strip) for e in b]


def measure_feeding(datasets: dict[str, list[Trade]], rounds: int) -> list[dict[str, Any]]:
    out = []
    for name, trades in datasets.items():
        for size in BATCH_SIZES:
            f = fed(trades, size)
            builds, recs = [], []
            for r in range(rounds):
                builds.append(run_builders(f))
                recs.append(run_reconcilers(f))
                candles, prices = builds[0][1], recs[0][1]
                if r == 0 and not all(same_events(candles[0], c) for c in candles[1:]):
                    raise AssertionError(f"the column-fed builder differs from the per-event one on {name} x {size}")
                if r == 0 and not same_events(*prices):
                    raise AssertionError(f"the column-fed reconciler differs from the per-event one on {name} x {size}")
            out.append(feeding_row(name, size, len(trades), builds, recs))
    return out


FEEDING_KEYS = ("builder_per_event_us", "builder_columns_us")
FEEDING_KEYS += ("reconciler_per_event_us", "reconciler_columns_us")


def feeding_row(name: str, size: int, n: int, builds: list[Any], recs: list[Any]) -> dict[str, Any]:
    candles, prices = builds[0][1][0], recs[0][1][0]
    times = [statistics.median(run[0][i] for run in builds) for i in range(2)]
    times += [statistics.median(run[0][i] for run in recs) for i in range(2)]
    row: dict[str, Any] = {"data": name, "rows_per_message": size, "candles_per_tick": len(candles) / n}
    row |= {key: per_row_us(t, n) for key, t in zip(FEEDING_KEYS, times, strict=True)}
    row["prices_per_tick"] = len(prices) / n
    if prices:
        enc, dec, slow = price_event_costs(prices)
        row |= {"price_encode_us": per_row_us(enc, len(prices)), "price_decode_us": per_row_us(dec, len(prices))}
        row["price_decode_slow_share"] = slow
    return row


# --- the store: clickhouse-connect columns vs Arrow -----------------------------------------------------------

TICK_TABLE_COLUMNS = ("symbol", "source", "ts", "price", "size", "side", "dedup_key", "event_id", "produced_at")


def columns_of(b: TickBatch) -> list[list[Any]]:
    """The ticks table's columns from a batch, in Python lists (times as integer milliseconds)."""
    n = len(b)
    produced_ms = epoch_us(b.produced_at) // 1000
    event_ids = [
        f"{s}-{y}-{t}" if t else f"{b.event_id}#{i}"
        for i, (s, y, t) in enumerate(zip(b.source, b.symbol, b.trade_id, strict=True))
    ]
    ts_ms = [t // 1000 for t in b.ts_us]
    return [b.symbol, b.source, ts_ms, b.price, b.size, b.side, b.dedup_keys(), event_ids, [produced_ms] * n]


def arrow_of(batch: pa.RecordBatch) -> pa.Table:
    """The ticks table's columns from a decoded Arrow batch, computed by Arrow kernels (no Python per row)."""
    source, symbol = batch.column(1).cast(pa.string()), batch.column(0).cast(pa.string())
    tid = batch.column(6)
    meta = {k.decode(): v.decode() for k, v in (batch.schema.metadata or {}).items()}
    if tid.null_count:
        raise ValueError("the bench's trades all have ids")
    produced = pa.scalar(datetime.fromisoformat(meta["produced_at"]), pa.timestamp("ms", tz="UTC"))
    arrays = [
        batch.column(0),
        batch.column(1),
        pc.cast(batch.column(2), pa.timestamp("ms", tz="UTC"), safe=False),  # truncates, as ``ts_us // 1000``
        batch.column(3),
        batch.column(4),
        batch.column(5),
        pc.binary_join_element_wise(source, tid, ":"),
        pc.binary_join_element_wise(source, symbol, tid, "-"),
        pa.array(np.full(batch.num_rows, produced.value, np.int64), pa.timestamp("ms", tz="UTC")),
    ]
    return pa.Table.from_arrays(arrays, names=list(TICK_TABLE_COLUMNS))


def insert_variants(client: Any, spec: Any) -> dict[str, Callable[[Any, str], None]]:
    def events(evs: list[TickEvent], token: str) -> None:
        cols = spec.to_columns(evs)
        client.insert(spec.table, cols, list(spec.columns), column_oriented=True, settings=_dedup(token))

    def columns(b: TickBatch, token: str) -> None:
        cols = columns_of(b)
        client.insert(spec.table, cols, list(TICK_TABLE_COLUMNS), column_oriented=True, settings=_dedup(token))

    def arrow(raw: bytes, token: str) -> None:
        table = arrow_of(Arrow.check(ipc.open_stream(raw).read_next_batch(), max_rows=INSERT_SIZES[-1]))
        client.insert_arrow(spec.table, table, settings=_dedup(token))

    return {"insert, per-event columns (today)": events, "insert, batch columns": columns, "insert_arrow": arrow}


def _dedup(token: str) -> dict[str, str]:
    return {"insert_deduplication_token": token}


def insert_inputs(trades: list[Trade], size: int, count: int) -> dict[str, list[Any]]:
    parts = chunks(trades[: size * count], size)
    per_event, cols, arrow = PerEvent(), JsonCols(), Arrow()
    return {
        "insert, per-event columns (today)": [[per_event.event(t) for t in p] for p in parts],
        "insert, batch columns": [cols.batch(p) for p in parts],
        "insert_arrow": [arrow.encode(p)[0] for p in parts],
    }


INSERT_SIZES = (100, 1_000, 5_000, 50_000)


async def measure_inserts(trades: list[Trade], rounds: int, inserts: int) -> list[dict[str, Any]]:
    from tokenpulse_gateway.writer import TABLES
    from tokenpulse_shared.store import Store

    samples: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store(f"chdb://{tmp}/ch").open()
        try:
            variants = insert_variants(store.client, TABLES["ticks"])
            for size in INSERT_SIZES:
                count = max(2, min(inserts, len(trades) // size))
                inputs = insert_inputs(trades, size, count)
                for r in range(rounds):
                    for name in rotated(list(variants), r):
                        samples[(size, name)].append(time_inserts(variants[name], inputs[name], f"{name}-{r}"))
        finally:
            await store.close()
    out = []
    for (size, name), runs in samples.items():
        rows = size * max(2, min(inserts, len(trades) // size))
        wall, cpu = statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs)
        out.append({"rows_per_insert": size, "variant": name, "wall_us": per_row_us(wall, rows)})
        out[-1] |= {"cpu_us": per_row_us(cpu, rows), "rows_per_s": rows / wall}
    return out


def time_inserts(insert: Callable[[Any, str], None], inputs: list[Any], tag: str) -> tuple[float, float]:
    gc_collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for i, item in enumerate(inputs):
        insert(item, f"{tag}-{i}")
    return time.perf_counter() - wall, time.process_time() - cpu


# --- a round trip through a real Kafka broker -------------------------------------------------------------------

PRODUCER_BATCH_BYTES = 512 * 1024  # as the bus's producer


def partition_of(symbol: str, cache: dict[str, int]) -> int:
    """Where aiokafka's default partitioner (murmur2, as Java's) puts a message keyed by ``symbol``."""
    p = cache.get(symbol)
    if p is None:
        from aiokafka.partitioner import murmur2

        p = cache[symbol] = (murmur2(symbol.encode()) & 0x7FFFFFFF) % PARTITIONS
    return p


def messages_by_partition(fmt: Format, trades: list[Trade], size: int) -> dict[int, list[tuple[bytes | None, bytes]]]:
    """(key, value) per partition: one keyed message per trade, or batches of each partition's trades."""
    cache: dict[str, int] = {}
    rows: dict[int, list[Trade]] = defaultdict(list)
    for t in trades:
        rows[partition_of(t[0], cache)].append(t)
    out: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for p, part in rows.items():
        if fmt.batched:
            out[p] = [(None, v) for c in chunks(part, size) for v in fmt.encode(c)]
        else:
            out[p] = [(t[0].encode(), v) for t, v in zip(part, fmt.encode(part), strict=True)]
    return out


async def consume(
    bootstrap: str, topic: str, messages: int, decode: Callable[[list[bytes]], Any] | None
) -> tuple[float, float]:
    """Read ``messages`` messages of ``topic`` from its start, decoding them with ``decode`` when given;
    returns the process CPU and wall seconds from the first fetch on (the consumer's start left out)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        gc_collect()
        seen, cpu, wall = 0, time.process_time(), time.perf_counter()
        while seen < messages:
            got = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in got.values():
                if decode is not None:
                    decode([r.value for r in records])
                seen += len(records)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await consumer.stop()


async def round_trip(bootstrap: str, fmt: Format, trades: list[Trade], size: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-batch-formats-{new_event_id()[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await leaders(admin, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=PRODUCER_BATCH_BYTES,
    )
    await producer.start()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        by_partition = messages_by_partition(fmt, trades, size)
        await asyncio.gather(*await send_batches(producer, topic, by_partition))
        produced = time.process_time() - cpu, time.perf_counter() - wall
        count = sum(len(m) for m in by_partition.values())
        raw, decoded = await consume_both(bootstrap, topic, count, fmt)
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    n = len(trades)
    row = {"format": fmt.name, "rows_per_message": size if fmt.batched else 1, "messages": count}
    row |= {"produce_cpu_us": per_row_us(produced[0], n), "produce_wall_s": produced[1]}
    row |= {"raw_consume_us": per_row_us(raw[0], n), "decode_consume_us": per_row_us(decoded[0], n)}
    return row | {
        "raw_consume_wall_s": raw[1],
        "decode_consume_wall_s": decoded[1],
        "decoded_of_raw": raw[0] / decoded[0],
    }


async def leaders(admin: Any, topic: str) -> None:
    """Wait until every partition of a new topic has a leader, so no send is retried while timed."""
    for _ in range(100):
        parts = [p for d in await admin.describe_topics([topic]) for p in d.get("partitions", [])]
        if len(parts) == PARTITIONS and all(p["leader"] >= 0 for p in parts):
            return
        await asyncio.sleep(0.1)


async def consume_both(bootstrap: str, topic: str, count: int, fmt: Format) -> list[tuple[float, float]]:
    """(CPU, wall) seconds of a raw consumer, then of one that decodes and validates every message."""
    return [await consume(bootstrap, topic, count, decode) for decode in (None, fmt.decode)]


async def measure_kafka(bootstrap: str, trades: list[Trade], formats: list[Format], sizes: Sequence[int]) -> list[Any]:
    out = []
    for fmt in formats:
        for size in sizes if fmt.batched else (1,):
            out.append(await round_trip(bootstrap, fmt, trades, size))
    return out


def kafka_formats(results: list[dict[str, Any]], k: int = 2) -> list[Format]:
    """Per-event, both columnar JSON codecs, and the ``k`` batch formats with the least encode + decode per
    trade on ``zipf`` at 1,000 rows among those a per-row consumer can use as decoded (plain ``arrow`` leaves
    the lists to build)."""
    usable = {f.name: f for f in FORMATS if f.batched and f.name != "arrow"}
    ranked = sorted(
        (r["encode_us"] + r["decode_us"], r["format"])
        for r in results
        if r["data"] == "zipf" and r["rows_per_message"] == 1_000 and r["format"] in usable
    )
    names = dict.fromkeys(["per-event", "json-cols-pydantic", "json-cols", *(name for _, name in ranked[:k])])
    return [f for name in names for f in FORMATS if f.name == name]


# --- report ----------------------------------------------------------------------------------------------------


def machine() -> str:
    import chdb
    import clickhouse_connect
    import pydantic

    versions = f"pyarrow {pa.__version__}, msgspec {msgspec.__version__}, pydantic {pydantic.VERSION}"
    versions += f", chDB {chdb.__version__}, clickhouse-connect {clickhouse_connect.__version__}"
    return f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}, {versions}"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if v < 1 else f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)])


def format_table(results: list[dict[str, Any]]) -> str:
    base = {r["data"]: r["encode_us"] + r["decode_us"] for r in results if r["format"] == "per-event"}
    rows = []
    for r in results:
        gain = base[r["data"]] / (r["encode_us"] + r["decode_us"])
        rows.append(
            (r["data"], r["format"], r["rows_per_message"], r["encode_us"], r["decode_us"], r["bytes_per_row"], gain)
        )
    head = ("data", "format", "rows/msg", "encode µs/row", "decode+validate µs/row", "bytes/row", "gain vs per-event")
    return table(head, rows)


def feeding_table(results: list[dict[str, Any]]) -> str:
    prices = ("prices_per_tick", "price_encode_us", "price_decode_us", "price_decode_slow_share")
    rows = [
        (r["data"], r["rows_per_message"], *(r[k] for k in FEEDING_KEYS), *(r.get(k, 0.0) for k in prices))
        for r in results
    ]
    head = ("data", "ticks/batch", "candle builder, events µs/tick", "builder, columns")
    head += ("reconciler, events µs/tick", "reconciler, columns", "prices/tick", "price encode µs", "price decode µs")
    head += ("share decoded by pydantic",)
    return table(head, rows)


def insert_table(results: list[dict[str, Any]]) -> str:
    rows = [(r["rows_per_insert"], r["variant"], r["wall_us"], r["cpu_us"], r["rows_per_s"]) for r in results]
    return table(("rows/insert", "variant", "wall µs/row", "CPU µs/row", "rows/s"), rows)


def kafka_table(results: list[dict[str, Any]]) -> str:
    keys = ("messages", "produce_cpu_us", "raw_consume_us", "decode_consume_us", "decoded_of_raw")
    rows = [(r["format"], r["rows_per_message"], *(r[k] for k in keys), r["decode_consume_wall_s"]) for r in results]
    head = ("format", "rows/msg", "messages", "produce CPU µs/row", "raw consume CPU µs/row")
    return table((*head, "consume + decode CPU µs/row", "raw / decoded", "consume + decode wall s"), rows)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer trades and rounds: a minute, for a smoke run")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--no-kafka", action="store_true", help="skip the broker round trip")
    ap.add_argument("--kafka-ticks", type=int, default=200_000)
    return ap.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    n, rounds, inserts = (20_000, 2, 4) if args.quick else (100_000, 5, 10)
    kafka_ticks = 20_000 if args.quick else args.kafka_ticks
    started = datetime.now(UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC; {machine()}; load {load()}", flush=True)
    big = zipf_trades(max(n, kafka_ticks, 50_000 * 2))
    datasets = {"btc": btc_trades(n), "zipf": big[:n]}
    report: dict[str, Any] = {"started": started.isoformat(), "machine": machine(), "ticks": n, "rounds": rounds}
    report["formats"] = measure_formats(datasets, rounds)
    print("\n" + format_table(report["formats"]), flush=True)
    report["feeding"] = measure_feeding(datasets, max(1, rounds - 2))
    print("\n" + feeding_table(report["feeding"]), flush=True)
    report["inserts"] = asyncio.run(measure_inserts(big, max(2, rounds - 2), inserts))
    print("\n" + insert_table(report["inserts"]), flush=True)
    if not args.no_kafka:
        from broker import kafka  # bench/broker.py: bench/ is on sys.path when this file runs as a script

        formats = kafka_formats(report["formats"])
        with tempfile.TemporaryDirectory() as tmp, kafka(Path(tmp)) as bootstrap:
            report["kafka"] = asyncio.run(measure_kafka(bootstrap, big[:kafka_ticks], formats, BATCH_SIZES))
        print("\n" + kafka_table(report["kafka"]), flush=True)
    report["load_after"] = load()
    print(f"\nload average at the end {report['load_after']}; took {datetime.now(UTC) - started}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
