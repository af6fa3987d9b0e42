"""Typed answers of the Tokenpulse API (pydantic models), one per REST resource.

Written by hand and checked against the gateway: ``tests/clients/test_openapi_drift.py`` parses every
OpenAPI example with these models and fails on a field either side does not know, and the
integration tests do the same with the real server's answers. Unknown fields are kept (``extra="allow"``,
readable as attributes) rather than refused, so a server that adds a field does not break an older client;
a nullable field may also be absent (``None``), as FastAPI leaves nulls out of the OpenAPI examples.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Day = date  # a calendar day; an alias so a field may be called `date`
Direction = Literal["bullish", "bearish"]
TokenSort = Literal[
    "symbol", "-symbol", "market_cap", "-market_cap", "volume_24h", "-volume_24h", "change_24h", "-change_24h",
    "trader_grade", "-trader_grade", "investor_grade", "-investor_grade",
]  # fmt: skip


class ApiModel(BaseModel):
    """Base of every answer: immutable, tolerant of fields added by a newer server."""

    model_config = ConfigDict(extra="allow", frozen=True)


T = TypeVar("T", bound=ApiModel)


class Page(ApiModel, Generic[T]):
    """One page of a list answer; :class:`~tokenpulse_client.pagination.Pages` walks them for you."""

    data: list[T]
    next_cursor: str | None = None


# ---------------------------------------------------------------------------------------------- keys


class Tier(ApiModel):
    name: str
    per_minute: int
    per_month: int
    max_alert_rules: int
    intraday: bool
    max_streams: int


class NewKey(ApiModel):
    """``POST /v1/keys``: the key itself is shown only here, once."""

    key: str
    key_id: str
    tier: str
    limits: Tier
    note: str


class UsageWindow(ApiModel):
    limit: int
    used: int
    remaining: int
    reset_s: int = Field(description="seconds until the window has room again")


class Usage(ApiModel):
    key_id: str
    name: str
    tier: Tier
    usage: dict[str, UsageWindow] = Field(description="'minute' and 'month'")
    shared: bool = Field(description="limits counted in Redis, shared by every gateway replica")


# -------------------------------------------------------------------------------------------- tokens


class TokenSignal(ApiModel):
    direction: Direction
    strength: float
    ts: datetime


class Token(ApiModel):
    """A row of ``GET /v1/tokens``: prices in USD, changes in percent, grades 0..100."""

    symbol: str
    name: str
    price: float | None = None
    sources: list[str]
    stale: bool | None = None
    change_24h: float | None = Field(None, description="percent")
    volume_24h: float | None = Field(None, description="USD")
    market_cap: float | None = Field(None, description="USD")
    trader_grade: float | None = None
    investor_grade: float | None = None
    signal: TokenSignal | None = None
    updated_at: datetime | None = None


class Level(ApiModel):
    price: float
    touches: int
    last_touch: Day
    strength: float = Field(description="0..1")


class TokenLevels(ApiModel):
    support: list[Level]
    resistance: list[Level]
    key_support: Level | None = None
    breakout_level: Level | None = None


class Levels(TokenLevels):
    """``GET /v1/levels/{symbol}``: support and resistance from daily swing pivots."""

    symbol: str
    price: float | None = None
    as_of: Day | None = None
    method: dict[str, Any]


class Backtest(ApiModel):
    mase: float | None = None
    coverage: float | None = None
    coverage_95: float | None = None
    n: int | None = None


class Forecast(ApiModel):
    """A forecast at one horizon: point, 80% (``lower``/``upper``) and 95% intervals, in USD."""

    horizon: Literal["1d", "7d", "30d"]
    made_at: datetime
    target_ts: datetime
    point: float
    lower: float
    upper: float
    interval: float
    lower_95: float | None = None
    upper_95: float | None = None
    model: str
    kind: str
    backtest: Backtest


class TokenDetail(Token):
    """``GET /v1/tokens/{symbol}``: the row plus ROI (percent by window), key levels and forecasts."""

    roi: dict[str, float | None] = Field(description="percent over '24h', '7d', '30d', '1y'")
    levels: TokenLevels
    predictions: list[Forecast]


# ------------------------------------------------------------------------------------------- history


class Candle(ApiModel):
    """OHLCV in USD; ``ts`` is the candle's open time."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class Indicators(ApiModel):
    """Indicators at a closed candle (TA-Lib conventions); ``None`` while warming up."""

    ts: datetime
    rsi_14: float | None = None
    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    ema_20: float | None = None
    ema_50: float | None = None
    sma_200: float | None = None
    bb_upper: float | None = None
    bb_middle: float | None = None
    bb_lower: float | None = None
    atr_14: float | None = None


class Grade(ApiModel):
    ts: datetime
    trader_grade: float | None = None
    investor_grade: float | None = None
    components: dict[str, float | None]
    method: str


class Signal(ApiModel):
    ts: datetime
    symbol: str
    interval: Interval
    direction: Direction
    strength: float
    reasons: list[str]


# ----------------------------------------------------------------------------------------- analytics


class PastForecast(ApiModel):
    """A forecast made earlier, with the close it tried to predict (``None`` until known)."""

    horizon: Literal["1d", "7d", "30d"]
    made_at: datetime
    target_ts: datetime
    point: float
    lower: float
    upper: float
    interval: float
    lower_95: float | None = None
    upper_95: float | None = None
    model: str
    kind: str
    realised: float | None = None
    inside_80: bool | None = None
    inside_95: bool | None = None


class Predictions(ApiModel):
    """``GET /v1/predictions/{symbol}``: ``status`` is ``ok``, or ``pending`` (with a ``message``)."""

    symbol: str
    status: Literal["ok", "pending"]
    horizons: list[Forecast]
    message: str | None = None
    history: list[PastForecast] | None = None


class HalvingRun(ApiModel):
    number: int
    date: Day
    height: int
    price: float | None = None
    peak_date: Day | None = None
    peak_price: float | None = None
    multiple: float | None = None
    days_to_peak: int | None = None
    confirmed: bool
    bottom_date: Day | None = None
    bottom_price: float | None = None
    bottom_to_peak_days: int | None = None
    bottom_to_peak_multiple: float | None = None
    market_cap_at_halving: float | None = None
    peak_market_cap: float | None = None
    peak_market_cap_date: Day | None = None
    market_multiple: float | None = None
    window_end: Day


class Scenario(ApiModel):
    name: str
    length_multiplier: float
    roi_reduction: float
    length_days: int
    roi: float
    end_date: Day
    btc_price_target: float
    total_market_cap_target: float | None = None


class Projection(ApiModel):
    start: Day
    basis: Literal["halving", "bottom"]
    start_price: float
    start_market_cap: float | None = None
    previous_run: int
    previous_length_days: int
    previous_roi: float
    previous_market_roi: float | None = None
    scenarios: list[Scenario]


class ScenarioOutcome(ApiModel):
    name: str
    end_date: Day
    btc_price_target: float
    total_market_cap_target: float | None = None
    days_error: int
    price_error_pct: float
    market_cap_error_pct: float | None = None


class CycleTrackRecord(ApiModel):
    made_at: Day
    run: int
    actual_peak_date: Day
    actual_peak_price: float
    actual_peak_market_cap: float | None = None
    actual_peak_confirmed: bool
    scenarios: list[ScenarioOutcome]


class AltcoinRun(ApiModel):
    symbol: str
    multiple: float
    relative_to_btc: float
    outperformed_btc: bool


class AltcoinSeason(ApiModel):
    run: int
    start: Day
    end: Day
    btc_multiple: float
    altcoins: list[AltcoinRun]
    not_covered: list[str]


class Cycles(ApiModel):
    """``GET /v1/cycles/btc``: halving runs, the current run's projection, its track record."""

    as_of: Day
    parameters: dict[str, Any]
    halvings: list[HalvingRun]
    projection: Projection | None = None
    track_record: list[CycleTrackRecord]
    altcoin_season: list[AltcoinSeason]
    notes: list[str]


class SignalRecord(ApiModel):
    symbol: str
    interval: str
    horizon_bars: int
    signals: int
    hit_rate: float | None = None
    strategy_return: float
    buy_and_hold_return: float
    max_drawdown: float
    sharpe: float | None = None
    buy_and_hold_sharpe: float | None = None
    turnover_per_year: float
    days: int
    strategy_return_after_costs: float


class GradeIC(ApiModel):
    grade: str
    horizon_days: int
    mean_ic: float | None = None
    ic_sd: float | None = None
    days: int
    t_stat: float | None = None


class TrackRecord(ApiModel):
    """``GET /v1/track-record``: the signals and grades measured on the stored history."""

    horizon_days: int
    signals: list[SignalRecord]
    signals_overall: dict[str, float | None]
    grades: list[GradeIC]
    intraday: list[SignalRecord]


# ------------------------------------------------------------------------------------ market analytics


class Quant(ApiModel):
    """``GET /v1/quant/{symbol}``: risk and return over a trailing window (docs/methodology.md, Quant metrics)."""

    symbol: str
    window: str
    as_of: Day
    start: Day
    volatility: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    max_drawdown: float
    cagr: float | None = None
    beta_btc: float | None = None
    corr_btc: float | None = None
    n: int
    n_btc: int


class Correlation(ApiModel):
    """``GET /v1/correlation``: Pearson correlation of daily returns on common dates, in ``symbols``' order."""

    symbols: list[str]
    window: str
    as_of: Day
    matrix: list[list[float | None]]
    n: int


class StateRecord(ApiModel):
    state: str
    days: int
    mean_forward_return: float | None = None
    median_forward_return: float | None = None
    share_positive: float | None = None


class MarketDay(ApiModel):
    date: Day
    state: str | None = None
    score: float | None = None
    breadth: float | None = None
    total_market_cap: float | None = None
    btc_dominance: float | None = None


class MarketState(ApiModel):
    """``GET /v1/market``: bullish / neutral / bearish, its score, components and track record."""

    state: str | None = None
    score: float | None = None
    as_of: Day
    breadth: float | None = None
    components: dict[str, float | None]
    tracked_market_cap: float | None = None
    tokens: list[str]
    total_market_cap: float | None = None
    total_market_cap_date: Day | None = None
    btc_dominance: float | None = None
    track_record: list[StateRecord]
    method: dict[str, float]
    history: list[MarketDay] | None = Field(None, description="only with history=True")


class Constituent(ApiModel):
    symbol: str
    weight: float


class IndexStats(ApiModel):
    total_return: float
    cagr: float | None = None
    volatility: float | None = None
    max_drawdown: float


class Rebalance(ApiModel):
    date: Day
    constituents: list[Constituent]
    cost: float


class IndexPoint(ApiModel):
    date: Day
    nav: float
    btc: float | None = None
    equal_weight: float


class IndexSummary(ApiModel):
    """An index of ``GET /v1/indices``: its rules, latest NAV, constituents and statistics."""

    id: str
    name: str
    rules: str
    rebalance: str
    cost_per_unit_traded: float
    start: Day | None = None
    as_of: Day | None = None
    nav: float | None = None
    constituents: list[Constituent]
    stats: dict[str, IndexStats]


class IndexDetail(IndexSummary):
    """``GET /v1/indices/{id}``: the above with the NAV history and every rebalance."""

    history: list[IndexPoint]
    rebalances: list[Rebalance]


class ScenarioToday(ApiModel):
    as_of: Day
    price: float
    circulating_supply: float
    supply_as_of: Day
    market_cap: float
    total_market_cap: float | None = None
    total_market_cap_date: Day | None = None
    share_of_total: float | None = None


class PriceScenario(ApiModel):
    price: float
    market_cap: float
    share_of_total: float | None = None
    multiple: float


class CycleScenario(ApiModel):
    name: str
    end_date: Day
    total_market_cap_target: float
    market_cap: float
    price: float
    multiple: float


class Requirement(ApiModel):
    price: float
    market_cap: float
    multiple: float
    total_market_cap_at_current_share: float | None = None
    share_of_current_total: float | None = None


class Scenarios(ApiModel):
    """``GET /v1/scenarios/{symbol}``: price targets and cycle targets in market cap, and the reverse."""

    symbol: str
    today: ScenarioToday
    scenarios: list[PriceScenario]
    cycle: list[CycleScenario]
    requirement: Requirement | None = Field(None, description="only with price=")
    notes: list[str]


# -------------------------------------------------------------------------------------------- alerts


class AlertChannel(ApiModel):
    type: Literal["email", "telegram", "discord", "slack", "webhook"]
    target: str


class AlertCondition(BaseModel):
    """A rule's condition: one check, or ``all``/``any`` of nested ones (syntax: docs/alerts.md).

    ``AlertCondition(kind="price_above", value=100_000)``; the server validates the combination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[
        "price_above",
        "price_below",
        "change_above",
        "change_below",
        "trader_grade_above",
        "trader_grade_below",
        "investor_grade_above",
        "investor_grade_below",
        "grade_change",
        "signal",
        "all",
        "any",
    ]
    value: float | None = None
    window: Literal["5m", "15m", "1h", "4h", "24h"] | None = None
    grade: Literal["trader", "investor"] | None = None
    direction: Literal["bullish", "bearish", "any"] | None = None
    all: list[AlertCondition] | None = None
    any: list[AlertCondition] | None = None


class AlertRule(ApiModel):
    """One of your rules. A stored rule that cannot be read back has ``readable=False`` and an ``error``."""

    id: str
    symbol: str
    created_at: datetime
    readable: bool
    name: str | None = None
    condition: dict[str, Any] | None = None
    description: str | None = None
    channels: list[AlertChannel] | None = None
    cooldown_s: int | None = None
    error: str | None = None
    webhook_secret: str | None = Field(None, description="only when the rule is created with a webhook channel")


class AlertDeleted(ApiModel):
    id: str
    deleted: bool


class Delivery(ApiModel):
    channel: str
    target: str
    status: str
    attempts: int
    error: str | None = None
    at: datetime | None = None
    summary: bool


class AlertEvent(ApiModel):
    """A firing of one of your rules, with its deliveries."""

    id: str
    rule_id: str
    symbol: str
    ts: datetime
    price: float | None = None
    message: str
    status: str
    deliveries: list[Delivery]


# -------------------------------------------------------------------------------------------- stream


class StreamEvent(ApiModel):
    """One server-sent event: ``event`` is ``price``, ``signal``, ``alert`` or ``gap``; ``data`` its JSON."""

    id: int | None = None
    event: str
    data: dict[str, Any]
