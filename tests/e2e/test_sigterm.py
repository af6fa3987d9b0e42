"""SIGTERM during a replay, through the real broker: no event lost, none duplicated.

Real daily history of two tokens (BTC and ETH, renamed for this run) is published on the candles
topic at a steady pace while ``tokenpulse run scoring`` and ``tokenpulse run gateway`` (the store
writer) consume it. Mid-replay scoring gets a SIGTERM and is started again; then the gateway too.
Graceful shutdown means: stop fetching, finish the batch in hand, commit its offsets, flush the
producer, close the store. So afterwards

* the indicators, grades and signals topics hold exactly the outputs of an uninterrupted in-process
  run over the same candles, by event id (output ids derive from the candle, so the reference has the
  very ids), each once: none lost, none published twice (scoring neither skipped a candle nor
  re-published a batch it had already handled), and
* the store holds every candle exactly once, by event id, counted without ``FINAL`` (a batch
  written twice would show up as extra rows).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import CANDLES, GRADES, INDICATORS, SIGNALS, Topic

from testkit.procs import Proc, api_key, fetch_all, free_port, wait_until
from testkit.publisher import PacedPublisher
from tests.e2e.test_distributed import metrics, sample

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(600)]

CHUNK = 100
PAUSE_S = 0.2  # ~500 candles/s: the replay lasts ~17 s, long enough to stop and restart both services in it


def history(run: str) -> list[CandleEvent]:
    out = []
    for symbol, interval, bars in plan(Path(__file__).resolve().parents[2] / "data", ["BTC", "ETH"], [Interval.D1]):
        out += [bar_to_event(f"{symbol[0]}{run}", interval, b) for b in bars]
    return out


OUTPUTS = (INDICATORS, GRADES, SIGNALS)


async def outputs_since(
    bootstrap: str, since_ms: int, symbols: set[str], topics: tuple[Topic, ...] = OUTPUTS
) -> Counter[str]:
    """Scoring's outputs for these symbols since the test began, counted by event id."""
    bus = KafkaBus(bootstrap, client_id="e2e-check")
    ids: Counter[str] = Counter()
    for topic in topics:
        events = await bus.read_log(topic, since_ms=since_ms)
        ids.update(e.event_id for e in events if getattr(e, "symbol", None) in symbols)
    return ids


def test_sigterm_mid_replay_loses_and_duplicates_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6].upper()
    candles = history(run)
    symbols = {c.symbol for c in candles}
    assert len(candles) > 8000 and len(symbols) == 2
    port, scoring_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
        "TOKENPULSE_DATA_DIR": str(tmp_path / "gateway"),
        "TOKENPULSE_PORT": str(port),
        "TOKENPULSE_METRICS_PORT": str(scoring_port),
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_SYMBOLS": ",".join(sorted(symbols)),
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    indicators, grades, signals = ScoringService()._process(candles)  # the uninterrupted reference
    want = {e.event_id for e in [*indicators, *grades, *signals]}
    ind_ids = {e.event_id for e in indicators}
    assert len(indicators) == len(candles) and grades and signals
    since_ms = int(time.time() * 1000)
    scoring_url = f"http://127.0.0.1:{scoring_port}"
    gateway = Proc(["run", "gateway"], env, tmp_path / "gateway-1.log")
    scoring = Proc(["run", "scoring"], env, tmp_path / "scoring-1.log")
    procs = [gateway, scoring]
    exits: dict[str, int] = {}
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 180, "gateway ready", procs)
        wait_until(lambda: httpx.get(f"{scoring_url}/readyz", timeout=5).status_code == 200, 60, "scoring", procs)
        replay = PacedPublisher(kafka_bootstrap, CANDLES, candles, chunk=CHUNK, pause_s=PAUSE_S, client_id="e2e-replay")
        replay.start()

        def consumed(url: str, group: str) -> float:
            return sample(
                metrics(f"{url}/metrics"), "tokenpulse_events_consumed_total", group=group, topic=CANDLES.name
            )

        # scoring: SIGTERM once it is under way, while the replay goes on
        wait_until(lambda: consumed(scoring_url, "scoring") >= 1000, 60, "scoring to be under way", procs)
        assert replay.sent < len(candles), "the replay ended before the SIGTERM"
        exits["scoring-1"] = scoring.stop()
        scoring = Proc(["run", "scoring"], env, tmp_path / "scoring-2.log")
        procs = [gateway, scoring]

        # the gateway (store writer) the same way
        wait_until(lambda: consumed(base, "writer") >= 3000, 60, "the writer to be under way", procs)
        assert replay.sent < len(candles), "the replay ended before the second SIGTERM"
        exits["gateway-1"] = gateway.stop()
        gateway = Proc(["run", "gateway"], env, tmp_path / "gateway-2.log")
        procs = [gateway, scoring]
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 180, "gateway again", procs)

        replay.join(120)
        assert replay.error is None and replay.sent == len(candles)
        wait_until(  # polled on the indicators alone (cheaper); all three topics are read after the stop
            lambda: set(asyncio.run(outputs_since(kafka_bootstrap, since_ms, symbols, (INDICATORS,)))) >= ind_ids,
            120,
            "every candle's indicators",
            procs,
        )
        key = api_key(base)

        def served(symbol: str) -> int:
            window = {"interval": "1d", "start": "2010-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}
            return len(fetch_all(base, f"/v1/candles/{symbol}", key, window))

        for symbol in symbols:
            want_n = sum(1 for c in candles if c.symbol == symbol)
            wait_until(lambda s=symbol, n=want_n: served(s) == n, 120, f"every {symbol} candle stored", procs)
    finally:
        exits |= {p.log.stem: p.stop() for p in procs}
    assert exits == dict.fromkeys(exits, 0), exits
    for name in ("scoring-1", "gateway-1"):
        assert "shut down cleanly" in (tmp_path / f"{name}.log").read_text(), name

    # scoring: exactly the reference's outputs by event id, none missing, none extra, none published twice
    counts = asyncio.run(outputs_since(kafka_bootstrap, since_ms, symbols))
    assert not want - set(counts), f"{len(want - set(counts))} outputs lost"
    assert not set(counts) - want, f"{len(set(counts) - want)} outputs not in the reference"
    assert [k for k, n in counts.items() if n != 1] == []
    print(
        f"sigterm: {len(candles)} candles, {len(want)} outputs ({len(grades)} grades, {len(signals)} signals), "
        "each once"
    )

    # the writer: every candle stored once, counted by event id without FINAL (no batch written twice)
    async def stored() -> tuple[int, int]:
        store = await Store(f"chdb://{(tmp_path / 'gateway' / 'clickhouse').resolve()}").open(migrate=False)
        try:
            rows = await store.query(
                "SELECT count(), uniqExact(event_id) FROM candles WHERE symbol IN {s:Array(String)}",
                {"s": sorted(symbols)},
            )
            return int(rows[0][0]), int(rows[0][1])
        finally:
            await store.close()

    assert asyncio.run(stored()) == (len(candles), len({c.event_id for c in candles}))
