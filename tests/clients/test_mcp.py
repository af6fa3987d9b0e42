"""The MCP tools over both transports, driven by the official ``mcp`` client against a real ``tokenpulse up``:
``tokenpulse mcp`` over stdio, and the gateway's ``/mcp`` over streamable HTTP. Each lists its tools with input
schemas, each tool answers with the numbers REST gives, and bad input is a tool error carrying the API's
message while the server keeps serving."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from testkit.procs import TOKENPULSE, fetch_all
from tests.security.conftest import UpServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]  # a real tokenpulse up, MCP over stdio and HTTP

TOOLS = {
    "list_tokens",
    "get_token",
    "get_candles",
    "get_signals",
    "get_grades",
    "get_levels",
    "get_prediction",
    "get_cycles",
    "get_quant",
    "get_market_state",
    "get_report",
    "create_alert",
    "list_alerts",
}


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def mcp_session(up: UpServer, key: str, transport: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP session: ``tokenpulse mcp`` started over stdio, or the gateway's ``/mcp``."""
    if transport == "http":
        async with (
            httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60) as http,
            streamable_http_client(f"{up.base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
        return
    params = StdioServerParameters(
        command=TOKENPULSE, args=["mcp", "--base-url", up.base], env={"TOKENPULSE_API_KEY": key}
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def rest(up: UpServer, key: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{up.base}{path}", params=params, headers={"X-API-Key": key}, timeout=30)
    r.raise_for_status()
    return r.json()


async def call(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_lists_every_tool_with_an_input_schema(sdk_server: UpServer, free_key: str, transport: str) -> None:
    async with mcp_session(sdk_server, free_key, transport) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    assert all(t.input_schema["type"] == "object" and t.description for t in tools.values())
    candles = tools["get_candles"].input_schema
    assert candles["required"] == ["symbol"] and candles["properties"]["limit"]["maximum"] == 500
    assert set(candles["properties"]["interval"]["enum"]) == {"1m", "5m", "15m", "1h", "4h", "1d"}
    assert "price_above" in str(tools["create_alert"].input_schema)


async def test_market_tools_give_the_numbers_rest_gives(sdk_server: UpServer, free_key: str, transport: str) -> None:
    async with mcp_session(sdk_server, free_key, transport) as session:
        tokens = await call(session, "list_tokens")
        token = await call(session, "get_token", symbol="btc")
        fixed = await call(session, "get_candles", symbol="ETH", interval="1d", start="2024-01-01", limit=5)
        latest = await call(session, "get_candles", symbol="ETH", limit=4)
        signals = await call(session, "get_signals", symbol="BTC", limit=3)
        grades = await call(session, "get_grades", symbol="BTC", days=5)
        text = text_of(await session.call_tool("get_token", {"symbol": "BTC"}))
    rest_tokens = rest(sdk_server, free_key, "/v1/tokens")["data"]
    assert [(t["symbol"], t["trader_grade"], t["signal"]) for t in tokens["tokens"]] == [
        (t["symbol"], t["trader_grade"], t["signal"]["direction"]) for t in rest_tokens
    ]
    assert all(abs(a["price_usd"] / b["price"] - 1) < 0.02 for a, b in zip(tokens["tokens"], rest_tokens, strict=True))
    detail = rest(sdk_server, free_key, "/v1/tokens/BTC")
    assert (token["trader_grade"], token["investor_grade"]) == (detail["trader_grade"], detail["investor_grade"])
    assert token["key_support_usd"] == detail["levels"]["key_support"]["price"]
    assert f"${detail['levels']['key_support']['price']:,.2f}" in text and "/100" in text

    rows = rest(sdk_server, free_key, "/v1/candles/ETH", interval="1d", start="2024-01-01", limit=5)["data"]
    assert [(c["open_usd"], c["close_usd"], c["volume_eth"]) for c in fixed["candles"]] == [
        (r["open"], r["close"], r["volume"]) for r in rows
    ]
    history = fetch_all(sdk_server.base, "/v1/candles/ETH", free_key, {"interval": "1d"})
    assert [c["close_usd"] for c in latest["candles"]] == [r["close"] for r in history[-4:]]

    all_signals = fetch_all(sdk_server.base, "/v1/signals", free_key, {"symbol": "BTC", "interval": "1d"})
    assert [(s["direction"], s["strength"]) for s in signals["signals"]] == [
        (s["direction"], s["strength"]) for s in reversed(all_signals[-3:])
    ]
    all_grades = fetch_all(sdk_server.base, "/v1/grades/BTC", free_key, {})
    assert [g["trader_grade"] for g in grades["grades"]] == [g["trader_grade"] for g in all_grades[-5:]]
    assert grades["trader_grade"] == all_grades[-1]["trader_grade"]


async def test_analytics_and_alert_tools_give_the_numbers_rest_gives(
    sdk_server: UpServer, free_key: str, transport: str
) -> None:
    async with mcp_session(sdk_server, free_key, transport) as session:
        levels = await call(session, "get_levels", symbol="BTC")
        prediction = await call(session, "get_prediction", symbol="ETH")
        cycles = await call(session, "get_cycles")
        quant = await call(session, "get_quant", symbol="ETH", window="30d")
        market = await call(session, "get_market_state")
        report = await call(session, "get_report", symbol="ETH")
        created = await call(
            session, "create_alert", symbol="ETH", condition={"kind": "price_below", "value": 10}, name="crash"
        )
        listed = await call(session, "list_alerts", symbol="ETH")
    rest_levels = rest(sdk_server, free_key, "/v1/levels/BTC")
    assert [x["price_usd"] for x in levels["support"]] == [x["price"] for x in rest_levels["support"]]
    assert levels["breakout_level_usd"] == rest_levels["breakout_level"]["price"]
    rest_prediction = rest(sdk_server, free_key, "/v1/predictions/ETH")
    assert prediction["status"] == rest_prediction["status"] and len(prediction["forecasts"]) == len(
        rest_prediction["horizons"]
    )
    rest_cycles = rest(sdk_server, free_key, "/v1/cycles/btc")
    assert [s["btc_price_target_usd"] for s in cycles["scenarios"]] == [
        s["btc_price_target"] for s in rest_cycles["projection"]["scenarios"]
    ]
    rest_quant = rest(sdk_server, free_key, "/v1/quant/ETH", window="30d")
    assert quant["sharpe"] == rest_quant["sharpe"] and quant["volatility_annual_pct"] == pytest.approx(
        rest_quant["volatility"] * 100
    )
    rest_market = rest(sdk_server, free_key, "/v1/market")
    assert (market["state"], market["score_0_100"]) == (rest_market["state"], rest_market["score"])
    assert report["markdown"].startswith("# ETH") and "## Quant metrics" in report["markdown"]
    rules = rest(sdk_server, free_key, "/v1/alerts", symbol="ETH")["data"]
    assert created["id"] in [r["id"] for r in rules]
    assert created["condition"] == next(r["description"] for r in rules if r["id"] == created["id"])
    assert created["id"] in [r["id"] for r in listed["rules"]]


async def test_bad_input_is_a_tool_error_with_the_apis_message(
    sdk_server: UpServer, free_key: str, transport: str
) -> None:
    unknown = rest_error(sdk_server, free_key, "/v1/tokens/FOO")
    bad_time = rest_error(sdk_server, free_key, "/v1/candles/BTC", start="yesterday")
    intraday = rest_error(sdk_server, free_key, "/v1/signals", symbol="BTC", interval="1h")
    async with mcp_session(sdk_server, free_key, transport) as session:
        cases = {
            unknown: await session.call_tool("get_token", {"symbol": "FOO"}),
            bad_time: await session.call_tool("get_candles", {"symbol": "BTC", "start": "yesterday"}),
            intraday: await session.call_tool("get_signals", {"symbol": "BTC", "interval": "1h"}),
            "needs a numeric 'value'": await session.call_tool(
                "create_alert", {"symbol": "BTC", "condition": {"kind": "price_above"}}
            ),
            "interval": await session.call_tool("get_candles", {"symbol": "BTC", "interval": "7m"}),
            "limit": await session.call_tool("get_candles", {"symbol": "BTC", "limit": 100000}),
        }
        still_serving = await call(session, "get_levels", symbol="ETH")
    for message, result in cases.items():
        assert result.is_error and message in text_of(result), (message, text_of(result))
    assert still_serving["symbol"] == "ETH"


def test_without_a_key_the_server_exits_with_a_message(sdk_server: UpServer) -> None:
    done = subprocess.run(
        [TOKENPULSE, "mcp", "--base-url", sdk_server.base],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "TOKENPULSE_API_KEY" in done.stderr and done.stdout == ""


def rest_error(up: UpServer, key: str, path: str, **params: Any) -> str:
    r = httpx.get(f"{up.base}{path}", params=params, headers={"X-API-Key": key}, timeout=30)
    assert 400 <= r.status_code < 500
    return str(r.json()["error"]["message"])
