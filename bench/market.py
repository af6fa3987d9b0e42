"""Market-scale benchmark (issue 22): the whole pipeline in distributed mode under a whole market's trades.

Run from the repository root: ``.venv/bin/python -m bench.market [--rates 2000,5000,10000,20000] [--seconds 120]
[--symbols 1000] [--replicas 1,2] [--json OUT] [--record]`` (``make bench`` runs it with the defaults).

Per replica count (a fresh broker each, started with scripts/kafka-local.sh): the four services as
``tokenpulse run SERVICE`` processes (that many replicas of ingest and of scoring, one alerts, one gateway with
the store writer), ingest with ``TOKENPULSE_LIVE_FEED=off`` so only the bench's trades flow, tracking the first
``--symbols`` tokens of ``data/universe/top1000.csv``. The bench is an outside producer: one trade per message on
``tokenpulse.ticks.v1`` in the documented schema (every field given, keyed by symbol), Zipf-distributed over the
tokens by rank, each token's price a random walk from a realistic start, ``ts`` = the wall-clock time the trade is
sent. Every ``CHUNK_S`` it sends the trades due by then, at each rate of ``--rates`` for ``--seconds``.

Measured per rate (``bench/observer.py`` stamps arrivals in a process of its own):

* offered ticks/s (what the producer sent per second) and sustained ticks/s (what ingest's consumer group
  committed per second over the same window), then how long the backlog took to drain;
* max consumer lag per group (committed offsets against the partitions' ends, sampled every second);
* tick → price event: arrival on ``tokenpulse.prices.v2`` minus the row's ``ts_us`` (the newest tick time of the
  token in the batch ingest handled, i.e. that tick's send time);
* tick → price alert delivered: ``price_above``/``price_below`` rules created through the gateway API with webhook
  channels to the observer's receiver (``TOKENPULSE_WEBHOOK_ALLOWLIST``); the prices of ``ALERT_TOKENS`` tokens
  swing ``ALERT_SWING`` around their level every ``ALERT_HALF_PERIOD_S`` so they cross it on purpose;
* candle close → indicators: a candle's arrival on the candles topic to its indicators' arrival (1m and 5m close
  within a run; 1h only when the run spans an hour boundary); 1h/4h/1d signals are counted and timed the same way
  when any appear (scoring needs weeks of candles before a grade crosses, so a run from empty state has none);
* CPU seconds per 1,000 ticks per service and peak RSS per process (psutil), over the paced window and the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tokenpulse_shared.events import Interval

from bench import broker, plot
from bench.broker import send_batches
from bench.observer import Observer
from bench.procs import ServiceProc, wait_ready

ROOT = Path(__file__).resolve().parents[1]
UNIVERSE = ROOT / "data" / "universe" / "top1000.csv"
DAILY = ROOT / "data" / "daily" / "binance"
TICKS_TOPIC = "tokenpulse.ticks.v1"
GROUPS = ("ingest", "scoring", "alerts", "writer", "gateway-live")
SERVICES = ("ingest", "scoring", "alerts", "gateway")
STABLE = {"USDT", "USDC", "DAI", "FDUSD", "PYUSD"}
ZIPF_S = 1.0  # trade rate of the token of rank r proportional to 1 / r**ZIPF_S
CHUNK_S = 0.01  # the producer sends the trades due every 10 ms
DAILY_VOL = 0.04  # each token's log-price moves this much a day (its trades' steps scale with its trade rate)
VENUE_WEIGHT = {"binance": 5, "coinbase": 3, "kraken": 2}
VENUE_QUOTE = {"binance": "USDT", "coinbase": "USD", "kraken": "USD"}
ALERT_TOKENS = 40
ALERT_HALF_PERIOD_S = 3.0
ALERT_SWING = 0.02
LATENESS_S = 2.0  # ingest closes a candle this long after its end (CandleBuilder's lateness)
PARTITIONS = 6  # of every topic (the services' default TOKENPULSE_KAFKA_PARTITIONS)
SETTLE_S = 3.0  # after the drain: webhooks and indicators still on their way
console = Console()


@dataclass(frozen=True)
class Token:
    rank: int
    symbol: str
    venues: tuple[str, ...]  # the sources its trades come from, repeated by weight


def load_universe(n: int) -> list[Token]:
    """The first ``n`` tokens of the universe file; a token no venue lists trades on an aggregator."""
    with UNIVERSE.open(newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    tokens = []
    for rank, row in enumerate(rows, 1):
        venues = tuple(v for v, w in VENUE_WEIGHT.items() if row[v] for _ in range(w))
        tokens.append(Token(rank, row["symbol"], venues or ("aggregator",)))
    return tokens


def tracked_env(symbols: list[str]) -> dict[str, str]:
    """The shipped universe file cut to the bench's first ``len(symbols)`` tokens by rank (its file order)."""
    return {"TOKENPULSE_UNIVERSE": str(UNIVERSE), "TOKENPULSE_UNIVERSE_TOP_N": str(len(symbols))}


def start_prices(tokens: list[Token], rng: random.Random) -> dict[str, float]:
    """The last bundled daily close where there is one, 1.0 for stablecoins, else a seeded draw between
    $0.00001 and $100, log-uniform (long-tail tokens trade at all scales)."""
    prices = {}
    for t in tokens:
        daily = DAILY / f"{t.symbol.lower()}usdt_daily.csv"
        if daily.exists():
            prices[t.symbol] = float(daily.read_text().strip().splitlines()[-1].split(",")[4])
        elif t.symbol in STABLE:
            prices[t.symbol] = 1.0
        else:
            prices[t.symbol] = 10 ** rng.uniform(-5, 2)
    return prices


class Market:
    """The trades: Zipf over the tokens, a venue per trade, random-walk prices, a swing on the alert tokens."""

    def __init__(self, tokens: list[Token], partitions: int, seed: int = 22) -> None:
        self.rng = random.Random(seed)
        self.tokens = tokens
        self.price = start_prices(tokens, self.rng)
        self.level = dict(self.price)  # the alert tokens' rule level
        weights = [1 / t.rank**ZIPF_S for t in tokens]
        total = math.fsum(weights)
        self.share = {t.symbol: w / total for t, w in zip(tokens, weights, strict=True)}
        self.cum = list(_accumulate(weights))
        hot = [t for t in tokens if t.symbol not in STABLE][:ALERT_TOKENS]
        self.swing = {t.symbol: i * ALERT_HALF_PERIOD_S / max(1, len(hot)) for i, t in enumerate(hot)}
        partitioner = DefaultPartitioner()
        ids = list(range(partitions))
        self.partition = {t.symbol: partitioner(t.symbol.encode(), ids, ids) for t in tokens}
        self.run = uuid.uuid4().hex[:8]
        self.seq = 0
        self.t0 = time.time()
        self.sigma: dict[str, float] = {}
        self.encode = msgspec.json.Encoder().encode

    def pace(self, rate: int) -> None:
        """Per-trade steps for ``rate`` trades/s in all: DAILY_VOL a day whatever a token's share of them."""
        self.sigma = {s: DAILY_VOL / math.sqrt(share * rate * 86400) for s, share in self.share.items()}

    def _price(self, symbol: str, now: float) -> float:
        p = self.price[symbol] * math.exp(self.rng.gauss(0.0, self.sigma[symbol]))
        self.price[symbol] = p
        offset = self.swing.get(symbol)
        if offset is not None:  # a square wave around the walk, so the alert rules at its start fire on purpose
            high = int((now - self.t0 + offset) / ALERT_HALF_PERIOD_S) % 2 == 0
            p *= 1 + ALERT_SWING if high else 1 - ALERT_SWING
        return p

    def trades(self, n: int, now: float) -> dict[int, list[tuple[bytes, bytes]]]:
        """``n`` trades sent at wall time ``now``, as (key, JSON value) per partition."""
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        rng = self.rng
        for token in rng.choices(self.tokens, cum_weights=self.cum, k=n):
            self.seq += 1
            price = self._price(token.symbol, now)
            source = rng.choice(token.venues)
            value = self.encode(
                {
                    "event_id": f"bench-{self.run}-{self.seq}",
                    "schema_version": 1,
                    "produced_at": stamp,
                    "symbol": token.symbol,
                    "source": source,
                    "ts": stamp,
                    "price": price * (1 + rng.uniform(-2e-4, 2e-4)),
                    "size": rng.lognormvariate(5.0, 1.5) / price,
                    "side": "buy" if rng.random() < 0.5 else "sell",
                    "trade_id": f"{self.run}-{self.seq}",
                    "quote": VENUE_QUOTE.get(source, "USD"),
                }
            )
            out.setdefault(self.partition[token.symbol], []).append((token.symbol.encode(), value))
        return out


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


@dataclass
class SendStats:
    sent: int = 0
    seconds: float = 0.0
    behind_s: float = 0.0  # most the producer fell behind its schedule


async def produce(
    producer: AIOKafkaProducer, market: Market, rate: int, seconds: float, on_sent: Callable[[int], None]
) -> SendStats:
    """Paced: every CHUNK_S the trades due by then; waits for the broker's acknowledgement of every batch."""
    stats, total = SendStats(), int(rate * seconds)
    start = time.monotonic()
    pending: list[Any] = []
    while stats.sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        n = due - stats.sent
        if n > 0:
            pending += await send_batches(producer, TICKS_TOPIC, market.trades(n, time.time()))
            stats.sent += n
            on_sent(n)
        if len(pending) > 200:
            await asyncio.gather(*pending)
            pending.clear()
        wait = start + (stats.sent + 1) / rate - time.monotonic()
        stats.behind_s = max(stats.behind_s, -wait)
        await asyncio.sleep(max(CHUNK_S, wait) if n > 0 else max(wait, 0.001))
    await asyncio.gather(*pending)
    stats.seconds = time.monotonic() - start
    return stats


# ---- the services and what they use -------------------------------------------------------------------------


@dataclass
class Cluster:
    """The service processes of one replica count, with the settings they share."""

    bootstrap: str
    prefix: str
    admin_token: str
    procs: list[ServiceProc] = field(default_factory=list)

    @property
    def gateway(self) -> ServiceProc:
        return next(p for p in self.procs if p.service == "gateway")

    def by_service(self, service: str) -> list[ServiceProc]:
        return [p for p in self.procs if p.service == service]


def start_cluster(bootstrap: str, replicas: int, symbols: list[str], work: Path) -> Cluster:
    cluster = Cluster(bootstrap, f"bench-market-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex)
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": cluster.prefix,
        "TOKENPULSE_PREDICTIONS": "false",  # no model training in the middle of a throughput run
        "TOKENPULSE_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "TOKENPULSE_ADMIN_TOKEN": cluster.admin_token,
        "TOKENPULSE_KAFKA_PARTITIONS": str(PARTITIONS),
        "TOKENPULSE_LOG_LEVEL": "INFO",
        "TOKENPULSE_PUBLISH_V1": "false",  # the batch topics only: the v1 copies are a migration cost
        **tracked_env(symbols),
    }
    work.mkdir(parents=True, exist_ok=True)
    cluster.procs.append(ServiceProc("gateway", "gateway", env, work))  # first: it creates the topics
    wait_ready([cluster.gateway])
    for i in range(1, replicas + 1):
        cluster.procs.append(ServiceProc("ingest", f"ingest-{i}", {**env, "TOKENPULSE_LIVE_FEED": "off"}, work))
        cluster.procs.append(ServiceProc("scoring", f"scoring-{i}", env, work))
    cluster.procs.append(ServiceProc("alerts", "alerts", env, work))
    wait_ready(cluster.procs)
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    for p in reversed(cluster.procs):
        p.stop()


class LagMonitor:
    """Consumer lag per group (the end of each partition minus the group's committed offset), every second."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-lag")
        self.ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="bench-ends")
        self.groups = {g: f"{prefix}-{g}" for g in GROUPS}
        self.latest: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.ends.start()

    async def stop(self) -> None:
        await self.ends.stop()
        await self.admin.close()

    async def committed(self, group: str, topic: str | None = None) -> dict[TopicPartition, int]:
        offsets = await self.admin.list_consumer_group_offsets(self.groups[group])
        return {tp: m.offset for tp, m in offsets.items() if m.offset >= 0 and (topic is None or tp.topic == topic)}

    async def sample(self) -> dict[str, int]:
        committed = {g: await self.committed(g) for g in GROUPS}
        tps = list({tp for c in committed.values() for tp in c})
        ends = await self.ends.end_offsets(tps) if tps else {}
        self.latest = {g: sum(max(0, ends[tp] - off) for tp, off in c.items()) for g, c in committed.items() if c}
        for g, lag in self.latest.items():
            self.peak[g] = max(self.peak.get(g, 0), lag)
        return self.latest

    def reset_peak(self) -> None:
        self.peak = {}


def cpu_by_process(cluster: Cluster) -> dict[str, float]:
    return {p.name: p.cpu_seconds() for p in cluster.procs}


async def watch(cluster: Cluster, lag: LagMonitor, show: Callable[[str], None]) -> None:
    """Every second: lag per group (kept as the phase's peak) and RSS per process; a process that dies fails."""
    while True:
        for p in cluster.procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited ({p.p.returncode}):\n{p.tail()}")
            p.sample_rss()
        try:
            latest = await lag.sample()
        except Exception as exc:  # a group mid-rebalance: next second
            show(f"lag: {exc!r}")
        else:
            show("lag " + " · ".join(f"{g} {n:,}" for g, n in latest.items()))
        await asyncio.sleep(1.0)


async def drain(lag: LagMonitor, rate: int, timeout: float) -> float | None:
    """Seconds until every group has caught up (lag under 1 % of a second's ticks, at least 50), None if it
    had not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        latest = dict(lag.latest)
        if latest and all(n <= max(50, rate // 100) for n in latest.values()):
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    return None


# ---- alert rules through the gateway ------------------------------------------------------------------------


def create_rules(cluster: Cluster, market: Market, hook_url: str) -> int:
    """A price_above and a price_below rule at each swinging token's level, each with its own webhook path (one
    target per rule: no summary messages), through the API with an enterprise key issued by the admin API."""
    base = cluster.gateway.url
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.post(
            "/v1/admin/keys",
            json={"name": "bench-market", "tier": "enterprise"},
            headers={"X-Admin-Token": cluster.admin_token},
        )
        r.raise_for_status()
        headers = {"X-API-Key": r.json()["key"]}
        n = 0
        for symbol in market.swing:
            for kind in ("price_above", "price_below"):
                body = {
                    "symbol": symbol,
                    "name": f"bench {symbol} {kind}",
                    "cooldown_s": 0,
                    "condition": {"kind": kind, "value": market.level[symbol]},
                    "channels": [{"type": "webhook", "target": f"{hook_url}/hook/{symbol}/{kind}"}],
                }
                client.post("/v1/alerts", json=body, headers=headers).raise_for_status()
                n += 1
    return n


# ---- one phase: a paced rate, its drain, its figures --------------------------------------------------------


@dataclass
class Latency:
    n: int
    p50: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        s = sorted(values)
        return cls(len(s), plot.percentile(s, 50), plot.percentile(s, 99))


@dataclass
class Phase:
    replicas: int
    rate: int
    seconds: float
    sent: int
    offered: float
    sustained: float
    behind_ms: float
    drain_s: float | None
    max_lag: dict[str, int]
    tick_to_price: Latency
    tick_to_alert: Latency
    candle_to_indicators: dict[str, Latency]
    candle_close: dict[str, Latency]
    signals: dict[str, Latency]
    corrected_candles: int
    doubled_candles: int
    cpu_per_1k: dict[str, float]
    cpu_per_1k_process: dict[str, float]
    peak_rss_mb: dict[str, float]
    price_ms: list[float] = field(default_factory=list, repr=False)


async def ingest_committed(lag: LagMonitor) -> int:
    return sum((await lag.committed("ingest", TICKS_TOPIC)).values())


async def run_phase(
    cluster: Cluster, market: Market, observer: Observer, lag: LagMonitor, rate: int, seconds: float, progress: Progress
) -> Phase:
    market.pace(rate)
    task = progress.add_task(
        f"{len(cluster.by_service('ingest'))} replica(s) @ {rate:,}/s", total=int(rate * seconds), status=""
    )
    watcher = asyncio.create_task(watch(cluster, lag, lambda s: progress.update(task, status=s)))
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        lag.reset_peak()
        for p in cluster.procs:
            p.peak_rss = 0
        cpu0, committed0, start = cpu_by_process(cluster), await ingest_committed(lag), time.time()
        stats = await produce(producer, market, rate, seconds, lambda n: progress.advance(task, n))
        end, committed1 = time.time(), await ingest_committed(lag)
        progress.update(task, description=f"{task_name(cluster, rate)}: draining")
        drained = await drain(lag, rate, timeout=max(30.0, seconds))
        await asyncio.sleep(SETTLE_S)
        cpu1 = cpu_by_process(cluster)
        if watcher.done():
            watcher.result()  # a service exited during the phase: raise with its log
    finally:
        watcher.cancel()
        await producer.stop()
    progress.update(task, description=f"{task_name(cluster, rate)}: done")
    arrived = await asyncio.to_thread(observer.collect, start, end)
    cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
    return summarise(cluster, rate, stats, (committed1 - committed0) / (end - start), drained, lag, cpu, arrived)


def task_name(cluster: Cluster, rate: int) -> str:
    return f"{len(cluster.by_service('ingest'))} replica(s) @ {rate:,}/s"


def summarise(
    cluster: Cluster,
    rate: int,
    stats: SendStats,
    sustained: float,
    drained: float | None,
    lag: LagMonitor,
    cpu: dict[str, float],
    arrived: dict[str, Any],
) -> Phase:
    per_1k = 1000 / max(1, stats.sent)
    by_service = {s: sum(cpu[p.name] for p in cluster.by_service(s)) * per_1k for s in SERVICES}
    by_service["all services"] = sum(by_service.values())
    to_indicators, close, signals, (corrected, doubled) = candle_figures(arrived)
    return Phase(
        replicas=len(cluster.by_service("ingest")),
        rate=rate,
        seconds=stats.seconds,
        sent=stats.sent,
        offered=stats.sent / stats.seconds,
        sustained=sustained,
        behind_ms=stats.behind_s * 1000,
        drain_s=drained,
        max_lag=dict(lag.peak),
        tick_to_price=Latency.of(arrived["price_ms"]),
        tick_to_alert=Latency.of(alert_latencies(arrived["hooks"])),
        candle_to_indicators=to_indicators,
        candle_close=close,
        signals=signals,
        corrected_candles=corrected,
        doubled_candles=doubled,
        cpu_per_1k=by_service,
        cpu_per_1k_process={name: c * per_1k for name, c in cpu.items()},
        peak_rss_mb={p.name: p.peak_rss / 2**20 for p in cluster.procs},
        price_ms=arrived["price_ms"],
    )


def alert_latencies(hooks: list[tuple[str, float, list[float]]]) -> list[float]:
    """Webhook arrival minus the alert's ``ts`` (its price event's: the send time of the tick behind it), ms."""
    return [(at - ts) * 1000 for path, at, stamps in hooks if path.startswith("/hook/") for ts in stamps]


def candle_figures(
    arrived: dict[str, Any],
) -> tuple[dict[str, Latency], dict[str, Latency], dict[str, Latency], tuple[int, int]]:
    """Per interval: candle on its topic → its indicators on theirs; the candle's deadline (end + lateness) → the
    candle on its topic; candle → signal for the signals seen; and (candles re-published as corrections with a
    higher version, candles published twice at the same version)."""
    first: dict[tuple[str, str, float], float] = {}
    versions: dict[tuple[str, str, float], list[int]] = {}
    close: dict[str, list[float]] = {}
    for symbol, interval, ts, version, at in arrived["candles"]:
        key = (symbol, interval, ts)
        versions.setdefault(key, []).append(version)
        if key not in first:
            first[key] = at
            close.setdefault(interval, []).append((at - ts - interval_s(interval) - LATENESS_S) * 1000)
    to_ind: dict[str, list[float]] = {}
    for key, at in arrived["indicators"].items():
        if key in first:
            to_ind.setdefault(key[1], []).append((at - first[key]) * 1000)
    to_signal: dict[str, list[float]] = {}
    for symbol, interval, ts, at in arrived["signals"]:
        if (symbol, interval, ts) in first:
            to_signal.setdefault(interval, []).append((at - first[(symbol, interval, ts)]) * 1000)
    corrected = sum(1 for v in versions.values() if len(set(v)) > 1)
    doubled = sum(1 for v in versions.values() if len(set(v)) < len(v))
    return (
        {k: Latency.of(v) for k, v in sorted(to_ind.items(), key=lambda kv: interval_s(kv[0]))},
        {k: Latency.of(v) for k, v in sorted(close.items(), key=lambda kv: interval_s(kv[0]))},
        {k: Latency.of(v) for k, v in to_signal.items()},
        (corrected, doubled),
    )


def interval_s(interval: str) -> int:
    return Interval(interval).seconds


# ---- a replica count: broker, services, rules, every rate ---------------------------------------------------


async def run_rates(cluster: Cluster, market: Market, rates: list[int], seconds: float, hooks: Observer) -> list[Phase]:
    lag = LagMonitor(cluster.bootstrap, cluster.prefix)
    await lag.start()
    phases = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, TextColumn("{task.fields[status]}"), console=console) as progress:
            for rate in rates:
                phases.append(await run_phase(cluster, market, hooks, lag, rate, seconds, progress))
                console.print(one_line(phases[-1]))
    finally:
        await lag.stop()
    return phases


def run_replicas(replicas: int, args: argparse.Namespace, tokens: list[Token], work: Path) -> list[Phase]:
    """A fresh broker per replica count: a new consumer group would otherwise start on the last run's ticks."""
    console.rule(f"{replicas} replica(s) of ingest and scoring, {len(tokens):,} tokens")
    with broker.kafka(work / f"r{replicas}", fresh=True) as bootstrap:
        cluster = start_cluster(bootstrap, replicas, [t.symbol for t in tokens], work / f"r{replicas}")
        try:
            market = Market(tokens, PARTITIONS)
            with Observer(bootstrap, PARTITIONS) as observer:
                rules = create_rules(cluster, market, observer.hook_url)
                console.print(f"{rules} alert rules on {len(market.swing)} tokens; services: {names(cluster)}")
                time.sleep(3)  # the alerts service follows the rules topic
                return asyncio.run(run_rates(cluster, market, args.rates, args.seconds, observer))
        finally:
            stop_cluster(cluster)


def names(cluster: Cluster) -> str:
    return ", ".join(f"{p.name} (pid {p.p.pid})" for p in cluster.procs)


def one_line(p: Phase) -> str:
    drain = "not drained" if p.drain_s is None else f"drained in {p.drain_s:.1f} s"
    return (
        f"  {p.replicas} replica(s) @ {p.rate:,}/s: offered {p.offered:,.0f}, sustained {p.sustained:,.0f} ticks/s, "
        f"{drain}; tick → price p50/p99 {p.tick_to_price.p50:,.0f}/{p.tick_to_price.p99:,.0f} ms; "
        f"alert {p.tick_to_alert.p50:,.0f}/{p.tick_to_alert.p99:,.0f} ms (n={p.tick_to_alert.n}); "
        f"CPU {p.cpu_per_1k['all services']:.2f} s per 1,000 ticks"
    )


# ---- report: Markdown, JSON, plot, history ------------------------------------------------------------------


def label(p: Phase) -> str:
    return f"{p.replicas} replica(s) @ {p.rate:,}/s"


def lat(x: Latency | None) -> str:
    return "—" if x is None or not x.n else f"{x.p50:,.0f} / {x.p99:,.0f} (n={x.n:,})"


def report_rows(phases: list[Phase]) -> list[tuple[str, list[str]]]:
    """(measure, one cell per phase) for the Markdown table."""
    rows: list[tuple[str, list[str]]] = [
        ("offered / sustained ticks/s", [f"{p.offered:,.0f} / **{p.sustained:,.0f}**" for p in phases]),
        ("producer most behind schedule, ms", [f"{p.behind_ms:,.0f}" for p in phases]),
        (
            "backlog drained after, s",
            ["not within the wait" if p.drain_s is None else f"{p.drain_s:.1f}" for p in phases],
        ),
    ]
    for g in GROUPS:
        rows.append((f"max lag, group {g}", [f"{p.max_lag[g]:,}" if g in p.max_lag else "—" for p in phases]))
    rows.append(("**tick → price event p50 / p99 ms**", [lat(p.tick_to_price) for p in phases]))
    rows.append(("**tick → price alert (webhook) p50 / p99 ms**", [lat(p.tick_to_alert) for p in phases]))
    for iv in sorted({i for p in phases for i in p.candle_to_indicators}, key=interval_s):
        rows.append(
            (
                f"{iv} candle on topic → indicators on topic p50 / p99 ms",
                [lat(p.candle_to_indicators.get(iv)) for p in phases],
            )
        )
    for iv in sorted({i for p in phases for i in p.candle_close}, key=interval_s):
        rows.append(
            (
                f"{iv} candle end + 2 s lateness → candle on topic p50 / p99 ms",
                [lat(p.candle_close.get(iv)) for p in phases],
            )
        )
    rows.append(("signals seen (candle → signal p50 / p99 ms)", [signals_cell(p) for p in phases]))
    rows.append(("candles re-published as corrections (higher version)", [f"{p.corrected_candles:,}" for p in phases]))
    rows.append(("candles published twice at the same version", [f"{p.doubled_candles:,}" for p in phases]))
    for s in (*SERVICES, "all services"):
        rows.append((f"CPU µs per tick, {s}", [f"{p.cpu_per_1k[s] * 1000:,.1f}" for p in phases]))
    for s in SERVICES:
        rows.append((f"peak RSS MB, {s} (largest replica)", [f"{peak_rss(p, s):,.0f}" for p in phases]))
    return rows


def signals_cell(p: Phase) -> str:
    return "; ".join(f"{iv}: {lat(x)}" for iv, x in p.signals.items()) or "none"


def peak_rss(p: Phase, service: str) -> float:
    return max(v for k, v in p.peak_rss_mb.items() if k.split("-")[0] == service)


def markdown(phases: list[Phase]) -> str:
    lines = ["| measure | " + " | ".join(label(p) for p in phases) + " |", "|---" * (len(phases) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in report_rows(phases)]
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "when_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "commit": git_commit(),
        "command": "python -m bench.market " + " ".join(args.argv),
        "tokens": args.symbols,
        "seconds": args.seconds,
        "rates": args.rates,
        "replicas": args.replicas,
    }


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def write_json(path: Path, info: dict[str, Any], phases: list[Phase]) -> None:
    body = {"run": info, "phases": [{k: v for k, v in asdict(p).items() if k != "price_ms"} for p in phases]}
    path.write_text(json.dumps(body, indent=1) + "\n")
    console.print(f"summary: {path}")


def thinned(values: list[float], most: int = 20000) -> list[float]:
    s = sorted(values)
    step = max(1, len(s) // most)
    return s[::step]


def draw(phases: list[Phase], info: dict[str, Any]) -> None:
    rates = {label(p): {"offered": p.offered, "sustained": p.sustained} for p in phases}
    p99 = {
        label(p): {
            name: v
            for name, v in (
                ("tick → price event", p.tick_to_price.p99),
                ("tick → price alert", p.tick_to_alert.p99),
                ("1m candle → indicators", p.candle_to_indicators["1m"].p99 if "1m" in p.candle_to_indicators else 0),
            )
            if v > 0  # NaN (no samples) too
        }
        for p in phases
    }
    cpu = {label(p): {s: p.cpu_per_1k[s] * 1000 for s in SERVICES} for p in phases}
    plot.save(
        "market",
        f"Market scale: {info['tokens']:,} tokens, all four services on Kafka ({info['seconds']:g} s per rate)",
        [
            plot.groups("ticks/s: offered by the bench, sustained by ingest", rates, "ticks/s"),
            plot.cdf("tick → price event on its topic", {label(p): thinned(p.price_ms) for p in phases}, "ms"),
            plot.groups("p99 latency", p99, "ms", log=True),
            plot.groups("CPU per tick, by service", cpu, "µs per tick", fmt="{:,.1f}"),
        ],
        footer=plot.footer(f"commit {info['commit']}"),
        columns=2,
    )


def record(phases: list[Phase], info: dict[str, Any], note: str) -> None:
    """Append this run's headline figures to docs/bench/history.csv and re-plot the market history."""
    rows = []
    for p in phases:
        where = f"at {p.rate} ticks/s, {p.replicas} replica(s)"
        figures = [
            (
                f"sustained ticks/s {where}",
                p.sustained,
                "ticks/s",
                ">=20000" if p.rate >= 20000 and p.replicas == 1 else "",
            ),
            (f"tick to price p99 {where}", p.tick_to_price.p99, "ms", "<=50" if p.rate == 10000 else ""),
            (f"tick to price alert p99 {where}", p.tick_to_alert.p99, "ms", "<=100" if p.rate == 10000 else ""),
            (f"pipeline CPU per tick {where}", p.cpu_per_1k["all services"] * 1000, "µs", "<=40"),
        ]
        rows += [
            plot.Measurement("market", m, info["when_utc"], round(v, 1), unit, goal, info["commit"], note)
            for m, v, unit, goal in figures
            if not math.isnan(v)
        ]
    with plot.HISTORY_CSV.open("a", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows([[getattr(r, c) for c in plot.HISTORY_COLUMNS] for r in rows])
    plot.plot_bench_history("market", [r for r in plot.read_history() if r.bench == "market"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.market", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="2000,5000,10000,20000", help="paced ticks/s, one phase each")
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds per rate")
    ap.add_argument("--symbols", type=int, default=1000, help="tokens of data/universe/top1000.csv, by rank")
    ap.add_argument("--replicas", default="1", help="replica counts of ingest and scoring, e.g. 1,2")
    ap.add_argument("--json", type=Path, help="write a summary of the figures here")
    ap.add_argument("--record", action="store_true", help="append the headline figures to docs/bench/history.csv")
    ap.add_argument("--note", default="", help="the history rows' note (e.g. the machine's load)")
    args = ap.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.replicas = [int(r) for r in args.replicas.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tokens = load_universe(args.symbols)
    info = run_info(args)
    console.print(f"run {info['when_utc']} UTC, {info['machine']}, load average {info['load_average']}")
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-market-"))
    phases = [p for r in args.replicas for p in run_replicas(r, args, tokens, work)]
    info["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    print(markdown(phases))
    print(f"\nlogs in {work}; load average at the end {info['load_average_end']}")
    draw(phases, info)
    if args.json:
        write_json(args.json, info, phases)
    if args.record:
        record(phases, info, args.note or f"{args.symbols} tokens; {args.seconds:g} s per rate")


if __name__ == "__main__":
    main()
