"""Checkpoints of ingest's per-partition state, as messages of ``tokenpulse.ingest-checkpoints.v1`` and back.

:func:`take` copies a partition's state (candle builder and reconciler) into a :class:`PartitionState`;
:func:`to_messages` cuts it into the topic's parts; :func:`newest` finds, among the messages read back, the
newest whole checkpoint of each partition wanted and says why a partition has none it may use;
:func:`load` puts a checkpoint into a builder and a reconciler. The contract is
``tokenpulse_shared.checkpoints``; how the service uses it, ``IngestService.on_committed`` and ``restore``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel
from tokenpulse_shared.checkpoints import CHECKPOINT_VERSION, CheckpointPrice, IngestCheckpoint, parse_key

from tokenpulse_ingest.candles import BuilderState, CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler

PART_BYTES = 512 * 1024  # a part's estimated JSON size: well under the broker's message.max.bytes (1 MB)
LISTS = ("symbols", "candles", "floors", "trade_ids", "prices")


@dataclass
class PartitionState:
    """One partition's state: the builder's and the reconciler's, for its symbols."""

    builder: BuilderState = field(default_factory=BuilderState)
    prices: list[CheckpointPrice] = field(default_factory=list)


@dataclass(frozen=True)
class Checkpoint:
    """A whole checkpoint read back: its parts' state together, and what it covers."""

    partition: int
    offsets: dict[str, int]
    written_at: datetime
    version: int
    state: PartitionState


def take(builder: CandleBuilder, reconciler: PriceReconciler, symbols: Iterable[str]) -> PartitionState:
    symbols = set(symbols)
    return PartitionState(builder.export(symbols), reconciler.export(symbols))


def load(builder: CandleBuilder, reconciler: PriceReconciler, checkpoint: Checkpoint, wall: float) -> None:
    builder.load(checkpoint.state.builder)
    reconciler.load(checkpoint.state.prices, wall)


def _size(item: BaseModel) -> int:
    """A cheap estimate of an item's JSON size (the trade-id lists dominate)."""
    keys = getattr(item, "keys", None)
    if isinstance(keys, list):
        return 64 + sum(len(k) + 3 for k in keys)
    return 320 if not hasattr(item, "sources") else 96 + 128 * len(item.sources)  # type: ignore[attr-defined]


def _items(state: PartitionState, part_bytes: int) -> list[tuple[str, BaseModel]]:
    """Every item of the state, tagged with its list; a trade-id list too long for a part is split."""
    b = state.builder
    out: list[tuple[str, BaseModel]] = [("symbols", s) for s in b.symbols]
    out += [("candles", c) for c in b.candles] + [("floors", f) for f in b.floors]
    for t in b.trade_ids:
        step = max(1, part_bytes // 64)  # keys are a few dozen bytes
        for at in range(0, max(len(t.keys), 1), step):
            out.append(("trade_ids", t.model_copy(update={"keys": t.keys[at : at + step]})))
    return out + [("prices", p) for p in state.prices]


def to_messages(
    group: str, partition: int, offsets: Mapping[str, int], state: PartitionState, part_bytes: int = PART_BYTES
) -> list[IngestCheckpoint]:
    """The checkpoint as the topic's messages: parts of about ``part_bytes`` at most, one id for all."""
    parts: list[dict[str, list[BaseModel]]] = [{name: [] for name in LISTS}]
    size = 0
    for name, item in _items(state, part_bytes):
        n = _size(item)
        if size and size + n > part_bytes:
            parts.append({name: [] for name in LISTS})
            size = 0
        parts[-1][name].append(item)
        size += n
    checkpoint_id = os.urandom(8).hex()
    return [
        IngestCheckpoint(
            group=group,
            partition=partition,
            checkpoint_id=checkpoint_id,
            part=i,
            parts=len(parts),
            version=CHECKPOINT_VERSION,
            offsets=dict(offsets),
            **lists,  # type: ignore[arg-type]
        )
        for i, lists in enumerate(parts)
    ]


def _assemble(parts: Sequence[IngestCheckpoint]) -> Checkpoint:
    state = PartitionState()
    for p in sorted(parts, key=lambda p: p.part):
        state.builder.symbols += p.symbols
        state.builder.candles += p.candles
        state.builder.floors += p.floors
        state.builder.trade_ids += p.trade_ids
        state.prices += p.prices
    first = parts[0]
    return Checkpoint(first.partition, dict(first.offsets), first.produced_at, first.version, state)


def newest(
    messages: Iterable[object],
    unreadable_keys: Iterable[str],
    group: str,
    committed: Mapping[str, Mapping[int, int]],
    partitions: Iterable[int],
) -> tuple[dict[int, Checkpoint], dict[int, str]]:
    """Per partition wanted, the newest checkpoint of ``group`` of which every part was read, if it may be used;
    else why not (no checkpoint, an unreadable one, another version, offsets beyond the committed ones).

    ``committed``: per ticks topic, the group's committed offsets. A checkpoint is written only after its offsets
    were committed, and commits only move forward, so offsets beyond them mean the group's offsets were moved
    back (reset by hand, a topic made anew): the checkpoint counts ticks the group will be given again."""
    wanted = set(partitions)
    runs: dict[tuple[int, str], list[IngestCheckpoint]] = {}
    for m in messages:
        if isinstance(m, IngestCheckpoint) and m.group == group and m.partition in wanted:
            runs.setdefault((m.partition, m.checkpoint_id), []).append(m)
    found: dict[int, Checkpoint] = {}
    refused: dict[int, str] = {}
    for key in unreadable_keys:
        where = parse_key(key)
        if where is not None and where[0] == group and where[1] in wanted:
            refused[where[1]] = "an unreadable checkpoint"
    whole = [parts for parts in runs.values() if len({p.part for p in parts}) == parts[0].parts]
    for parts in sorted(whole, key=lambda parts: parts[0].produced_at):
        found[parts[0].partition] = _assemble(parts)
    for p, checkpoint in list(found.items()):
        reason = refused.get(p) or _unusable(checkpoint, committed)
        if reason:
            refused[p] = reason
            del found[p]
    for p in wanted - set(found) - set(refused):
        refused[p] = "no checkpoint"
    return found, refused


def _unusable(checkpoint: Checkpoint, committed: Mapping[str, Mapping[int, int]]) -> str | None:
    if checkpoint.version != CHECKPOINT_VERSION:
        return f"a checkpoint of version {checkpoint.version}, not {CHECKPOINT_VERSION}"
    if set(checkpoint.offsets) != set(committed):
        return "a checkpoint of other ticks topics"
    p = checkpoint.partition
    if any(offset > committed[topic].get(p, 0) for topic, offset in checkpoint.offsets.items()):
        return "a checkpoint beyond the committed offsets"
    return None
