"""The asynchronous client: the same methods as :class:`~tokenpulse_client.Client`, awaitable (lists and the
stream are async iterators). tests/clients/test_sdk_unit.py holds the two to the same signatures and docs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse
from typing_extensions import Unpack

from tokenpulse_client import _routes as r
from tokenpulse_client import models as m
from tokenpulse_client._core import (
    DEFAULT_BASE_URL,
    MAX_PAGE_SIZE,
    Call,
    EtagCache,
    RetryPolicy,
    answer_body,
    api_key_from,
    headers_for,
    sse_data,
    stream_pause,
)
from tokenpulse_client.errors import ApiError, TransportError, error_from
from tokenpulse_client.pagination import AsyncPages

M = TypeVar("M")
T = TypeVar("T", bound=m.ApiModel)


class AsyncClient:
    """A Tokenpulse API client.

    ``Client(base_url, api_key)``; without ``api_key`` the key is read from ``TOKENPULSE_API_KEY`` (a client
    without a key can still :meth:`create_key`). ``retry`` says when a 429/503 is waited out and retried,
    ``page_size`` how many rows each page request asks for, ``etag_cache_size`` how many answers are kept
    for ``If-None-Match`` (0: none). Pass ``http_client`` to use an ``httpx.AsyncClient`` of your own (proxies,
    transports, event hooks); it must carry the base URL, and it is not closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        page_size: int = MAX_PAGE_SIZE,
        etag_cache_size: int = 256,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_key = api_key_from(api_key)
        self.retry = retry or RetryPolicy()
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self.etags = EtagCache(etag_cache_size)
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=timeout)

    # ------------------------------------------------------------------------------------- plumbing
    async def _send(self, call: Call[M]) -> M:
        request = self._http.build_request(
            call.method, call.path, params=call.query(), json=call.body, headers=headers_for(self.api_key)
        )
        url = str(request.url)
        if call.method == "GET":
            request.headers.update(self.etags.conditional_headers(url))
        attempt = 0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                raise TransportError(f"{call.method} {call.path}: {exc}") from exc
            wait = self.retry.wait_before_retry(response.status_code, response.headers, attempt)
            if wait is None:
                body = answer_body(response.status_code, response.headers, response.content, url, self.etags)
                return call.decode(body)
            attempt += 1
            await asyncio.sleep(wait)

    def _pages(self, call: Call[m.Page[T]], item: type[T], limit: int | None) -> AsyncPages[T]:
        async def fetch(cursor: str | None, size: int) -> m.Page[T]:
            params = {**call.params, "limit": size, "cursor": cursor}
            return await self._send(Call(call.method, call.path, call.answer, params))

        return AsyncPages(fetch, item, limit, self.page_size)

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------ resources
    async def create_key(self, name: str, email: str | None = None) -> m.NewKey:
        """A new free key (``POST /v1/keys``, no key needed); ``.key`` is shown only this once."""
        return await self._send(r.create_key(name, email))

    async def usage(self) -> m.Usage:
        """Your key's tier, limits and use this minute and month."""
        return await self._send(r.usage())

    def tokens(
        self,
        limit: int | None = None,
        *,
        sort: m.TokenSort | None = None,
        q: str | None = None,
        min_trader_grade: float | None = None,
        signal: m.Direction | None = None,
    ) -> AsyncPages[m.Token]:
        """Every tracked token: price (USD), 24 h change (%) and volume (USD), market cap, grades, signal;
        ``sort`` by a field (``-market_cap``: descending), ``q`` in the symbol or name, only tokens graded at
        least ``min_trader_grade`` or with this daily ``signal``."""
        return self._pages(r.tokens(sort, q, min_trader_grade, signal), m.Token, limit)

    async def token(self, symbol: str) -> m.TokenDetail:
        """One token: its row plus ROI by window (%), key levels and the latest forecasts."""
        return await self._send(r.token(symbol))

    def candles(
        self,
        symbol: str,
        interval: m.Interval = "1d",
        start: r.TimeLike = None,
        end: r.TimeLike = None,
        limit: int | None = None,
    ) -> AsyncPages[m.Candle]:
        """OHLCV candles, oldest first; ``start``/``end`` as ISO strings, dates or datetimes (UTC);
        ``limit`` caps the rows (None: every row in the range, over as many pages as it takes)."""
        return self._pages(r.candles(symbol, interval, start, end), m.Candle, limit)

    def indicators(
        self,
        symbol: str,
        interval: m.Interval = "1d",
        start: r.TimeLike = None,
        end: r.TimeLike = None,
        limit: int | None = None,
    ) -> AsyncPages[m.Indicators]:
        """RSI, MACD, EMAs, SMA200, Bollinger bands and ATR at each closed candle, oldest first."""
        return self._pages(r.indicators(symbol, interval, start, end), m.Indicators, limit)

    def grades(
        self, symbol: str, start: r.TimeLike = None, end: r.TimeLike = None, limit: int | None = None
    ) -> AsyncPages[m.Grade]:
        """Daily Trader and Investor Grades (0..100) with their components, oldest first."""
        return self._pages(r.grades(symbol, start, end), m.Grade, limit)

    def signals(
        self,
        symbol: str | None = None,
        interval: m.Interval | None = None,
        start: r.TimeLike = None,
        end: r.TimeLike = None,
        limit: int | None = None,
    ) -> AsyncPages[m.Signal]:
        """Bullish/bearish signals, oldest first; intraday intervals need a tier with intraday signals."""
        return self._pages(r.signals(symbol, interval, start, end), m.Signal, limit)

    async def levels(self, symbol: str) -> m.Levels:
        """Support and resistance levels (USD) from daily swing pivots."""
        return await self._send(r.levels(symbol))

    async def predictions(
        self, symbol: str, history: bool = False, horizon: str | None = None, limit: int | None = None
    ) -> m.Predictions:
        """The latest 1d/7d/30d forecasts with 80% and 95% intervals; ``history=True`` adds up to ``limit``
        past forecasts (of ``horizon``, or every horizon) with the realised close."""
        return await self._send(r.predictions(symbol, history, horizon, limit))

    async def track_record(self) -> m.TrackRecord:
        """The signals' and grades' measured track record on the stored history."""
        return await self._send(r.track_record())

    async def cycles_btc(self, **params: Unpack[r.CycleQuery]) -> m.Cycles:
        """Bitcoin halving cycles: past runs, the bear/base/moon projection, its track record, altcoin
        seasons; keyword arguments override the model's parameters (docs/cycles.md)."""
        return await self._send(r.cycles_btc(params))

    async def quant(self, symbol: str, window: str | None = None) -> m.Quant:
        """Volatility, Sharpe, Sortino, max drawdown, CAGR, beta and correlation to BTC over ``window``
        (``30d``, ``90d`` or ``365d``; default 90d)."""
        return await self._send(r.quant(symbol, window))

    async def correlation(self, symbols: Sequence[str] | str, window: str | None = None) -> m.Correlation:
        """Pearson correlation of 2 to 20 tokens' daily returns on their common dates."""
        return await self._send(r.correlation(symbols, window))

    async def market(self, history: bool = False, start: r.TimeLike = None, end: r.TimeLike = None) -> m.MarketState:
        """The market state (bullish / neutral / bearish) with its components and track record; ``history=True``
        adds every day's (from ``start`` to ``end``)."""
        return await self._send(r.market(history, start, end))

    async def indices(self) -> m.Page[m.IndexSummary]:
        """The rule-based indices with their latest NAV, constituents and statistics (one page holds all)."""
        return await self._send(r.indices())

    async def index(self, index_id: str) -> m.IndexDetail:
        """One index: daily NAV vs BTC and the equal-weight basket, rebalances and weights."""
        return await self._send(r.index(index_id))

    async def scenarios(
        self, symbol: str, targets: Sequence[float] | None = None, price: float | None = None
    ) -> m.Scenarios:
        """What price targets imply in market cap and share of the market, the cycle projection's targets for
        the token, and with ``price`` what that price requires."""
        return await self._send(r.scenarios(symbol, targets, price))

    async def report(self, symbol: str) -> str:
        """The token's generated research report, as Markdown."""
        return await self._send(r.report(symbol))

    async def create_alert(
        self,
        symbol: str,
        condition: m.AlertCondition | dict[str, Any],
        channels: Sequence[m.AlertChannel | dict[str, Any]] = (),
        cooldown_s: int | None = None,
        name: str | None = None,
    ) -> m.AlertRule:
        """Create an alert rule; with no channels its firings go to the delivery log and the stream only."""
        return await self._send(r.create_alert(symbol, condition, channels, cooldown_s, name))

    def alerts(self, symbol: str | None = None, limit: int | None = None) -> AsyncPages[m.AlertRule]:
        """Your alert rules (of one token, or all)."""
        return self._pages(r.alerts(symbol), m.AlertRule, limit)

    async def alert(self, rule_id: str) -> m.AlertRule:
        """One of your alert rules."""
        return await self._send(r.alert(rule_id))

    async def delete_alert(self, rule_id: str) -> m.AlertDeleted:
        """Delete one of your alert rules."""
        return await self._send(r.delete_alert(rule_id))

    def alert_events(
        self, rule_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> AsyncPages[m.AlertEvent]:
        """Your rules' firings, newest first, each with its deliveries."""
        return self._pages(r.alert_events(rule_id, status), m.AlertEvent, limit)

    async def stream(
        self,
        symbols: Sequence[str] | str | None = None,
        types: Sequence[str] | str | None = None,
        last_event_id: int | None = None,
        read_timeout_s: float = 60.0,
    ) -> AsyncIterator[m.StreamEvent]:
        """Live ``price``, ``signal`` and your ``alert`` events as they happen (an endless iterator).

        A dropped connection, or a stream the server ends, is reopened with ``Last-Event-ID`` so the events
        sent meanwhile arrive from the server's buffer (a ``gap`` event says when some had already left it);
        ``retry.max_reconnects`` failures in a row raise :class:`TransportError`."""
        params = r.stream_params(symbols, types)
        last, failures = last_event_id, 0
        while True:
            received, error = False, None
            try:
                events = self._stream_once(params, last, read_timeout_s)
                try:
                    async for event in events:
                        received, last = True, event.id if event.id is not None else last
                        yield event
                finally:
                    await events.aclose()
            except (httpx.TransportError, ApiError) as exc:
                error = exc
            failures = 0 if received else failures + 1
            await asyncio.sleep(stream_pause(self.retry, error, failures))

    async def _stream_once(
        self, params: dict[str, str], last: int | None, read_timeout_s: float
    ) -> AsyncGenerator[m.StreamEvent, None]:
        headers = {**headers_for(self.api_key), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(30.0, read=read_timeout_s)
        async with aconnect_sse(
            self._http, "GET", "/v1/stream", params=params, headers=headers, timeout=timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                raise error_from(response.status_code, await response.aread(), response.headers)
            async for sse in source.aiter_sse():
                if sse.event != "hello":
                    yield m.StreamEvent(id=int(sse.id) if sse.id else None, event=sse.event, data=sse_data(sse.data))
