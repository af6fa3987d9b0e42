"""Quant metrics of a token over a trailing window, and the correlation of several tokens' returns.

Definitions (docs/methodology.md, "Quant metrics", states them the same way): the daily closes dated from
``as_of - window`` to ``as_of`` inclusive, ``as_of`` the token's latest daily close; simple returns between
consecutive existing closes (a missing day makes one return of two days); annualised with √365 (crypto trades
every day), no risk-free rate. Python's ``statistics`` module does the sums (sample statistics, ddof 1).
"""

from __future__ import annotations

import math
import statistics
from datetime import date, timedelta

from pydantic import BaseModel, Field

from tokenpulse_gateway.analytics.series import Daily, Series, max_drawdown, simple_returns

WINDOWS = {"30d": 30, "90d": 90, "365d": 365}
ANNUAL = math.sqrt(365)
MAX_CORRELATED = 20


class InsufficientHistory(ValueError):
    """Fewer returns in the window than :func:`min_returns` asks for (the API answers 422)."""


def min_returns(window_days: int) -> int:
    """Returns a window needs: half of its days, so a young listing or a long gap gives no number."""
    return math.ceil(window_days / 2)


class Quant(BaseModel):
    symbol: str
    window: str
    as_of: date = Field(description="the token's latest daily close")
    start: date = Field(description="first close in the window")
    volatility: float | None = Field(description="sample stdev of daily returns x √365")
    sharpe: float | None = Field(description="mean / stdev of daily returns x √365, risk-free 0")
    sortino: float | None = Field(description="mean / √(mean of min(r, 0)²) x √365")
    max_drawdown: float = Field(description="min over the window of close / running max - 1")
    cagr: float | None = Field(description="(last / first)^(365 / days) - 1")
    beta_btc: float | None = Field(description="cov(r, r_BTC) / var(r_BTC) on the dates both have a return")
    corr_btc: float | None = Field(description="Pearson correlation with BTC's returns on the same dates")
    n: int = Field(description="returns used")
    n_btc: int = Field(description="returns shared with BTC (beta, correlation)")


def window_of(closes: Daily, window: str, as_of: date | None = None) -> Series:
    """The closes dated ``as_of - window`` to ``as_of``, both inclusive (``as_of``: the latest close)."""
    end = as_of or closes.last
    if end is None:
        return []
    return closes.between(end - timedelta(days=WINDOWS[window]), end)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _vs_btc(returns: Series, btc: Series) -> tuple[float | None, float | None, int]:
    """(beta, correlation, n) of ``returns`` against ``btc`` on the dates where both have a return."""
    theirs = dict(btc)
    pairs = [(r, theirs[d]) for d, r in returns if d in theirs]
    if len(pairs) < 2:
        return None, None, len(pairs)
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    return _ratio(statistics.covariance(xs, ys), statistics.variance(ys)), _pearson(xs, ys), len(pairs)


def quant(symbol: str, window: str, closes: Daily, btc: Daily | None) -> Quant:
    """The metrics of ``symbol`` over ``window``; :class:`InsufficientHistory` when the window is too thin."""
    points = window_of(closes, window)
    returns = simple_returns(points)
    needed = min_returns(WINDOWS[window])
    if len(returns) < needed:
        raise InsufficientHistory(
            f"{symbol} has {len(returns)} daily returns in the {window} window to {closes.last or 'now'}; "
            f"the metrics need at least {needed}"
        )
    r = [x for _, x in returns]
    mean, sd = statistics.fmean(r), statistics.stdev(r)
    downside = math.sqrt(statistics.fmean([min(x, 0.0) ** 2 for x in r]))
    (first_day, first), (last_day, last) = points[0], points[-1]
    btc_returns = simple_returns(window_of(btc, window, last_day)) if btc is not None else []
    beta, corr, n_btc = _vs_btc(returns, btc_returns)
    return Quant(
        symbol=symbol,
        window=window,
        as_of=last_day,
        start=first_day,
        volatility=sd * ANNUAL,
        sharpe=None if (s := _ratio(mean, sd)) is None else s * ANNUAL,
        sortino=None if (s := _ratio(mean, downside)) is None else s * ANNUAL,
        max_drawdown=max_drawdown([c for _, c in points]),
        cagr=(last / first) ** (365 / (last_day - first_day).days) - 1,
        beta_btc=beta,
        corr_btc=corr,
        n=len(returns),
        n_btc=n_btc,
    )


class Correlation(BaseModel):
    symbols: list[str]
    window: str
    as_of: date = Field(description="the latest day every token has a close")
    matrix: list[list[float | None]] = Field(description="Pearson correlation of daily returns, in symbols' order")
    n: int = Field(description="common dates: every token has a return on each")


def correlation(symbols: list[str], window: str, closes: dict[str, Daily]) -> Correlation:
    """Pearson correlation of the tokens' daily returns on the dates all of them have a return."""
    ends = [closes[s].last for s in symbols]
    missing = [s for s, e in zip(symbols, ends, strict=True) if e is None]
    if missing:
        raise InsufficientHistory(f"no daily closes for {', '.join(missing)}")
    as_of = min(e for e in ends if e is not None)
    returns = {s: dict(simple_returns(window_of(closes[s], window, as_of))) for s in symbols}
    common = sorted(set.intersection(*(set(r) for r in returns.values())))
    needed = min_returns(WINDOWS[window])
    if len(common) < needed:
        raise InsufficientHistory(
            f"{', '.join(symbols)} share {len(common)} daily returns in the {window} window to {as_of}; "
            f"a correlation needs at least {needed}"
        )
    columns = [[returns[s][d] for d in common] for s in symbols]
    return Correlation(
        symbols=symbols,
        window=window,
        as_of=as_of,
        matrix=[[_pearson(a, b) for b in columns] for a in columns],
        n=len(common),
    )


def _pearson(a: list[float], b: list[float]) -> float | None:
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:  # one of them constant: no correlation is defined
        return None
