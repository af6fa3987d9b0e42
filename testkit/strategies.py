"""Hypothesis strategies for the hostile-input property tests of the wire decoders."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# any JSON value, small: what a field of a message may hold instead of what the model expects
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# ISO 8601 instants with any UTC offset a clock may carry
times = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz).isoformat(),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    offsets,
)
# values a field of a message may hold instead of what the model expects (each tried in every field)
HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    1.5,
    -0.0,
    1e308,
    2**63,
    1e400,
    -1e400,
    2**64,
    10**400,
    "1",
    "",
    "BTC",
    "BTC\n",
    "btc",
    "ÄBC",
    "A" * 16,
    "x" * 65,
    "x" * 129,
    "\ud800",
    "NaN",
    "Infinity",
    "2026-11-03T12:00:00Z",
    "2026-11-03T12:00:00",
    "2026-11-03T12:00:00.1234567Z",
    "2026-11-03T12:00:00+02:00",
    "2026-11-03 12:00:00Z",
    "2026-11-03T12:00:00.123456789Z",
    "2026-11-03T23:59:60Z",
    "2026-11-03",
    "1h",
    "1d",
    "buy",
    "sideways",
    "USDT",
    [],
    ["a"],
    [1],
    {},
    {"a": 1},
]
