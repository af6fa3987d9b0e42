"""Scoring benchmark (issues #4 and 22), run by `make bench`: candle updates per second on the batch topics.

1. In process, one thread, on the bundled history (all daily series, BTC 1h and 4h): the scoring arithmetic
   alone (``apply_batch``: indicators, grades, signals), the service's step on candle rows as it runs on
   ``tokenpulse.candles.v2`` (``score_rows``: ``CandleBatch`` in, an ``IndicatorBatch`` and grade/signal events
   out), the same step on per-event candles (``_process``, the v1 topic), and one ``apply`` call per candle.
   Rates per second of the process's own CPU time (``time.process_time``): on this shared VM wall-clock rates
   swing several-fold with the other tenants' load; the CPU-time rate is what one dedicated core would do.
2. Through the real broker (a fresh one, started here with scripts/kafka-local.sh: the topic must hold this
   run's messages only), the same candles published once on ``tokenpulse.candles.v2`` as ingest publishes them
   (chunks of :data:`CHUNK` candles, each one ``CandleBatch`` message per partition), then, round by round:
   - raw aiokafka: a bare consumer reading those messages (no decoding) — the ceiling; candles/s = rows/s;
   - our Kafka bus with a no-op batch handler (validation of the batches included);
   - the scoring service on our Kafka bus, end to end: consumed, scored, and its indicator rows (and their v1
     copies, on by default), grades and signals published back to the broker (acks=all) before the batch is
     committed; once more with ``TOKENPULSE_PUBLISH_V1=false`` (rows only, the next release's default).
   Each rate is given from the consumer's start (group join included, as earlier runs measured it) and over the
   consume phase alone (first message handed over to the last candle done), which start-up does not dilute.
   With ``BENCH_COMPARE_REF=<commit>`` the scoring service of that commit runs too (:mod:`bench.bus_variants`).

``--record`` appends the headline figures to docs/bench/history.csv. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.batches import CandleBatch
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.gctools import gc_paused
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import CANDLES_V2

from bench import broker, plot
from bench.bus_variants import class_at

INTERVALS = [Interval.D1, Interval.H1, Interval.H4]
CHUNK = 5000  # candles per published batch, as backfill chunks its series
GOAL = 0.7


@dataclasses.dataclass
class Rate:
    """One consumer run: candles, seconds from its start, seconds from the first message handed over."""

    n: int
    total_s: float
    consume_s: float

    @property
    def total(self) -> float:
        return self.n / self.total_s

    @property
    def consume(self) -> float:
        return self.n / self.consume_s


def history() -> list[CandleEvent]:
    """The bundled daily series and BTC's 1h and 4h candles, as candle events in series order."""
    now = datetime.now(UTC)
    series = plan(Settings().runtime.bundle_dir, None, INTERVALS)
    return [bar_to_event(s, i, b, now) for s, i, bars in series for b in bars]


def chunks(candles: list[CandleEvent]) -> list[CandleBatch]:
    return [CandleBatch.from_events(candles[k : k + CHUNK]) for k in range(0, len(candles), CHUNK)]


def entries(cs: list[CandleEvent]) -> list[tuple[str, Interval, list[Any]]]:
    out: dict[tuple[str, Interval], list[Any]] = {}
    for c in cs:
        out.setdefault((c.symbol, c.interval), []).append(
            (int(c.ts.timestamp() * 1000), c.open, c.high, c.low, c.close, c.volume, c.version)
        )
    return [(s, i, e) for (s, i), e in out.items()]


def arithmetic(cs: list[CandleEvent]) -> float:
    series, scoring = entries(cs), ScoringService()
    t = time.process_time()
    for symbol, interval, es in series:
        for k in range(0, len(es), CHUNK):
            scoring.apply_batch(symbol, interval, es[k : k + CHUNK])
    return len(cs) / (time.process_time() - t)


def per_candle(cs: list[CandleEvent]) -> float:
    series, scoring = entries(cs), ScoringService()
    t = time.process_time()
    for symbol, interval, es in series:
        for e in es:
            scoring.apply(symbol, interval, *e)
    return len(cs) / (time.process_time() - t)


def rows_step(cs: list[CandleEvent]) -> float:
    batches, scoring = chunks(cs), ScoringService()
    t = time.process_time()
    for b in batches:
        scoring.score_rows([b])
    return len(cs) / (time.process_time() - t)


def events_step(cs: list[CandleEvent]) -> float:
    scoring = ScoringService()
    t = time.process_time()
    for k in range(0, len(cs), CHUNK):
        scoring._process(cs[k : k + CHUNK])
    return len(cs) / (time.process_time() - t)


IN_PROCESS: dict[str, Callable[[list[CandleEvent]], float]] = {
    "arithmetic (`apply_batch`: indicators + grades + signals)": arithmetic,
    "service step on v2 rows (`score_rows`: `CandleBatch` in, `IndicatorBatch` + grade/signal events out)": rows_step,
    "service step on v1 events (`_process`: candle events in, indicator/grade/signal events out)": events_step,
    "one `apply` call per candle (arithmetic), for comparison": per_candle,
}


def in_process(candles: list[CandleEvent], rounds: int) -> dict[str, list[float]]:
    """Per label: daily, intraday and all candles per CPU-second (medians of ``rounds``)."""
    daily = [c for c in candles if c.interval is Interval.D1]
    intraday = [c for c in candles if c.interval is not Interval.D1]
    out = {}
    with gc_paused():  # as a replay runs
        for label, fn in IN_PROCESS.items():
            out[label] = [statistics.median(fn(cs) for _ in range(rounds)) for cs in (daily, intraday, candles)]
    return out


async def produce(bootstrap: str, batches: list[CandleBatch]) -> int:
    """Publish the chunks as ingest does (one message per partition each); the number of messages."""
    bus = KafkaBus(bootstrap, client_id="bench-producer")
    await bus.start()
    try:
        for b in batches:
            await bus.publish_rows(CANDLES_V2, b, linger=False)
        parts = [TopicPartition(CANDLES_V2.name, p) for p in await bus._partitions(CANDLES_V2.name)]
    finally:
        await bus.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)  # as KafkaBus.read_log reads a topic's end
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


async def raw_consume(bootstrap: str, n: int, messages: int) -> Rate:
    """Read the ``messages`` batch messages undecoded; ``n`` candles in them."""
    consumer = AIOKafkaConsumer(
        CANDLES_V2.name,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    t = time.perf_counter()
    first = 0.0
    await consumer.start()
    seen = 0
    try:
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batches and not first:
                first = time.perf_counter()
            seen += sum(len(b) for b in batches.values())
            await consumer.commit()  # as our bus does once per batch
    finally:
        await consumer.stop()
    end = time.perf_counter()
    return Rate(n, end - t, end - first)


def counted(bus: KafkaBus, handled: list[float]) -> None:
    """Wrap the candles.v2 subscription's handler: ``handled`` = [candles done, time of the first call]."""

    def wrap(handler: Any) -> Any:
        async def handle(batches: list[CandleBatch]) -> None:
            if not handled[1]:
                handled[1] = time.perf_counter()
            await handler(batches)  # for the scoring service: scored and its outputs published
            handled[0] += sum(len(b) for b in batches)

        return handle

    bus.subscriptions = [
        dataclasses.replace(s, handler=wrap(s.handler)) if s.topic is CANDLES_V2 else s for s in bus.subscriptions
    ]


async def through_bus(bootstrap: str, n: int, register: Callable[[KafkaBus], None]) -> Rate:
    """A Kafka bus with what ``register`` subscribes; the rate until all ``n`` candles were handled."""
    bus = KafkaBus(bootstrap, client_id="bench", group_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    register(bus)
    handled = [0.0, 0.0]
    counted(bus, handled)
    t = time.perf_counter()
    await bus.start()
    try:
        while handled[0] < n:
            if time.perf_counter() > t + 900:
                raise RuntimeError(f"only {handled[0]:,.0f} of {n:,} candles handled in 900 s")
            await asyncio.sleep(0.005)
        end = time.perf_counter()
        return Rate(n, end - t, end - handled[1])
    finally:
        await bus.stop()


def noop(bus: KafkaBus) -> None:
    async def handler(batches: list[CandleBatch]) -> None:
        pass

    bus.subscribe(CANDLES_V2, "noop", handler, max_batch=5000)


def scoring(service_class: type[ScoringService], publish_v1: bool) -> Callable[[KafkaBus], None]:
    def register(bus: KafkaBus) -> None:
        service = service_class()
        settings = Settings(scoring={"predictions": False}, bus={"publish_v1": publish_v1})
        service.register(Context(settings=settings, bus=bus))
        service.ready.set()  # no store to warm up from

    return register


def variants(compare_ref: str) -> dict[str, Callable[[KafkaBus], None]]:
    out = {
        "our Kafka bus, no-op batch handler (validation included)": noop,
        "scoring service end to end (v1 copies on, the default)": scoring(ScoringService, True),
        "scoring service end to end, `TOKENPULSE_PUBLISH_V1=false`": scoring(ScoringService, False),
    }
    if compare_ref:
        old = class_at(compare_ref, "services/scoring/tokenpulse_scoring/service.py", "ScoringService")
        out[f"scoring service of {compare_ref} end to end (v1 copies on)"] = scoring(old, True)
    return out


def through_kafka(bootstrap: str, candles: list[CandleEvent], rounds: int, compare_ref: str) -> dict[str, list[Rate]]:
    n = len(candles)
    messages = asyncio.run(produce(bootstrap, chunks(candles)))
    print(f"{n:,} candles published on {CANDLES_V2.name} as {messages} CandleBatch messages\n")
    runs: dict[str, list[Rate]] = {"raw": []}
    order = list(variants(compare_ref).items())
    for r in range(rounds):  # interleaved, so a slow spell of the shared VM hits every variant alike
        runs["raw"].append(asyncio.run(raw_consume(bootstrap, n, messages)))
        for label, register in order[:: 1 if r % 2 == 0 else -1]:
            runs.setdefault(label, []).append(asyncio.run(through_bus(bootstrap, n, register)))
    return runs


def broker_table(runs: dict[str, list[Rate]]) -> list[tuple[str, float, float, float, float]]:
    """Per variant: candles/s from start and over the consume phase (medians), each as a share of raw's."""
    raw_total = statistics.median(r.total for r in runs["raw"])
    raw_consume = statistics.median(r.consume for r in runs["raw"])
    rows = []
    for label, rates in runs.items():
        total = statistics.median(r.total for r in rates)
        consume = statistics.median(r.consume for r in rates)
        name = "raw aiokafka consumer of the same messages (ceiling)" if label == "raw" else label
        rows.append((name, total, total / raw_total, consume, consume / raw_consume))
    return rows


def print_tables(
    ips: dict[str, list[float]], runs: dict[str, list[Rate]], table: list[tuple[str, float, float, float, float]]
) -> None:
    print("| in process, one thread, per CPU-second | daily candles/s | intraday (1h, 4h) candles/s | all |")
    print("|---|---|---|---|")
    for label, (d, i, a) in ips.items():
        print(f"| {label} | {d:,.0f} | {i:,.0f} | {a:,.0f} |")
    print(f"\nload average after the broker runs: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| through the broker, same messages, same run (wall clock) | from start, candles/s | of the ceiling "
          "| consume phase, candles/s | of the ceiling |")  # fmt: skip
    print("|---|---|---|---|---|")
    for (name, total, share, consume, cshare), rates in zip(table, runs.values(), strict=True):
        each = ", ".join(f"{r.total:,.0f}" for r in rates)
        print(f"| {name} | {total:,.0f} (runs {each}) | {share:.3f} | {consume:,.0f} | {cshare:.3f} |")


def record(ips: dict[str, list[float]], table: list[tuple[str, float, float, float, float]], note: str) -> None:
    """Append this run's figures to docs/bench/history.csv and re-plot the scoring history."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    figures = [(f"{label.split(' (')[0]} all candles (v2)", v[2], "candles/CPU-s", "") for label, v in ips.items()]
    for name, total, share, consume, cshare in table:
        short = name.split(" (")[0].split(",")[0] + (", no v1 copies" if "PUBLISH_V1" in name else "")
        figures += [(f"{short} from start (v2)", total, "candles/s", ""),
                    (f"{short} consume phase (v2)", consume, "candles/s", "")]  # fmt: skip
        if not name.startswith("raw"):
            goal = f">={GOAL}" if name.startswith("scoring service end to end (v1") else ""
            figures += [(f"{short} / ceiling from start (v2)", round(share, 3), "ratio", goal),
                        (f"{short} / ceiling consume phase (v2)", round(cshare, 3), "ratio", "")]  # fmt: skip
    rows = [plot.Measurement("scoring", m, when, v if unit == "ratio" else round(v), unit, goal, commit, note)
            for m, v, unit, goal in figures]  # fmt: skip
    with plot.HISTORY_CSV.open("a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([[getattr(r, c) for c in plot.HISTORY_COLUMNS] for r in rows])
    plot.plot_bench_history("scoring", [r for r in plot.read_history() if r.bench == "scoring"])


def save_plot(ips: dict[str, list[float]], table: list[tuple[str, float, float, float, float]], rounds: int) -> None:
    plot.save(
        "scoring",
        "Scoring on the batch topics: in process (per CPU-second) and through the broker (wall clock)",
        [
            plot.groups(
                "in process, one thread",
                {k.split(" (")[0]: {"daily": v[0], "intraday (1h, 4h)": v[1], "all": v[2]} for k, v in ips.items()},
                "candles per CPU-second",
            ),
            plot.bars(
                "through the broker, consume phase",
                {name.split(" (")[0]: consume for name, _, _, consume, _ in table},
                "candles/s",
            ),
        ],
        footer=plot.footer(f"{rounds} rounds (median)"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--compare-ref", default=os.environ.get("BENCH_COMPARE_REF", ""), help="a commit's scoring too")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/bench/history.csv")
    ap.add_argument("--note", default="", help="the history rows' note (e.g. the machine's load)")
    args = ap.parse_args()
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.rounds} rounds (median)\n"
    )
    candles = history()
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    ips = in_process(candles, args.rounds)
    with broker.kafka(Path(tempfile.mkdtemp(prefix="tokenpulse-bench-scoring-")), fresh=True) as bootstrap:
        runs = through_kafka(bootstrap, candles, args.rounds, args.compare_ref)
    table = broker_table(runs)
    print_tables(ips, runs, table)
    save_plot(ips, table, args.rounds)
    if args.record:
        record(ips, table, args.note or f"{args.rounds} rounds (median)")


if __name__ == "__main__":
    main()
