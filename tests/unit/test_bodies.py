"""JSON request bodies are bounded in nesting before FastAPI parses them, on every route that takes one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenpulse_gateway.app import create_app
from tokenpulse_gateway.bodies import MAX_BODY_DEPTH, JsonBodyRoute, check_body, json_depth
from tokenpulse_gateway.errors import ApiError
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_depth_is_the_nesting_of_arrays_and_objects(value: Any) -> None:
    assert json_depth(value, 1000) == reference_depth(value)
    assert json_depth(value, 2) == min(reference_depth(value), 3)  # counted no further than the limit + 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * MAX_BODY_DEPTH + b"]" * MAX_BODY_DEPTH, None),
        (b'{"a":' * MAX_BODY_DEPTH + b"1" + b"}" * MAX_BODY_DEPTH, None),
        (b"[" * (MAX_BODY_DEPTH + 1) + b"]" * (MAX_BODY_DEPTH + 1), "nests deeper than"),
        (b"[" * 30_000 + b"]" * 30_000, "nests deeper than"),  # past the parser's own recursion limit
        (b'{"name": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', None),  # brackets in a string are text
        (b'{"name": ', "not valid JSON"),
    ],
)
def test_bodies_too_deep_or_not_json_are_refused_with_a_422(body: bytes, words: str | None) -> None:
    if words is None:
        check_body(body)
        return
    with pytest.raises(ApiError) as refused:
        check_body(body)
    assert refused.value.status == 422 and refused.value.code == "invalid_request" and words in refused.value.message


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router (FastAPI keeps its routes there)
            yield from api_routes(route.original_router.routes)


async def test_every_route_that_takes_a_body_checks_it() -> None:
    store = Store("chdb:///nonexistent-never-opened")  # never reached: the body is refused first
    app = create_app(Context(settings=Settings(gateway={"admin_token": "t" * 24}), bus=InMemoryBus(), store=store))
    with_body = [r for r in api_routes(app.routes) if r.body_field is not None]
    assert {"/v1/keys", "/v1/admin/keys", "/v1/alerts"} <= {r.path for r in with_body}
    assert all(isinstance(r, JsonBodyRoute) for r in with_body), [(r.path, type(r)) for r in with_body]
    deep = b"[" * (MAX_BODY_DEPTH + 1) + b"]" * (MAX_BODY_DEPTH + 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for route in with_body:
            for method in route.methods:
                r = await client.request(method, route.path, content=deep, headers={"content-type": "application/json"})
                assert r.status_code == 422 and "nests deeper" in r.json()["error"]["message"], (route.path, r.text)
