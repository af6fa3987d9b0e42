"""Scoring benchmark (issue #4), run by `make bench`: candle updates per second.

1. In process, one thread, on the bundled history (all daily series, BTC 1h and 4h): the
   scoring arithmetic alone (``apply_batch``: indicators, grades, signals), the service's batch
   step (``_process``: candle events in, indicator/grade/signal events out), and one ``apply``
   call per candle for comparison. Rates per second of the process's own CPU time
   (``time.process_time``): on this shared VM wall-clock rates swing several-fold with the other
   tenants' load; the CPU-time rate is what one dedicated core would do.
2. Through the real broker (started here with scripts/kafka-local.sh unless TOKENPULSE_TEST_KAFKA
   is set), the same candle messages, side by side in this run:
   - raw aiokafka: a bare consumer reading them (no decoding) — the ceiling for a Python consumer;
   - our Kafka bus with a no-op handler (JSON validation into events included);
   - the scoring service on our Kafka bus, end to end: consumed, scored, and its indicator, grade
     and signal events published back to the broker (acks=all) before the batch is committed.
   With ``BENCH_COMPARE_REF=<commit>`` the Kafka bus of that commit runs too, interleaved round by round
   (:mod:`bench.bus_variants`): two bus versions compared in one run.

Prints Markdown to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from tokenpulse_ingest.backfill import gc_paused, plan
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import CANDLES

from bench import broker, plot
from bench.bus_variants import kafka_bus_at

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
COMPARE_REF = os.environ.get("BENCH_COMPARE_REF", "")
INTERVALS = [Interval.D1, Interval.H1, Interval.H4]


def history() -> list[CandleEvent]:
    """The bundled daily series and BTC's 1h and 4h candles, as candle events in series order."""
    now = datetime.now(UTC)
    series = plan(Settings().runtime.bundle_dir, None, INTERVALS)
    return [bar_to_event(s, i, b, now) for s, i, bars in series for b in bars]


def in_process(candles: list[CandleEvent]) -> list[tuple[str, str]]:
    daily = [c for c in candles if c.interval is Interval.D1]
    intraday = [c for c in candles if c.interval is not Interval.D1]

    def entries(cs: list[CandleEvent]) -> list[tuple[str, Interval, list[Any]]]:
        out: dict[tuple[str, Interval], list[Any]] = {}
        for c in cs:
            out.setdefault((c.symbol, c.interval), []).append(
                (int(c.ts.timestamp() * 1000), c.open, c.high, c.low, c.close, c.volume, c.version)
            )
        return [(s, i, e) for (s, i), e in out.items()]

    def arithmetic(cs: list[CandleEvent]) -> float:
        series = entries(cs)
        scoring = ScoringService()
        t = time.process_time()
        for symbol, interval, es in series:
            for k in range(0, len(es), 5000):
                scoring.apply_batch(symbol, interval, es[k : k + 5000])
        return len(cs) / (time.process_time() - t)

    def per_candle(cs: list[CandleEvent]) -> float:
        series = entries(cs)
        scoring = ScoringService()
        t = time.process_time()
        for symbol, interval, es in series:
            for e in es:
                scoring.apply(symbol, interval, *e)
        return len(cs) / (time.process_time() - t)

    def service(cs: list[CandleEvent]) -> float:
        scoring = ScoringService()
        t = time.process_time()
        for k in range(0, len(cs), 5000):
            scoring._process(cs[k : k + 5000])
        return len(cs) / (time.process_time() - t)

    rows = []
    with gc_paused():  # as a replay runs
        for label, fn in (
            ("arithmetic (`apply_batch`: indicators + grades + signals)", arithmetic),
            ("service batch step (`_process`: candle events in, indicator/grade/signal events out)", service),
            ("one `apply` call per candle (arithmetic), for comparison", per_candle),
        ):
            d = statistics.median(fn(daily) for _ in range(ROUNDS))
            i = statistics.median(fn(intraday) for _ in range(ROUNDS))
            both = statistics.median(fn(candles) for _ in range(ROUNDS))
            rows.append((label, f"{d:,.0f}", f"{i:,.0f}", f"{both:,.0f}"))
    return [(a, f"{b} | {c} | {d}") for a, b, c, d in rows]


async def produce(bootstrap: str, candles: list[CandleEvent]) -> None:
    bus = KafkaBus(bootstrap, client_id="bench-producer")
    await bus.start()
    try:
        for k in range(0, len(candles), 5000):
            await bus.publish(CANDLES, candles[k : k + 5000])
    finally:
        await bus.stop()


async def raw_consume(bootstrap: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        CANDLES.name,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    t = time.perf_counter()
    await consumer.start()
    seen = 0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(b) for b in batches.values())
            await consumer.commit()  # as our bus does once per batch
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - t)


async def through_bus(
    bootstrap: str, n: int, make: Callable[[KafkaBus], Callable[[], int]], bus_class: Any = KafkaBus
) -> float:
    """Start a Kafka bus (of ``bus_class``) with what ``make`` registers; the rate from its start until ``make``'s
    counter says all ``n`` candles were handled (and, for the scoring service, its outputs published)."""
    bus = bus_class(bootstrap, client_id="bench", group_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    handled = make(bus)
    t = time.perf_counter()
    await bus.start()
    try:
        deadline = t + 900
        while handled() < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {handled():,} of {n:,} candles handled in 900 s")
            await asyncio.sleep(0.01)
        return n / (time.perf_counter() - t)
    finally:
        await bus.stop()


def noop(bus: KafkaBus) -> Callable[[], int]:
    count = [0]

    async def handler(events: list[CandleEvent]) -> None:
        count[0] += len(events)

    bus.subscribe(CANDLES, "noop", handler, max_batch=5000)
    return lambda: count[0]


def scoring(bus: KafkaBus) -> Callable[[], int]:
    service = ScoringService()
    count = [0]
    original = service.on_candles

    async def counted(events: list[CandleEvent]) -> None:
        await original(events)  # scored and its outputs published to the broker
        count[0] += len(events)

    service.on_candles = counted  # type: ignore[method-assign]
    service.register(Context(settings=Settings(scoring={"predictions": False}), bus=bus))
    service.ready.set()  # no store to warm up from
    return lambda: count[0]


def through_kafka(bootstrap: str, candles: list[CandleEvent]) -> list[tuple[str, str]]:
    n = len(candles)
    asyncio.run(produce(bootstrap, candles))
    buses: dict[str, Any] = {"": KafkaBus}
    if COMPARE_REF:
        buses = {" (this tree)": KafkaBus, f" ({COMPARE_REF})": kafka_bus_at(COMPARE_REF)}
    runs: dict[str, list[float]] = {"raw": []} | {f"{k}{b}": [] for b in buses for k in ("noop", "scoring")}
    for r in range(ROUNDS):  # interleaved, so a slow spell of the shared VM hits every variant alike
        runs["raw"].append(asyncio.run(raw_consume(bootstrap, n)))
        for suffix, cls in list(buses.items())[:: 1 if r % 2 == 0 else -1]:
            runs[f"noop{suffix}"].append(asyncio.run(through_bus(bootstrap, n, noop, cls)))
            runs[f"scoring{suffix}"].append(asyncio.run(through_bus(bootstrap, n, scoring, cls)))
    raw = statistics.median(runs["raw"])

    def fmt(xs: list[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in xs)

    def line(label: str, key: str) -> tuple[str, str]:
        rate = statistics.median(runs[key])
        return label, f"{rate:,.0f} (runs {fmt(runs[key])}) | {rate / raw:.2f}"

    rows = [(f"raw aiokafka consumer, {n:,} candle messages (ceiling)", f"{raw:,.0f} (runs {fmt(runs['raw'])}) | 1.00")]
    for suffix in buses:
        rows.append(line(f"our Kafka bus{suffix}, no-op handler (validation included)", f"noop{suffix}"))
        rows.append(
            line(f"scoring service on our Kafka bus{suffix}, end to end (outputs published)", f"scoring{suffix}")
        )
    return rows


def main() -> None:
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {ROUNDS} rounds (median)\n"
    )
    candles = history()
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print(
        "| in process, one thread, per CPU-second | daily candles/s | intraday (1h, 4h) candles/s | all |\n"
        "|---|---|---|---|"
    )
    ips = in_process(candles)
    for name, value in ips:
        print(f"| {name} | {value} |")
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-scoring-"))
    with broker.kafka(work) as bootstrap:
        rows = through_kafka(bootstrap, candles)
    print(f"\nload average after the broker runs: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\n| through the broker, same messages, same run (wall clock) | candles/s | of the ceiling |\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    in_proc = {name: [plot.first_number(c) for c in value.split("|")] for name, value in ips}
    plot.save(
        "scoring",
        "Scoring: candle updates in process (per CPU-second) and through the broker (wall clock)",
        [
            plot.groups(
                "in process, one thread",
                {
                    name.split(" (")[0]: {"daily": v[0], "intraday (1h, 4h)": v[1], "all": v[2]}
                    for name, v in in_proc.items()
                },
                "candles per CPU-second",
            ),
            plot.bars(
                "through the broker, same messages",
                {name.split(",")[0]: plot.first_number(value) for name, value in rows},
                "candles/s",
            ),
        ],
        footer=plot.footer(f"{ROUNDS} rounds (median)"),
    )


if __name__ == "__main__":
    main()
