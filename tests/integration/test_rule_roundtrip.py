"""Anything stored must be re-readable by the same code: every rule the API's model accepts comes back equal
from the ``alert_rules`` table (written and read as the gateway does, on the real chDB engine) and from the
rules topic (the bus's encoder and decoder); every input beyond the limits is refused, saying which."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_gateway.bodies import check_body
from tokenpulse_gateway.routes.alerts import RuleRequest
from tokenpulse_shared.bus.base import RawMessage, decode_message, encode_event
from tokenpulse_shared.events import MAX_CONDITION_DEPTH, MAX_CONDITION_LEAVES, AlertRuleEvent
from tokenpulse_shared.rule_table import COLUMNS, decode_row, save
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import ALERT_RULES

FINITE = {"allow_nan": False, "allow_infinity": False}
LEAVES = st.one_of(
    st.builds(
        lambda k, v: {"kind": k, "value": v},
        st.sampled_from(["price_above", "price_below"]),
        st.floats(min_value=1e-300, max_value=1e300, **FINITE),
    ),
    st.builds(
        lambda k, v, w: {"kind": k, "value": v, "window": w},
        st.sampled_from(["change_above", "change_below"]),
        st.floats(min_value=1e-9, max_value=1000, **FINITE),
        st.sampled_from(["5m", "15m", "1h", "4h", "24h"]),
    ),
    st.builds(
        lambda k, v: {"kind": k, "value": v},
        st.sampled_from(["trader_grade_above", "trader_grade_below", "investor_grade_above", "investor_grade_below"]),
        st.floats(min_value=0, max_value=100, **FINITE),
    ),
    st.builds(
        lambda g, v: {"kind": "grade_change", "grade": g, "value": v},
        st.sampled_from(["trader", "investor"]),
        st.floats(min_value=0, max_value=100, **FINITE),
    ),
    st.builds(lambda d: {"kind": "signal", "direction": d}, st.sampled_from(["bullish", "bearish", "any"])),
)


def combined(children: st.SearchStrategy[list[dict[str, Any]]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda k, cs: {"kind": k, k: cs}, st.sampled_from(["all", "any"]), children)


def up_to(levels: int) -> st.SearchStrategy[dict[str, Any]]:
    if levels == 1:
        return LEAVES
    return LEAVES | combined(st.lists(up_to(levels - 1), min_size=1, max_size=3))


def exactly(levels: int) -> st.SearchStrategy[dict[str, Any]]:
    """Conditions exactly ``levels`` deep (a single check is one), lists up to 4 long."""
    if levels == 1:
        return LEAVES
    first, rest = exactly(levels - 1), st.lists(up_to(levels - 1), max_size=3)
    return combined(st.builds(lambda f, r, at: [*r[:at], f, *r[at:]], first, rest, st.integers(0, 3)))


def depth(c: dict[str, Any]) -> int:
    children = c.get("all") or c.get("any") or []
    return 1 + max((depth(x) for x in children), default=0)


def leaves(c: dict[str, Any]) -> int:
    children = c.get("all") or c.get("any")
    return sum(leaves(x) for x in children) if children else 1


CHANNEL = st.builds(
    lambda t, target: {"type": t, "target": target},
    st.sampled_from(["email", "telegram", "discord", "slack", "webhook"]),
    st.text(min_size=1, max_size=2048) | st.just("x" * 2048),
)
# inside the limits mostly, one step beyond them now and then: depth, checks, channels, name
REQUESTS = st.fixed_dictionaries(
    {
        "symbol": st.from_regex(r"[A-Z0-9]{1,15}", fullmatch=True),
        "condition": st.integers(1, MAX_CONDITION_DEPTH + 2).flatmap(exactly)
        | combined(st.lists(up_to(2), min_size=4, max_size=6)),  # around the number of checks allowed
        "channels": st.lists(CHANNEL, max_size=10) | st.lists(CHANNEL, min_size=10, max_size=11),
        "cooldown_s": st.integers(0, 86400 * 30),
        "name": st.text(max_size=200) | st.text(min_size=200, max_size=201),
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("roundtrip") / "ch"
    s = asyncio.run(Store(f"chdb://{path}").open())
    try:
        yield s
    finally:
        asyncio.run(s.close())


def why_refused(body: dict[str, Any]) -> str | None:
    """The reference: which limit an input breaks (computed apart from the models), or None."""
    cond = body["condition"]
    if depth(cond) > MAX_CONDITION_DEPTH:
        return f"at most {MAX_CONDITION_DEPTH} levels"
    if leaves(cond) > MAX_CONDITION_LEAVES:
        return f"at most {MAX_CONDITION_LEAVES} checks"
    if len(body["channels"]) > 10:
        return "at most 10 items"
    if len(body["name"]) > 200:
        return "at most 200 characters"
    return None


async def stored_copy(store: Store, rule: AlertRuleEvent) -> Any:
    await save(store, rule)
    rows = await store.query(
        f"SELECT {COLUMNS} FROM alert_rules FINAL WHERE rule_id = {{r:String}}", {"r": rule.rule_id}
    )
    return decode_row(rows[0])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=REQUESTS)
def test_every_accepted_rule_reads_back_equal_and_every_refusal_names_its_limit(
    store: Store, body: dict[str, Any]
) -> None:
    expected = why_refused(body)
    cond = body["condition"]
    event(f"refused: {expected}" if expected else f"accepted: depth {depth(cond)}, {leaves(cond)} checks")
    try:
        request = RuleRequest.model_validate(body)
    except ValidationError as exc:
        assert expected is not None and expected in str(exc), (expected, str(exc)[:500])
        return
    assert expected is None, f"accepted although beyond a limit ({expected})"
    check_body(json.dumps(body).encode())  # the body limit never refuses what the model accepts
    rule = AlertRuleEvent(
        rule_id="rule_" + secrets.token_hex(8),
        owner="key-" + secrets.token_hex(4),
        symbol=request.symbol,
        condition=request.condition,
        channels=request.channels,
        cooldown_s=request.cooldown_s,
        name=request.name,
    )
    assert asyncio.run(stored_copy(store, rule)) == rule
    assert decode_message(ALERT_RULES, RawMessage(value=encode_event(rule), key=rule.rule_id)) == rule
