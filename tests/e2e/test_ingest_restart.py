"""Ingest stopped mid-candle (SIGTERM, then kill -9) and restarted, through the real broker: its candles are
those of a run without restarts.

Two tokens of this run trade every 3 s of event time across yesterday (UTC), with about one trade in 12
sent again later under a new event id (an exchange's re-send: counted once). The ticks go on the ticks
topic at a steady pace while ``tokenpulse run ingest`` builds candles. Mid-feed ingest gets a SIGTERM and
is started again, later a SIGKILL and started again; the feed goes on meanwhile. Yesterday's daily
candle (and the open 4h, 1h, ... ones) were open at each stop. The restarted process rebuilds them from
the ticks topic up to its consumer group's committed offsets (and marks what the candles topic already
holds as published), then consumes the rest.

The reference is one in-process ``CandleBuilder`` fed every tick in order, without a restart. Counted on
the candles topic, per candle (symbol, interval, open time): the last version published is exactly the
reference's (open, high, low, close, volume, trades), every reference candle is there and no other;
versions only rise; and no candle is published twice with the same content (a duplicate). Before the
fix, the daily candle came out with only the trades after the last restart.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import CandleEvent, Interval, TickEvent
from tokenpulse_shared.topics import CANDLES, TICKS

from testkit.procs import Proc, distributed_env, free_port, wait_until
from testkit.publisher import PacedPublisher
from testkit.ticks import random_walk, with_resends
from tests.e2e.kafka_tools import wait_caught_up
from tests.e2e.test_distributed import metrics, sample

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PER_SYMBOL = 5000
CHUNK = 40
PAUSE_S = 0.2  # 200 ticks/s: the feed lasts ~50 s, long enough for two stops and restarts in it

Key = tuple[str, Interval, datetime]


def feed(run: str) -> list[TickEvent]:
    rng = random.Random(run)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    prices = {f"A{run}": 100.0, f"B{run}": 5.0}
    out = random_walk(rng, prices, PER_SYMBOL, start=day, step_s=3, move=0.004, sizes=(0.01, 3.0), source="e2e")
    # re-sent trades, up to ~1,000 ticks later (some across a restart)
    return with_resends(rng, out, 12, 1000, lambda j: f"re-{run}-{j}")


def reference(ticks: list[TickEvent]) -> dict[Key, tuple[float | int, ...]]:
    builder = CandleBuilder()
    candles = builder.add(ticks).candles + builder.tick_clock(wall=time.time() + 86400)
    return final(candles)


def final(candles: list[CandleEvent]) -> dict[Key, tuple[float | int, ...]]:
    best: dict[Key, CandleEvent] = {}
    for c in candles:
        k = (c.symbol, c.interval, c.ts)
        if k not in best or c.version >= best[k].version:
            best[k] = c
    return {k: (c.open, c.high, c.low, c.close, c.volume, c.trades) for k, c in best.items()}


async def candles_since(bootstrap: str, since_ms: int, symbols: set[str]) -> list[CandleEvent]:
    bus = KafkaBus(bootstrap, client_id="e2e-check")
    events = await bus.read_log(CANDLES, since_ms=since_ms)
    return [e for e in events if isinstance(e, CandleEvent) and e.symbol in symbols]


def test_ingest_stopped_and_killed_mid_candle_publishes_the_candles_of_no_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6].upper()
    ticks = feed(run)
    symbols = {t.symbol for t in ticks}
    want = reference(ticks)
    assert len(want) > 500 and {k[1] for k in want} == set(Interval)
    port = free_port()
    prefix = f"e2e-irestart-{run.lower()}"
    env = distributed_env(
        kafka_bootstrap,
        prefix,
        tmp_path / "data",
        ",".join(sorted(symbols)),
        metrics_port=str(port),
        log_format="json",
        # the trades are yesterday's: read the ticks from yesterday's start, as after a restart gap of a day
        ingest_restore_lookback_s=str(2 * 86400),
    )
    since_ms = int(time.time() * 1000)

    def consumed() -> float:
        page = metrics(f"http://127.0.0.1:{port}/metrics")
        return sample(page, "tokenpulse_events_consumed_total", group="ingest", topic=TICKS.name)

    def started(p: Proc) -> bool:
        return "tokenpulse started" in p.log.read_text() and httpx.get(f"http://127.0.0.1:{port}/readyz").is_success

    ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-1.log")
    procs = [ingest]
    exits: dict[str, int] = {}
    try:
        wait_until(lambda: started(ingest), 120, "ingest ready", procs)
        feeder = PacedPublisher(
            kafka_bootstrap, TICKS, ticks, chunk=CHUNK, pause_s=PAUSE_S, client_id="e2e-ingest-feeder"
        )
        feeder.start()

        wait_until(lambda: consumed() >= 2000, 60, "ingest under way", procs)
        assert feeder.sent < len(ticks), "the feed ended before the SIGTERM"
        exits["ingest-1"] = ingest.stop()  # SIGTERM: the batch in hand finishes and is committed
        ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-2.log")
        procs = [ingest]
        wait_until(lambda: started(ingest), 120, "ingest restarted", procs)

        wait_until(lambda: consumed() >= 2000, 60, "the second ingest under way", procs)
        assert feeder.sent < len(ticks), "the feed ended before the kill"
        ingest.p.kill()  # SIGKILL: nothing graceful; the batch in hand is redelivered
        ingest.p.wait()
        ingest.stop()
        ingest = Proc(["run", "ingest"], env, tmp_path / "ingest-3.log")
        procs = [ingest]
        wait_until(lambda: started(ingest), 120, "ingest restarted after the kill", procs)

        feeder.join(180)
        assert feeder.error is None and feeder.sent == len(ticks)
        wait_caught_up(kafka_bootstrap, {f"{prefix}-ingest": [TICKS]}, timeout=120)
        # once the feed is quiet the idle clock closes the candles still open, the daily ones among them
        daily = {k for k in want if k[1] is Interval.D1}
        wait_until(
            lambda: set(final(asyncio.run(candles_since(kafka_bootstrap, since_ms, symbols)))) >= daily,
            120,
            "the daily candles published",
            procs,
        )
        time.sleep(2)  # (the last candles go out in one batch with them)
    finally:
        exits |= {p.log.stem: p.stop() for p in procs}
    assert exits == {"ingest-1": 0, "ingest-3": 0}, exits
    assert "shut down cleanly" in (tmp_path / "ingest-1.log").read_text()
    published = asyncio.run(candles_since(kafka_bootstrap, since_ms, symbols))
    got = final(published)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []  # none lost, no other
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"{len(wrong)} candles differ from the run without restarts, e.g. {wrong[0]}: {got[wrong[0]]}"
    last: dict[Key, int] = {}
    for c in published:  # one symbol = one partition: topic order is publishing order
        k = (c.symbol, c.interval, c.ts)
        assert c.version > last.get(k, -1), f"{k}: version {c.version} after {last[k]}"
        last[k] = c.version
    same = Counter((c.symbol, c.interval, c.ts, c.volume, c.trades) for c in published)
    assert [k for k, n in same.items() if n > 1] == []  # nothing published twice with the same content
    print(f"ingest restarts: {len(ticks)} ticks, {len(want)} candles, {len(published)} candle events published")
    restored = [
        line for n in (2, 3) for line in (tmp_path / f"ingest-{n}.log").read_text().splitlines() if "restored" in line
    ]
    assert len(restored) == 2, restored
    print(*restored, sep="\n")
