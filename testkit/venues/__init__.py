"""What the fake exchange (testkit/fake_exchange.py) speaks for venues without a recording: one module each.

No recording of these venues' current formats is vendored (data/exchange-samples holds 2021-22
captures of other channels), so each module *crafts* its frames from the venue's documented
format, the documentation URL in its docstring: the example trades of the documentation page
give the price path and sizes (rescaled and restamped as the recorded ones are), the frame
layout is the documented one field for field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Trade:
    """One trade to render: the venue's pair name, its id, exchange time, price, size, taker side."""

    venue: str
    trade_id: int
    ts: datetime
    price: float
    size: float
    side: str  # "buy" | "sell", the taker's


class Dialect:
    """A venue's wire format as the fake exchange needs it (subclassed per venue)."""

    kind: str
    path: str = ""  # appended to the fake's ws://127.0.0.1:<port>
    samples: tuple[tuple[float, float, str], ...]  # (price, size, taker side) of the documented examples
    broken: tuple[str, str]  # (text in a trade frame, replacement) that makes its price unusable

    def subscribed(self, msg: Any) -> tuple[list[str], list[str]] | None:
        """A client frame that subscribes: (pairs subscribed, answer frames); None for anything else."""
        raise NotImplementedError

    def answer(self, text: str) -> str | None:
        """The answer to a non-subscribe client frame (an application ping), or None."""
        return None

    def trades(self, trades: list[Trade]) -> str:
        raise NotImplementedError

    def heartbeat(self, venue: str, last_trade_id: int, now: datetime) -> str | None:
        return None

    def stamp(self, frame: str, sequence: int) -> str:
        """Put the connection's message sequence number in (venues that number their messages)."""
        return frame
