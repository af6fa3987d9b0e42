"""The scoring service killed with SIGKILL mid-stream and restarted, over the real broker (no ClickHouse server).

BTC's real daily history (under a symbol of this run) is published to the candles topic while a
``tokenpulse run scoring`` process computes indicators; the process is killed (SIGKILL) midway and a
new one started while the rest of the history arrives. The reference is computed here in-process from
the same candles, uninterrupted. Counted on the indicators topic by candle: every daily candle has its
indicators (none lost) and the last ones published for it are exactly the reference's — the restarted
process rebuilt its state from the candles topic up to its group's committed offsets, rather than
starting cold (SMA-200 and friends null, RSI wrong) as it did before.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path

import pytest
from tokenpulse_ingest.bundle import bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import INDICATOR_FIELDS, CandleEvent, IndicatorEvent, Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE
from tokenpulse_shared.topics import CANDLES, INDICATORS

from tests.e2e.kafka_tools import read_topic, wait_caught_up
from tests.e2e.procs import Proc, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def history(sym: str) -> list[CandleEvent]:
    bars = next(b for _, _, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1]))
    return [bar_to_event(sym, Interval.D1, bar) for bar in bars[-2400:]]


def reference(candles: list[CandleEvent]) -> dict[int, tuple[float | None, ...]]:
    s = ScoringService()
    indicators, _, _ = s._process(candles)
    return {int(i.ts.timestamp()): tuple(getattr(i, f) for f in INDICATOR_FIELDS) for i in indicators}


def same(a: tuple[float | None, ...], b: tuple[float | None, ...]) -> bool:
    return all(
        (x is None and y is None)
        or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9))
        for x, y in zip(a, b, strict=True)
    )


async def publish(bootstrap: str, candles: list[CandleEvent], per_second: float | None = None) -> None:
    bus = KafkaBus(bootstrap, client_id="scoring-restart-feeder")
    await bus.start()
    try:
        for i in range(0, len(candles), 50):
            await bus.publish(CANDLES, candles[i : i + 50])
            if per_second:
                await asyncio.sleep(50 / per_second)
    finally:
        await bus.stop()


def test_scoring_killed_mid_stream_resumes_with_identical_state(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6].upper()
    sym = "R" + run
    prefix = f"srestart-{run.lower()}"
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": prefix,
        "TOKENPULSE_DATA_DIR": str(tmp_path / "data"),
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    candles = history(sym)
    want = reference(candles)
    half = len(candles) // 2
    group = {f"{prefix}-scoring": [CANDLES]}
    first = Proc(["run", "scoring"], env, tmp_path / "scoring-1.log")
    procs = [first]
    try:
        wait_until(lambda: "tokenpulse started" in first.log.read_text(), 120, "scoring started", procs)
        asyncio.run(publish(kafka_bootstrap, candles[:half]))
        wait_caught_up(kafka_bootstrap, group, timeout=180)  # the first half processed and committed

        async def publish_and_kill() -> None:  # SIGKILL while the second half is flowing in
            feeder = asyncio.create_task(publish(kafka_bootstrap, candles[half:], per_second=400))
            await asyncio.sleep(1.5)
            first.p.kill()
            first.p.wait()
            await feeder

        asyncio.run(publish_and_kill())
        first.stop()
        second = Proc(["run", "scoring"], env, tmp_path / "scoring-2.log")
        procs = [second]
        wait_until(lambda: "tokenpulse started" in second.log.read_text(), 180, "scoring restarted", procs)
        wait_caught_up(kafka_bootstrap, group, timeout=180)
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0]

    published = [
        e
        for e in asyncio.run(read_topic(kafka_bootstrap, INDICATORS))
        if isinstance(e, IndicatorEvent) and e.symbol == sym
    ]
    last: dict[int, tuple[float | None, ...]] = {}
    for e in published:  # one symbol = one partition: topic order is publication order
        last[int(e.ts.timestamp())] = tuple(getattr(e, f) for f in INDICATOR_FIELDS)
    assert set(last) == set(want)  # every candle's indicators: none lost
    wrong = [ts for ts in want if not same(last[ts], want[ts])]
    assert not wrong, f"{len(wrong)} candles differ from the uninterrupted reference, first at {min(wrong)}"
    rebuilt = [line for line in (tmp_path / "scoring-2.log").read_text().splitlines() if "state rebuilt" in line]
    print(rebuilt[:1])
    repeats = len(published) - len(last)
    print(f"scoring restart: {len(candles)} candles, {len(last)} indicator rows, {repeats} re-published (redelivery)")
