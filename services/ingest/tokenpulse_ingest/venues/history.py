"""What every venue's candle history over REST shares: paging into :class:`Bar` lists, clean and rolled up.

A venue module subclasses :class:`CandleApi` with its endpoint (``_fetch_native``), its native
intervals and its page size; :meth:`CandleApi.fetch` returns the closed bars whose open time is in
``[start_ms, end_ms)``, sorted, without duplicates whatever the pages overlap, and rolls up the
intervals the venue lacks from a finer one it has.

Each answer row goes through the venue's row parser (:meth:`CandleApi.bars`): a row missing a field, or
holding ``null``, a boolean or an unreadable text where a number belongs, is refused and counted in
``bad_rows`` (the backfill reports it as rejected), never completed with a default. Values the row does
hold (a zero or negative price, a high below the low) are judged by the candle validation after it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from tokenpulse_shared.events import Interval

from tokenpulse_ingest.bundle import Bar, rollup
from tokenpulse_ingest.rest.client import RestClient, RestError

log = logging.getLogger(__name__)

PageHook = Callable[[int], None]  # called with the number of bars each page added
RowParser = Callable[[Any], Bar]
OlderPage = Callable[[int], Awaitable[tuple[int, list[Bar]]]]
"""``page(before)``: how many rows the venue answered, and the bars read from them, older than ``before``"""
WindowPage = Callable[[int, int], Awaitable[list[Bar]]]
"""``page(start, stop)``: the bars of the window ``[start, stop)``"""


class BadRow(ValueError):
    """An answer row the venue's parser cannot turn into a bar without guessing."""


def number(value: object) -> float:
    """A JSON number or a decimal text as a float; anything else (null, a boolean, a list) is a :class:`BadRow`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRow(f"not a number: {value!r}"[:80])
    try:
        return float(value)
    except ValueError:
        raise BadRow(f"not a number: {value!r}"[:80]) from None


def integer(value: object) -> int:
    """A JSON integer or an integer text; anything else (null, a boolean, a fraction) is a :class:`BadRow`."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRow(f"not an integer: {value!r}"[:80])
    try:
        return int(value)
    except ValueError:
        raise BadRow(f"not an integer: {value!r}"[:80]) from None


def answer_rows(rows: object, body: object, what: str) -> list[Any]:
    """The answer's list of candle rows, or a :class:`RestError` quoting the answer when it holds none."""
    if not isinstance(rows, list):
        raise RestError(f"{what}: unexpected answer {str(body)[:200]}")
    return rows


def fields(row: object, count: int) -> Sequence[Any]:
    """The row as a list of at least ``count`` fields, else a :class:`BadRow`."""
    if not isinstance(row, list) or len(row) < count:
        raise BadRow(f"expected {count} fields: {row!r}"[:80])
    return row


class CandleApi:
    """One venue's candle (kline) endpoint, paginated."""

    name: ClassVar[str]
    quote: ClassVar[str]
    native: ClassVar[dict[Interval, Any]]
    page_limit: ClassVar[int]

    def __init__(self, client: RestClient, pair_of: Callable[[str], str]) -> None:
        self.client = client
        self.pair_of = pair_of  # symbol -> the venue's pair (its default, or TOKENPULSE_FEED_PAIRS' override)
        self.bad_rows = 0  # answer rows refused by the row parser, since this endpoint was made

    def bars(self, rows: list[Any], parse: RowParser) -> list[Bar]:
        """The rows the parser accepts, as bars; each refused row is counted in ``bad_rows`` and logged."""
        out = []
        for row in rows:
            try:
                out.append(parse(row))
            except BadRow as exc:
                self.bad_rows += 1
                log.warning("%s: refusing a candle row it cannot read without guessing: %s", self.name, exc)
        return out

    async def page_back(
        self, start_ms: int, end_ms: int, on_page: PageHook | None, page: OlderPage, what: str
    ) -> list[Bar]:
        """Pages going back in time from ``end_ms``, each older than the oldest bar so far, until ``start_ms``,
        a short page, or a page of refused rows."""
        out: list[Bar] = []
        before = end_ms
        while before > start_ms:
            rows, bars = await page(before)
            kept([b for b in bars if start_ms <= b.ts_ms < end_ms], out, on_page)
            if rows < self.page_limit or not bars:
                break
            oldest = min(b.ts_ms for b in bars)
            if oldest >= before:
                raise RestError(f"{what}: the page did not go back in time")
            before = oldest
        return out

    async def page_windows(
        self, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None, page: WindowPage
    ) -> list[Bar]:
        """Consecutive windows of ``page_limit`` candles from ``start_ms`` to ``end_ms``, one request each."""
        out: list[Bar] = []
        span = self.page_limit * interval.millis
        cursor = start_ms
        while cursor < end_ms:
            stop = min(cursor + span, end_ms)
            kept([b for b in await page(cursor, stop) if cursor <= b.ts_ms < stop], out, on_page)
            cursor = stop
        return out

    def pair(self, symbol: str) -> str:
        """The pair as the REST endpoint names it (a venue whose REST names differ from its stream's overrides this)."""
        return self.pair_of(symbol)

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        raise NotImplementedError

    async def fetch(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None = None
    ) -> list[Bar]:
        """Closed bars with open time in [start_ms, end_ms); intervals the venue lacks are rolled up."""
        if end_ms <= start_ms:
            return []
        if interval in self.native:
            return _clean(await self._fetch_native(symbol, interval, start_ms, end_ms, on_page), start_ms, end_ms)
        finer = max((i for i in self.native if interval.millis % i.millis == 0), key=lambda i: i.millis)
        bars = _clean(await self._fetch_native(symbol, finer, start_ms, end_ms, on_page), start_ms, end_ms)
        return rollup(bars, interval)


def kept(page: list[Bar], out: list[Bar], on_page: PageHook | None) -> None:
    """Adds the page's bars to ``out`` and tells ``on_page`` how many."""
    out.extend(page)
    if on_page:
        on_page(len(page))


def _clean(bars: list[Bar], start_ms: int, end_ms: int) -> list[Bar]:
    """In time order, one bar per open time, within [start_ms, end_ms) (pages may overlap or come newest first)."""
    by_ts = {b.ts_ms: b for b in bars if start_ms <= b.ts_ms < end_ms}
    return [by_ts[t] for t in sorted(by_ts)]
