"""The candle builder's close index (``_due``) closes and forgets exactly what a scan of every bucket does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.synthetic import SYNTHETIC
from tokenpulse_shared.events import CandleEvent, Interval

T0_MS = 1_733_356_800_000  # a day boundary, so every interval's buckets start together
SYMBOLS = ("BTC", "ETH", "SOL")


class ScanningBuilder(CandleBuilder):
    """The builder without its index: every close looks at every bucket of the tokens given."""

    def _close(self, symbols: set[str], wall: float) -> list[CandleEvent]:
        self._due.clear()
        return super()._close(symbols, wall)


def ids(candles: list[CandleEvent]) -> list[tuple[str, bool]]:
    return [(c.event_id, c.closed) for c in candles]


# one step: a batch of trades (symbol, seconds after the step's event time, live?, identity: some come again,
# also after their minute was forgotten) or the clock; after a pause of wall time (tenths of a second) and an
# advance of event time (seconds), apart so that tokens go idle
trade = st.tuples(st.sampled_from(SYMBOLS), st.integers(-150, 40), st.booleans(), st.integers(0, 30))
batch = st.one_of(st.none(), st.lists(trade, min_size=1, max_size=6))
step = st.tuples(batch, st.integers(0, 900), st.integers(0, 150))
Step = tuple[list[tuple[str, int, bool, int]] | None, int, int]


def run(builder: CandleBuilder, steps: list[Step]) -> list[object]:
    """What each step emitted, late rows and duplicates included, then the buckets held."""
    seen: list[object] = []
    event_s, wall_s = 0, 0.0
    for trades, pause, advance_s in steps:
        wall_s += pause / 10
        if trades is None:
            seen.append(ids(builder.tick_clock(T0_MS / 1000 + wall_s)))
            continue
        event_s += advance_s
        rows = [(symbol, (T0_MS + 1000 * (event_s + offset)) * 1000, live) for symbol, offset, live, _ in trades]
        keys = [f"t{key}" for *_, key in trades]
        result = builder.add_rows(
            [r[0] for r in rows],
            ["binance" if r[2] else SYNTHETIC for r in rows],
            [r[1] for r in rows],
            [100.0 + i for i in range(len(rows))],
            [1.0] * len(rows),
            keys,
            T0_MS / 1000 + wall_s,
        )
        seen.append((ids(result.candles), result.late_rows, result.duplicates, result.superseded))
    seen.append(ids(builder.open_buckets()))
    return seen


# a minute closed and forgotten by the idle clock while its trade keys stay (they go by the watermark); a trade
# then takes the watermark past them without a new bucket, and one of those trades comes again, twice: the scan
# finds it late each time (not a duplicate)
FORGOTTEN_KEYS: list[Step] = [
    ([("BTC", 1, True, 1)], 0, 0),
    (None, 2000, 0),
    ([("BTC", 121, True, 3)], 10, 0),
    ([("BTC", 123, True, 4)], 10, 0),
    ([("BTC", 2, True, 1)], 10, 0),
    ([("BTC", 124, True, 5)], 10, 0),
    ([("BTC", 2, True, 1)], 10, 0),
]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=60))
@example(steps=FORGOTTEN_KEYS)
def test_the_close_index_emits_what_a_scan_of_every_bucket_emits(steps: list[Step]) -> None:
    intervals = (Interval.M1, Interval.M5, Interval.H1)
    indexed = CandleBuilder(intervals, lateness_ms=2_000, idle_close_s=5.0)
    scanning = ScanningBuilder(intervals, lateness_ms=2_000, idle_close_s=5.0)
    assert run(indexed, steps) == run(scanning, steps)


def test_a_token_with_nothing_due_is_not_scanned() -> None:
    builder = CandleBuilder((Interval.M1,), lateness_ms=2_000, idle_close_s=5.0)
    wall = T0_MS / 1000
    builder.add_rows(["BTC"], ["binance"], [(T0_MS + 1_000) * 1000], [1.0], [1.0], ["a"], wall)
    buckets = builder._buckets["BTC"]
    assert builder._due["BTC"] == (buckets, T0_MS + 62_000, T0_MS + 60_000)
    # a later trade in the same minute: the bucket is not due, so the close leaves it alone
    builder.add_rows(["BTC"], ["binance"], [(T0_MS + 30_000) * 1000], [2.0], [1.0], ["b"], wall + 1)
    assert builder._due["BTC"][1:] == (T0_MS + 62_000, T0_MS + 60_000)
    # the watermark passes the minute's end plus lateness: closed, then due when it may be forgotten
    closed = builder.add_rows(["BTC"], ["binance"], [(T0_MS + 62_000) * 1000], [3.0], [1.0], ["c"], wall + 2)
    assert [(c.ts.timestamp() * 1000, c.trades) for c in closed.candles] == [(T0_MS, 2)]
