"""Poison input on every consumed topic, through the real broker into the four real service processes.

Hypothesis mutates a valid event of each topic (a field dropped, replaced by a hostile value — NaN,
infinities, huge numbers and strings, wrong types, nesting —, an unknown field added) or sends what
is not an event at all (random bytes, text, JSON that is not an object, truncated JSON). Every
generated message is checked to be invalid against the contract first, then published with a key
unique to it. Valid events are interleaved with the poison on every topic.

Counted afterwards, by message key and event id: every poison message is in the dead-letter topic
exactly once per consumer group that reads its topic, with a reason; every process is still alive
and exits cleanly; the valid events were processed (ticks → candles, candles → indicators, prices →
an alert firing, every topic → its ClickHouse table, each event exactly once).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tokenpulse_shared.bus import RawMessage
from tokenpulse_shared.bus.base import decode_message
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import (
    AlertCondition,
    AlertFiredEvent,
    AlertRuleEvent,
    CandleEvent,
    DeadLetterEvent,
    Direction,
    Event,
    GradeEvent,
    IndicatorEvent,
    Interval,
    MarketCapEvent,
    MetricsEvent,
    PredictionEvent,
    PriceEvent,
    SignalEvent,
    TickEvent,
)
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import (
    ALERT_RULES,
    ALERTS,
    CANDLES,
    DEAD_LETTER,
    GRADES,
    INDICATORS,
    MARKETCAPS,
    METRICS,
    PREDICTIONS,
    PRICES,
    SIGNALS,
    TICKS,
    V2_OF,
    Topic,
)

from testkit.procs import Proc, api_key, distributed_env, free_port, wait_until
from tests.e2e.kafka_tools import read_topic, wait_caught_up

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PER_TOPIC = 150  # 16 topics: 2,400 poison messages
T0 = datetime(2024, 3, 1, tzinfo=UTC)

# Which consumer groups read each topic (the wiring of services/*/service.py, gateway/live.py, writer.py);
# each of them must dead-letter every poison message it receives, once. The writer is the only reader of
# the dead-letter topic and never dead-letters onto it (no loop): it logs and skips.
READERS: dict[str, set[str]] = {
    TICKS.name: {"ingest", "writer"},
    CANDLES.name: {"scoring", "writer", "gateway-live"},  # the gateway drops cached candle pages on a new candle
    MARKETCAPS.name: {"scoring", "writer", "gateway-live"},  # the token list shows market caps
    METRICS.name: {"scoring", "writer"},
    PRICES.name: {"alerts", "writer", "gateway-live"},
    GRADES.name: {"alerts", "writer", "gateway-live"},
    SIGNALS.name: {"alerts", "writer", "gateway-live"},
    PREDICTIONS.name: {"writer", "gateway-live"},
    INDICATORS.name: {"writer", "gateway-live"},  # and cached indicator pages
    ALERT_RULES.name: {"alerts"},
    ALERTS.name: {"writer", "alerts", "gateway-live"},
    DEAD_LETTER.name: set(),
}
# the batch topics: read by the readers of their v1 topic (a poison batch is refused whole, as one message)
READERS |= {V2_OF[name].name: set(readers) for name, readers in READERS.items() if name in V2_OF}
BATCHED_TICKS = V2_OF[TICKS.name].name
BATCHED = {V2_OF[name].name: V2_OF[name] for name in (TICKS.name, PRICES.name, CANDLES.name, INDICATORS.name)}


def sample(topic: Topic, sym: str, i: int) -> Event:
    """A valid event of ``topic`` (the i-th of a run); on a batch topic, a batch of that one row."""
    if topic.batched:
        v1 = next(t for t in (TICKS, PRICES, CANDLES, INDICATORS) if t.name == topic.pairs_with)
        return topic.model.from_events([sample(v1, sym, i)])  # type: ignore[attr-defined,no-any-return]
    ts = T0 + timedelta(days=i)
    if topic is TICKS:
        return TickEvent(symbol=sym, source="poison", ts=T0 + timedelta(seconds=20 * i), price=50.0 + i % 3, size=1.0)
    if topic is PRICES:
        return PriceEvent(symbol=sym, ts=ts, price=100.0 + i, prev_price=100.0 + i - 1 if i else None)
    if topic is CANDLES:
        p = 100.0 + i
        return CandleEvent(symbol=sym, interval=Interval.D1, ts=ts, open=p, high=p + 2, low=p - 2, close=p + 1)
    if topic is MARKETCAPS:
        return MarketCapEvent(symbol=sym, ts=ts, market_cap=1e9 + i)
    if topic is METRICS:
        return MetricsEvent(symbol=sym, ts=ts, metrics={"tvl_usd": 1e6 + i, "staking_ratio": 0.5})
    if topic is INDICATORS:
        return IndicatorEvent(symbol=sym, interval=Interval.H1, ts=ts, rsi_14=50.0, ema_20=101.0)
    if topic is GRADES:
        return GradeEvent(symbol=sym, ts=ts, trader_grade=55.0, investor_grade=60.0, components={"x": 1.0})
    if topic is SIGNALS:
        return SignalEvent(
            symbol=sym, ts=ts, interval=Interval.H1, direction=Direction.BULLISH, strength=0.5, reasons=["test"]
        )
    if topic is PREDICTIONS:
        return PredictionEvent(
            symbol=sym,
            horizon="1d",
            made_at=ts,
            target_ts=ts + timedelta(days=1),
            point=10,
            lower=9,
            upper=11,
            model="m",
        )
    if topic is ALERT_RULES:
        return AlertRuleEvent(
            rule_id=f"poison-rule-{sym}-{i}",
            owner="poison",
            symbol=sym,
            condition=AlertCondition(kind="price_above", value=1e12),
        )
    if topic is ALERTS:
        return AlertFiredEvent(firing_id=f"f-{sym}-{i}", rule_id="r", owner="poison", symbol=sym, ts=ts, price=1.0)
    if topic is DEAD_LETTER:
        return DeadLetterEvent(topic=TICKS.name, consumer="poison-test", reason="valid sample", payload="{}", key=sym)
    raise AssertionError(topic)


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.just("x" * 3000),
    st.just("BTC'; DROP TABLE ticks; --"),
    st.just("\x00\ud7ff\u202e"),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.floats(), max_size=3),
)


def poison(topic: Topic) -> st.SearchStrategy[bytes]:
    base: dict[str, Any] = json.loads(sample(topic, "POISON", 1).model_dump_json())
    fields = sorted(base)
    replaced = st.tuples(st.sampled_from(fields), HOSTILE).map(lambda fv: {**base, fv[0]: fv[1]})
    dropped = st.sampled_from(fields).map(lambda f: {k: v for k, v in base.items() if k != f})
    extra = st.text(min_size=1, max_size=12).filter(lambda k: k not in base).map(lambda k: {**base, k: 1})
    twice = st.tuples(st.sampled_from(fields), HOSTILE, st.sampled_from(fields), HOSTILE).map(
        lambda t: {**base, t[0]: t[1], t[2]: t[3]}
    )
    as_json = st.one_of(replaced, dropped, extra, twice).map(lambda d: json.dumps(d, allow_nan=True).encode())
    whole = json.dumps(base).encode()
    garbage = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=10), st.none()).map(
            lambda v: json.dumps(v).encode()
        ),
        st.integers(min_value=0, max_value=len(whole) - 1).map(lambda n: whole[:n]),
    )

    def invalid(value: bytes) -> bool:
        try:
            decode_message(topic, RawMessage(value=value))
        except ValueError:
            return True
        return False

    return st.one_of(as_json, garbage).filter(invalid)


def generate(topic: Topic, n: int, chunk: int = 25) -> list[bytes]:
    """``n`` poison messages for ``topic``, deterministic (derandomized), drawn ``chunk`` per example."""
    out: list[bytes] = []

    @settings(
        max_examples=n // chunk,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(poison(topic), min_size=chunk, max_size=chunk))
    def collect(values: list[bytes]) -> None:
        out.extend(values)

    collect()
    return out


async def publish(bootstrap: str, batches: list[tuple[Topic, list[RawMessage] | list[Event]]]) -> None:
    bus = KafkaBus(bootstrap, client_id="poison-feeder")
    await bus.start()
    try:
        for topic, items in batches:
            if items and isinstance(items[0], RawMessage):
                await bus.publish_raw(topic, items)  # type: ignore[arg-type]
            else:
                await bus.publish(topic, items)  # type: ignore[arg-type]
    finally:
        await bus.stop()


def test_poison_on_every_topic_is_dead_lettered_and_valid_events_around_it_are_processed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    sym = "P" + run[:6].upper()  # this run's token; its ticks and candles under tokens of their own, so that
    tsym, csym = "T" + run[:6].upper(), "C" + run[:6].upper()  # what ingest and scoring derive stays apart
    symbols = {TICKS.name: tsym, CANDLES.name: csym}
    # the batch topics' valid rows under tokens of their own too: what they make is counted apart
    symbols |= {name: f"{name.split('.')[1][0].upper()}V{run[:6].upper()}" for name in BATCHED}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"poison-{run}"
    env = distributed_env(
        kafka_bootstrap, prefix, tmp_path / "gateway", f"BTC,{sym}", port=str(port), log_format="json"
    )
    topics = list(READERS)
    by_name = {t.name: t for t in (TICKS, PRICES, CANDLES, MARKETCAPS, METRICS, INDICATORS, GRADES, SIGNALS)}
    by_name |= {t.name: t for t in (PREDICTIONS, ALERT_RULES, ALERTS, DEAD_LETTER)} | BATCHED
    keys: dict[str, tuple[str, bytes]] = {}  # message key -> (topic, payload)

    procs = [Proc(["run", svc], env, tmp_path / f"{svc}.log") for svc in ("ingest", "scoring", "alerts", "gateway")]
    try:
        generated = {name: generate(by_name[name], PER_TOPIC) for name in topics}  # while the services start
        assert all(len(v) == PER_TOPIC for v in generated.values())
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 180, "gateway ready", procs)
        for p in procs:  # tail subscriptions read from their start: publish only once every consumer runs
            wait_until(lambda p=p: "tokenpulse started" in p.log.read_text(), 60, f"{p.log.name} started", procs)
        key = api_key(base)
        rule = httpx.post(
            f"{base}/v1/alerts",
            json={"symbol": sym, "condition": {"kind": "price_above", "value": 110.5}, "cooldown_s": 0},
            headers={"X-API-Key": key},
            timeout=10,
        )
        assert rule.status_code == 201, rule.text
        rule_id = rule.json()["id"]
        alerts_log = procs[2].log
        wait_until(lambda: rule_id in alerts_log.read_text(), 60, "the alerts service to learn the rule", procs)

        # poison and valid events interleaved: 10 poison, then a valid one, on every topic
        valid: dict[str, list[Event]] = {name: [] for name in topics}
        batches: list[tuple[Topic, list[RawMessage] | list[Event]]] = []
        for t_i, name in enumerate(topics):
            topic = by_name[name]
            for start in range(0, PER_TOPIC, 10):
                raws = []
                for j, value in enumerate(generated[name][start : start + 10], start):
                    k = f"{prefix}-{t_i}-{j}"
                    keys[k] = (name, value)
                    raws.append(RawMessage(value=value, key=k))
                batches.append((topic, raws))
                first_tick = 1 if name in (TICKS.name, BATCHED_TICKS) else 0
                event = sample(topic, symbols.get(name, sym), start // 10 + first_tick)
                valid[name].append(event)
                batches.append((topic, [event]))
        asyncio.run(publish(kafka_bootstrap, batches))

        want = Counter((name, reader) for _, (name, _) in keys.items() for reader in READERS[name])

        def dead() -> list[DeadLetterEvent]:
            events = asyncio.run(read_topic(kafka_bootstrap, DEAD_LETTER))
            return [e for e in events if isinstance(e, DeadLetterEvent) and (e.key or "").startswith(prefix)]

        wait_until(lambda: Counter((d.topic, d.consumer) for d in dead()) == want, 120, "every dead letter", procs)
        letters = dead()
        # exactly once per (message, consumer), with the original payload and a reason
        assert len({(d.key, d.consumer) for d in letters}) == len(letters) == sum(want.values())
        for d in letters:
            name, value = keys[d.key or ""]
            assert d.topic == name
            assert d.payload == value.decode("utf-8", errors="replace")
            assert d.reason.startswith(("not JSON", "not a JSON object", "schema validation failed", "empty message"))
        reasons = Counter(d.reason.split(":")[0] for d in letters)

        groups = {
            f"{prefix}-ingest": [TICKS, BATCHED[BATCHED_TICKS]],
            f"{prefix}-scoring": [CANDLES, MARKETCAPS, METRICS, V2_OF[CANDLES.name]],
            f"{prefix}-alerts": [PRICES, GRADES, SIGNALS, V2_OF[PRICES.name]],
            f"{prefix}-writer": [
                *BATCHED.values(),
                TICKS,
                CANDLES,
                PRICES,
                INDICATORS,
                METRICS,
                MARKETCAPS,
                GRADES,
                SIGNALS,
                PREDICTIONS,
                ALERTS,
                DEAD_LETTER,
            ],
        }
        wait_caught_up(kafka_bootstrap, groups)
        alive = {p.log.name: p.p.poll() for p in procs}
        assert all(code is None for code in alive.values()), alive
    finally:
        codes = {p.log.name: p.stop() for p in procs}
    assert all(code == 0 for code in codes.values()), codes
    # the writer met poison on the dead-letter topic too: it logged each one and went on
    gateway_log = (tmp_path / "gateway.log").read_text()
    assert gateway_log.count("dead letter from writer on tokenpulse.dead-letter.v1") >= PER_TOPIC

    async def count(sql: str) -> Any:
        store = await Store(f"chdb://{(tmp_path / 'gateway' / 'clickhouse').resolve()}").open(migrate=False)
        try:
            params = {"s": sym, "t": tsym, "c": csym, "p": prefix + "%", "r": rule_id}
            return (await store.query(sql, params))[0]
        finally:
            await store.close()

    def ids(name: str) -> int:
        return len({e.event_id for e in valid[name]})

    table = "SELECT count(), uniqExact(event_id) FROM {t} FINAL WHERE symbol = {{s:String}}"
    for name, t in [
        (PRICES.name, "prices"),
        (MARKETCAPS.name, "market_caps"),
        (METRICS.name, "metrics"),
        (GRADES.name, "grades"),
        (SIGNALS.name, "signals"),
        (INDICATORS.name, "indicators"),
        (PREDICTIONS.name, "predictions"),
        (ALERTS.name, "alert_firings"),
    ]:
        where = " AND owner = 'poison'" if t == "alert_firings" else ""  # (the rule's own firing is below)
        assert asyncio.run(count(table.format(t=t) + where)) == (ids(name), ids(name)), t
    ticks = asyncio.run(count(table.format(t="ticks").replace("{s:String}", "{t:String}")))
    assert ticks == (ids(TICKS.name), ids(TICKS.name))
    # the valid rows of the batch topics, stored once each (a batch of one row: one row per batch)
    for name, t in [(BATCHED_TICKS, "ticks"), (V2_OF[PRICES.name].name, "prices")]:
        rows = asyncio.run(count(table.format(t=t).replace("{s:String}", f"'{symbols[name]}'")))
        assert rows == (ids(name), ids(name)), name
    v2_ind = V2_OF[INDICATORS.name].name
    rows = asyncio.run(count(table.format(t="indicators").replace("{s:String}", f"'{symbols[v2_ind]}'")))
    assert rows == (ids(v2_ind), ids(v2_ind))
    # ticks -> ingest's 1m candles (every minute but the last is closed); candles -> scoring's indicators
    minutes = len({int(e.ts.timestamp()) // 60 for e in valid[TICKS.name]})  # type: ignore[attr-defined]
    n_1m = asyncio.run(count("SELECT count() FROM candles FINAL WHERE symbol = {t:String} AND interval = '1m'"))
    assert n_1m[0] >= minutes - 1
    n_ind = asyncio.run(
        count("SELECT count(), uniqExact(ts) FROM indicators FINAL WHERE symbol = {c:String} AND interval = '1d'")
    )
    assert n_ind == (len(valid[CANDLES.name]), len(valid[CANDLES.name]))
    # prices -> the rule at 110.5 fired once, on the first price above it
    firings = asyncio.run(count("SELECT count(), min(price) FROM alert_firings FINAL WHERE rule_id = {r:String}"))
    assert firings == (1, 111.0)
    # every dead letter reached ClickHouse too, once; and the valid dead-letter samples
    stored = asyncio.run(
        count("SELECT count(), uniqExact(event_id) FROM dead_letters FINAL WHERE msg_key LIKE {p:String}")
    )
    assert stored == (len(letters), len(letters))
    samples = asyncio.run(count("SELECT count() FROM dead_letters FINAL WHERE msg_key = {s:String}"))
    assert samples[0] == ids(DEAD_LETTER.name)
    print(f"poison: {len(keys)} messages, {len(letters)} dead letters, reasons {dict(reasons)}")
