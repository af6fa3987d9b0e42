"""Ingest scaled out over the ticks partitions, through the real broker: 1, 2 and 3 replicas — one killed
with SIGKILL mid-feed, one joining mid-feed — publish exactly the candles and final reference prices of
one replica.

One fixed set of trades (24 tokens, two sources each, strictly rising times per token, yesterday UTC) is
published on the ticks topic by an outside producer at a steady pace (``TOKENPULSE_LIVE_FEED=off``). Each
scenario gets the same trades under symbols of its own (the run tag in the name: the topics are shared)
and a consumer group of its own. Compared, after the run tag is taken out of the symbols:

* the candle events: the same event ids (which carry the bucket, the version and a digest of the
  content), each published once — nothing lost, nothing doubled, no extra correction;
* the baseline's final candles equal an in-process ``CandleBuilder`` fed every tick in order;
* the final reference price per token: bit for bit that of an in-process ``PriceReconciler`` fed every
  tick, its sources the same;
* the share: which replicas published a token's candles, in turn (the ``tp-origin`` header of each
  message): both replicas from the start, the survivor after the kill, and the joining replica too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_shared.bus.kafka import ORIGIN
from tokenpulse_shared.events import CandleEvent, TickEvent
from tokenpulse_shared.topics import CANDLES, PRICES, TICKS, Topic

from testkit.procs import Proc, free_port, wait_until
from testkit.publisher import PacedPublisher
from tests.e2e.kafka_tools import wait_caught_up

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

TOKENS = 24
PER_TOKEN = 240  # one trade every 10 s of event time: 40 minutes of 1-minute candles per token
CHUNK = 48
PAUSE_S = 0.3  # ~160 ticks/s: the feed lasts ~40 s, long enough for a join and a kill within it
SOURCES = ("e2ea", "e2eb")
IDLE_CLOSE_S = 12


def trades(tag: str) -> list[TickEvent]:
    """The fixed trades, symbols named ``T<tag><k>``; the same prices, sizes and times for every tag."""
    rng = random.Random(22)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1, hours=-6)
    price = [10.0 * (k + 1) for k in range(TOKENS)]
    out = []
    for i in range(PER_TOKEN):
        for k in range(TOKENS):
            price[k] *= 1 + rng.uniform(-0.003, 0.003)
            source = SOURCES[i % 2]
            out.append(
                TickEvent(
                    event_id=f"tick-{tag}-{k}-{i}",
                    symbol=f"T{tag}{k}",
                    source=source,
                    ts=start + timedelta(seconds=10 * i, milliseconds=k * 7),
                    price=price[k] * (1.001 if source == "e2eb" else 1.0),
                    size=rng.uniform(0.01, 3.0),
                    trade_id=f"{k}-{i}",
                )
            )
    return out


def assigned(p: Proc) -> list[list[int]]:
    """The ticks partitions a replica was assigned, rebalance by rebalance (from its log)."""
    found = re.findall(r"ticks partitions \[([\d, ]*)\] assigned", p.log.read_text())
    return [[int(x) for x in f.split(",") if x.strip()] for f in found]


def untag(tag: str, text: str) -> str:
    return text.replace(f"T{tag}", "T")


def paced_feed(bootstrap: str, ticks: list[TickEvent]) -> PacedPublisher:
    return PacedPublisher(bootstrap, TICKS, ticks, chunk=CHUNK, pause_s=PAUSE_S, client_id="e2e-scale-feeder")


@dataclass
class Published:
    """One topic's messages of a run's symbols, in topic order: (symbol, event, origin)."""

    rows: list[tuple[str, dict[str, object], str]] = field(default_factory=list)


async def read_raw(bootstrap: str, topic: Topic, since_ms: int, keep: Callable[[str], bool]) -> Published:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="e2e-scale-read")
    await admin.start()
    try:
        described = await admin.describe_topics([topic.name])
    finally:
        await admin.close()
    tps = [TopicPartition(topic.name, p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="e2e-scale-read")
    await consumer.start()
    out = Published()
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            consumer.seek(tp, hit.offset if (hit := found.get(tp)) is not None else end[tp])
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    key = (r.key or b"").decode()
                    if r.offset < end[tp] and r.value and keep(key):
                        origin = dict(r.headers or ()).get(ORIGIN, b"").decode()
                        out.rows.append((key, json.loads(r.value), origin))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


@dataclass
class Outcome:
    candle_ids: Counter[str]
    final_candles: dict[tuple[str, str, str], tuple[object, ...]]
    prices: dict[str, tuple[float, tuple[str, ...], str]]
    origins: dict[str, list[str]]  # symbol -> the replicas that published its candles, in turn


def outcome(tag: str, candles: Published, prices: Published) -> Outcome:
    ids: Counter[str] = Counter()
    best: dict[tuple[str, str, str], dict[str, object]] = {}
    origins: dict[str, list[str]] = {}
    for symbol, c, origin in candles.rows:
        ids[untag(tag, str(c["event_id"]))] += 1
        k = (untag(tag, symbol), str(c["interval"]), str(c["ts"]))
        if k not in best or int(str(c["version"])) >= int(str(best[k]["version"])):
            best[k] = c
        turns = origins.setdefault(symbol, [])
        if not turns or turns[-1] != origin:
            turns.append(origin)
    final = {k: tuple(c[f] for f in ("open", "high", "low", "close", "volume", "trades")) for k, c in best.items()}
    last: dict[str, tuple[float, tuple[str, ...], str]] = {}
    for symbol, p, _ in prices.rows:
        if not p["stale"]:
            last[untag(tag, symbol)] = (float(str(p["price"])), tuple(p["sources"]), str(p["ts"]))  # type: ignore[arg-type]
    return Outcome(ids, final, last, origins)


Candles = dict[tuple[str, str, str], tuple[object, ...]]
Prices = dict[str, tuple[float, tuple[str, ...], str]]


def reference(ticks: list[TickEvent], tag: str) -> tuple[Candles, Prices]:
    """What an in-process builder and reconciler make of every tick in order (symbols untagged)."""
    builder = CandleBuilder()
    candles = builder.add(ticks).candles + builder.tick_clock(wall=time.time() + 86400)
    best: dict[tuple[str, str, datetime], CandleEvent] = {}
    for c in candles:
        k = (untag(tag, c.symbol), c.interval.value, c.ts)
        if k not in best or c.version >= best[k].version:
            best[k] = c
    final: Candles = {
        (s, iv, json.loads(c.model_dump_json())["ts"]): (c.open, c.high, c.low, c.close, c.volume, c.trades)
        for (s, iv, _), c in best.items()
    }
    reconciler = PriceReconciler()
    last = {p.symbol: p for p in reconciler.update(ticks, wall=time.time())}
    prices: Prices = {
        untag(tag, s): (p.price, tuple(p.sources), json.loads(p.model_dump_json())["ts"]) for s, p in last.items()
    }
    return final, prices


@dataclass
class Scenario:
    """Replicas at the start, and what happens to them as the feed goes: ("join", at) or ("kill", at), ``at``
    the share of the trades sent."""

    replicas: int
    events: list[tuple[str, float]]


def run(bootstrap: str, tmp_path: Path, name: str, scenario: Scenario) -> tuple[list[list[list[int]]], Outcome]:
    tag = uuid.uuid4().hex[:5].upper()
    ticks = trades(tag)
    symbols = {t.symbol for t in ticks}
    prefix = f"e2e-scale-{name}-{tag.lower()}"
    since_ms = int(time.time() * 1000)

    def env(port: int) -> dict[str, str]:
        return {
            "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
            "TOKENPULSE_CONSUMER_GROUP_PREFIX": prefix,
            "TOKENPULSE_DATA_DIR": str(tmp_path / f"data-{name}"),
            "TOKENPULSE_METRICS_PORT": str(port),
            "TOKENPULSE_LIVE_FEED": "off",
            "TOKENPULSE_LOG_FORMAT": "json",
            "TOKENPULSE_INGEST_RESTORE_LOOKBACK_S": str(2 * 86400),
            "TOKENPULSE_KAFKA_SESSION_TIMEOUT_S": "6",  # the broker's floor: a kill -9 is taken over in ~6 s
            # a replica starved of CPU for a few seconds (2 shared cores) must not idle-close candles early
            "TOKENPULSE_CANDLE_IDLE_CLOSE_S": str(IDLE_CLOSE_S),
        }

    procs: list[Proc] = []

    def start(wait: bool = True) -> Proc:
        port = free_port()
        p = Proc(["run", "ingest"], env(port), tmp_path / f"{name}-{len(procs) + 1}.log")
        procs.append(p)
        if wait:
            wait_until(
                lambda: (
                    "tokenpulse started" in p.log.read_text()
                    and httpx.get(f"http://127.0.0.1:{port}/readyz").is_success
                ),
                120,
                f"{name}: replica {len(procs)} ready",
                [p],
            )
        return p

    try:
        for _ in range(scenario.replicas):
            start()
        time.sleep(3)  # the group settles (each member's join rebalances it)
        feeder = paced_feed(bootstrap, ticks)
        feeder.start()
        for what, at in scenario.events:
            share = int(at * len(ticks))
            wait_until(lambda share=share: feeder.sent >= share, 60, f"{name}: {at:.0%} of the feed sent")  # type: ignore[misc]
            assert feeder.sent < len(ticks), f"{name}: the feed ended before the {what}"
            if what == "join":
                start(wait=False)  # it joins the group while the feed goes on
            else:
                # every replica holds its share first (a join under load takes a while)
                wait_until(lambda: all(assigned(p) for p in procs if p.p.poll() is None), 60, f"{name}: shares held")
                assert feeder.sent < len(ticks), f"{name}: the feed ended before the {what}"
                victim = next(p for p in procs if p.p.poll() is None)
                victim.p.kill()  # SIGKILL: nothing graceful; its partitions wait for the session timeout
                victim.p.wait()
        feeder.join(120)
        assert feeder.error is None and feeder.sent == len(ticks)
        wait_caught_up(bootstrap, {f"{prefix}-ingest": [TICKS]}, timeout=120)
        time.sleep(IDLE_CLOSE_S + 3)  # the idle clock closes the candles still open
    finally:
        for p in procs:
            p.stop()
    keep = symbols.__contains__
    candles = asyncio.run(read_raw(bootstrap, CANDLES, since_ms, keep))
    prices = asyncio.run(read_raw(bootstrap, PRICES, since_ms, keep))
    shares = [assigned(p) for p in procs]
    if name == "one":
        want_candles, want_prices = reference(ticks, tag)
        assert outcome(tag, candles, prices).final_candles == want_candles, (
            "one replica's candles differ from the in-process builder's"
        )
        assert outcome(tag, candles, prices).prices == want_prices, "one replica's final reference prices differ"
    return shares, outcome(tag, candles, prices)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One replica's run, shared by the tests (which compare theirs with it)."""
    kafka_bootstrap = os.environ.get("TOKENPULSE_TEST_KAFKA")
    if not kafka_bootstrap:
        pytest.fail("TOKENPULSE_TEST_KAFKA is not set: run the suite with `make test`, which starts Kafka")
    _, got = run(kafka_bootstrap, tmp_path_factory.mktemp("scale"), "one", Scenario(1, []))
    assert [i for i, n in got.candle_ids.items() if n > 1] == []
    assert len(got.final_candles) > 1000
    return got


def same_as_baseline(got: Outcome, baseline: Outcome) -> None:
    lost = sorted(set(baseline.candle_ids) - set(got.candle_ids))
    extra = sorted(set(got.candle_ids) - set(baseline.candle_ids))
    assert not lost and not extra, f"{len(lost)} candle events lost, e.g. {lost[:3]}; {len(extra)} extra: {extra[:3]}"
    doubled = [i for i, n in got.candle_ids.items() if n > 1]
    assert doubled == [], f"{len(doubled)} candle events published twice, e.g. {doubled[:3]}"
    assert got.final_candles == baseline.final_candles
    assert got.prices == baseline.prices


def test_two_replicas_one_killed_mid_feed_publish_what_one_replica_does(
    kafka_bootstrap: str, tmp_path: Path, baseline: Outcome
) -> None:
    shares, got = run(kafka_bootstrap, tmp_path, "kill", Scenario(2, [("kill", 0.4)]))
    same_as_baseline(got, baseline)
    assert max(len(t) for t in got.origins.values()) >= 2, "no token changed hands at the kill"
    assert shares[1][-1] == list(range(6)), f"the survivor did not take every partition over: {shares}"
    assert len({t[0] for t in got.origins.values()}) == 2, "the two replicas did not share the tokens"


def test_three_replicas_with_one_joining_and_one_killed_mid_feed(
    kafka_bootstrap: str, tmp_path: Path, baseline: Outcome
) -> None:
    shares, got = run(kafka_bootstrap, tmp_path, "join", Scenario(2, [("join", 0.1), ("kill", 0.5)]))
    same_as_baseline(got, baseline)
    assert any(len(share) == 2 for mine in shares for share in mine), f"never three replicas at once: {shares}"
    assert len({o for t in got.origins.values() for o in t}) == 3, "the joining replica took no tokens"
