"""Distributed mode end to end: four ``tokenpulse run`` processes over the real Kafka broker.

A slice of real BTC one-minute history is replayed as trades (four per bar:
open, the two extremes, close), shuffled within a bounded window and with
duplicates, plus a few malformed messages. The gateway must then serve
exactly the candles computed here independently from the input, for every
interval, and the store must hold every trade exactly once (counted by
event id). Scoring and alerts take part: daily history backfilled through
``tokenpulse backfill`` gives grades, and an alert rule fires when BTC
crosses 100,000 (it first did on 2024-12-05 at 02:38 UTC).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_shared.bus import RawMessage
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import AlertCondition, AlertRuleEvent, Interval, TickEvent
from tokenpulse_shared.settings import DEFAULT_BUNDLE
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import ALERT_RULES, TICKS

from tests.e2e.procs import TOKENPULSE, Proc, api_key, fetch_all, free_port, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

START = datetime(2024, 12, 5, tzinfo=UTC)
END = START + timedelta(hours=30)


def replay_ticks(symbol: str) -> list[TickEvent]:
    start_ms, end_ms = int(START.timestamp() * 1000), int(END.timestamp() * 1000)
    bars = next(b for s, i, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.M1], start_ms, end_ms))
    ticks = []
    for bar in bars:
        t = datetime.fromtimestamp(bar.ts_ms / 1000, UTC)
        first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
        for k, p in enumerate((bar.open, first, second, bar.close)):
            ticks.append(
                TickEvent(
                    symbol=symbol,
                    source="binance",
                    ts=t + timedelta(seconds=15 * k),
                    price=p,
                    size=bar.volume / 4,
                    trade_id=f"{bar.ts_ms}-{k}",
                )
            )
    return ticks


def expected_candles(ticks: list[TickEvent], interval: Interval) -> dict[str, tuple[float, ...]]:
    buckets: dict[int, list[TickEvent]] = defaultdict(list)
    for t in ticks:
        buckets[interval.bucket_ms(int(t.ts.timestamp() * 1000))].append(t)
    out = {}
    for b, group in sorted(buckets.items()):
        group.sort(key=lambda t: t.ts)
        ts = datetime.fromtimestamp(b / 1000, UTC).isoformat().replace("+00:00", "Z")
        out[ts] = (
            group[0].price,
            max(t.price for t in group),
            min(t.price for t in group),
            group[-1].price,
            sum(t.size for t in group),
        )
    return out


def served(candles: list[dict[str, float]]) -> dict[str, tuple[float, ...]]:
    return {c["ts"]: (c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in candles}  # type: ignore[misc]


def same(a: dict[str, tuple[float, ...]], b: dict[str, tuple[float, ...]]) -> bool:
    return a.keys() == b.keys() and all(
        all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a[k], b[k], strict=True)) for k in a
    )


async def publish_rule(bootstrap: str, rule: AlertRuleEvent) -> None:
    bus = KafkaBus(bootstrap, client_id="e2e-feeder")
    await bus.start()
    try:
        await bus.publish(ALERT_RULES, [rule])
    finally:
        await bus.stop()


async def publish(bootstrap: str, ticks: list[TickEvent], junk: list[RawMessage]) -> None:
    bus = KafkaBus(bootstrap, client_id="e2e-feeder")
    await bus.start()
    try:
        await bus.publish_raw(TICKS, junk)
        for i in range(0, len(ticks), 500):
            await bus.publish(TICKS, ticks[i : i + 500])
    finally:
        await bus.stop()


def test_four_processes_over_kafka_serve_exactly_the_replayed_candles(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
        "TOKENPULSE_DATA_DIR": str(tmp_path / "gateway"),
        "TOKENPULSE_PORT": str(port),
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_SYMBOLS": "BTC",
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    procs = [Proc(["run", svc], env, tmp_path / f"{svc}.log") for svc in ("ingest", "scoring", "alerts", "gateway")]
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 120, "gateway ready", procs)
        key = api_key(base)

        # daily history through the CLI backfill (to Kafka) -> scoring -> grades
        backfill = subprocess.run(
            [
                TOKENPULSE,
                "backfill",
                "--symbols",
                "BTC",
                "--intervals",
                "1d",
                "--start",
                "2024-06-01",
                "--end",
                "2024-12-05",
            ],
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert backfill.returncode == 0, backfill.stderr
        assert "loaded 187 candles" in backfill.stderr

        # BTC's real trades under a symbol of this run only, so reruns against one broker stay independent
        sym = "E" + uuid.uuid4().hex[:7].upper()
        ticks = replay_ticks(sym)
        rng = random.Random(42)
        shuffled = [t for _, t in sorted(((i + rng.uniform(0, 3), t) for i, t in enumerate(ticks)), key=lambda p: p[0])]
        stream = []
        for t in shuffled:
            stream.append(t)
            if rng.random() < 0.05:
                stream.append(t)  # redelivered trade: same event id, same trade id
        marker = uuid.uuid4().hex
        junk = [
            RawMessage(f"not json {marker}".encode(), key=sym),
            RawMessage(
                f'{{"symbol":"{sym}","source":"x","ts":"2024-12-05T00:00:00Z","price":NaN,"m":"{marker}"}}'.encode(),
                key=sym,
            ),
            RawMessage(
                f'{{"symbol":"{sym}","source":"x","ts":"2024-12-05T00:00:00Z","price":-2,"m":"{marker}"}}'.encode(),
                key=sym,
            ),
        ]
        rule = AlertRuleEvent(
            rule_id=f"rule-{marker[:8]}",
            owner="e2e",
            symbol=sym,
            condition=AlertCondition(kind="price_above", value=100_000.0),
            cooldown_s=3600,
        )
        asyncio.run(publish_rule(kafka_bootstrap, rule))
        # a rule applies from when the alerts service knows it: wait for that before prices flow
        alerts_log = next(p for p in procs if p.log.name == "alerts.log").log
        wait_until(lambda: rule.rule_id in alerts_log.read_text(), 60, "the alerts service to learn the rule", procs)
        asyncio.run(publish(kafka_bootstrap, stream, junk))

        window = {"start": START.isoformat(), "end": END.isoformat()}
        for interval in Interval:
            want = expected_candles(ticks, interval)
            wait_until(
                lambda interval=interval, want=want: same(
                    served(fetch_all(base, f"/v1/candles/{sym}", key, {"interval": interval.value, **window})), want
                ),
                120,
                f"{interval.value} candles to match the replay",
                procs,
            )

        def token(symbol: str) -> dict[str, object]:
            r = httpx.get(f"{base}/v1/tokens/{symbol}", headers={"X-API-Key": key}, timeout=10)
            r.raise_for_status()
            return dict(r.json())

        # the replayed token's price is the last trade's, and scoring graded BTC from the backfilled days
        assert token(sym)["price"] == max(ticks, key=lambda t: t.ts).price
        wait_until(lambda: token("BTC")["trader_grade"] is not None, 60, "a grade from scoring", procs)
    finally:
        codes = {p.log.name: p.stop() for p in procs}
    assert all(code == 0 for code in codes.values()), codes

    # the gateway released the embedded engine: count what was stored, by event id
    async def inspect() -> dict[str, object]:
        store = await Store(f"chdb://{(tmp_path / 'gateway' / 'clickhouse').resolve()}").open(migrate=False)
        try:
            out: dict[str, object] = {}
            out["ticks"] = (
                await store.query(
                    "SELECT count(), uniqExact(event_id) FROM ticks FINAL WHERE symbol = {s:String}", {"s": sym}
                )
            )[0]
            out["tick_ids"] = (
                await store.query("SELECT uniqExact(event_id) FROM ticks WHERE symbol = {s:String}", {"s": sym})
            )[0][0]
            out["dead"] = (
                await store.query(
                    "SELECT count() FROM dead_letters FINAL WHERE topic = 'tokenpulse.ticks.v1' "
                    "AND consumer = 'ingest' "
                    "AND position(payload, {m:String}) > 0",
                    {"m": marker},
                )
            )[0][0]
            out["alerts"] = (
                await store.query(
                    "SELECT count(), min(price) FROM alert_firings FINAL WHERE rule_id = {r:String}",
                    {"r": rule.rule_id},
                )
            )[0]
            return out
        finally:
            await store.close()

    found = asyncio.run(inspect())
    unique = len({t.event_id for t in ticks})
    assert found["ticks"] == (unique, unique)
    assert found["tick_ids"] == unique
    assert found["dead"] == 3
    count, price = found["alerts"]  # type: ignore[misc]
    assert count >= 1 and price > 100_000
