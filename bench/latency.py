"""End-to-end latency tick → signal → alert through the real broker (issue #10), run by `make bench`.

Three real service processes (``tokenpulse run ingest``, ``scoring``, ``alerts``) on a Kafka broker
(started here with scripts/kafka-local.sh unless TOKENPULSE_TEST_KAFKA is set); this process is the
exchange (it publishes ticks on ``tokenpulse.ticks.v1`` at a paced rate) and the user (a real local
webhook receiver records when each notification arrives).

Signals change only when a daily candle closes (alert rules see daily signals), and ingest closes a
candle when the token's event-time watermark passes the bucket end plus the lateness (2 s). So the
ticks carry an accelerated market clock: every tick of a token advances its clock by 86,400 /
BENCH_TICKS_PER_DAY seconds (default 480 ticks a day: 20 per hour, one every 3 market minutes), and a
daily candle closes every 480 ticks of a token. The price path is a seeded random walk with regimes
(drift ±6 % a day for 5 to 9 days, then the other way; 2 % daily volatility; pulled back when it
strays far), which makes the Trader Grade cross its hysteresis thresholds about once every 8 market
days (tuned in process with ScoringService: shorter regimes do not reach the thresholds, the
hysteresis allows at most two signals per up-down cycle). Before each
phase, scoring is warmed up with 60 days of daily candles of the same path published straight on
``tokenpulse.candles.v1`` (a grade needs ~22 days of history); ticks start where they end.

Per phase (one per rate in BENCH_LATENCY_RATES, default 1,000 and 5,000 ticks/s, each
BENCH_LATENCY_SECONDS long, default 90; eight fresh tokens per phase):

* signal alerts: a "signal any" rule per token notifies ``/sig``. Latency = webhook receipt minus
  the send time of the tick that closed the daily candle the signal is on (the first tick of the
  token at or after the bucket end + lateness: the one that pushed the watermark past it);
* price alerts, for comparison: price_above/price_below levels 5 % apart per token notify ``/px``.
  Latency = receipt minus the send time of the tick whose event time the price event carries (the
  newest tick of the token in ingest's batch);
* stages of the signal path: a bench consumer (own group, from the topic's end) records when each
  signal appears on ``tokenpulse.signals.v1``: daily ones (the alerts' signals) and 1h/4h ones
  (many more samples of tick → candle → scoring; alert rules do not see intraday signals);
* keeping up: the producer's achieved rate and how far it fell behind its schedule; after the paced
  ticks, one sentinel tick per token (a price far above every level) fires a rule of its own: the time
  from the first tick to the last sentinel's webhook gives the rate the price path sustained, and
  signal latency in the last quarter of the phase vs the first shows a growing queue.

Prints Markdown for docs/benchmarks.md and writes docs/bench/latency.png.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.venues.connector import make_tick
from tokenpulse_shared.bus import Delivery
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import (
    AlertChannel,
    AlertCondition,
    AlertRuleEvent,
    CandleEvent,
    Interval,
    Side,
    SignalEvent,
    TickEvent,
)
from tokenpulse_shared.timeutil import DAY_MS
from tokenpulse_shared.topics import ALERT_RULES, CANDLES, SIGNALS, TICKS

from bench import broker, plot
from testkit.procs import Proc, free_port
from testkit.receivers import HttpReceiver

RATES = [int(r) for r in os.environ.get("BENCH_LATENCY_RATES", "1000,5000").split(",") if r.strip()]
SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "90"))
TICKS_PER_DAY = int(os.environ.get("BENCH_TICKS_PER_DAY", "480"))
TOKENS = int(os.environ.get("BENCH_LATENCY_TOKENS", "8"))
WARMUP_DAYS = 60
LATENESS_MS = CandleBuilder().lateness_ms  # what ingest uses: a candle closes at bucket end + this
CHUNKS_PER_S = 50  # the producer publishes every 20 ms


@dataclass
class Market:
    """One token's accelerated market: a random walk with up/down regimes, ``TICKS_PER_DAY`` ticks a day."""

    symbol: str
    p0: float
    t_ms: int
    rng: random.Random
    price: float = 0.0
    drift: int = 1
    left: int = 0  # ticks left in the regime
    n: int = 0
    mu: float = 0.06  # drift per day
    sigma: float = 0.02  # volatility per day
    regime_days: tuple[int, int] = (5, 9)

    def __post_init__(self) -> None:
        self.price = self.p0
        self.dt_ms = DAY_MS // TICKS_PER_DAY

    def step(self) -> tuple[int, float, float]:
        """Advance one tick: (event time ms, price, size)."""
        if self.left <= 0:
            self.drift = -self.drift
            self.left = self.rng.randint(*self.regime_days) * TICKS_PER_DAY
            away = math.log(self.price / self.p0)
            if abs(away) > 0.5:  # pulled back towards the start so the price levels keep being crossed
                self.drift = -1 if away > 0 else 1
        self.left -= 1
        self.t_ms += self.dt_ms
        self.n += 1
        self.price *= math.exp(
            self.drift * self.mu / TICKS_PER_DAY + self.rng.gauss(0.0, self.sigma / math.sqrt(TICKS_PER_DAY))
        )
        size = self.rng.uniform(0.5, 1.5) * (1.3 if self.drift > 0 else 1.0)
        return self.t_ms, self.price, size

    def warm_up(self, days: int) -> list[CandleEvent]:
        """``days`` daily candles of the path (simulated tick by tick), ending at the clock's current day."""
        out = []
        for _ in range(days):
            nxt = self.t_ms + self.dt_ms  # the day of the next tick
            start = nxt - nxt % DAY_MS
            o = h = lo = self.price
            vol = 0.0
            while True:
                t, p, s = self.step()
                h, lo, vol = max(h, p), min(lo, p), vol + s
                if t + self.dt_ms >= start + DAY_MS:
                    break
            out.append(
                CandleEvent(
                    symbol=self.symbol,
                    interval=Interval.D1,
                    ts=datetime.fromtimestamp(start / 1000, UTC),
                    open=o,
                    high=h,
                    low=lo,
                    close=self.price,
                    volume=vol,
                    trades=TICKS_PER_DAY,
                    source="bench-warmup",
                )
            )
            self.t_ms = start + DAY_MS - self.dt_ms  # the next step lands on the next day's open
        return out


def bench_tick(m: Market, ts_ms: int, price: float, size: float, side: Side, produced_at: datetime) -> TickEvent:
    """A tick of ``m``'s latest step, built as the ingest connectors build theirs."""
    when = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return make_tick(m.symbol, "bench", when, price, size, side, str(m.n), "USD", produced_at)


@dataclass
class Sent:
    """Per token: event time and monotonic send time of every tick, in order."""

    ts: list[int] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)  # the tick's position in the whole phase (all tokens)
    by_ts: dict[int, int] = field(default_factory=dict)  # event time -> position in the lists

    def add(self, ts_ms: int, at: float, seq: int = 0) -> None:
        self.ts.append(ts_ms)
        self.at.append(at)
        self.seq.append(seq)
        self.by_ts[ts_ms] = len(self.ts) - 1

    def _closing(self, bucket_end_ms: int) -> int | None:
        i = bisect.bisect_left(self.ts, bucket_end_ms + LATENESS_MS)
        return i if i < len(self.ts) else None

    def closing(self, bucket_end_ms: int) -> float | None:
        """Send time of the first tick at or after the bucket end + lateness (the one that closed it)."""
        i = self._closing(bucket_end_ms)
        return None if i is None else self.at[i]

    def closing_seq(self, bucket_end_ms: int) -> int | None:
        i = self._closing(bucket_end_ms)
        return None if i is None else self.seq[i]


@dataclass
class PhaseResult:
    rate: int
    ticks: int
    send_s: float
    behind_s: float
    drain_s: float | None
    pipeline_rate: float | None
    signal_rate: float | None
    signal_ms: list[float]
    signal_first_q: list[float]
    signal_last_q: list[float]
    to_topic_ms: list[float]
    intraday_to_topic_ms: list[float]
    price_ms: list[float]
    dropped: int
    daily_closes: int


def percentile(values: list[float], q: float) -> float:
    return plot.percentile(sorted(values), q)


def iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def rules_for(run: str, markets: list[Market], url: str) -> list[AlertRuleEvent]:
    rules = []
    for m in markets:
        sym = m.symbol

        def rule(tag: str, cond: AlertCondition, path: str, cooldown_s: int = 0, sym: str = sym) -> AlertRuleEvent:
            # an owner per rule: rules of one owner firing together would be folded into a summary message
            return AlertRuleEvent(
                rule_id=f"{run}-{tag}-{sym}",
                owner=f"{run}-{tag}-{sym}",
                symbol=sym,
                condition=cond,
                channels=[AlertChannel(type="webhook", target=f"{url}{path}")],
                cooldown_s=cooldown_s,
            )

        rules.append(rule("sig", AlertCondition(kind="signal", direction="any"), "/sig"))
        for j in range(-10, 11):
            if j:
                level = m.p0 * math.exp(0.05 * j)
                # at most once per market day (the cooldown runs on event time): a walk re-crosses a level
                # many times in a row, which would flood the webhook
                up = AlertCondition(kind="price_above", value=level)
                down = AlertCondition(kind="price_below", value=level)
                rules.append(rule(f"up{j}", up, "/px", 86400))
                rules.append(rule(f"dn{j}", down, "/px", 86400))
        rules.append(rule("end", AlertCondition(kind="price_above", value=m.p0 * 1000), "/end"))
    return rules


async def wait_quiet(hooks: HttpReceiver, quiet_s: float, at_least_s: float, at_most_s: float) -> None:
    start = time.monotonic()
    last_n, last_change = len(hooks.attempts), start
    while time.monotonic() - start < at_most_s:
        await asyncio.sleep(0.25)
        n = len(hooks.attempts)
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        now = time.monotonic()
        if now - start >= at_least_s and now - last_change >= quiet_s:
            return


async def phase(index: int, rate: int, bootstrap: str, hooks: HttpReceiver, procs: list[Proc]) -> PhaseResult:
    run = f"lat{uuid.uuid4().hex[:6]}"
    rng = random.Random(1000 + index)
    t0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000) + index * 400 * DAY_MS
    markets = [
        Market(f"LAT{index}{chr(65 + i)}", rng.uniform(1, 1000), t0 - WARMUP_DAYS * DAY_MS, random.Random(rng.random()))
        for i in range(TOKENS)
    ]
    warm = [c for m in markets for c in m.warm_up(WARMUP_DAYS)]
    start_ms = markets[0].t_ms - markets[0].t_ms % DAY_MS + DAY_MS  # the first live day
    symbols = {m.symbol for m in markets}

    seen_signals: dict[tuple[str, Interval, int], float] = {}

    async def on_signals(events: list[SignalEvent]) -> None:
        now = time.monotonic()
        for e in events:
            if e.symbol in symbols and not e.retracted:
                seen_signals.setdefault((e.symbol, e.interval, int(e.ts.timestamp() * 1000)), now)

    bus = KafkaBus(bootstrap, client_id=f"bench-{run}", group_prefix=f"bench-{run}")
    bus.subscribe(SIGNALS, "observer", on_signals, delivery=Delivery.TAIL)
    await bus.start()
    try:
        await bus.publish(ALERT_RULES, rules_for(run, markets, hooks.url))
        await bus.publish(CANDLES, warm)
        # the warm-up's own signals fire the rules too (they are filtered out below): wait until they are done
        await wait_quiet(hooks, quiet_s=3.0, at_least_s=6.0, at_most_s=120.0)
        for p in procs:
            if p.p.poll() is not None:
                raise RuntimeError(f"{p.log.name} exited:\n{p.tail()}")
        sent = {m.symbol: Sent() for m in markets}
        before = len(hooks.requests)
        total = int(rate * SECONDS)
        chunk = max(1, rate // CHUNKS_PER_S)
        first = time.monotonic()
        behind = 0.0
        k = 0
        while k < total:
            # every 20 ms the ticks due by now: a publish waits for the broker's acknowledgement (acks=all),
            # so when one takes longer than the period the next one carries the backlog
            due_now = int((time.monotonic() - first) * rate) + chunk
            n = min(max(chunk, due_now - k), 20 * chunk, total - k)
            ticks: list[TickEvent] = []
            stamps: list[tuple[str, int]] = []
            now_dt = datetime.now(UTC)
            for i in range(k, k + n):
                m = markets[i % len(markets)]
                ts_ms, price, size = m.step()
                ticks.append(bench_tick(m, ts_ms, price, size, Side.BUY if i % 2 else Side.SELL, now_dt))
                stamps.append((m.symbol, ts_ms))
            at = time.monotonic()
            await bus.publish(TICKS, ticks)
            for j, (sym, ts_ms) in enumerate(stamps):
                sent[sym].add(ts_ms, at, k + j)
            k += n
            wait = first + k / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                behind = max(behind, -wait)
        last = time.monotonic()
        # sentinels: one tick per token far above every level; its rule notifies /end
        ends_before = len(hooks.received("/end"))
        sentinel_at = time.monotonic()
        sentinels = []
        for m in markets:
            ts_ms, _, size = m.step()
            sentinels.append(bench_tick(m, ts_ms, m.p0 * 2000, size, Side.BUY, datetime.now(UTC)))
        await bus.publish(TICKS, sentinels)
        sentinel_ts = {(t.symbol, int(t.ts.timestamp() * 1000)) for t in sentinels}
        drained: float | None = None
        deadline = time.monotonic() + max(300.0, SECONDS * 5)
        while time.monotonic() < deadline:
            ends = hooks.received("/end")[ends_before:]
            if len({r.json()["alerts"][0]["symbol"] for r in ends} & symbols) >= len(markets):
                drained = max(r.at for r in ends)
                break
            for p in procs:
                if p.p.poll() is not None:
                    raise RuntimeError(f"{p.log.name} exited:\n{p.tail()}")
            await asyncio.sleep(0.1)
        await wait_quiet(hooks, quiet_s=3.0, at_least_s=3.0, at_most_s=60.0)
    finally:
        await bus.stop()

    signal_rows: list[tuple[float, float]] = []  # (send time of the closing tick, latency ms)
    to_topic: list[float] = []
    price_ms: list[float] = []
    dropped = 0
    newest_price = (-1.0, 0)  # receipt time of the newest price alert, and its tick's position
    for req in hooks.requests[before:]:
        if req.path not in ("/sig", "/px"):
            continue
        for alert in req.json()["alerts"]:
            sym = alert["symbol"]
            if sym not in symbols:
                continue
            ts_ms = iso_ms(alert["ts"])
            if req.path == "/sig":
                if ts_ms < start_ms:
                    continue  # a warm-up day's signal
                closed_at = sent[sym].closing(ts_ms + DAY_MS)
                if closed_at is None or closed_at > req.at:
                    dropped += 1  # closed by ingest's idle clock after the phase, not by a tick
                    continue
                signal_rows.append((closed_at, (req.at - closed_at) * 1000))
                seen = seen_signals.get((sym, Interval.D1, ts_ms))
                if seen is not None:
                    to_topic.append((seen - closed_at) * 1000)
            elif (sym, ts_ms) in sentinel_ts:
                continue  # the sentinel jumps over every level above: not a sample of the paced phase
            else:
                i = sent[sym].by_ts.get(ts_ms)
                if i is None:
                    dropped += 1
                    continue
                price_ms.append((req.at - sent[sym].at[i]) * 1000)
                if req.at > newest_price[0]:
                    newest_price = (req.at, sent[sym].seq[i])
    intraday: list[float] = []
    signal_rate = None  # ticks scored per second: the newest signal seen on the topic, and the ticks up to its close
    newest = -1.0
    for (sym, interval, ts_ms), seen in seen_signals.items():
        if ts_ms < start_ms:
            continue
        closed_at = sent[sym].closing(ts_ms + interval.millis)
        if closed_at is None or closed_at > seen:
            continue
        if interval is not Interval.D1:
            intraday.append((seen - closed_at) * 1000)
        if seen > newest:
            newest = seen
            signal_rate = (sent[sym].closing_seq(ts_ms + interval.millis) or 0) / (seen - first)
    signal_rows.sort()
    q = max(1, len(signal_rows) // 4)
    span = last - first
    n_sent = sum(len(s.ts) for s in sent.values())
    daily_closes = sum(
        sum(1 for d in range(start_ms, s.ts[-1], DAY_MS) if s.closing(d + DAY_MS) is not None)
        for s in sent.values()
        if s.ts
    )
    return PhaseResult(
        rate=rate,
        ticks=n_sent,
        send_s=span,
        behind_s=behind,
        drain_s=None if drained is None else drained - sentinel_at,
        # from the sentinels when they arrived, else (still draining at the timeout) from the newest price alert
        pipeline_rate=(n_sent + len(sentinels)) / (drained - first)
        if drained is not None
        else (newest_price[1] / (newest_price[0] - first) if newest_price[0] > first else None),
        signal_rate=signal_rate,
        signal_ms=[lat for _, lat in signal_rows],
        signal_first_q=[lat for _, lat in signal_rows[:q]],
        signal_last_q=[lat for _, lat in signal_rows[-q:]],
        to_topic_ms=to_topic,
        intraday_to_topic_ms=intraday,
        price_ms=price_ms,
        dropped=dropped,
        daily_closes=daily_closes,
    )


def start_services(bootstrap: str, work: Path) -> list[Proc]:
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"bench-lat-{uuid.uuid4().hex[:6]}",
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_PREDICTIONS": "false",
        "TOKENPULSE_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "TOKENPULSE_LOG_LEVEL": "INFO",
    }
    procs = []
    for svc in ("ingest", "scoring", "alerts"):
        port = free_port()
        procs.append(
            Proc(
                ["run", svc],
                {**env, "TOKENPULSE_METRICS_PORT": str(port), "TOKENPULSE_DATA_DIR": str(work / svc)},
                work / f"{svc}.log",
            )
        )
        procs[-1].port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    for p in procs:
        while True:
            if p.p.poll() is not None:
                raise RuntimeError(f"{p.log.name} exited:\n{p.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{p.port}/readyz", timeout=2).status_code == 200:  # type: ignore[attr-defined]
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{p.log.name} not ready:\n{p.tail()}")
            time.sleep(0.5)
    return procs


def fmt_lat(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{percentile(values, 50):,.0f} / {percentile(values, 99):,.0f}"


def run(bootstrap: str, work: Path) -> list[PhaseResult]:
    results = []
    with HttpReceiver() as hooks:
        procs = start_services(bootstrap, work)
        try:
            for i, rate in enumerate(RATES, 1):
                results.append(asyncio.run(phase(i, rate, bootstrap, hooks, procs)))
        finally:
            for p in procs:
                p.stop()
    return results


def report(results: list[PhaseResult]) -> None:
    print(
        "| target ticks/s | ticks sent (s) | producer: achieved ticks/s, most behind schedule | daily closes "
        "| signal alerts | tick → daily signal on topic p50 / p99 ms | tick → signal alert p50 / p99 ms "
        "| first / last quarter p50 ms | price alerts | tick → price alert p50 / p99 ms "
        "| sentinel drained after (s) | price path sustained ticks/s | signal path sustained ticks/s | 1h/4h signals "
        "| tick → 1h/4h signal on topic p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        drain = "not within the timeout" if r.drain_s is None else f"{r.drain_s:.1f}"
        sustained = "—" if r.pipeline_rate is None else f"{r.pipeline_rate:,.0f}"
        first_q = statistics.median(r.signal_first_q) if r.signal_first_q else math.nan
        last_q = statistics.median(r.signal_last_q) if r.signal_last_q else math.nan
        print(
            f"| {r.rate:,} | {r.ticks:,} ({r.send_s:.1f}) | {r.ticks / r.send_s:,.0f}, {r.behind_s * 1000:,.0f} ms "
            f"| {r.daily_closes:,} | {len(r.signal_ms):,} | {fmt_lat(r.to_topic_ms)} | {fmt_lat(r.signal_ms)} "
            f"| {first_q:,.0f} / {last_q:,.0f} | {len(r.price_ms):,} | {fmt_lat(r.price_ms)} | {drain} | {sustained} "
            f"| {'—' if r.signal_rate is None else f'{r.signal_rate:,.0f}'} "
            f"| {len(r.intraday_to_topic_ms):,} | {fmt_lat(r.intraday_to_topic_ms)} |"
        )
    dropped = sum(r.dropped for r in results)
    if dropped:
        print(f"\n{dropped} notifications not attributed to a tick (candles closed by ingest's idle clock later)")
    samples: dict[str, list[float]] = {}
    for r in results:
        samples[f"signal alert @ {r.rate:,}/s"] = r.signal_ms
        samples[f"price alert @ {r.rate:,}/s"] = r.price_ms
        samples[f"1h/4h signal on topic @ {r.rate:,}/s"] = r.intraday_to_topic_ms
    rates = {
        f"{r.rate:,}/s target": {
            "producer achieved": r.ticks / r.send_s,
            "price path sustained": r.pipeline_rate or 0.0,
            "signal path sustained": r.signal_rate or 0.0,
        }
        for r in results
    }
    plot.save(
        "latency",
        "Tick → alert through Kafka (ingest → scoring → alerts → webhook)",
        [
            plot.cdf("latency from the tick that caused it to the webhook", samples, "ms"),
            plot.groups("ticks/s: producer vs what the pipeline sustained", rates, "ticks/s"),
        ],
        footer=plot.footer(f"{SECONDS:g} s per rate, {TICKS_PER_DAY} ticks per market day, {TOKENS} tokens"),
    )


def main() -> None:
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {SECONDS:g} s per rate, {TOKENS} tokens, {TICKS_PER_DAY} ticks per "
        f"market day; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-latency-"))
    with broker.kafka(work) as bootstrap:
        results = run(bootstrap, work)
    report(results)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; logs in {work}")


if __name__ == "__main__":
    main()
