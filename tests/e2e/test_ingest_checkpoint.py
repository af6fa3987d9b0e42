"""Ingest restarted after a checkpoint reads only the ticks after it, through the real broker; a checkpoint it
must not use makes it read the day instead; the candles are those of a run without restarts either way.

The feed of ``test_ingest_restart`` (two tokens trading across yesterday, some trades re-sent) goes on the
ticks topic while ``tokenpulse run ingest`` builds candles and writes a checkpoint of each partition every 2 s.
The feed pauses mid-way, long enough for the idle clock to close and publish the candles that ended (after the
last checkpoint: no batch comes to write another), and ingest is killed (-9) and started again: its restore log
says it replayed only the ticks after the checkpoints (far fewer than it had counted) and none of the day, and
it publishes none of those candles again. Then it is stopped (SIGTERM), the newest
checkpoint of one token's partition is overwritten with bytes that are not a checkpoint and the other's with one
of another version; the next start names both partitions with the reason in one line and reads their day again.
Counted on the candles topic at the end: exactly the reference's candles, versions only rising, nothing
published twice with the same content.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from tokenpulse_shared.bus.base import RawMessage
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.checkpoints import IngestCheckpoint, checkpoint_key
from tokenpulse_shared.topics import INGEST_CHECKPOINTS, TICKS, TICKS_V2

from testkit.procs import Proc, distributed_env, free_port, wait_until
from testkit.publisher import PacedPublisher
from tests.e2e.kafka_tools import wait_caught_up
from tests.e2e.test_distributed import metrics, sample
from tests.e2e.test_ingest_restart import CHUNK, Key, candles_since, feed, final, reference

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PAUSE_S = 0.3  # ~130 ticks/s: the feed lasts ~80 s, long enough for a kill, a stop and two restarts in it
HEAD = 4000  # the ticks before the pause
IDLE_WAIT_S = 8.0  # the pause before the kill: the idle close (5 s) and a clock round
RESTORED = re.compile(r"restored from (\d+) ticks counted \((\d+) after the checkpoints of partitions \[([\d, ]*)\]")
HELD = re.compile(r"(\d+) open or recent candles .* \((\d+) already published")


def restore_line(log: Path) -> tuple[int, int, set[int], tuple[int, int]]:
    """The restore's ticks replayed, of them after a checkpoint, partitions restored from a checkpoint, and
    (candles held, of them marked published)."""
    lines = [line for line in log.read_text().splitlines() if "restored from" in line]
    assert len(lines) == 1, lines
    match, held = RESTORED.search(lines[0]), HELD.search(lines[0])
    assert match and held, lines[0]
    partitions = {int(p) for p in match[3].split(",") if p.strip()}
    return int(match[1]), int(match[2]), partitions, (int(held[1]), int(held[2]))


async def spoil(bootstrap: str, group: str, unreadable: int, other_version: int) -> None:
    """The newest checkpoint of one partition unreadable, of another one of another version."""
    bus = KafkaBus(bootstrap, client_id="e2e-spoil")
    await bus.start()
    try:
        await bus.publish_raw(
            INGEST_CHECKPOINTS, [RawMessage(b'{"not": "a checkpoint"}', key=f"{group}/{unreadable}/0")]
        )
        if other_version != unreadable:
            future = IngestCheckpoint(
                group=group,
                partition=other_version,
                checkpoint_id="from-a-later-release",
                part=0,
                parts=1,
                version=99,
                offsets={TICKS.name: 0, TICKS_V2.name: 0},
            )
            assert future.partition_key() == checkpoint_key(group, other_version, 0)
            await bus.publish(INGEST_CHECKPOINTS, [future])
    finally:
        await bus.stop()


def test_a_restart_after_a_checkpoint_reads_only_the_ticks_after_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6].upper()
    ticks = feed(run)
    symbols = sorted({t.symbol for t in ticks})
    want = reference(ticks)
    port = free_port()
    prefix = f"e2e-icheckpoint-{run.lower()}"
    env = distributed_env(
        kafka_bootstrap,
        prefix,
        tmp_path / "data",
        ",".join(symbols),
        metrics_port=str(port),
        log_format="json",
        ingest_restore_lookback_s=str(2 * 86400),  # yesterday's trades: the day read is yesterday's
        ingest_checkpoint_interval_s="2",
    )
    place = DefaultPartitioner()
    partitions = list(range(6))
    part_a, part_b = (int(place(s.encode(), partitions, partitions)) for s in symbols)
    since_ms = int(time.time() * 1000)

    def consumed() -> float:
        return sample(
            metrics(f"http://127.0.0.1:{port}/metrics"),
            "tokenpulse_events_consumed_total",
            group="ingest",
            topic=TICKS.name,
        )

    def started(p: Proc) -> bool:
        return "tokenpulse started" in p.log.read_text() and httpx.get(f"http://127.0.0.1:{port}/readyz").is_success

    ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-1.log")
    procs = [ingest]
    try:
        wait_until(lambda: started(ingest), 120, "ingest ready", procs)
        first = PacedPublisher(
            kafka_bootstrap, TICKS, ticks[:HEAD], chunk=CHUNK, pause_s=PAUSE_S, client_id="e2e-ingest-feeder"
        )
        first.start()
        first.join(180)
        assert first.error is None and first.sent == HEAD
        wait_caught_up(kafka_bootstrap, {f"{prefix}-ingest": [TICKS]}, timeout=120)
        time.sleep(IDLE_WAIT_S)  # the idle clock publishes the candles that ended; no checkpoint after that
        counted = consumed()
        ingest.p.kill()  # SIGKILL
        ingest.p.wait()
        ingest.stop()
        feeder = PacedPublisher(
            kafka_bootstrap, TICKS, ticks[HEAD:], chunk=CHUNK, pause_s=PAUSE_S, client_id="e2e-ingest-feeder"
        )
        feeder.start()
        ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-2.log")
        procs = [ingest]
        wait_until(lambda: started(ingest), 120, "ingest restarted after the kill", procs)
        replayed, after, from_checkpoint, (held, published) = restore_line(tmp_path / "ingest-2.log")
        assert from_checkpoint == set(partitions) and replayed == after  # no partition read its day again
        assert after < counted - 2000, (after, counted)  # only what came after the last checkpoint
        # yesterday's candles have all ended: the idle clock published every one, after the last checkpoint
        assert held == published > 0, (held, published)

        wait_until(lambda: consumed() >= 1000, 60, "the second ingest under way", procs)
        assert ingest.stop() == 0
        asyncio.run(spoil(kafka_bootstrap, f"{prefix}-ingest", part_a, part_b))
        assert feeder.sent < len(ticks) - HEAD, "the feed ended before the stop"
        ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-3.log")
        procs = [ingest]
        wait_until(lambda: started(ingest), 120, "ingest started after the checkpoints were spoiled", procs)
        replayed, after, from_checkpoint, _ = restore_line(tmp_path / "ingest-3.log")
        assert from_checkpoint == set(partitions) - {part_a, part_b} and replayed > after
        refused = [line for line in (tmp_path / "ingest-3.log").read_text().splitlines() if "without a usable" in line]
        assert len(refused) == 1 and f"{part_a} (an unreadable checkpoint)" in refused[0], refused
        if part_b != part_a:
            assert f"{part_b} (a checkpoint of version 99, not 1)" in refused[0], refused

        feeder.join(180)
        assert feeder.error is None and feeder.sent == len(ticks) - HEAD
        wait_caught_up(kafka_bootstrap, {f"{prefix}-ingest": [TICKS]}, timeout=120)
        # the pause published every candle of yesterday once (idle close): wait for the last ones, not the daily
        wait_until(
            lambda: set(final(asyncio.run(candles_since(kafka_bootstrap, since_ms, set(symbols))))) >= set(want),
            120,
            "every candle published",
            procs,
        )
        time.sleep(2)
    finally:
        for p in procs:
            p.stop()
    published = asyncio.run(candles_since(kafka_bootstrap, since_ms, set(symbols)))
    got = final(published)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"{len(wrong)} candles differ from the run without restarts, e.g. {wrong[0]}: {got[wrong[0]]}"
    last: dict[Key, int] = {}
    for c in published:
        k = (c.symbol, c.interval, c.ts)
        assert c.version > last.get(k, -1), f"{k}: version {c.version} after {last[k]}"
        last[k] = c.version
    same = Counter((c.symbol, c.interval, c.ts, c.volume, c.trades) for c in published)
    assert [k for k, n in same.items() if n > 1] == []
