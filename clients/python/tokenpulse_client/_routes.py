"""Every REST resource as a :class:`Call` (or a :class:`Listing` of pages): its path, query and answer type.

Each function here has the public signature and documentation of the client method of the same name; both
clients take their methods from here (:mod:`tokenpulse_client._api`), so the sync and async methods cannot
drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from typing_extensions import TypedDict, Unpack

from tokenpulse_client import models as m
from tokenpulse_client._core import Call, Listing, StreamCursor, TextCall, segment

TimeLike = str | date | datetime | None


class CycleQuery(TypedDict, total=False):
    """The optional parameters of ``GET /v1/cycles/btc`` (docs/cycles.md): the model's scenario overrides."""

    as_of: str | date
    basis: str
    confirm_drawdown: float
    start: str | date
    start_price: float
    start_market_cap: float
    previous_length_days: int
    previous_roi: float
    previous_market_roi: float
    bear_length_multiplier: float
    bear_roi_reduction: float
    base_length_multiplier: float
    base_roi_reduction: float
    moon_length_multiplier: float
    moon_roi_reduction: float
    scenario: Sequence[str]


def create_key(name: str, email: str | None = None) -> Call[m.NewKey]:
    """A new free key (``POST /v1/keys``, no key needed); ``.key`` is shown only this once."""
    body = {"name": name, **({"email": email} if email else {})}
    return Call("POST", "/v1/keys", m.NewKey, body=body)


def usage() -> Call[m.Usage]:
    """Your key's tier, limits and use this minute and month."""
    return Call("GET", "/v1/usage", m.Usage)


def tokens(
    limit: int | None = None,
    *,
    sort: m.TokenSort | None = None,
    q: str | None = None,
    min_trader_grade: float | None = None,
    signal: m.Direction | None = None,
) -> Listing[m.Token]:
    """Every tracked token: price (USD), 24 h change (%) and volume (USD), market cap, grades, signal;
    ``sort`` by a field (``-market_cap``: descending), ``q`` in the symbol or name, only tokens graded at
    least ``min_trader_grade`` or with this daily ``signal``."""
    params = {"sort": sort, "q": q, "min_trader_grade": min_trader_grade, "signal": signal}
    return Listing("/v1/tokens", m.Token, params, limit)


def token(symbol: str) -> Call[m.TokenDetail]:
    """One token: its row plus ROI by window (%), key levels and the latest forecasts."""
    return Call("GET", f"/v1/tokens/{segment(symbol)}", m.TokenDetail)


def candles(
    symbol: str, interval: m.Interval = "1d", start: TimeLike = None, end: TimeLike = None, limit: int | None = None
) -> Listing[m.Candle]:
    """OHLCV candles, oldest first; ``start``/``end`` as ISO strings, dates or datetimes (UTC);
    ``limit`` caps the rows (None: every row in the range, over as many pages as it takes)."""
    return Listing(f"/v1/candles/{segment(symbol)}", m.Candle, _series(interval, start, end), limit)


def indicators(
    symbol: str, interval: m.Interval = "1d", start: TimeLike = None, end: TimeLike = None, limit: int | None = None
) -> Listing[m.Indicators]:
    """RSI, MACD, EMAs, SMA200, Bollinger bands and ATR at each closed candle, oldest first."""
    return Listing(f"/v1/indicators/{segment(symbol)}", m.Indicators, _series(interval, start, end), limit)


def _series(interval: str, start: TimeLike, end: TimeLike) -> dict[str, Any]:
    return {"interval": interval, "start": start, "end": end}


def grades(symbol: str, start: TimeLike = None, end: TimeLike = None, limit: int | None = None) -> Listing[m.Grade]:
    """Daily Trader and Investor Grades (0..100) with their components, oldest first."""
    return Listing(f"/v1/grades/{segment(symbol)}", m.Grade, {"start": start, "end": end}, limit)


def signals(
    symbol: str | None = None,
    interval: m.Interval | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    limit: int | None = None,
) -> Listing[m.Signal]:
    """Bullish/bearish signals, oldest first; intraday intervals need a tier with intraday signals."""
    params = {"symbol": symbol, "interval": interval, "start": start, "end": end}
    return Listing("/v1/signals", m.Signal, params, limit)


def levels(symbol: str) -> Call[m.Levels]:
    """Support and resistance levels (USD) from daily swing pivots."""
    return Call("GET", f"/v1/levels/{segment(symbol)}", m.Levels)


def predictions(
    symbol: str, history: bool = False, horizon: str | None = None, limit: int | None = None
) -> Call[m.Predictions]:
    """The latest 1d/7d/30d forecasts with 80% and 95% intervals; ``history=True`` adds up to ``limit``
    past forecasts (of ``horizon``, or every horizon) with the realised close."""
    params = {"history": history or None, "horizon": horizon, "limit": limit}
    return Call("GET", f"/v1/predictions/{segment(symbol)}", m.Predictions, params)


def track_record() -> Call[m.TrackRecord]:
    """The signals' and grades' measured track record on the stored history."""
    return Call("GET", "/v1/track-record", m.TrackRecord)


def cycles_btc(**params: Unpack[CycleQuery]) -> Call[m.Cycles]:
    """Bitcoin halving cycles: past runs, the bear/base/moon projection, its track record, altcoin
    seasons; keyword arguments override the model's parameters (docs/cycles.md)."""
    query: dict[str, Any] = dict(params)
    return Call("GET", "/v1/cycles/btc", m.Cycles, query)


def quant(symbol: str, window: str | None = None) -> Call[m.Quant]:
    """Volatility, Sharpe, Sortino, max drawdown, CAGR, beta and correlation to BTC over ``window``
    (``30d``, ``90d`` or ``365d``; default 90d)."""
    return Call("GET", f"/v1/quant/{segment(symbol)}", m.Quant, {"window": window})


def correlation(symbols: Sequence[str] | str, window: str | None = None) -> Call[m.Correlation]:
    """Pearson correlation of 2 to 20 tokens' daily returns on their common dates."""
    joined = symbols if isinstance(symbols, str) else ",".join(symbols)
    return Call("GET", "/v1/correlation", m.Correlation, {"symbols": joined, "window": window})


def market(history: bool = False, start: TimeLike = None, end: TimeLike = None) -> Call[m.MarketState]:
    """The market state (bullish / neutral / bearish) with its components and track record; ``history=True``
    adds every day's (from ``start`` to ``end``)."""
    return Call("GET", "/v1/market", m.MarketState, {"history": history or None, "start": start, "end": end})


def indices() -> Call[m.Page[m.IndexSummary]]:
    """The rule-based indices with their latest NAV, constituents and statistics (one page holds all)."""
    return Call("GET", "/v1/indices", m.Page[m.IndexSummary])


def index(index_id: str) -> Call[m.IndexDetail]:
    """One index: daily NAV vs BTC and the equal-weight basket, rebalances and weights."""
    return Call("GET", f"/v1/indices/{segment(index_id)}", m.IndexDetail)


def scenarios(symbol: str, targets: Sequence[float] | None = None, price: float | None = None) -> Call[m.Scenarios]:
    """What price targets imply in market cap and share of the market, the cycle projection's targets for
    the token, and with ``price`` what that price requires."""
    joined = None if targets is None else ",".join(repr(float(t)) for t in targets)
    return Call("GET", f"/v1/scenarios/{segment(symbol)}", m.Scenarios, {"targets": joined, "price": price})


def report(symbol: str) -> TextCall:
    """The token's generated research report, as Markdown."""
    return TextCall("GET", f"/v1/reports/{segment(symbol)}", str)


def create_alert(
    symbol: str,
    condition: m.AlertCondition | dict[str, Any],
    channels: Sequence[m.AlertChannel | dict[str, Any]] = (),
    cooldown_s: int | None = None,
    name: str | None = None,
) -> Call[m.AlertRule]:
    """Create an alert rule; with no channels its firings go to the delivery log and the stream only."""
    body: dict[str, Any] = {
        "symbol": symbol,
        "condition": condition.model_dump(exclude_none=True) if isinstance(condition, m.AlertCondition) else condition,
        "channels": [c.model_dump() if isinstance(c, m.AlertChannel) else c for c in channels],
    }
    if cooldown_s is not None:
        body["cooldown_s"] = cooldown_s
    if name is not None:
        body["name"] = name
    return Call("POST", "/v1/alerts", m.AlertRule, body=body)


def alerts(symbol: str | None = None, limit: int | None = None) -> Listing[m.AlertRule]:
    """Your alert rules (of one token, or all)."""
    return Listing("/v1/alerts", m.AlertRule, {"symbol": symbol}, limit)


def alert(rule_id: str) -> Call[m.AlertRule]:
    """One of your alert rules."""
    return Call("GET", f"/v1/alerts/{segment(rule_id)}", m.AlertRule)


def delete_alert(rule_id: str) -> Call[m.AlertDeleted]:
    """Delete one of your alert rules."""
    return Call("DELETE", f"/v1/alerts/{segment(rule_id)}", m.AlertDeleted)


def alert_events(
    rule_id: str | None = None, status: str | None = None, limit: int | None = None
) -> Listing[m.AlertEvent]:
    """Your rules' firings, newest first, each with its deliveries."""
    return Listing("/v1/alerts/events", m.AlertEvent, {"rule_id": rule_id, "status": status}, limit)


def stream(
    symbols: Sequence[str] | str | None = None,
    types: Sequence[str] | str | None = None,
    last_event_id: int | None = None,
    read_timeout_s: float = 60.0,
) -> StreamCursor:
    """Live ``price``, ``signal`` and your ``alert`` events as they happen (an endless iterator).

    A dropped connection, or a stream the server ends, is reopened with ``Last-Event-ID`` so the events
    sent meanwhile arrive from the server's buffer (a ``gap`` event says when some had already left it);
    ``retry.max_reconnects`` failures in a row raise :class:`TransportError`."""

    def joined(v: Sequence[str] | str | None) -> str | None:
        return v if isinstance(v, str) or v is None else ",".join(v)

    params = {k: v for k, v in {"symbols": joined(symbols), "types": joined(types)}.items() if v}
    return StreamCursor(params, last_event_id, read_timeout_s)
