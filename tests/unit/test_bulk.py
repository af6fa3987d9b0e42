"""Roll-ups and the first-file-wins merge of the columnar backfill (tokenpulse_ingest.bulk), in memory."""

from __future__ import annotations

import pyarrow as pa
from tokenpulse_ingest.bulk import first_wins, rollup
from tokenpulse_shared.events import Interval

M = 60_000


def minutes(start: int, closes: list[float]) -> dict[str, pa.Array]:
    n = len(closes)
    return {
        "symbol": pa.array(["BTC"] * n), "interval": pa.array(["1m"] * n),
        "ts": pa.array([start + i * M for i in range(n)], pa.int64()), "open": pa.array(closes),
        "high": pa.array([c + 1 for c in closes]), "low": pa.array([c - 1 for c in closes]), "close": pa.array(closes),
        "volume": pa.array([1.0] * n), "trades": pa.array([2] * n, pa.int64()), "source": pa.array(["x"] * n),
    }  # fmt: skip


def test_rollup_takes_first_open_extremes_last_close_and_sums() -> None:
    out = rollup(minutes(0, [10, 12, 8, 11, 9, 20]), Interval.M5, pa.array([], pa.int64()))
    assert out["ts"].to_pylist() == [0, 5 * M]
    assert out["open"].to_pylist() == [10, 20] and out["close"].to_pylist() == [9, 20]
    assert out["high"].to_pylist() == [13, 21] and out["low"].to_pylist() == [7, 19]
    assert out["volume"].to_pylist() == [5.0, 1.0] and out["trades"].to_pylist() == [10, 2]
    assert out["interval"].to_pylist() == ["5m", "5m"]


def test_a_bucket_holding_a_rejected_row_is_not_rolled_up_from_the_rest() -> None:
    out = rollup(minutes(0, [10, 12, 8, 11, 9, 20]), Interval.M5, pa.array([3 * M], pa.int64()))
    assert out["ts"].to_pylist() == [5 * M]


def test_the_earlier_file_wins_a_candle_time() -> None:
    first, second = minutes(0, [1, 2]), minutes(M, [30, 40])
    merged = first_wins([first, second])
    assert merged["ts"].to_pylist() == [0, M, 2 * M] and merged["close"].to_pylist() == [1, 2, 40]
