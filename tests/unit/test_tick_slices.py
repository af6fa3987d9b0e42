"""A ticks batch handled in slices of whole tokens (``token_slices``) gives every token the candles, prices and late
rows the whole batch gives, in the same order per token."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.replay import Columns, select_rows
from tokenpulse_ingest.slices import token_slices
from tokenpulse_ingest.synthetic import SYNTHETIC
from tokenpulse_shared.events import Interval

T0_US = 1_733_356_800_000_000
WALL = T0_US / 1e6 + 30
SYMBOLS = ("BTC", "ETH", "SOL", "DOGE", "USDT")

row = st.tuples(
    st.sampled_from(SYMBOLS),
    st.sampled_from(["binance", "okx", SYNTHETIC]),
    st.integers(-200_000_000, 20_000_000),  # µs around the batch's time: some late, most out of order
    st.floats(0.5, 2.0),
    st.sampled_from(["USD", "USDT"]),
    st.integers(0, 40),  # identity: some trades come twice
)


def handle(builder: CandleBuilder, reconciler: PriceReconciler, columns: Columns, keys: list[str]) -> dict:
    """What the ingest handler makes of one slice: per token, its candles, prices and late trades."""
    out: dict[str, list] = defaultdict(list)
    symbol, source, ts_us, price, size, _side, trade_id, quote = columns
    result = builder.add_rows(symbol, source, ts_us, price, size, keys, WALL)
    late = set(result.late_rows)
    for i in sorted(late):
        out[symbol[i]].append(("late", keys[i]))
    kept = [i for i in range(len(keys)) if i not in late]
    columns, kept_keys = select_rows(columns, keys, kept)
    symbol, source, ts_us, price, size, _side, trade_id, quote = columns
    ids = [(tid or "", key) for tid, key in zip(trade_id, kept_keys, strict=True)]
    for c in result.candles:
        out[c.symbol].append(c.event_id)
    for p in reconciler.update_rows(symbol, source, ts_us, price, size, quote, ids, WALL):
        out[p.symbol].append(p.event_id)
    return out


def per_token(columns: Columns, keys: list[str], parts: list[list[int]]) -> tuple[dict, list]:
    builder, reconciler = CandleBuilder((Interval.M1, Interval.M5)), PriceReconciler(stale_after_s=60)
    seen: dict[str, list] = defaultdict(list)
    for part in parts:
        cols, ks = select_rows(columns, keys, part)
        for token, got in handle(builder, reconciler, cols, ks).items():
            seen[token] += got
    return seen, [c.event_id for c in builder.open_buckets()]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=40), limit=st.integers(1, 8))
def test_slices_of_whole_tokens_give_each_token_what_the_whole_batch_gives(rows: list, limit: int) -> None:
    columns: Columns = [
        [r[0] for r in rows],
        [r[1] for r in rows],
        [T0_US + r[2] for r in rows],
        [r[3] for r in rows],
        [1.0] * len(rows),
        ["buy"] * len(rows),
        [f"id{r[5]}" for r in rows],
        [r[4] for r in rows],
    ]
    keys = [f"{r[1]}:{r[5]}" for r in rows]
    parts = token_slices(columns[0], limit)
    assert sorted(i for part in parts for i in part) == list(range(len(rows)))
    assert per_token(columns, keys, parts) == per_token(columns, keys, [list(range(len(rows)))])


def test_a_slice_holds_every_row_of_its_tokens_and_a_stablecoin_keeps_the_batch_whole() -> None:
    symbols = ["BTC", "ETH", "BTC", "SOL", "DOGE", "ETH", "ADA"]
    assert token_slices(symbols, 3) == [[0, 2, 1, 5], [3, 4, 6]]
    assert token_slices(symbols, 100) == [list(range(7))]
    assert token_slices([*symbols, "USDT"], 3) == [list(range(8))]
