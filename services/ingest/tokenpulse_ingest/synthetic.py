"""Seeded synthetic live ticks, so embedded mode keeps moving when no exchange is reachable.

Each token follows a geometric random walk started from its last real close,
with the daily volatility measured on its last 90 real daily closes (so DOGE
moves more than BTC), scaled to the tick period. A token without bundled history
(most of a 1,000-token universe) gets a start price, volatility and trade size
drawn from a generator seeded by its symbol (:func:`generated_state`): the same
in every process and every run, shaped by its rank like a real market. Ticks are marked
``source="synthetic"`` (:data:`SYNTHETIC`) everywhere they appear; candles and the reference
price never mix them with live trades (live ones supersede them, see ``candles.py`` and
``prices.py``).
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from tokenpulse_shared.events import Side

SYNTHETIC = "synthetic"  # the ``source`` of every synthetic tick
SyntheticRow = tuple[str, str, int, float, float, Side, str, str]
"""a trade as a row of a ``TickBatch``: symbol, source, ts_us, price, size, side, trade_id, quote"""


@dataclass
class TokenState:
    symbol: str
    price: float
    daily_vol: float
    typical_size: float


def daily_volatility(closes: list[float]) -> float:
    """Standard deviation of daily log returns; 4% when there is too little history."""
    rets = [math.log(b / a) for a, b in itertools.pairwise(closes) if a > 0 and b > 0]
    if len(rets) < 10:
        return 0.04
    mean = sum(rets) / len(rets)
    return math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))


def generated_state(symbol: str, rank: int | None, period_s: float) -> TokenState:
    """A plausible start for a token with no history, the same on every run (seeded by the symbol, not by
    Python's salted ``hash``). The further down the ranking, the smaller the token: prices spread
    log-uniformly over 0.0001-1,000 USD (cheaper ones likelier lower down), daily volatility grows from
    about 3 % at the top to about 12 % at rank 1,000, and the traded value falls with rank as a power
    law (Zipf), from about 2 billion USD a day at rank 1."""
    rng = random.Random(zlib.crc32(symbol.encode()))
    depth = min(max(rank or 500, 1), 1000) / 1000
    price = 10 ** rng.uniform(-4.0, 3.0 - 2.0 * depth)
    daily_vol = (0.03 + 0.09 * depth) * rng.uniform(0.8, 1.25)
    daily_value_usd = 2e9 * max(rank or 500, 1) ** -1.1
    return TokenState(symbol, price, daily_vol, typical_size=max(daily_value_usd / price * period_s / 86400.0, 1e-6))


class SyntheticFeed:
    def __init__(self, states: list[TokenState], *, period_s: float, seed: int) -> None:
        self.states = {s.symbol: s for s in states}
        self.period_s = period_s
        self.rng = random.Random(seed)
        self.seq = 0

    def add(self, state: TokenState) -> None:
        """Follow one more token (a token already followed keeps its walk)."""
        self.states.setdefault(state.symbol, state)

    def remove(self, symbol: str) -> None:
        self.states.pop(symbol, None)

    def rows(self, now_us: int, symbols: Iterable[str]) -> list[SyntheticRow]:
        """One trade of each of ``symbols`` still followed, as rows of a ticks batch (columns in ``TICK_COLUMNS``
        order), every token's walk a step further."""
        out = []
        for symbol in symbols:
            state = self.states.get(symbol)
            if state is not None:
                price, size, side, trade_id = self._trade(state)
                out.append((symbol, SYNTHETIC, now_us, price, size, side, trade_id, "USD"))
        return out

    def _trade(self, state: TokenState) -> tuple[float, float, Side, str]:
        """The token's next step of its walk: price, size, side and trade id."""
        sigma = state.daily_vol * math.sqrt(self.period_s / 86400.0)
        state.price *= math.exp(self.rng.gauss(-0.5 * sigma * sigma, sigma))
        self.seq += 1
        size = state.typical_size * self.rng.lognormvariate(0.0, 1.0)
        side = Side.BUY if self.rng.random() < 0.5 else Side.SELL
        return state.price, size, side, f"syn-{self.seq}"
