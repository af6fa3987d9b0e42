"""The vectorised candle validation (tokenpulse_ingest.columnar) accepts exactly the rows the pydantic
CandleEvent model accepts: hypothesis generates rows with edge values (NaN, inf, 0, negatives, high < low,
huge integers, bad symbols, text in numeric columns) and the verdicts must agree row by row."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from tokenpulse_ingest.columnar import INPUT, MAX_MS, MIN_MS, NUMBERS, Rejects, split, validate
from tokenpulse_shared.events import CandleEvent, Interval

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT = TypeAdapter(int)
ALIGNED = [1_733_011_200_000, 1_733_011_260_000, 1_733_014_800_000, 0, -86_400_000]


def model_accepts(row: dict[str, Any]) -> bool:
    """The model's verdict on a row, ts given as epoch ms (text or a number) as the columnar input has it."""
    try:
        ts = EPOCH + timedelta(milliseconds=_INT.validate_python(row["ts"]))
    except (ValidationError, OverflowError):
        return False
    fields = {k: v for k, v in row.items() if k != "ts"}
    try:
        CandleEvent(event_id="hist-row-0000", ts=ts, **fields)
    except ValidationError:
        return False
    return True


def assert_same_verdicts(rows: list[dict[str, Any]], types: dict[str, pa.DataType]) -> None:
    differ = [(r, v) for r, v in zip(rows, verdicts(rows, types), strict=True) if v != model_accepts(r)]
    assert differ == [], f"(row, vectorised verdict) where the model disagrees: {differ}"


def verdicts(rows: list[dict[str, Any]], types: dict[str, pa.DataType]) -> list[bool]:
    table = pa.table({name: pa.array([r[name] for r in rows], types.get(name, pa.string())) for name in INPUT})
    _, reason = validate(table)
    return [r is None for r in reason.to_pylist()]


symbols = st.one_of(
    st.sampled_from(["BTC", "ETH", "X", "A" * 15, "1INCH"]),
    st.sampled_from(["btc", "", "A" * 16, "BTC-USD", "BTC\n", " ETH", "ÉTH"]),
    st.text(max_size=17),
)
intervals_valid = st.sampled_from([i.value for i in Interval])
sources = st.one_of(st.sampled_from(["", "x" * 64, "x" * 65, "é" * 64, "é" * 65]), st.text(max_size=70))
EDGE_MS = [MIN_MS, MAX_MS, MIN_MS - 1, MAX_MS + 1, MAX_MS - MAX_MS % 86_400_000, MIN_MS - MIN_MS % 86_400_000]
intervals = st.one_of(st.sampled_from([i.value for i in Interval]), st.sampled_from(["2m", "1M", "", "1d "]))
edge_floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-300, 5e-324, 1.7e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.5, max_value=2.0),
)
number_texts = st.one_of(
    edge_floats.map(repr),
    st.sampled_from(["", " ", "abc", " 2.5 ", "1e5", "1e", ".5", "5.", "+1", "nan", "-inf", "NaN", "iNf", "Infinity",
                     "0x10", "1,5", "1.5.2", "\t3\n", "1e400", "-0", "\u0661", "+-1", "--1"]),
    st.text(alphabet="0123456789.-+eE naif\t", max_size=8),
)  # fmt: skip
int_texts = st.one_of(
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1).map(str),  # beyond: the documented difference
    st.sampled_from(
        [
            "",
            "5.0",
            "5.00",
            "-0.0",
            " 5.0 ",
            "5.5",
            " 7 ",
            "+5",
            "-0",
            "1e3",
            "0005",
            "abc",
            "5.",
            "1" * 19,
            "0" * 20 + "7",
            "9223372036854775807",
            "5.0e0",
            "5 .0",
            "+-5",
            "-+5",
            "++5",
        ]
    ),
    st.text(alphabet="0123456789.-+ ", max_size=8),
)
ts_texts = st.one_of(
    st.sampled_from(ALIGNED).map(str),
    st.integers(min_value=MIN_MS - 10, max_value=MAX_MS + 10).map(str),
    st.sampled_from([str(v) for v in EDGE_MS] + [str(2**63), str(2**64), "x", "", "60000.0", "1733011260001"]),
    int_texts,
)


def spoilt(draw: st.DrawFn, row: dict[str, Any], odd: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """The row with none, one or two of its fields replaced by an odd value (most rows stay close to valid,
    so every rule, not only the first one a random row breaks, decides some verdicts)."""
    names = draw(st.lists(st.sampled_from(sorted(odd)), max_size=2, unique=True))
    return {**row, **{name: draw(odd[name]) for name in names}}


@st.composite
def text_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A CSV-like row: every cell text."""
    base = draw(st.floats(min_value=0.01, max_value=1e6))
    spread = draw(st.sampled_from([0.0, 0.01, 0.5]))
    ts = draw(st.sampled_from(ALIGNED))
    row = {
        "symbol": "BTC", "interval": draw(intervals_valid), "ts": str(ts), "open": repr(base),
        "high": repr(base * (1 + spread)), "low": repr(base * (1 - spread)), "close": repr(base), "volume": "1.5",
        "trades": "3", "source": "binance",
    }  # fmt: skip
    odd = {name: number_texts for name in NUMBERS} | {
        "symbol": symbols,
        "interval": intervals,
        "ts": ts_texts,
        "trades": int_texts,
        "source": sources,
    }
    return spoilt(draw, row, odd)


@st.composite
def typed_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row as the REST path has it: numbers as floats and ints (NaN, inf, huge, negative)."""
    base = draw(st.floats(min_value=1e-6, max_value=1e9))
    row = {
        "symbol": "ETH", "interval": draw(intervals_valid), "ts": draw(st.sampled_from(ALIGNED)), "open": base,
        "high": base * 2, "low": base / 2, "close": base, "volume": 0.0, "trades": 0, "source": "",
    }  # fmt: skip
    odd = {name: edge_floats for name in NUMBERS} | {
        "symbol": symbols, "interval": intervals, "source": sources,
        "ts": st.one_of(st.integers(min_value=MIN_MS - 5, max_value=MAX_MS + 5), st.sampled_from(EDGE_MS)),
        "trades": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.sampled_from([-1, 0, 2**31])),
    }  # fmt: skip
    return spoilt(draw, row, odd)


TYPED = {"ts": pa.int64(), "open": pa.float64(), "high": pa.float64(), "low": pa.float64(), "close": pa.float64()}
TYPED |= {"volume": pa.float64(), "trades": pa.int64()}
VALID_ROW = {
    "symbol": "BTC", "interval": "1m", "ts": "1733011200000", "open": "1", "high": "2", "low": "0.5", "close": "1.5",
    "volume": "3", "trades": "4", "source": "binance",
}  # fmt: skip
TYPED_ROW = {**VALID_ROW, "ts": 1_733_011_200_000, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}
TYPED_ROW["trades"] = 4


EDGES: dict[str, list[Any]] = {name: ["0", "-0.0", "-1", "nan", "inf", "-inf", "abc", "", "1e400"] for name in NUMBERS}
EDGES |= {"symbol": ["btc", "", "A" * 16], "interval": ["2m", ""], "source": ["x" * 65, "é" * 65, "x" * 64]}
EDGES |= {"ts": ["1733011260001", str(MAX_MS + 1), "", "x", "1733011200000.5"], "trades": ["-1", "5.5", "", "x"]}
ONE_ODD_FIELD = [{**VALID_ROW, name: value} for name, values in EDGES.items() for value in values]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(text_rows(), min_size=1, max_size=25))
@example(rows=[VALID_ROW, {**VALID_ROW, "trades": "5.0"}, {**VALID_ROW, "open": " 1.0 ", "high": "10"}])
@example(rows=ONE_ODD_FIELD)
def test_text_cells_get_the_models_verdict(rows: list[dict[str, Any]]) -> None:
    assert_same_verdicts(rows, {})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(typed_rows(), min_size=1, max_size=25))
@example(rows=[{**TYPED_ROW, name: value} for name in NUMBERS for value in (0.0, -0.0, -1.0, math.nan, math.inf)])
def test_typed_cells_get_the_models_verdict(rows: list[dict[str, Any]]) -> None:
    assert_same_verdicts(rows, TYPED)


def test_rejected_rows_are_counted_with_their_reason_and_kept_as_examples() -> None:
    rows = [VALID_ROW, {**VALID_ROW, "high": "0.1"}, {**VALID_ROW, "close": "abc"}, {**VALID_ROW, "symbol": "btc"}]
    rejects = Rejects()
    cols = split(pa.table({name: [r[name] for r in rows] for name in INPUT}), rejects)
    assert len(cols["ts"]) == 1 and rejects.count == 3
    assert rejects.reasons == {
        "high must be >= open, close and low": 1,
        "close: missing, not a number, not finite or not > 0": 1,
        "symbol: not an upper-case symbol": 1,
    }
    assert rejects.examples[0]["reason"] == "high must be >= open, close and low"
    assert rejects.examples[1]["close"] == "abc"  # the row as it was read


def test_digit_group_underscores_are_refused_where_pydantic_takes_them() -> None:
    """The one documented difference: CSV exports never write 1_000, and pydantic's rules for it are odd."""
    row = {**VALID_ROW, "volume": "1_000"}
    assert model_accepts(row) and verdicts([row], {}) == [False]


def test_integers_beyond_int64_are_refused_where_pydantic_takes_them() -> None:
    """A trade count of 2^63 or more: Python's int holds it, an Arrow int64 column cannot (nor the store's UInt32)."""
    row = {**VALID_ROW, "trades": str(2**63)}
    assert model_accepts(row) and verdicts([row], {}) == [False]
    assert verdicts([{**VALID_ROW, "trades": str(2**63 - 1)}], {}) == [True]
