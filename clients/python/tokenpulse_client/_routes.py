"""Every REST resource as a :class:`Call`: its path, query and answer type. Both clients build their
requests here, so the sync and async methods cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from typing_extensions import TypedDict

from tokenpulse_client import models as m
from tokenpulse_client._core import Call, TextCall, segment

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


def create_key(name: str, email: str | None) -> Call[m.NewKey]:
    body = {"name": name, **({"email": email} if email else {})}
    return Call("POST", "/v1/keys", m.NewKey, body=body)


def usage() -> Call[m.Usage]:
    return Call("GET", "/v1/usage", m.Usage)


def tokens(
    sort: m.TokenSort | None = None,
    q: str | None = None,
    min_trader_grade: float | None = None,
    signal: m.Direction | None = None,
) -> Call[m.Page[m.Token]]:
    params = {"sort": sort, "q": q, "min_trader_grade": min_trader_grade, "signal": signal}
    return Call("GET", "/v1/tokens", m.Page[m.Token], params)


def token(symbol: str) -> Call[m.TokenDetail]:
    return Call("GET", f"/v1/tokens/{segment(symbol)}", m.TokenDetail)


def candles(symbol: str, interval: str, start: TimeLike, end: TimeLike) -> Call[m.Page[m.Candle]]:
    params = {"interval": interval, "start": start, "end": end}
    return Call("GET", f"/v1/candles/{segment(symbol)}", m.Page[m.Candle], params)


def indicators(symbol: str, interval: str, start: TimeLike, end: TimeLike) -> Call[m.Page[m.Indicators]]:
    params = {"interval": interval, "start": start, "end": end}
    return Call("GET", f"/v1/indicators/{segment(symbol)}", m.Page[m.Indicators], params)


def grades(symbol: str, start: TimeLike, end: TimeLike) -> Call[m.Page[m.Grade]]:
    return Call("GET", f"/v1/grades/{segment(symbol)}", m.Page[m.Grade], {"start": start, "end": end})


def signals(symbol: str | None, interval: str | None, start: TimeLike, end: TimeLike) -> Call[m.Page[m.Signal]]:
    params = {"symbol": symbol, "interval": interval, "start": start, "end": end}
    return Call("GET", "/v1/signals", m.Page[m.Signal], params)


def levels(symbol: str) -> Call[m.Levels]:
    return Call("GET", f"/v1/levels/{segment(symbol)}", m.Levels)


def predictions(symbol: str, history: bool, horizon: str | None, limit: int | None) -> Call[m.Predictions]:
    params = {"history": history or None, "horizon": horizon, "limit": limit}
    return Call("GET", f"/v1/predictions/{segment(symbol)}", m.Predictions, params)


def track_record() -> Call[m.TrackRecord]:
    return Call("GET", "/v1/track-record", m.TrackRecord)


def cycles_btc(params: CycleQuery) -> Call[m.Cycles]:
    query: dict[str, Any] = dict(params)
    return Call("GET", "/v1/cycles/btc", m.Cycles, query)


def quant(symbol: str, window: str | None) -> Call[m.Quant]:
    return Call("GET", f"/v1/quant/{segment(symbol)}", m.Quant, {"window": window})


def correlation(symbols: Sequence[str] | str, window: str | None) -> Call[m.Correlation]:
    joined = symbols if isinstance(symbols, str) else ",".join(symbols)
    return Call("GET", "/v1/correlation", m.Correlation, {"symbols": joined, "window": window})


def market(history: bool, start: TimeLike, end: TimeLike) -> Call[m.MarketState]:
    return Call("GET", "/v1/market", m.MarketState, {"history": history or None, "start": start, "end": end})


def indices() -> Call[m.Page[m.IndexSummary]]:
    return Call("GET", "/v1/indices", m.Page[m.IndexSummary])


def index(index_id: str) -> Call[m.IndexDetail]:
    return Call("GET", f"/v1/indices/{segment(index_id)}", m.IndexDetail)


def scenarios(symbol: str, targets: Sequence[float] | None, price: float | None) -> Call[m.Scenarios]:
    joined = None if targets is None else ",".join(repr(float(t)) for t in targets)
    return Call("GET", f"/v1/scenarios/{segment(symbol)}", m.Scenarios, {"targets": joined, "price": price})


def report(symbol: str) -> TextCall:
    return TextCall("GET", f"/v1/reports/{segment(symbol)}", str)


def create_alert(
    symbol: str,
    condition: m.AlertCondition | dict[str, Any],
    channels: Sequence[m.AlertChannel | dict[str, Any]],
    cooldown_s: int | None,
    name: str | None,
) -> Call[m.AlertRule]:
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


def alerts(symbol: str | None) -> Call[m.Page[m.AlertRule]]:
    return Call("GET", "/v1/alerts", m.Page[m.AlertRule], {"symbol": symbol})


def alert(rule_id: str) -> Call[m.AlertRule]:
    return Call("GET", f"/v1/alerts/{segment(rule_id)}", m.AlertRule)


def delete_alert(rule_id: str) -> Call[m.AlertDeleted]:
    return Call("DELETE", f"/v1/alerts/{segment(rule_id)}", m.AlertDeleted)


def alert_events(rule_id: str | None, status: str | None) -> Call[m.Page[m.AlertEvent]]:
    return Call("GET", "/v1/alerts/events", m.Page[m.AlertEvent], {"rule_id": rule_id, "status": status})


def stream_params(symbols: Sequence[str] | str | None, types: Sequence[str] | str | None) -> dict[str, str]:
    def joined(v: Sequence[str] | str | None) -> str | None:
        return v if isinstance(v, str) or v is None else ",".join(v)

    return {k: v for k, v in {"symbols": joined(symbols), "types": joined(types)}.items() if v}
