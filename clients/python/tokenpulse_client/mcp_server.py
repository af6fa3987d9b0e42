"""The Tokenpulse MCP server: the API's main resources as tools an AI agent can call.

Built on the official ``mcp`` SDK (its ``MCPServer``, called FastMCP before mcp 2). Every tool calls the
Python SDK's :class:`~tokenpulse_client.AsyncClient`, so agents and programs share one client code path
(pages, retries, typed errors), and answers with a short text for the model plus the same figures as
structured content, each key naming its unit. An API error (unknown symbol, bad date, over a limit) is a
tool error carrying the API's message, never a crash of the server.

Run it over stdio with ``tokenpulse mcp --base-url URL`` or ``tokenpulse-mcp`` (the key from
``TOKENPULSE_API_KEY``); needs ``pip install 'tokenpulse-client[mcp]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tokenpulse_client import _summaries as s
from tokenpulse_client import models as m
from tokenpulse_client._core import DEFAULT_BASE_URL, RetryPolicy, api_key_from
from tokenpulse_client._version import __version__
from tokenpulse_client.async_client import AsyncClient
from tokenpulse_client.errors import ApiError, TransportError

T = TypeVar("T")
ClientSource = Callable[[], AsyncClient]

# an agent waits on the tool: wait out a short rate-limit pause, report a long one
AGENT_RETRY = RetryPolicy(max_retries=2, max_wait_s=15.0)
READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
INTERVAL_SPAN = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}
# a "latest rows" window grows 4x at a time, at most this often, and never starts before the first block
WIDENINGS = 8
EARLIEST = datetime(2009, 1, 3, tzinfo=UTC)

INSTRUCTIONS = """Tokenpulse: crypto market data and analytics from an open platform. Prices and market caps
are in USD, times in UTC, changes in percent, Trader/Investor Grades on 0..100 (higher is more bullish),
signal strength on 0..1. Start with list_tokens to see which symbols are tracked."""

Symbol = Annotated[str, Field(min_length=1, max_length=20, description="token symbol, e.g. BTC or ETH (list_tokens)")]
IntervalArg = Annotated[m.Interval, Field(description="candle interval")]
Time = Annotated[
    str | None,
    Field(max_length=40, description="ISO-8601 date or time in UTC, e.g. 2024-01-31 or 2024-01-31T12:00:00Z"),
]


@asynccontextmanager
async def api_call() -> AsyncIterator[None]:
    """Turns the SDK's errors into tool errors with the API's own message."""
    try:
        yield
    except ApiError as exc:
        wait = f"; retry in {exc.retry_after:g} s" if exc.retry_after is not None else ""
        raise ToolError(f"{exc.message} (API error {exc.status} {exc.code}{wait})") from exc
    except TransportError as exc:
        raise ToolError(f"the Tokenpulse API did not answer: {exc}") from exc


def result(title: str, summary: dict[str, Any]) -> CallToolResult:
    text = TextContent(type="text", text=s.render(title, summary))
    return CallToolResult(content=[text], structured_content=summary)


async def latest(
    fetch: Callable[[datetime], Awaitable[list[T]]], span: timedelta, want: int, anchor: datetime | None = None
) -> list[T]:
    """The newest ``want`` rows of an oldest-first history: a window of ``span`` back from ``anchor`` (now),
    widened while it holds fewer (the stored history may end long before today)."""
    end = anchor or datetime.now(UTC)
    rows: list[T] = []
    for widening in range(WIDENINGS):
        start = max(EARLIEST, end - span * 4**widening)
        rows = await fetch(start)
        if len(rows) >= want or start == EARLIEST:
            break
    return rows[-want:]


def parse_time(value: str | None) -> datetime | None:
    """An ISO time as an aware datetime; None when absent or unreadable (the API then explains what is wrong)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_server(client: AsyncClient | ClientSource) -> MCPServer:
    """The server with every tool; ``client`` is the SDK client the tools call (or a function giving the
    client of the current request, for a server that serves several keys)."""
    source: ClientSource = client if callable(client) else (lambda: client)
    server: MCPServer = MCPServer(
        name="tokenpulse", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )
    _market_tools(server, source)
    _history_tools(server, source)
    _analytics_tools(server, source)
    _alert_tools(server, source)
    return server


def _market_tools(server: MCPServer, source: ClientSource) -> None:
    @server.tool(annotations=READ_ONLY)
    async def list_tokens(
        limit: Annotated[int, Field(ge=1, le=1000, description="at most this many tokens")] = 100,
        sort: Annotated[
            m.TokenSort | None, Field(description="order, e.g. -market_cap (largest first) or -change_24h")
        ] = None,
        query: Annotated[
            str | None, Field(max_length=50, description="only tokens whose symbol or name contains this")
        ] = None,
        min_trader_grade: Annotated[float | None, Field(ge=0, le=100, description="only grades at least this")] = None,
        signal: Annotated[m.Direction | None, Field(description="only tokens with this daily signal")] = None,
    ) -> CallToolResult:
        """Tracked tokens (up to 1,000 and more) with price (USD), 24 h change (%) and volume (USD), market cap
        (USD), Trader and Investor Grades (0..100) and current signal; sort, search and filter them here
        rather than reading the whole list."""
        async with api_call():
            pages = source().tokens(limit=limit, sort=sort, q=query, min_trader_grade=min_trader_grade, signal=signal)
            tokens = await pages.to_list()
        return result("Tracked tokens", s.tokens_summary(tokens))

    @server.tool(annotations=READ_ONLY)
    async def get_token(symbol: Symbol) -> CallToolResult:
        """One token now: price (USD), 24 h change and volume, grades, signal, ROI over 24h/7d/30d/1y (%),
        key support and breakout level (USD), and the latest 1d/7d/30d price forecasts with intervals."""
        async with api_call():
            token = await source().token(symbol)
        return result(f"{token.symbol} ({token.name})", s.token_summary(token))


def _history_tools(server: MCPServer, source: ClientSource) -> None:
    @server.tool(annotations=READ_ONLY)
    async def get_candles(
        symbol: Symbol,
        interval: IntervalArg = "1d",
        start: Time = None,
        end: Time = None,
        limit: Annotated[int, Field(ge=1, le=500, description="at most this many candles")] = 30,
    ) -> CallToolResult:
        """OHLCV candles, oldest first: open/high/low/close in USD, volume in the token's own units, each
        dated by its open time. Without `start`, the latest `limit` candles (up to `end` if given)."""
        client = source()

        async def since(when: datetime) -> list[m.Candle]:
            return await client.candles(symbol, interval, start=when, end=end).to_list()

        async with api_call():
            if start is None:
                rows = await latest(since, INTERVAL_SPAN[interval] * limit, limit, anchor=parse_time(end))
            else:
                rows = await client.candles(symbol, interval, start=start, end=end, limit=limit).to_list()
        return result(f"{symbol.upper()} {interval} candles", s.candles_summary(symbol.upper(), interval, rows))

    @server.tool(annotations=READ_ONLY)
    async def get_signals(
        symbol: Symbol,
        interval: Annotated[
            Literal["1d", "1h", "4h"], Field(description="daily, or intraday (intraday needs a pro key)")
        ] = "1d",
        limit: Annotated[int, Field(ge=1, le=100, description="at most this many signals, newest first")] = 10,
    ) -> CallToolResult:
        """The token's latest bullish/bearish signals, newest first, with strength (0..1) and reasons."""
        client = source()

        async def since(when: datetime) -> list[m.Signal]:
            return await client.signals(symbol, interval, start=when).to_list()

        async with api_call():
            rows = await latest(since, timedelta(days=30) * limit, limit)
        return result(f"{symbol.upper()} {interval} signals", s.signals_summary(symbol.upper(), interval, rows))

    @server.tool(annotations=READ_ONLY)
    async def get_grades(
        symbol: Symbol,
        days: Annotated[int, Field(ge=1, le=1000, description="the latest this many daily grades")] = 30,
    ) -> CallToolResult:
        """The latest daily Trader Grade (short-term) and Investor Grade (long-term), 0..100, with their
        change over the period, the components of the latest grade (0..100) and the daily history."""
        client = source()

        async def since(when: datetime) -> list[m.Grade]:
            return await client.grades(symbol, start=when).to_list()

        async with api_call():
            rows = await latest(since, timedelta(days=days), days)
        return result(f"{symbol.upper()} grades", s.grades_summary(symbol.upper(), rows))


def _analytics_tools(server: MCPServer, source: ClientSource) -> None:
    @server.tool(annotations=READ_ONLY)
    async def get_levels(symbol: Symbol) -> CallToolResult:
        """Support and resistance levels (USD) from daily swing pivots, with their distance from the price (%),
        strength (0..1), touches and last touch; the key support and the breakout level."""
        async with api_call():
            levels = await source().levels(symbol)
        return result(f"{levels.symbol} key levels", s.levels_summary(levels))

    @server.tool(annotations=READ_ONLY)
    async def get_prediction(symbol: Symbol) -> CallToolResult:
        """Price forecasts at 1, 7 and 30 days (USD): point, 80% and 95% intervals, and the model's measured
        backtest (interval coverage, MASE against a naive forecast)."""
        async with api_call():
            predictions = await source().predictions(symbol)
        return result(f"{predictions.symbol} price forecasts", s.prediction_summary(predictions))

    @server.tool(annotations=READ_ONLY)
    async def get_cycles() -> CallToolResult:
        """Bitcoin halving cycles: each past run (halving price, peak, multiple, days to peak) and the current
        run's bear/base/moon projection (peak date, BTC price and total crypto market cap targets in USD)."""
        async with api_call():
            cycles = await source().cycles_btc()
        return result("Bitcoin halving cycles", s.cycles_summary(cycles))

    @server.tool(annotations=READ_ONLY)
    async def get_quant(
        symbol: Symbol,
        window: Annotated[Literal["30d", "90d", "365d"], Field(description="trailing window")] = "90d",
    ) -> CallToolResult:
        """Risk and return over a trailing window of daily closes: annualised volatility (%), Sharpe and Sortino
        (risk-free 0), max drawdown (%), CAGR (%), beta and correlation to BTC."""
        async with api_call():
            quant = await source().quant(symbol, window)
        return result(f"{quant.symbol} quant metrics ({quant.window})", s.quant_summary(quant))

    @server.tool(annotations=READ_ONLY)
    async def get_market_state() -> CallToolResult:
        """The crypto market's state (bullish / neutral / bearish) with its 0..100 score and components, the
        total market cap (USD), BTC dominance (%) and the state's track record (next-30-day market return)."""
        async with api_call():
            state = await source().market()
        return result("Market state", s.market_summary(state))

    @server.tool(annotations=READ_ONLY)
    async def get_report(symbol: Symbol) -> CallToolResult:
        """A token's generated research report (Markdown): grades, signal and its track record, key levels,
        predictions, quant metrics and price scenarios, each number with its method; dated, no advice."""
        async with api_call():
            markdown = await source().report(symbol)
        return CallToolResult(
            content=[TextContent(type="text", text=markdown)],
            structured_content={"symbol": symbol.upper(), "markdown": markdown},
        )


def _alert_tools(server: MCPServer, source: ClientSource) -> None:
    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False))
    async def create_alert(
        symbol: Symbol,
        condition: Annotated[
            m.AlertCondition,
            Field(
                description="e.g. {'kind': 'price_above', 'value': 100000}; kinds: price_above/below (value USD), "
                "change_above/below (value %, window 5m..24h), trader_grade_above/below, investor_grade_above/"
                "below (value 0..100), grade_change (grade, value points), signal (direction), all/any (a list)"
            ),
        ],
        channels: Annotated[
            Sequence[m.AlertChannel],
            Field(max_length=10, description="where to notify (email, telegram, discord, slack, webhook)"),
        ] = (),
        cooldown_s: Annotated[int, Field(ge=0, le=2_592_000, description="seconds of quiet after a firing")] = 300,
        name: Annotated[str, Field(max_length=200)] = "",
    ) -> CallToolResult:
        """Create an alert rule on a token; it fires when its condition turns true. Without channels its
        firings go to the delivery log and the live stream only."""
        async with api_call():
            rule = await source().create_alert(symbol, condition, list(channels), cooldown_s, name)
        return result(f"Alert rule created: {rule.id}", s.rule_row(rule))

    @server.tool(annotations=READ_ONLY)
    async def list_alerts(symbol: Annotated[str | None, Field(max_length=20)] = None) -> CallToolResult:
        """Your alert rules (of one token, or all), with their conditions and channels."""
        async with api_call():
            rules = await source().alerts(symbol).to_list()
        return result("Your alert rules", s.alerts_summary(rules))


# ------------------------------------------------------------------------------------------- running


async def serve_stdio(base_url: str, api_key: str) -> None:
    async with AsyncClient(base_url, api_key, retry=AGENT_RETRY) as client:
        await build_server(client).run_stdio_async()


def run(base_url: str | None = None, api_key: str | None = None) -> None:
    """Serve over stdio until the MCP client closes it; the key is ``TOKENPULSE_API_KEY`` unless given."""
    key = api_key_from(api_key)
    if not key:
        sys.stderr.write("tokenpulse mcp: set TOKENPULSE_API_KEY to your API key (get one: POST /v1/keys)\n")
        raise SystemExit(2)
    anyio.run(serve_stdio, base_url or os.environ.get("TOKENPULSE_BASE_URL") or DEFAULT_BASE_URL, key)


def cli() -> None:
    """``tokenpulse-mcp [--base-url URL]``: the console script of the SDK's ``mcp`` extra."""
    parser = argparse.ArgumentParser(prog="tokenpulse-mcp", description="Tokenpulse MCP server over stdio")
    parser.add_argument("--base-url", default=None, help=f"the API's base URL (default {DEFAULT_BASE_URL})")
    run(parser.parse_args().base_url)
