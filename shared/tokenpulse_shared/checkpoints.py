"""The contract of ``tokenpulse.ingest-checkpoints.v1``: a checkpoint of one ingest ticks partition's state.

Ingest holds the open candles of the tokens of its ticks partitions in memory. Every
``TOKENPULSE_INGEST_CHECKPOINT_INTERVAL_S`` each replica writes, per partition it owns, that partition's state
right after a batch's candles were published and its offsets committed: the open (and recently published)
candles of every interval, the version floors of candles it may still reopen, the trade ids of the last minutes
it counted (the duplicates filter), the reference prices' per-source quotes, and the ticks offsets (``ticks.v1``
and ``ticks.v2``) this state is exactly the result of. A restart or takeover loads it and replays only the ticks
after those offsets (docs/operations.md, "Ingest's open candles across a restart").

A large partition's state is cut into parts (a Kafka message is at most 1 MB): one message per part, keyed
``GROUP/PARTITION/PART`` on the compacted topic, all parts of one checkpoint carrying its ``checkpoint_id`` and
``parts``. A reader takes the newest checkpoint of which it finds every part.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tokenpulse_shared.events import Event, Interval

CHECKPOINT_VERSION = 1  # the layout of the state below; a reader of another version replays the day instead


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointCandle(_Part):
    """One bucket the candle builder holds (open, or emitted and still correctable)."""

    symbol: str
    interval: Interval
    start_ms: int
    open_ts: int
    close_ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    emitted: bool
    version: int
    synthetic: bool
    published_trades: int


class CheckpointFloor(_Part):
    """The version counter of a published candle whose bucket is not held but may be created again."""

    symbol: str
    interval: Interval
    start_ms: int
    version: int
    trades: int


class CheckpointTradeIds(_Part):
    """Trade identities counted in one finest bucket of a token (several entries of a bucket add up)."""

    symbol: str
    start_ms: int
    keys: list[str]


class CheckpointQuote(_Part):
    source: str
    price_usd: float
    ts: float
    volume_usd: float
    vol_ts: float


class CheckpointPrice(_Part):
    """A token's reference-price state: its sources' latest quotes and what was last published."""

    symbol: str
    newest_ts: float
    newest_wall: float
    published: float | None
    stale: bool
    sources: list[CheckpointQuote]


class CheckpointSymbol(_Part):
    symbol: str
    watermark: int
    last_seen_wall: float


class IngestCheckpoint(Event):
    """One part of the checkpoint of ingest's state for one ticks partition (see the module doc)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    group: str = Field(min_length=1, max_length=200, description="the consumer group whose offsets these are")
    partition: int = Field(ge=0)
    checkpoint_id: str = Field(min_length=1, max_length=64, description="the same in every part of one checkpoint")
    part: int = Field(ge=0)
    parts: int = Field(ge=1)
    version: int = Field(description="CHECKPOINT_VERSION of the writer")
    offsets: dict[str, int] = Field(description="per ticks topic, the offset of the first tick not in this state")
    symbols: list[CheckpointSymbol] = Field(default_factory=list)
    candles: list[CheckpointCandle] = Field(default_factory=list)
    floors: list[CheckpointFloor] = Field(default_factory=list)
    trade_ids: list[CheckpointTradeIds] = Field(default_factory=list)
    prices: list[CheckpointPrice] = Field(default_factory=list)

    def partition_key(self) -> str:
        return checkpoint_key(self.group, self.partition, self.part)


def checkpoint_key(group: str, partition: int, part: int) -> str:
    """The message key of one part: the compacted topic keeps the newest message of each."""
    return f"{group}/{partition}/{part}"


def parse_key(key: str) -> tuple[str, int, int] | None:
    """(group, partition, part) of a message key, None for another key."""
    group, _, rest = key.rpartition("/")
    group, _, partition = group.rpartition("/")
    if not group or not partition.isdigit() or not rest.isdigit():
        return None
    return group, int(partition), int(rest)
