"""The SDK (tokenpulse_client) against the gateway's OpenAPI, built from the app itself: a change on either side
that the other does not follow fails here.

Every SDK method is called once with every argument set, through an ``httpx.MockTransport`` that answers each
request with its operation's own OpenAPI example (a second page for list endpoints). So the document decides:
which operations exist (each needs an SDK method), which parameters each takes (the SDK must send exactly
those), what a request body may hold (its JSON Schema), and what an answer holds (the SDK's models must parse
each example with no field left unknown, and every model field must appear in some example). The same models
are held to the real server's answers in test_sdk.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import jsonschema
import pytest
import pytest_asyncio
from pydantic import ValidationError
from tokenpulse_client import AlertChannel, AlertCondition, Client
from tokenpulse_client import models as m
from tokenpulse_client._routes import CycleQuery
from tokenpulse_gateway.service import GatewayService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

from tests.clients.drift import never_filled, unknown_fields

# operations the SDK leaves out on purpose, with why
NOT_IN_SDK = {
    ("POST", "/v1/admin/keys"): "operator API (admin token), not for client programs",
    ("GET", "/v1/admin/keys/{key_id}"): "operator API (admin token), not for client programs",
    ("DELETE", "/v1/admin/keys/{key_id}"): "operator API (admin token), not for client programs",
}
# parameters the SDK does not send, with why
PARAMS_NOT_SENT = {
    ("GET", "/v1/stream", "since"): "the SDK resumes with the Last-Event-ID header instead",
    ("GET", "/v1/stream", "api_key"): "the SDK sends its key as X-API-Key (the parameter is for browsers)",
}
# model fields no example fills, with why (each is filled by a real answer in test_sdk.py)
FIELDS_NOT_IN_EXAMPLES = {
    ("Predictions", "message"): "only in a `pending` answer",
    ("Predictions", "history"): "only with history=true",
}
CURSOR = "c2"  # what the mock answers on a first page: the SDK must come back for a second one


@dataclass
class Recorded:
    """What the SDK sent to each operation, and what it made of the examples."""

    params: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    headers: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    bodies: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    """SDK methods that could not make sense of their example: the error"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def spec(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    """The gateway's OpenAPI document, from the app as it is built for serving."""
    store = await Store(f"chdb://{tmp_path_factory.mktemp('openapi') / 'ch'}").open()
    gateway = GatewayService()
    gateway.register(
        Context(
            settings=Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}), bus=InMemoryBus(), store=store
        )
    )
    assert gateway.app is not None
    yield gateway.app.openapi()
    await store.close()


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/")
        for method, op in ops.items()
    }


def matcher(spec: dict[str, Any]) -> Callable[[str, str], tuple[str, str]]:
    """The operation a request goes to; literal paths win over templated ones (``/v1/alerts/events``)."""
    keys = sorted(operations(spec), key=lambda k: k[1].count("{"))
    patterns = [(k, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", k[1]) + "$")) for k in keys]

    def match(method: str, path: str) -> tuple[str, str]:
        for key, pattern in patterns:
            if key[0] == method and pattern.match(path):
                return key
        raise AssertionError(f"the SDK sent {method} {path}, which the OpenAPI does not have")

    return match


def example_answer(op: dict[str, Any], first_page: bool) -> httpx.Response:
    status = next(s for s in ("200", "201") if s in op["responses"])
    content = op["responses"][status]["content"]
    if "text/event-stream" in content:
        return httpx.Response(
            200, text=content["text/event-stream"]["example"], headers={"content-type": "text/event-stream"}
        )
    if "text/markdown" in content:  # the research report
        return httpx.Response(200, text=content["text/markdown"]["example"], headers={"content-type": "text/markdown"})
    body = content["application/json"]["example"]
    if isinstance(body, dict) and "data" in body:  # a list (its null next_cursor is not in the document)
        body = {**body, "next_cursor": CURSOR if first_page else None}
    return httpx.Response(int(status), json=body)


def sdk_calls(c: Client) -> dict[str, Callable[[], Any]]:
    """Every public SDK method with every argument it has set (cycles_btc: every documented override)."""
    day, moment = date(2024, 1, 1), datetime(2024, 3, 1, tzinfo=UTC)
    overrides: dict[str, Any] = {name: "x" for name in CycleQuery.__annotations__}
    condition = AlertCondition(kind="all", all=[AlertCondition(kind="price_above", value=1e5)])
    return {
        "create_key": lambda: c.create_key("bot", email="me@example.com"),
        "usage": c.usage,
        "tokens": lambda: c.tokens(
            limit=10, sort="-market_cap", q="bit", min_trader_grade=50, signal="bullish"
        ).to_list(),
        "token": lambda: c.token("BTC"),
        "candles": lambda: c.candles("BTC", "1h", start=day, end=moment, limit=10).to_list(),
        "indicators": lambda: c.indicators("BTC", "4h", start="2024-01-01", end=moment, limit=10).to_list(),
        "grades": lambda: c.grades("BTC", start=day, end=moment, limit=10).to_list(),
        "signals": lambda: c.signals("BTC", "1d", start=day, end=moment, limit=10).to_list(),
        "levels": lambda: c.levels("BTC"),
        "predictions": lambda: c.predictions("BTC", history=True, horizon="7d", limit=5),
        "track_record": c.track_record,
        "cycles_btc": lambda: c.cycles_btc(**overrides),
        "quant": lambda: c.quant("ETH", window="365d"),
        "correlation": lambda: c.correlation(["BTC", "ETH"], window="30d"),
        "market": lambda: c.market(history=True, start=day, end=moment),
        "indices": c.indices,
        "index": lambda: c.index("mcap-top5"),
        "scenarios": lambda: c.scenarios("ETH", targets=[5000, 10000], price=10000),
        "report": lambda: c.report("ETH"),
        "create_alert": lambda: c.create_alert(
            "BTC", condition, [AlertChannel(type="webhook", target="https://example.com/h")], 600, "big"
        ),
        "alerts": lambda: c.alerts(symbol="BTC", limit=10).to_list(),
        "alert": lambda: c.alert("rule_1"),
        "delete_alert": lambda: c.delete_alert("rule_1"),
        "alert_events": lambda: c.alert_events(rule_id="rule_1", status="failed", limit=10).to_list(),
        "stream": lambda: next(iter(c.stream(symbols=["BTC", "ETH"], types="price", last_event_id=7))),
    }


@pytest.fixture(scope="module")
def recorded(spec: dict[str, Any]) -> Recorded:
    ops, match, rec = operations(spec), matcher(spec), Recorded()

    def answer(request: httpx.Request) -> httpx.Response:
        key = match(request.method, request.url.path)
        rec.params.setdefault(key, set()).update(request.url.params.keys())
        rec.headers.setdefault(key, set()).update(h.lower() for h in request.headers)
        if request.content:
            rec.bodies.setdefault(key, []).append(json.loads(request.content))
        return example_answer(ops[key], first_page="cursor" not in request.url.params)

    http = httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(answer))
    client = Client(api_key="tp_test", http_client=http, page_size=5)
    for name, call in sdk_calls(client).items():
        try:
            rec.answers[name] = call()
        except ValidationError as exc:
            rec.failures[name] = str(exc)
    return rec


def test_every_sdk_method_is_called_here() -> None:
    public = {n for n in dir(Client) if not n.startswith("_") and n not in ("close", "retry")}
    assert public == set(sdk_calls(Client(api_key="k"))), "add the new method to sdk_calls"


def test_every_operation_of_the_api_has_an_sdk_method(spec: dict[str, Any], recorded: Recorded) -> None:
    missing = set(operations(spec)) - set(recorded.params) - set(NOT_IN_SDK)
    assert not missing, f"operations without an SDK method (add one, or say why in NOT_IN_SDK): {sorted(missing)}"


def test_the_sdk_sends_exactly_the_parameters_each_operation_takes(spec: dict[str, Any], recorded: Recorded) -> None:
    problems = []
    for key, sent in recorded.params.items():
        declared = operations(spec)[key].get("parameters", [])
        query = {p["name"] for p in declared if p["in"] == "query"}
        expected = {q for q in query if (*key, q) not in PARAMS_NOT_SENT}
        if sent != expected:
            problems.append(f"{key}: not sent {sorted(expected - sent)}, not in the API {sorted(sent - query)}")
        headers = {p["name"].lower() for p in declared if p["in"] == "header"}
        if not headers <= recorded.headers[key]:
            problems.append(f"{key}: header parameters not sent {sorted(headers - recorded.headers[key])}")
    assert not problems, "\n".join(problems)


def test_request_bodies_are_valid_for_their_schemas(spec: dict[str, Any], recorded: Recorded) -> None:
    for key, bodies in recorded.bodies.items():
        schema = operations(spec)[key]["requestBody"]["content"]["application/json"]["schema"]
        for body in bodies:
            jsonschema.validate(body, {**schema, "components": spec["components"]})


def test_alert_condition_and_channel_models_match_the_api(spec: dict[str, Any]) -> None:
    """Field for field and value for value, so a new condition kind or window needs the SDK too."""
    schemas = spec["components"]["schemas"]
    for model, name in ((m.AlertCondition, "AlertCondition"), (m.AlertChannel, "AlertChannel")):
        api = schemas[name]["properties"]
        ours = model.model_json_schema()
        ours = ours.get("properties") or ours["$defs"][name]["properties"]  # a recursive model is a $ref
        assert set(ours) == set(api), name
        for field_name, prop in api.items():
            assert enum_values(ours[field_name]) == enum_values(prop), f"{name}.{field_name}"


def enum_values(prop: dict[str, Any]) -> set[Any]:
    found = set(prop.get("enum", []))
    for option in prop.get("anyOf", []):
        found |= set(option.get("enum", []))
    return found


def test_every_example_parses_with_no_field_unknown_to_the_sdk(recorded: Recorded) -> None:
    assert not recorded.failures, "\n".join(f"{k}: {v}" for k, v in recorded.failures.items())
    unknown = {name: unknown_fields(answer) for name, answer in recorded.answers.items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown


def test_every_required_sdk_field_appears_in_some_example(recorded: Recorded) -> None:
    """Required fields only: the document's examples lose their nulls (FastAPI drops None from the OpenAPI);
    test_sdk.py checks every field, nullable ones too, against real answers."""
    assert never_filled(recorded.answers.values(), set(FIELDS_NOT_IN_EXAMPLES), nullable_too=False) == []


def test_typed_answer_schemas_have_the_sdk_fields(spec: dict[str, Any]) -> None:
    """Where the document types an answer (today the list pages), its properties are the SDK model's."""
    schemas = spec["components"]["schemas"]
    typed = [name for name, schema in schemas.items() if name == "Page" or name.endswith("Answer")]
    assert "Page" in typed
    for name in typed:
        assert set(schemas[name]["properties"]) == set(m.Page[m.Candle].model_fields), name
