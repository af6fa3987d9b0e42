"""``/mcp`` on a real ``tokenpulse up``: the API key as ``/v1`` takes it, the wrong-key allowance, tool calls
spending the key's rate limit like the REST calls they make, and hostile MCP requests answered with a 4xx
while the server keeps answering (and its event loop stays free).

Raw JSON-RPC over httpx plays the client: the endpoint is stateless, so a ``tools/call`` needs no handshake.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.security.conftest import RELAXED, LoopProbe, UpServer, serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MINUTE_LIMIT = 10
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def mcp_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    """A free tier of :data:`MINUTE_LIMIT` requests a minute; everything else relaxed."""
    env = {**RELAXED, "TOKENPULSE_FREE_LIMIT_PER_MINUTE": str(MINUTE_LIMIT)}
    up = UpServer(tmp_path_factory.mktemp("mcp"), env)
    yield from serving(up, "the log of the MCP server")
    assert "unhandled error" not in up.logs()


@pytest.fixture(scope="module")
def pro_key(mcp_up: UpServer) -> str:
    return mcp_up.tier_key("mcp", "pro")


def message(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, **({"params": params} if params is not None else {})}


def rpc(client: httpx.Client, key: str | None, body: Any, **headers: str) -> httpx.Response:
    auth = {"X-API-Key": key} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/mcp", content=content, headers={**MCP_HEADERS, **auth, **headers})


def tool(client: httpx.Client, key: str, name: str, **arguments: Any) -> dict[str, Any]:
    """The result of one ``tools/call`` (a tool error is a result with ``isError``)."""
    r = rpc(client, key, message("tools/call", {"name": name, "arguments": arguments}))
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


def text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result["content"])


def test_a_key_is_required_as_for_the_api(mcp_up: UpServer) -> None:
    key = mcp_up.key()
    listing = message("tools/list")
    with httpx.Client(base_url=mcp_up.base, timeout=30) as client:
        missing = rpc(client, None, listing)
        wrong = rpc(client, "tp_" + "x" * 43, listing)
        bearer = rpc(client, None, listing, Authorization=f"Bearer {key}")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert bearer.status_code == 200, bearer.text
    assert "get_token" in {t["name"] for t in bearer.json()["result"]["tools"]}
    assert bearer.headers["X-RateLimit-Limit"] == str(MINUTE_LIMIT)  # the MCP request itself was counted


def test_single_exchange_requests_pass_the_same_guard(mcp_up: UpServer) -> None:
    """MCP 2026-07-28 requests (no handshake, the version in a header) reach the tools by another path of the
    SDK: the key is required there too, and the tools call the API as the caller."""
    key, version = mcp_up.key(), "2026-07-28"
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    call = message("tools/call", {"name": "get_token", "arguments": {"symbol": "ETH"}, "_meta": meta})
    headers = {"Mcp-Protocol-Version": version, "Mcp-Method": "tools/call", "Mcp-Name": "get_token"}
    with httpx.Client(base_url=mcp_up.base, timeout=30) as client:
        missing = rpc(client, None, call, **headers)
        answered = rpc(client, key, call, **headers)
        used = client.get("/v1/usage", headers={"X-API-Key": key}).json()["usage"]["minute"]["used"]
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert answered.status_code == 200, answered.text
    assert answered.json()["result"]["structuredContent"]["symbol"] == "ETH"
    assert used == 3  # the MCP request, the REST request of its tool, this usage request


def test_wrong_keys_spend_the_addresss_allowance(up_server: Callable[..., UpServer]) -> None:
    up = up_server(TOKENPULSE_AUTH_FAILURES_PER_MINUTE="3")
    good = up.key()
    with httpx.Client(base_url=up.base, timeout=30) as client:
        assert rpc(client, good, message("tools/list")).status_code == 200  # known to this replica from now on
        answers = [rpc(client, f"tp_guess{i:039d}", message("tools/list")) for i in range(5)]
        still = rpc(client, good, message("tools/list"))
    assert [a.status_code for a in answers] == [401] * 3 + [429] * 2
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "too_many_wrong_keys" and 0 < int(refused.headers["Retry-After"]) <= 60
    assert still.status_code == 200  # a key the replica knows still works from that address


def test_tool_calls_spend_the_keys_rate_limit_like_rest(mcp_up: UpServer) -> None:
    """Each tool call is its MCP request plus the REST request its tool makes: two of the key's minute."""
    key = mcp_up.key()
    with httpx.Client(base_url=mcp_up.base, timeout=30) as client:
        for _ in range(3):
            assert not tool(client, key, "get_token", symbol="BTC").get("isError")
        usage = client.get("/v1/usage", headers={"X-API-Key": key}).json()
        assert usage["usage"]["minute"]["used"] == 3 * 2 + 1, usage  # and this usage request itself
        assert not tool(client, key, "get_token", symbol="BTC").get("isError")  # 9 used
        refused = tool(client, key, "get_token", symbol="BTC")  # its MCP request is the 10th, its REST one over
        rest = client.get("/v1/tokens/BTC", headers={"X-API-Key": key})
        over = rpc(client, key, message("tools/list"))
    assert refused["isError"] and "per-minute request limit reached" in text(refused), refused
    assert "API error 429 rate_limited" in text(refused) and "retry in" in text(refused)
    assert rest.status_code == 429 and rest.json()["error"]["code"] == "rate_limited"
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited" and "Retry-After" in over.headers


DEEP = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ' + b"[" * 5000 + b"]" * 5000 + b"}"
HOSTILE: dict[str, tuple[bytes, dict[str, str], int]] = {
    # name: (body, extra headers, the status it must get)
    "over the body limit": (json.dumps(message("ping", {"pad": "x" * 70_000})).encode(), {}, 413),
    "nested 5000 deep": (DEEP, {}, 422),
    "not JSON": (b'{"jsonrpc": "2.0", "id": 1, "method": ', {}, 422),
    "not UTF-8": (b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', {}, 422),
    "JSON, not JSON-RPC": (b'{"hello": "world"}', {}, 400),
    "a batch": (json.dumps([message("tools/list"), message("ping", id_=2)]).encode(), {}, 400),
    "a string id of 60 kB": (json.dumps(message("ping", id_="i" * 60_000)).encode(), {}, 200),  # type: ignore[arg-type]
    "unknown method": (json.dumps(message("tools/destroy")).encode(), {}, 200),
    "params not an object": (json.dumps({**message("tools/call"), "params": [1, 2]}).encode(), {}, 400),
    "not JSON content": (json.dumps(message("tools/list")).encode(), {"Content-Type": "text/plain"}, 400),
    "accepts no JSON": (json.dumps(message("tools/list")).encode(), {"Accept": "text/html"}, 406),
}


def test_hostile_requests_get_a_4xx_and_the_server_keeps_answering(mcp_up: UpServer, pro_key: str) -> None:
    with httpx.Client(base_url=mcp_up.base, timeout=30) as client, LoopProbe(mcp_up.base) as probe:
        got = {name: rpc(client, pro_key, body, **headers) for name, (body, headers, _) in HOSTILE.items()}
        methods = {
            m: client.request(m, "/mcp", headers={"X-API-Key": pro_key, **MCP_HEADERS}) for m in ("GET", "DELETE")
        }
        after = tool(client, pro_key, "get_levels", symbol="ETH")
    assert {n: r.status_code for n, r in got.items()} == {n: want for n, (_, _, want) in HOSTILE.items()}
    assert got["unknown method"].json()["error"]["code"] == -32601  # JSON-RPC's "method not found"
    for name in ("over the body limit", "nested 5000 deep", "not JSON", "not UTF-8"):
        assert got[name].json()["error"]["code"] in ("payload_too_large", "invalid_request"), name
    assert all(r.status_code == 405 and r.headers["Allow"] == "POST" for r in methods.values())
    assert not after.get("isError") and after["structuredContent"]["symbol"] == "ETH"
    assert probe.worst_s < 1.0, probe.worst_s


BAD_ARGUMENTS: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (tool, arguments, what the tool error must say)
    "unknown tool": ("drop_tables", {}, "drop_tables"),
    "symbol of the wrong type": ("get_token", {"symbol": 12}, "symbol"),
    "symbol too long": ("get_token", {"symbol": "B" * 10_000}, "symbol"),
    "symbol with a path in it": ("get_token", {"symbol": "../v1/admin/keys"}, "404 not_found"),
    "limit not a number": ("get_candles", {"symbol": "BTC", "limit": "all"}, "limit"),
    "date from nowhere": ("get_candles", {"symbol": "BTC", "start": "0000-99-99"}, "start"),
    "condition nested too deep": (
        "create_alert",
        {"symbol": "BTC", "condition": json.loads('{"kind": "all", "conditions": [' * 10 + "]}" * 10)},
        "condition",
    ),
}


def test_bad_tool_arguments_are_tool_errors(mcp_up: UpServer, pro_key: str) -> None:
    with httpx.Client(base_url=mcp_up.base, timeout=30) as client:
        results = {name: tool(client, pro_key, t, **args) for name, (t, args, _) in BAD_ARGUMENTS.items()}
    for name, (_, _, says) in BAD_ARGUMENTS.items():
        assert results[name].get("isError") and says in text(results[name]), (name, results[name])
