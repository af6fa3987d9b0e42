"""A retrain in its own process: ``python -m tokenpulse_scoring.forecast.retrain INPUT ROOT``.

INPUT (a file, or ``-`` for stdin) is a pickle of
``{"bars": {symbol: [(ts_ms, high, low, close, volume), ...]}, "config": WalkConfig | None}``
written by the scoring service; the new registry version is written under ROOT and its name
printed. Running it apart keeps minutes of model fitting off the service's event loop (and its
GIL), and lets the service stop at once by killing it.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from tokenpulse_shared.predictions import MIN_HISTORY_DAYS

from tokenpulse_scoring.forecast.core import make_series
from tokenpulse_scoring.forecast.registry import train


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tokenpulse_scoring.forecast.retrain INPUT ROOT", file=sys.stderr)
        return 2
    if argv[0] == "-":
        job = pickle.load(sys.stdin.buffer)  # written by the scoring service for this run
    else:
        with open(argv[0], "rb") as fh:
            job = pickle.load(fh)
    series = [make_series(sym, bars) for sym, bars in job["bars"].items() if len(bars) >= MIN_HISTORY_DAYS]
    if not series:
        print(f"no token has {MIN_HISTORY_DAYS} daily candles yet", file=sys.stderr)
        return 3
    version, _ = train(series, Path(argv[1]), job.get("config"))
    print(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
