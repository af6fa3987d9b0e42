"""Alerts benchmark (issue #7), run by `make bench`: 100,000 active rules over the bundled tokens.

1. In process: price events/s evaluated by the rule index (``RuleBook``), side by side with a
   plain scan of every rule (what v0 did), on the same rules and prices.
2. Through the real broker (started here with scripts/kafka-local.sh unless TOKENPULSE_TEST_KAFKA
   is set): a ``tokenpulse run alerts`` process holding the 100,000 rules
   - consumes a backlog of price events: events/s from its start to the last firing's webhook;
   - is fed 1,000 price events/s for 30 s, crossing 2,000 webhook rules along the way: latency from
     each triggering price event to the webhook receiving its notification (p50/p99);
   - gets one price event crossing 500 rules of 500 owners at once: time to the first, median and
     last of the 500 webhooks (delivery throughput).

Prints Markdown to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tokenpulse_alerts.rules import RuleBook, evaluate
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import AlertChannel, AlertCondition, AlertRuleEvent, PriceEvent
from tokenpulse_shared.topics import ALERT_RULES, PRICES

from bench import broker, plot
from testkit.procs import Proc
from testkit.receivers import HttpReceiver

RULES = int(os.environ.get("BENCH_RULES", "100000"))
LIVE_LATENCY_MS: list[float] = []  # the live phase's samples, for the plot
BURST = 500  # rules crossed by the one price event of the burst row
START_PRICES = {
    "BTC": 60000.0,
    "ETH": 3000.0,
    "BNB": 500.0,
    "XRP": 0.6,
    "ADA": 0.45,
    "DOGE": 0.12,
    "SOL": 150.0,
    "LTC": 80.0,
}


def make_rules(prefix: str, seed: int = 1) -> list[AlertRuleEvent]:
    """80 % price levels within ±10 % of the price, 15 % percent change, 4 % grades, 1 % combinations."""
    rng = random.Random(seed)
    symbols = list(START_PRICES)
    rules = []
    for i in range(RULES):
        sym = symbols[i % len(symbols)]
        p = START_PRICES[sym]
        r = rng.random()
        if r < 0.4:
            cond = AlertCondition(kind="price_above", value=p * rng.uniform(1.0, 1.1))
        elif r < 0.8:
            cond = AlertCondition(kind="price_below", value=p * rng.uniform(0.9, 1.0))
        elif r < 0.875:
            cond = AlertCondition(kind="change_above", value=rng.choice([1, 2, 5]), window=rng.choice(["5m", "1h"]))
        elif r < 0.95:
            cond = AlertCondition(kind="change_below", value=rng.choice([1, 2, 5]), window=rng.choice(["5m", "1h"]))
        elif r < 0.99:
            cond = AlertCondition(kind="trader_grade_above", value=rng.uniform(50, 90))
        else:
            cond = AlertCondition(
                kind="all",
                all=[
                    AlertCondition(kind="price_above", value=p * rng.uniform(1.0, 1.05)),
                    AlertCondition(kind="signal", direction="bullish"),
                ],
            )
        rules.append(
            AlertRuleEvent(
                rule_id=f"{prefix}{i}",
                owner=f"owner{i % 1000}",
                symbol=sym,
                condition=cond,
                channels=[],
                cooldown_s=300,
            )
        )
    return rules


def walk(n: int, seed: int = 2, t0: datetime | None = None, step_s: float = 1.0) -> list[PriceEvent]:
    """Per-token random walks (1-second steps, 60 % annualised volatility, like BTC), interleaved."""
    rng = random.Random(seed)
    t0 = t0 or datetime(2026, 1, 1, tzinfo=UTC)
    price = dict(START_PRICES)
    sigma = 0.6 / math.sqrt(365 * 86400)
    out = []
    symbols = list(price)
    for i in range(n):
        sym = symbols[i % len(symbols)]
        prev = price[sym]
        price[sym] = prev * math.exp(rng.gauss(0, sigma))
        ts = t0 + timedelta(seconds=(i // len(symbols)) * step_s)
        out.append(PriceEvent(symbol=sym, ts=ts, price=price[sym], prev_price=prev))
    return out


def crossing_rules(prefix: str, hook: str, prices: list[PriceEvent], n: int = 2000) -> list[AlertRuleEvent]:
    """``n`` webhook rules crossed during the live phase (after its first second), two or three per event
    that sets a new high (``price_above``) or low (``price_below``) for its token, the level inside that
    step: the latency percentiles rest on ~n samples, not a handful, at the pace the walk makes news."""
    rng = random.Random(5)
    hi: dict[str, float] = {}
    lo: dict[str, float] = {}
    crossings: list[tuple[str, str, float, float]] = []  # symbol, kind, the gap the step crossed
    warm = len(prices) // 30  # the first second at 1,000 events/s
    for i, e in enumerate(prices):
        if e.symbol in hi and i >= warm:
            if e.price > hi[e.symbol]:
                crossings.append((e.symbol, "price_above", hi[e.symbol], e.price))
            elif e.price < lo[e.symbol]:
                crossings.append((e.symbol, "price_below", e.price, lo[e.symbol]))
        hi[e.symbol] = max(hi.get(e.symbol, e.price), e.price)
        lo[e.symbol] = min(lo.get(e.symbol, e.price), e.price)
    rules = []
    for k in range(n):
        sym, kind, low, high = crossings[k % len(crossings)]
        rules.append(
            AlertRuleEvent(
                rule_id=f"{prefix}live-{k}",
                owner=f"owner{k % 1000}",
                symbol=sym,
                condition=AlertCondition(kind=kind, value=rng.uniform(low, high)),
                channels=[AlertChannel(type="webhook", target=hook)],
                cooldown_s=86400,  # once per phase
            )
        )
    return rules


def in_process() -> list[tuple[str, str]]:
    rules = make_rules("r")
    prices = walk(200_000)
    book = RuleBook()
    for r in rules:
        book.apply(r)
    t = time.perf_counter()
    fired = sum(len(book.on_price(p)) for p in prices)
    indexed = len(prices) / (time.perf_counter() - t)

    # the plain scan of v0: every rule checked on every event (on a slice; it is slow)
    by_id = {r.rule_id: r for r in rules}
    state: dict[str, bool | None] = {}
    sample = prices[:400]
    from tokenpulse_alerts.rules import TokenState

    tokens = {s: TokenState() for s in START_PRICES}
    t = time.perf_counter()
    for p in sample:
        tokens[p.symbol].add_price(p.ts.timestamp(), p.price)
        for rule in by_id.values():
            if rule.symbol != p.symbol:
                continue
            now = evaluate(rule.condition, tokens[p.symbol])
            state[rule.rule_id] = now
    scan = len(sample) / (time.perf_counter() - t)
    return [
        ("rule index (`RuleBook.on_price`), price events/s", f"{indexed:,.0f} ({fired:,} firings)"),
        ("plain scan of every rule of the token, price events/s", f"{scan:,.0f}"),
        ("index / scan", f"{indexed / scan:,.0f}x"),
    ]


async def publish(bootstrap: str, topic_events: list[tuple[object, list]], per_second: float | None = None) -> None:
    bus = KafkaBus(bootstrap, client_id="bench")
    await bus.start()
    try:
        for topic, events in topic_events:
            step = 500 if per_second is None else max(1, int(per_second / 50))
            t0 = time.perf_counter()
            for i in range(0, len(events), step):
                if per_second is not None:
                    # stamp each event when it is sent: latency is measured from here
                    now = datetime.now(UTC)
                    chunk = [e.model_copy(update={"ts": now}) for e in events[i : i + step]]
                    await bus.publish(topic, chunk)  # type: ignore[arg-type]
                    wait = t0 + (i + step) / per_second - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    await bus.publish(topic, events[i : i + step])  # type: ignore[arg-type]
    finally:
        await bus.stop()


def burst(bootstrap: str, hooks: HttpReceiver, prefix: str, last: PriceEvent, n: int = BURST) -> tuple[str, str]:
    """One price event crossing ``n`` webhook rules of ``n`` owners at once (``n`` separate deliveries to one
    receiver): how long until the first and the last of them arrive (delivery throughput, not evaluation)."""
    rules = [
        AlertRuleEvent(
            rule_id=f"{prefix}burst-{k}",
            owner=f"burst{k}",
            symbol=last.symbol,
            condition=AlertCondition(kind="price_above", value=last.price * (1.01 + k / n / 100)),
            channels=[AlertChannel(type="webhook", target=f"{hooks.url}/burst")],
            cooldown_s=86400,
        )
        for k in range(n)
    ]
    asyncio.run(publish(bootstrap, [(ALERT_RULES, rules)]))
    time.sleep(5)  # the service follows the rules topic
    jump = PriceEvent(symbol=last.symbol, ts=last.ts, price=last.price * 1.05, prev_price=last.price)
    asyncio.run(publish(bootstrap, [(PRICES, [jump])], per_second=1000))  # stamped when sent
    deadline = time.monotonic() + 60
    while len(hooks.received("/burst")) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    got = hooks.received("/burst")
    sent = datetime.fromisoformat(got[0].json()["alerts"][0]["ts"].replace("Z", "+00:00")).timestamp()
    arrived = sorted(time.time() - (time.monotonic() - r.at) - sent for r in got)
    return (
        f"one price event crossing {n} rules of {n} owners at once: its webhooks received, first / median / last",
        f"{arrived[0] * 1000:.0f} / {statistics.median(arrived) * 1000:.0f} / {arrived[-1] * 1000:.0f} ms "
        f"({len(got)} of {n}; {len(got) / arrived[-1]:,.0f} deliveries/s)",
    )


def through_kafka(bootstrap: str, work: Path, replicas: int = 1, live: bool = True) -> list[tuple[str, str]]:
    """The backlog through ``replicas`` alerts processes (one consumer group: the token partitions are
    shared out, every replica holds every rule), then, if ``live``, the 1,000 events/s latency phase."""
    out = []
    with HttpReceiver() as hooks:
        prefix = f"b{uuid.uuid4().hex[:6]}-"
        rules = make_rules(prefix)
        # one sentinel per token marks the end of that token's backlog (tokens sit on different partitions,
        # consumed in parallel): its rule fires only on the last event, a jump far above anything walked
        backlog = walk(100_000, seed=3, t0=datetime.now(UTC) - timedelta(days=2))
        sentinels = []
        for sym, p in START_PRICES.items():
            sentinels.append(
                AlertRuleEvent(
                    rule_id=f"{prefix}end-{sym}",
                    owner="bench",
                    symbol=sym,
                    condition=AlertCondition(kind="price_above", value=p * 100),
                    channels=[AlertChannel(type="webhook", target=f"{hooks.url}/end")],
                    cooldown_s=0,
                )
            )
            last = next(e for e in reversed(backlog) if e.symbol == sym)
            backlog.append(
                PriceEvent(symbol=sym, ts=last.ts + timedelta(seconds=1), price=p * 200, prev_price=last.price)
            )
            backlog.append(
                PriceEvent(symbol=sym, ts=last.ts + timedelta(seconds=2), price=last.price, prev_price=p * 200)
            )
        env = {
            "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
            "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
            "TOKENPULSE_WEBHOOK_ALLOWLIST": "127.0.0.1",
            "TOKENPULSE_LOG_LEVEL": "INFO",
        }
        # 98,000 rules without channels for the backlog (it measures evaluation and the firings it publishes,
        # not a queue of webhook deliveries); 2,000 webhook rules crossed by the live walk join before it
        silent = rules[2000:]
        live_prices = walk(30_000, seed=4)
        notifying = crossing_rules(prefix, f"{hooks.url}/hook", live_prices)
        asyncio.run(publish(bootstrap, [(ALERT_RULES, [*silent, *sentinels]), (PRICES, backlog)]))
        procs = [Proc(["run", "alerts"], env, work / f"alerts-{replicas}-{i}.log") for i in range(replicas)]
        try:
            t0 = time.monotonic()
            deadline = t0 + 600
            while len(hooks.received("/end")) < len(sentinels) and time.monotonic() < deadline:
                for p in procs:
                    if p.p.poll() is not None:
                        raise RuntimeError(p.tail())
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            done_wall = time.time()
            readies = []
            for p in procs:  # from the last replica being ready: before that the group is still forming
                line = next(x for x in p.log.read_text().splitlines() if "alerts ready" in x)
                readies.append(datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp())
            evaluating = done_wall - max(readies)
            who = "the service" if replicas == 1 else f"{replicas} replicas of the service (one consumer group)"
            out.append(
                (
                    f"backlog of 100,000 price events through {who}: from being ready (98,000 rules loaded) "
                    "to the last token's end-of-backlog webhook, events/s",
                    f"{len(backlog) / evaluating:,.0f} ({evaluating:.1f} s; start incl. loading the rules "
                    f"{elapsed - evaluating:.1f} s)",
                )
            )
            if not live:
                return out
            # live: 1,000 price events/s for 30 s; latency from the triggering event to the webhook
            # this process holds the 100,000 rules and the backlog: keep its collector's full passes off them,
            # or they pause the publisher and the receiver's timestamps (as the service does at start-up)
            gc.collect()
            gc.freeze()
            asyncio.run(publish(bootstrap, [(ALERT_RULES, notifying)]))
            time.sleep(5)  # the service follows the rules topic
            before = len(hooks.received("/hook"))
            live_start = time.time()
            asyncio.run(publish(bootstrap, [(PRICES, live_prices)], per_second=1000))
            time.sleep(3)
            lat = []
            for req in hooks.received("/hook")[before:]:
                received = time.time() - (time.monotonic() - req.at)
                for alert in req.json()["alerts"]:
                    sent = datetime.fromisoformat(alert["ts"].replace("Z", "+00:00")).timestamp()
                    if sent >= live_start:
                        lat.append(received - sent)
            lat.sort()
            LIVE_LATENCY_MS[:] = [x * 1000 for x in lat]
            if lat:
                p50 = statistics.median(lat) * 1000
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                out.append(
                    (
                        "1,000 price events/s for 30 s: triggering event → webhook received, p50 / p99",
                        f"{p50:.1f} ms / {p99:.1f} ms ({len(lat):,} notifications)",
                    )
                )
            out.append(burst(bootstrap, hooks, prefix, live_prices[-1]))
        finally:
            for p in procs:
                p.stop()
    return out


def main() -> None:
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {RULES:,} rules\n"
    )
    rows = in_process()
    shared = os.environ.get("TOKENPULSE_TEST_KAFKA")
    # each replica count gets a fresh broker: the rules and firing logs of a run would carry into the next
    counts = [int(n) for n in os.environ.get("BENCH_ALERTS_REPLICAS", "1,2").split(",")]
    if shared:
        counts = counts[:1]
    for k, replicas in enumerate(counts):
        work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-alerts-"))
        with broker.kafka(work) as bootstrap:  # a fresh broker per replica count, unless one is shared
            rows += through_kafka(bootstrap, work, replicas=replicas, live=k == 0)
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    rates = {
        "rule index, in process": plot.first_number(rows[0][1]),
        "plain scan, in process": plot.first_number(rows[1][1]),
    }
    for n, v in rows:
        if n.startswith("backlog"):
            who = "2 processes" if "2 replicas" in n else "1 process"
            rates[f"through the broker (backlog), {who}"] = plot.first_number(v)
    plot.save(
        "alerts",
        f"Alerts: {RULES:,} rules",
        [
            plot.bars("price events/s evaluated", rates, "price events/s", log=True),
            plot.cdf("1,000 price events/s through the broker: event → webhook", {"live": LIVE_LATENCY_MS}, "ms"),
        ],
        footer=plot.footer(),
    )


if __name__ == "__main__":
    main()
