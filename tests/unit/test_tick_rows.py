"""The connectors' row path against the contract: ``RowMaker`` rows → ``TickBatch`` → ``to_events()`` accept
exactly the trades ``TickEvent`` accepts (plus issue 22 item 6: no time at or before 1970, no size 0, no
missing trade id), with the same values; the time conversions the venues use equal the datetime ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_ingest.venues.binance import BinanceConnector
from tokenpulse_ingest.venues.connector import BadMessage, Pair, Row, RowMaker, epoch_micros, micros, tick_batch
from tokenpulse_shared.batches import MAX_TS_US, MIN_TS_US, TickBatch, epoch_us, from_epoch_us
from tokenpulse_shared.events import Side, TickEvent

from testkit.ticks import discard, parsed

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e308, float("nan"), float("inf"), -1.0]),
)
TIMES = st.one_of(
    st.integers(min_value=MIN_TS_US - 10, max_value=MAX_TS_US + 10),
    st.integers(min_value=1_500_000_000_000_000, max_value=1_900_000_000_000_000),
    st.sampled_from([0, 1, -1, MAX_TS_US, MAX_TS_US + 1]),
)
# the pair's constant parts: mostly valid, sometimes not (the model refuses them when the connector is built)
SYMBOLS = st.one_of(st.from_regex(r"[A-Z0-9]{1,15}", fullmatch=True), st.text(max_size=17))
QUOTES = st.one_of(st.from_regex(r"[A-Z0-9]{2,10}", fullmatch=True), st.text(max_size=11))
SOURCES = st.one_of(st.sampled_from(["binance", "okx", "ccxt:gate"]), st.text(max_size=70))
TRADE_IDS = st.one_of(st.text(max_size=140), st.from_regex(r"[0-9]{1,20}", fullmatch=True))


def by_the_model(row: tuple[Any, ...], produced_at: datetime) -> TickEvent | None:
    """The trade as ``TickEvent`` validates it (its ``event_id`` derived as the row's is), or None if refused."""
    symbol, source, ts_us, price, size, side, trade_id, quote = row
    try:
        ts = from_epoch_us(ts_us)
    except OverflowError:  # beyond what a datetime holds: the model cannot even be given it
        return None
    fields = {"event_id": f"{source}-{symbol}-{trade_id}", "produced_at": produced_at, "symbol": symbol}
    fields |= {"source": source, "ts": ts, "price": price, "size": size, "side": side, "trade_id": trade_id}
    try:
        return TickEvent.model_validate(fields | {"quote": quote})
    except ValidationError:
        return None


def by_the_rows(row: tuple[Any, ...]) -> TickBatch | None:
    """The trade through a pair's RowMaker into a TickBatch, or None if refused (at the pair or the trade)."""
    symbol, source, ts_us, price, size, side, trade_id, quote = row
    rows: list[Row] = []
    try:
        maker = RowMaker(source, Pair(symbol, "VENUE", quote), rows)
    except ValueError:
        return None
    try:
        maker.add(ts_us, price, size, side, trade_id)
    except BadMessage:
        assert rows == []  # a refused trade leaves no row
        return None
    return tick_batch(rows)


@settings(max_examples=3000, deadline=None)
@given(
    symbol=SYMBOLS,
    source=SOURCES,
    ts_us=TIMES,
    price=NUMBERS,
    size=NUMBERS,
    side=st.sampled_from(Side),
    trade_id=TRADE_IDS,
    quote=QUOTES,
)
def test_the_row_path_accepts_exactly_what_the_model_accepts_with_the_same_values(
    symbol: str, source: str, ts_us: int, price: float, size: float, side: Side, trade_id: str, quote: str
) -> None:
    row = (symbol, source, ts_us, price, size, side, trade_id, quote)
    batch = by_the_rows(row)
    expected = by_the_model(row, batch.produced_at if batch is not None else datetime.now(UTC))
    # item 6 on top of the model: a real trade has a time after 1970, a size, and an id
    assert (batch is not None) == (expected is not None and ts_us > 0 and size > 0 and trade_id != "")
    if batch is None:
        return
    assert batch.to_events() == [expected]
    # the batch the sink gets is one the bus reads back unchanged (strict, as every consumer validates it)
    assert TickBatch.model_validate_json(batch.model_dump_json()) == batch


@settings(max_examples=1000, deadline=None)
@given(seconds=st.floats(min_value=1e-6, max_value=253_402_300_799.0, allow_nan=False))
def test_epoch_seconds_become_the_microseconds_fromtimestamp_gives(seconds: float) -> None:
    expected = epoch_us(datetime.fromtimestamp(seconds, UTC))
    assert epoch_micros(seconds) == expected and epoch_micros(repr(seconds)) == expected  # number or string


@settings(max_examples=1000, deadline=None)
@given(
    naive=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)),
    offset_min=st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_a_decoded_time_becomes_its_exact_microseconds_and_one_without_offset_is_refused(
    naive: datetime, offset_min: int
) -> None:
    aware = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert micros(aware) == epoch_us(aware) and from_epoch_us(micros(aware)) == aware
    try:
        micros(naive)
    except BadMessage as exc:
        assert exc.kind == "bad_time"
    else:
        raise AssertionError("a time without an offset was accepted")


@settings(max_examples=500, deadline=None)
@given(
    price=st.floats(min_value=1e-8, max_value=1e9),
    size=st.floats(min_value=1e-8, max_value=1e9),
    ms=st.integers(min_value=1, max_value=MAX_TS_US // 1000),
    ident=st.integers(min_value=0, max_value=2**63),
    maker=st.booleans(),
)
def test_a_binance_frame_becomes_the_tick_the_model_makes_of_its_fields(
    price: float, size: float, ms: int, ident: int, maker: bool
) -> None:
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": ident, "p": repr(price), "q": repr(size), "T": ms, "m": maker}
    (tick,) = parsed(BinanceConnector("ws://x", [Pair("BTC", "BTCUSDT", "USDT")], discard), json.dumps({"data": data}))
    fields = {"event_id": f"binance-BTC-{ident}", "produced_at": tick.produced_at, "symbol": "BTC"}
    fields |= {"source": "binance", "ts": EPOCH + timedelta(milliseconds=ms), "price": price, "size": size}
    fields |= {"side": Side.SELL if maker else Side.BUY, "trade_id": str(ident), "quote": "USDT"}
    assert tick == TickEvent.model_validate(fields)
