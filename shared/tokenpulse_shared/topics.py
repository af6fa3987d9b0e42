"""The topic registry: every Kafka topic of the public contract and its event model."""

from __future__ import annotations

from dataclasses import dataclass

from tokenpulse_shared.batches import CandleBatch, IndicatorBatch, PriceBatch, RowBatch, TickBatch
from tokenpulse_shared.checkpoints import IngestCheckpoint
from tokenpulse_shared.events import (
    AlertFiredEvent,
    AlertRuleEvent,
    CandleEvent,
    DeadLetterEvent,
    Event,
    GradeEvent,
    IndicatorEvent,
    MarketCapEvent,
    MarketStateEvent,
    MetricsEvent,
    PredictionEvent,
    PriceEvent,
    SignalEvent,
    TickEvent,
    UniverseTokenEvent,
)


@dataclass(frozen=True)
class Topic:
    name: str
    model: type[Event]
    description: str
    compacted: bool = False
    partitions: int = 6
    pairs_with: str | None = None  # a batch topic's v1 topic: same partitions, same token in the same partition
    config: tuple[tuple[str, str], ...] = ()  # topic configs beyond cleanup.policy, set when it is created

    def __str__(self) -> str:
        return self.name

    @property
    def batched(self) -> bool:
        """Its messages are :class:`RowBatch` es: many rows of one partition, sent there without a key."""
        return issubclass(self.model, RowBatch)


TICKS = Topic("tokenpulse.ticks.v1", TickEvent, "A normalised trade/ticker from one source")
PRICES = Topic("tokenpulse.prices.v1", PriceEvent, "The reconciled reference price of a token")
CANDLES = Topic("tokenpulse.candles.v1", CandleEvent, "A candle, emitted when it closes")
TICKS_V2 = Topic(
    "tokenpulse.ticks.v2", TickBatch, "Trades of one partition, in columns (ingest's own feeds)", pairs_with=TICKS.name
)
PRICES_V2 = Topic(
    "tokenpulse.prices.v2", PriceBatch, "Reference prices of one partition's tokens, in columns", pairs_with=PRICES.name
)
CANDLES_V2 = Topic(
    "tokenpulse.candles.v2", CandleBatch, "Candles of one partition, in columns", pairs_with=CANDLES.name
)
MARKETCAPS = Topic(
    "tokenpulse.marketcaps.v1", MarketCapEvent, "Market cap of a token, or of the whole market (symbol null)"
)
INDICATORS = Topic("tokenpulse.indicators.v1", IndicatorEvent, "Technical indicators of a token at a closed candle")
INDICATORS_V2 = Topic(
    "tokenpulse.indicators.v2",
    IndicatorBatch,
    "Indicators of one partition's tokens, in columns",
    pairs_with=INDICATORS.name,
)
METRICS = Topic("tokenpulse.metrics.v1", MetricsEvent, "Fundamental metrics of a token (TVL, staking, ETF flows)")
GRADES = Topic("tokenpulse.grades.v1", GradeEvent, "New Trader/Investor grades of a token")
SIGNALS = Topic("tokenpulse.signals.v1", SignalEvent, "A bullish/bearish signal")
PREDICTIONS = Topic("tokenpulse.predictions.v1", PredictionEvent, "A forecast at a horizon")
ALERT_RULES = Topic(
    "tokenpulse.alert-rules.v1",
    AlertRuleEvent,
    "Alert rule created/changed/deleted (compacted; tombstone on delete)",
    compacted=True,
)
MARKET_STATE = Topic(
    "tokenpulse.market-state.v1",
    MarketStateEvent,
    "The market state (bullish/neutral/bearish, score, breadth) when it changes",
    partitions=1,
)
ALERTS = Topic("tokenpulse.alerts.v1", AlertFiredEvent, "An alert fired, and its deliveries")
UNIVERSE = Topic(
    "tokenpulse.universe.v1",
    UniverseTokenEvent,
    "A token of the tracked universe added/changed/removed (compacted, key = symbol; tombstone on removal)",
    compacted=True,
)
INGEST_CHECKPOINTS = Topic(
    "tokenpulse.ingest-checkpoints.v1",
    IngestCheckpoint,
    "Ingest's state of one ticks partition and the ticks offsets it covers (compacted, key = group/partition/part)",
    compacted=True,
    # segments roll and get compacted within minutes: a restart reads this topic whole, not a day of checkpoints
    config=(("segment.ms", "600000"), ("min.cleanable.dirty.ratio", "0.1")),
)
DEAD_LETTER = Topic("tokenpulse.dead-letter.v1", DeadLetterEvent, "An event no consumer could process")

ALL_TOPICS: tuple[Topic, ...] = (
    TICKS,
    PRICES,
    CANDLES,
    MARKETCAPS,
    INDICATORS,
    METRICS,
    GRADES,
    SIGNALS,
    PREDICTIONS,
    MARKET_STATE,
    ALERT_RULES,
    ALERTS,
    UNIVERSE,
    DEAD_LETTER,
    TICKS_V2,
    PRICES_V2,
    CANDLES_V2,
    INDICATORS_V2,
    INGEST_CHECKPOINTS,
)
BY_NAME: dict[str, Topic] = {t.name: t for t in ALL_TOPICS}

# a v1 topic -> its batch (v2) topic
V2_OF: dict[str, Topic] = {t.pairs_with: t for t in ALL_TOPICS if t.pairs_with}
