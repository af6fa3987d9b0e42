"""JSON request bodies are bounded in nesting before FastAPI parses them.

FastAPI parses a body with :func:`json.loads`, which recurses once per level: a 64 KiB body can nest
~30,000 levels and ends in a ``RecursionError``. Every route with a body is a :class:`JsonBodyRoute`:
the body is first parsed by pydantic-core's JSON parser (jiter, already a dependency), which refuses
nesting beyond its own recursion limit with a plain error, then its depth is measured without recursion
and anything deeper than :data:`MAX_BODY_DEPTH` is refused with a 422 in the contract's error shape.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

from tokenpulse_gateway.errors import ApiError

# levels of arrays and objects; the deepest body the API takes (a rule whose condition nests as deep as
# allowed) has 9, and a body an order of magnitude deeper is still far inside every parser's limits
MAX_BODY_DEPTH = 32


def json_depth(value: Any, limit: int) -> int:
    """Levels of nested arrays and objects in a parsed JSON value, counted up to ``limit + 1``."""
    depth, level = 0, [value] if isinstance(value, dict | list) else []
    while level and depth <= limit:  # one level at a time: no recursion, and it stops past the limit
        depth += 1
        children: list[Any] = []
        for node in level:
            children.extend(node.values() if type(node) is dict else node)
        # exact types suffice (a JSON parser makes no subclasses) and keep a wide body cheap
        level = [v for v in children if type(v) is dict or type(v) is list]
    return depth


def check_body(body: bytes) -> None:
    """Raise a 422 :class:`ApiError` for a body that is not JSON or nests deeper than :data:`MAX_BODY_DEPTH`."""
    if not body:
        return
    too_deep = ApiError(422, "invalid_request", f"request body nests deeper than {MAX_BODY_DEPTH} levels")
    try:
        value = from_json(body)
    except ValueError as exc:
        if "recursion limit" in str(exc):  # the parser's own limit, far above ours
            raise too_deep from exc
        raise ApiError(422, "invalid_request", f"request body is not valid JSON: {exc}") from exc
    if json_depth(value, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise too_deep


class JsonBodyRoute(APIRoute):
    """An API route whose body, if it takes one, is checked by :func:`check_body` before it is parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            check_body(await request.body())  # read once: FastAPI's own parse reuses it
            return await handler(request)

        return checked
