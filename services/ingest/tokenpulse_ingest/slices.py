"""A handled batch of trades cut into slices of whole tokens, so the event loop runs other work between them.

In embedded mode ingest shares one event loop with the gateway: a batch of a few hundred trades through the candle
builder and the price reconciler held it for tens of milliseconds, and every request waiting meanwhile landed in
the API's tail (docs/benchmarks.md, "Embedded at 1,000 tokens"). The builder's and the reconciler's state is per
token, so a token's rows handled together, in their order, give what the whole batch gives: a slice holds every
row of its tokens. The one state shared across tokens is a stablecoin's price (the USD rate of the pairs quoted in
it), so a batch with a stablecoin's own trades stays whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenpulse_ingest.prices import STABLE_QUOTES

SLICE_ROWS = 64
"""rows handled between two yields to the event loop (a token's rows are never split)"""


def token_slices(symbols: Sequence[str], limit: int = SLICE_ROWS) -> list[list[int]]:
    """The row indexes of ``symbols`` in slices of about ``limit`` rows, each with every row of its tokens (in
    their order), tokens in the order of their first row; one slice for a small batch or one with a stablecoin."""
    n = len(symbols)
    if n <= limit or any(quote in symbols for quote in STABLE_QUOTES):
        return [list(range(n))]
    by_token: dict[str, list[int]] = {}
    for i, symbol in enumerate(symbols):
        by_token.setdefault(symbol, []).append(i)
    slices: list[list[int]] = [[]]
    for rows in by_token.values():
        if len(slices[-1]) >= limit:
            slices.append([])
        slices[-1].extend(rows)
    return slices
