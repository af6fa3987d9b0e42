"""The page-cursor codec: what it issues it reads back; whatever else a client sends is a 400, never a value
outside the model's bounds and never another exception."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenpulse_gateway.cursors import (
    MAX_CURSOR_CHARS,
    STORE_MAX_MS,
    Cursor,
    FiringCursor,
    RuleCursor,
    TimeCursor,
    TokenCursor,
    decode,
    encode,
)
from tokenpulse_gateway.errors import ApiError

KINDS: list[type[Cursor]] = [TimeCursor, TokenCursor, RuleCursor, FiringCursor]
ROW_MS = st.integers(0, STORE_MAX_MS)
ISSUED = st.one_of(
    st.builds(TimeCursor, ts=ROW_MS),
    st.builds(
        TokenCursor,
        v=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        symbol=st.from_regex(r"[A-Z0-9]{1,15}", fullmatch=True),
        f=st.from_regex(r"[0-9a-f]{12}", fullmatch=True),
    ),
    st.builds(RuleCursor, rule_id=st.text(min_size=1, max_size=64)),
    st.builds(FiringCursor, ts=ROW_MS, id=st.text(max_size=64)),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ts", "id", "symbol", "rule_id", "v", "f"]), inner)
    ),
    max_leaves=10,
)


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@given(ISSUED)
@settings(max_examples=300, deadline=None)
def test_every_issued_cursor_reads_back(cursor: Cursor) -> None:
    text = encode(cursor)
    assert len(text) <= MAX_CURSOR_CHARS and decode(type(cursor), text) == cursor


@given(st.sampled_from(KINDS), JSON)
@settings(max_examples=500, deadline=None)
def test_any_forged_json_is_a_valid_cursor_or_a_400(kind: type[Cursor], value: Any) -> None:
    try:
        got = decode(kind, raw(json.dumps(value)))
    except ApiError as exc:
        assert (exc.status, exc.code) == (400, "invalid_cursor")
    else:  # only what the model admits: a strict int within the store's range, bounded strings
        assert type(got) is kind and encode(got)


@pytest.mark.parametrize(
    "text",
    [
        raw('{"ts": true}'),
        raw('{"ts": 1.0}'),
        raw('{"ts": "5"}'),
        raw('{"ts": -1}'),
        raw('{"ts": 9223372036854775808}'),
        raw('{"ts": [1]}'),
        raw('{"ts": 1, "extra": 2}'),
        raw("[" * 100 + "]" * 100),
        raw('{"ts": 1}') + "A" * MAX_CURSOR_CHARS,
        "%%%",
        "é🚀",
        "",
    ],
)
def test_forged_time_cursors_are_refused(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode(TimeCursor, text)
    assert caught.value.status == 400


def test_a_cursor_issued_before_the_codec_still_reads() -> None:
    """History cursors were ``{"ts": ms}`` with a space after the colon: pages in flight keep working."""
    old = base64.urlsafe_b64encode(json.dumps({"ts": 1293840000000}).encode()).decode().rstrip("=")
    assert decode(TimeCursor, old).ts == 1293840000000
