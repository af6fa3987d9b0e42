"""What producers and readers of predictions agree on: horizons, nominal levels, minimum history.

The models live in ``tokenpulse_scoring.forecast``; the gateway only reads what they
published, so both sides take these constants from here.
"""

from __future__ import annotations

HORIZONS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
LEVELS: tuple[float, float] = (0.8, 0.95)
# Daily candles a token needs before it gets a forecast: the features look back 90 days and the
# volatility estimate needs a few weeks more. Fewer -> "insufficient history", never a number.
MIN_HISTORY_DAYS = 120
