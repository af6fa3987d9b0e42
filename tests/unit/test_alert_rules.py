"""Alert rules: conditions, the per-token index, edge triggering, cooldowns, firing ids, target checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_alerts.rules import RuleBook, firing_event_id, firing_id
from tokenpulse_alerts.service import AlertsService
from tokenpulse_shared.batches import PriceBatch, epoch_us, from_epoch_us
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.channels import sign, validate_channel, webhook_secret
from tokenpulse_shared.events import (
    AlertChannel,
    AlertCondition,
    AlertFiredEvent,
    AlertRuleEvent,
    Direction,
    Event,
    GradeEvent,
    PriceEvent,
    SignalEvent,
)
from tokenpulse_shared.netguard import TargetRefused, check_target
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import ALERTS

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def rule(rule_id: str, cond: dict, symbol: str = "BTC", cooldown_s: int = 0, **kw: object) -> AlertRuleEvent:
    return AlertRuleEvent(
        rule_id=rule_id,
        owner="k1",
        symbol=symbol,
        condition=AlertCondition.model_validate(cond),
        cooldown_s=cooldown_s,
        **kw,  # type: ignore[arg-type]
    )


def price(p: float, minute: float = 0, symbol: str = "BTC", prev: float | None = None) -> PriceEvent:
    return PriceEvent(symbol=symbol, ts=T0 + timedelta(minutes=minute), price=p, prev_price=prev)


def test_price_crossings_fire_on_the_edge_and_respect_cooldown() -> None:
    book = RuleBook()
    book.apply(rule("r1", {"kind": "price_above", "value": 100}, cooldown_s=600))
    prices = [99, 101, 102, 99, 101, 98, 103]  # crossings at 1, 4 (in cooldown), 6 (after cooldown)
    minutes = [0, 1, 2, 3, 4, 5, 20]
    hits = [h for p, m in zip(prices, minutes, strict=True) for h in book.on_price(price(p, m))]
    assert [(h.price, h.ts) for h in hits] == [
        (101, (T0 + timedelta(minutes=1)).timestamp()),
        (103, (T0 + timedelta(minutes=20)).timestamp()),
    ]


def test_prev_price_decides_a_crossing_without_any_state() -> None:
    book = RuleBook()  # a fresh book, as after a restart
    book.apply(rule("up", {"kind": "price_above", "value": 100}))
    book.apply(rule("down", {"kind": "price_below", "value": 50}))
    assert [h.rule.rule_id for h in book.on_price(price(101, prev=99))] == ["up"]
    fresh = RuleBook()
    fresh.apply(rule("down", {"kind": "price_below", "value": 50}))
    assert fresh.on_price(price(49)) == []  # no previous price known: a level cannot be said to be crossed
    assert [h.rule.rule_id for h in fresh.on_price(price(49, 1, prev=51))] == ["down"]


def test_one_jump_crosses_every_level_between_and_other_tokens_are_untouched() -> None:
    book = RuleBook()
    for i, level in enumerate([90, 100, 110, 120, 130]):
        book.apply(rule(f"a{i}", {"kind": "price_above", "value": level}))
    book.apply(rule("eth", {"kind": "price_above", "value": 1}, symbol="ETH"))
    book.on_price(price(95))
    hits = book.on_price(price(125, 1))
    assert sorted(h.rule.rule_id for h in hits) == ["a1", "a2", "a3"]
    assert book.on_price(price(125, 2)) == []


def test_percent_change_over_a_window() -> None:
    book = RuleBook()
    book.apply(rule("pump", {"kind": "change_above", "value": 5, "window": "1h"}))
    book.apply(rule("dump", {"kind": "change_below", "value": 5, "window": "1h"}))
    assert book.on_price(price(100, 0)) == []
    assert book.on_price(price(104, 30)) == []  # history does not reach an hour back yet: unknown
    assert book.on_price(price(104, 61)) == []  # +4 % vs an hour ago
    hits = book.on_price(price(106, 62))  # vs 104 at 30'... an hour before 62' is 2' → price 100: +6 %
    assert [h.rule.rule_id for h in hits] == ["pump"]
    assert book.on_price(price(107, 63)) == []  # still true: no new edge
    assert [h.rule.rule_id for h in book.on_price(price(97, 125))] == ["dump"]  # 97 vs 104..107 an hour before


def test_grades_signals_and_combinations() -> None:
    book = RuleBook()
    book.apply(rule("tg", {"kind": "trader_grade_above", "value": 70}))
    book.apply(rule("jump", {"kind": "grade_change", "grade": "investor", "value": 10}))
    book.apply(rule("bull", {"kind": "signal", "direction": "bullish"}))
    book.apply(
        rule(
            "combo",
            {
                "kind": "all",
                "all": [{"kind": "price_above", "value": 100}, {"kind": "signal", "direction": "bullish"}],
            },
        )
    )
    g = lambda t, i, m: GradeEvent(symbol="BTC", ts=T0 + timedelta(minutes=m), trader_grade=t, investor_grade=i)  # noqa: E731
    s = lambda d, m: SignalEvent(symbol="BTC", ts=T0 + timedelta(minutes=m), direction=d, strength=0.5)  # noqa: E731
    assert book.on_grade(g(60, 50, 0)) == []
    assert sorted(h.rule.rule_id for h in book.on_grade(g(75, 65, 1))) == ["jump", "tg"]
    assert book.on_grade(g(80, 66, 2)) == []  # still above 70; investor moved 1 point
    book.on_price(price(90, 3))
    assert [h.rule.rule_id for h in book.on_signal(s(Direction.BULLISH, 4))] == ["bull"]  # price 90: combo false
    assert [h.rule.rule_id for h in book.on_price(price(101, 5))] == ["combo"]  # now price > 100 with bullish
    assert book.on_price(price(102, 6)) == []
    assert book.on_signal(s(Direction.BEARISH, 7)) == []
    assert sorted(h.rule.rule_id for h in book.on_signal(s(Direction.BULLISH, 8))) == ["bull", "combo"]


def test_older_rule_versions_are_ignored_and_deletion_removes() -> None:
    book = RuleBook()
    created = rule("r", {"kind": "price_above", "value": 100})
    deleted = AlertRuleEvent.model_validate(
        created.model_dump() | {"deleted": True, "produced_at": created.produced_at + timedelta(seconds=1)}
    )
    assert book.apply(deleted)
    assert not book.apply(created)  # a replay of the creation after the deletion does not resurrect it
    book.on_price(price(99))
    assert book.on_price(price(101, 1)) == [] and len(book) == 0


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ({"kind": "change_above", "value": 5}, "window"),
        ({"kind": "price_above"}, "value"),
        ({"kind": "price_above", "value": -1}, "positive"),
        ({"kind": "trader_grade_above", "value": 120}, "0..100"),
        ({"kind": "signal"}, "direction"),
        ({"kind": "grade_change", "value": 5}, "grade"),
        ({"kind": "all", "all": []}, "non-empty"),
        ({"kind": "any", "any": [{"kind": "price_above", "value": 1}] * 11}, "at most"),
        ({"kind": "price_above", "value": 1, "all": [{"kind": "price_above", "value": 1}]}, "single check"),
        ({"kind": "price_abov", "value": 1}, "kind"),
    ],
)
def test_invalid_conditions_are_refused_with_a_reason(cond: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertCondition.model_validate(cond)


@settings(max_examples=200, deadline=None)
@given(
    levels=st.lists(st.floats(50, 150, allow_nan=False), min_size=1, max_size=30),
    path=st.lists(st.floats(40, 160, allow_nan=False), min_size=2, max_size=60),
)
def test_the_index_matches_a_brute_force_reference(levels: list[float], path: list[float]) -> None:
    book = RuleBook()
    for i, level in enumerate(levels):
        book.apply(rule(f"a{i}", {"kind": "price_above", "value": level}))
        book.apply(rule(f"b{i}", {"kind": "price_below", "value": level}))
    got = []
    for m, p in enumerate(path):
        got.extend((m, h.rule.rule_id) for h in book.on_price(price(p, m)))
    expected = []
    for m in range(1, len(path)):
        p0, p1 = path[m - 1], path[m]
        for i, level in enumerate(levels):
            if p0 <= level < p1:
                expected.append((m, f"a{i}"))
            if p1 < level <= p0:
                expected.append((m, f"b{i}"))
    assert sorted(got) == sorted(expected)


LEAVES = st.one_of(
    st.builds(lambda v: {"kind": "price_above", "value": v}, st.floats(80, 120)),
    st.builds(lambda v: {"kind": "price_below", "value": v}, st.floats(80, 120)),
    st.builds(
        lambda v, w: {"kind": "change_above", "value": v, "window": w},
        st.floats(0.5, 8),
        st.sampled_from(["5m", "15m"]),
    ),
    st.builds(
        lambda v, w: {"kind": "change_below", "value": v, "window": w},
        st.floats(0.5, 8),
        st.sampled_from(["5m", "15m"]),
    ),
)
CONDITIONS = st.one_of(
    LEAVES,
    st.builds(
        lambda k, cs: {"kind": k, k: cs}, st.sampled_from(["all", "any"]), st.lists(LEAVES, min_size=1, max_size=3)
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    conds=st.lists(CONDITIONS, min_size=1, max_size=12), steps=st.lists(st.floats(-0.03, 0.03), min_size=2, max_size=80)
)
def test_indexes_fire_exactly_like_evaluating_every_rule_on_every_event(conds: list[dict], steps: list[float]) -> None:
    """The level, change and combination indexes only skip work: the firings equal a plain evaluation of
    every rule at every price with edge detection."""
    from tokenpulse_alerts.rules import TokenState, evaluate

    book = RuleBook()
    rules = [rule(f"r{i}", c) for i, c in enumerate(conds)]
    for r in rules:
        book.apply(r)
    ref_state = TokenState()
    was: dict[str, bool | None] = {r.rule_id: None for r in rules}
    p, prev = 100.0, None
    got, want = [], []
    for m, step in enumerate(steps):
        p = p * (1 + step)
        ev = price(p, m, prev=prev)
        prev = p
        got += [(m, h.rule.rule_id) for h in book.on_price(ev)]
        ref_state.add_price(ev.ts.timestamp(), p)
        for r in rules:
            now = evaluate(r.condition, ref_state)
            if now is True and was[r.rule_id] is False:
                want.append((m, r.rule_id))
            was[r.rule_id] = now
    assert sorted(got) == sorted(want)


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate])  # shrinking 10^5 steps: minutes
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0.2, 1.0, 1.0, 1.0, 7.0, 61.0, 3_600.0, 50_000.0]), st.floats(1.0, 2.0)),
        min_size=1,
        max_size=300,
    ),
    copies=st.integers(1, 1_000),
)
def test_price_history_answers_like_a_full_history(steps: list[tuple[float, float]], copies: int) -> None:
    """The windowed history (one sample per second, trimmed past the longest window, compacted in
    halves) gives every window the last price at or before its start, like the whole history would."""
    from bisect import bisect_left, bisect_right

    from tokenpulse_alerts.rules import CHANGE_WINDOWS_S, MAX_WINDOW_S, TokenState

    state = TokenState()
    times: list[float] = []  # the whole history, never trimmed
    prices: list[float] = []
    kept_from = float("-inf")  # samples older than this were trimmed (at the last append)
    ts = 0.0
    for gap, price in (steps * copies)[:120_000]:  # repeated: long runs reach the trimming and the compaction
        ts += gap
        if times and ts - times[-1] < 1.0:
            prices[-1] = price
        else:
            times.append(ts)
            prices.append(price)
            kept_from = ts - MAX_WINDOW_S - 60
        state.add_price(ts, price)
        for window, seconds in CHANGE_WINDOWS_S.items():
            i = bisect_right(times, ts - seconds) - 1  # the last sample at or before the window's start
            want = None if i < 0 or times[i] < kept_from else (price / prices[i] - 1.0) * 100.0
            assert state.change_pct(window) == want, (window, ts)
    assert len(state.times) - state.head == len(times) - bisect_left(times, kept_from)


def test_firing_ids_are_deterministic() -> None:
    assert firing_id("r1", "e1") == firing_id("r1", "e1")
    assert len({firing_id("r1", "e1"), firing_id("r1", "e2"), firing_id("r2", "e1")}) == 3


async def test_the_service_notifies_a_redelivered_trigger_once() -> None:
    before, trigger = price(99), price(101, 1, prev=99)
    first = await _fire_once(before, trigger)
    assert [(f.firing_id, f.status) for f in first] == [(firing_id("r1", first[0].trigger_event_id), "no_channels")]
    # another process (a restart that had not read the log) firing for the same trigger: the same event id
    again = await _fire_once(before, trigger)
    assert [f.event_id for f in again] == [f.event_id for f in first]
    assert first[0].event_id == firing_event_id(first[0].firing_id, "no_channels")


@asynccontextmanager
async def alerts_service() -> AsyncIterator[tuple[AlertsService, list[AlertFiredEvent]]]:
    """A started alerts service on an in-memory bus, and the firings it publishes (all of them once the block
    ends: the bus is drained, then the service and the bus stopped)."""
    bus = InMemoryBus()
    fired: list[AlertFiredEvent] = []

    async def sink(events: list[Event]) -> None:
        fired.extend(events)  # type: ignore[arg-type]

    service = AlertsService()
    ctx = Context(settings=Settings(), bus=bus)
    service.register(ctx)
    bus.subscribe(ALERTS, "test", sink)
    await bus.start()
    await service.start(ctx)
    yield service, fired
    await bus.drain()
    await service.stop()
    await bus.stop()


async def _fire_once(before: PriceEvent, trigger: PriceEvent) -> list[AlertFiredEvent]:
    async with alerts_service() as (service, fired):
        await service.on_rules([rule("r1", {"kind": "price_above", "value": 100})])
        await service.on_prices([before, trigger])
        await service.on_prices([trigger])  # redelivered after a rebalance or a restart
    assert [f.trigger_event_id for f in fired] == [trigger.event_id]
    return fired


def test_targets_are_checked_per_channel() -> None:
    ok = [
        AlertChannel(type="email", target="bob@example.com"),
        AlertChannel(type="telegram", target="-1001234567"),
        AlertChannel(type="discord", target="https://discord.com/api/webhooks/123456789/abcdefghijklmnop"),
        AlertChannel(type="slack", target="https://hooks.slack.com/services/T0001/B0001/abcdefghijkl"),
        AlertChannel(type="webhook", target="https://93.184.216.34/hook"),
    ]
    for channel in ok:
        validate_channel(channel, [])
    bad = [
        AlertChannel(type="email", target="not-an-address"),
        AlertChannel(type="telegram", target="hello world"),
        AlertChannel(type="discord", target="https://evil.example/api/webhooks/1/2"),
        AlertChannel(type="slack", target="http://hooks.slack.com/services/T/B/x"),
    ]
    for channel in bad:
        with pytest.raises(ValueError):
            validate_channel(channel, [])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "http://93.184.216.34/hook",  # plain http to a public host
        "https://user:pw@93.184.216.34/hook",
        "ftp://93.184.216.34/x",
    ],
)
def test_ssrf_guard_refuses_private_and_insecure_targets(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_target(url)


def test_ssrf_allowlist_admits_named_hosts_and_networks() -> None:
    assert check_target("http://127.0.0.1:8080/x", ["127.0.0.1"])
    assert check_target("https://10.1.2.3/x", ["10.0.0.0/8"])
    with pytest.raises(TargetRefused):
        check_target("https://10.1.2.3/x", ["127.0.0.1", "192.168.0.0/16"])


def test_webhook_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    secret = webhook_secret("server-key", "owner-1")
    assert secret != webhook_secret("server-key", "owner-2") and secret.startswith("whsec_")
    body = b'{"a":1}'
    header = sign(secret, 1700000000, body)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert t == "1700000000"
    assert hmac.compare_digest(v1, hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest())
    assert sign(secret, 1700000000, b'{"a":2}') != header


# ---- bounds of a rule, and reading back what was stored ------------------------------------------


def nested(levels: int, leaf: dict | None = None) -> dict:
    """A condition ``levels`` deep (a single check is one level)."""
    cond = leaf or {"kind": "price_above", "value": 1e6}
    for _ in range(levels - 1):
        cond = {"kind": "all", "all": [cond]}
    return cond


def test_conditions_are_bounded_in_depth_and_in_checks() -> None:
    from tokenpulse_shared.events import MAX_CONDITION_DEPTH, MAX_CONDITION_LEAVES

    assert AlertCondition.model_validate(nested(MAX_CONDITION_DEPTH)).leaves() == 1
    for levels in (MAX_CONDITION_DEPTH + 1, 120, 254, 10_000):  # 10,000 would overflow any recursive check
        with pytest.raises(ValidationError, match=f"at most {MAX_CONDITION_DEPTH} levels"):
            AlertCondition.model_validate(nested(levels))
    leaf = {"kind": "signal", "direction": "any"}
    full = {"kind": "any", "any": [{"kind": "all", "all": [leaf] * 5}, {"kind": "all", "all": [leaf] * 5}]}
    assert AlertCondition.model_validate(full).leaves() == MAX_CONDITION_LEAVES
    wider = {"kind": "any", "any": [*full["any"], leaf]}  # 11 checks, no list longer than 3
    with pytest.raises(ValidationError, match=f"at most {MAX_CONDITION_LEAVES} checks"):
        AlertCondition.model_validate(wider)
    with pytest.raises(ValidationError, match=f"at most {MAX_CONDITION_LEAVES} checks"):
        AlertCondition.model_validate({"kind": "any", "any": [leaf] * 100_000})


def test_a_stored_rule_that_cannot_be_read_is_described_not_raised() -> None:
    from tokenpulse_shared.rule_table import UnreadableRule, decode_row

    good = rule("r-good", nested(3))
    assert decode_row(("r-good", "k1", "BTC", T0, good.model_dump_json())) == good
    old = good.model_dump(mode="json") | {"condition": nested(120)}  # as an older version stored it
    for text, words in ((json.dumps(old), "recursion limit"), ('{"rule_id": ', "not JSON"), ("[]", "object")):
        got = decode_row(("r-old", "k1", "BTC", T0.replace(tzinfo=None), text))
        assert isinstance(got, UnreadableRule) and words in got.reason, got
        assert (got.rule_id, got.owner, got.symbol, got.created_at, got.payload) == ("r-old", "k1", "BTC", T0, text)
        assert got.raw().key == "r-old" and got.raw().value == text.encode()


async def _firings(conds: list[dict], batch: PriceBatch, as_rows: bool) -> list[tuple[Any, ...]]:
    async with alerts_service() as (service, fired):
        await service.on_rules([rule(f"r{i}", c, symbol=("BTC", "ETH")[i % 2]) for i, c in enumerate(conds)])
        if as_rows:
            await service.on_price_rows([batch])
        else:
            await service.on_prices(batch.to_events())
    return [(f.event_id, f.firing_id, f.trigger_event_id, f.ts, f.price, f.message) for f in fired]


@settings(max_examples=40, deadline=None)
@given(
    conds=st.lists(CONDITIONS, min_size=1, max_size=8),
    steps=st.lists(
        st.tuples(st.booleans(), st.floats(-0.03, 0.03), st.integers(0, 9 * 10**7)), min_size=1, max_size=60
    ),
)
def test_price_rows_fire_exactly_as_their_v1_events(conds: list[dict], steps: list[tuple[bool, float, int]]) -> None:
    """A v2 price batch evaluated from its columns fires the same firings (ids, triggers, times, prices) as
    its rows converted to v1 events: a firing's identity does not depend on the form its trigger came in."""
    level = {"BTC": 100.0, "ETH": 100.0}
    ts_us = epoch_us(T0) + 123_457
    events = []
    for eth, step, gap_us in steps:
        symbol = "ETH" if eth else "BTC"
        prev = level[symbol]
        level[symbol] = prev * (1 + step)
        ts_us += gap_us
        events.append(PriceEvent(symbol=symbol, ts=from_epoch_us(ts_us), price=level[symbol], prev_price=prev))
    batch = PriceBatch.from_events(events)
    assert asyncio.run(_firings(conds, batch, as_rows=True)) == asyncio.run(_firings(conds, batch, as_rows=False))
