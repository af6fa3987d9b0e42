"""API fuzzing: schemathesis against the OpenAPI document of a running gateway.

``tokenpulse up`` (the embedded app under uvicorn on loopback, the real chDB engine, the bundled
real daily history of BTC and ETH with scoring's grades and signals) is started once; schemathesis
reads its ``/openapi.json`` and, per operation, sends schema-valid and schema-violating requests
(hypothesis-generated paths, queries, headers and bodies) with a valid key and the admin token.
Every answer must be a non-5xx whose status code, content type and body are the ones the document
declares. The budget is bounded for CI (``FUZZ_EXAMPLES`` per operation, no shrinking).
``/v1/stream`` (an endless event stream) is left out: tests/integration/test_gateway_product.py
covers it, and its refusals (hostile ``Last-Event-ID``) are below.

What schemathesis does not generate by itself (its cursors are strings, never forged JSON inside them),
added here: every request carries an ``X-Request-ID`` drawn from junk as well as good ids (the answer must
carry a well-formed one), and every paginated operation gets forged cursors, explicit ones (booleans,
floats, huge and negative ints, nesting) and generated ones (any JSON a client could base64-encode).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from testkit.procs import Proc, api_key, free_port, trimmed_bundle, wait_until

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("TOKENPULSE_FUZZ_EXAMPLES", "8"))
ADMIN = "fuzz-admin-token-0123456789"


class Gateway:
    base = ""
    key = ""


GATEWAY = Gateway()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
REQUEST_IDS = st.one_of(
    st.sampled_from(["", "²", "<script>", "a" * 65, "id with spaces", "-leading-dash", "ok-id.1"]),
    st.text(
        st.characters(min_codepoint=33, max_codepoint=255, exclude_categories=("Cc", "Zs")), min_size=1, max_size=80
    ),
)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


EXPLICIT_CURSORS = [
    b64(text)
    for text in (
        '{"ts": true}',
        '{"ts": 1.5}',
        '{"ts": 9223372036854775808}',
        '{"ts": -1}',
        '{"ts": {"ts": 1}}',
        "[" * 100 + "]" * 100,
        '{"symbol": false}',
        '{"rule_id": ["x"]}',
        '{"ts": 1, "id": {"a": [1]}}',
    )
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ts", "id", "symbol", "rule_id"]), inner, max_size=3)
    ),
    max_leaves=12,
)
FORGED_CURSORS = st.one_of(
    JSON_VALUES.map(lambda v: b64(json.dumps(v))),
    st.integers(1, 400).map(lambda depth: b64("[" * depth + "]" * depth)),
)
HOSTILE_RESUMES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"Last-Event-ID": "²"}, {}),  # a digit to str.isdigit, not to int()
    ({"Last-Event-ID": "¹²³"}, {}),
    ({"Last-Event-ID": "9" * 20}, {}),  # past int64
    ({"Last-Event-ID": "-1"}, {}),
    ({"Last-Event-ID": "1e3"}, {}),
    ({}, {"since": str(2**63)}),
    ({}, {"since": "-5"}),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fuzz")
    bundle = trimmed_bundle(DEFAULT_BUNDLE, root / "bundle")
    port = free_port()
    env = {
        "TOKENPULSE_SYMBOLS": "BTC,ETH",
        "TOKENPULSE_BUNDLE_DIR": str(bundle),
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_ADMIN_TOKEN": ADMIN,
        "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000",
        "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
        "TOKENPULSE_KEY_ISSUE_PER_HOUR": "1000000",
        "TOKENPULSE_AUTH_FAILURES_PER_MINUTE": "1000000",
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    proc = Proc(["up", "--port", str(port), "--data-dir", str(root / "data")], env, root / "up.log")
    GATEWAY.base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{GATEWAY.base}/readyz", timeout=5).status_code == 200, 240, "ready", [proc])
        assert httpx.get(f"{GATEWAY.base}/readyz", timeout=5).json()["backfill"] == "done"
        GATEWAY.key = api_key(GATEWAY.base)
        yield GATEWAY
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.log.read_text(), proc.tail(80)


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> list[str]:
    """Run ``FUZZ_EXAMPLES`` generated requests against one operation; return what went wrong."""
    failures: list[str] = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(operation.as_strategy(generation_mode=mode), REQUEST_IDS)
    def run(case: schemathesis.Case, request_id: str) -> None:
        failure = call(case, {"X-Request-ID": request_id})
        if failure:
            failures.append(f"[{mode.value}] {failure}")

    try:
        run()
    except Unsatisfiable:  # nothing to violate (an operation without parameters or body): no negative case
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def call(case: schemathesis.Case, extra: dict[str, str], refused: bool = False) -> str | None:
    """Send one case with the key, the admin token and ``extra`` headers; what went wrong, if anything.
    ``refused``: the answer must also be a 4xx in the error shape."""
    headers = {**(case.headers or {}), **extra, "X-API-Key": GATEWAY.key, "X-Admin-Token": ADMIN}
    try:
        response = case.call_and_validate(base_url=GATEWAY.base, headers=headers, checks=CHECKS, timeout=30)
        echoed = response.headers.get("x-request-id", [""])[0]
        sent = extra.get("X-Request-ID")
        assert WELL_FORMED_ID.fullmatch(echoed), f"X-Request-ID answered {echoed!r}"
        assert sent is None or echoed == sent or not WELL_FORMED_ID.fullmatch(sent), "a good id was replaced"
        if refused:
            assert 400 <= response.status_code < 500 and "error" in response.json(), response.status_code
    except BaseException as exc:  # collect all: one report for every operation, not the first failure only
        if not isinstance(exc, Exception) and not isinstance(exc, BaseExceptionGroup):
            raise
        return f"{case.operation.label} {case.path_parameters} {case.query} {extra}: {exc}"[:1500]
    return None


def forged(operation: schemathesis.APIOperation) -> list[str]:
    """Forged cursors against one paginated operation: the explicit ones (each refused), then generated ones
    (refused or, when the JSON happens to be a valid cursor, answered)."""
    path = {"symbol": "BTC"} if "{symbol}" in operation.path else {}
    failures = [call(operation.Case(query={"cursor": c}, path_parameters=path), {}, True) for c in EXPLICIT_CURSORS]

    @settings(max_examples=FUZZ_EXAMPLES * 4, deadline=None, database=None, derandomize=True)
    @given(FORGED_CURSORS)
    def generated(cursor: str) -> None:
        failures.append(call(operation.Case(query={"cursor": cursor}, path_parameters=path), {}))

    generated()
    return [f for f in failures if f]


def test_every_operation_answers_within_its_contract(running: Gateway) -> None:
    schema = schemathesis.openapi.from_url(f"{running.base}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.path != "/v1/stream"]
    assert len(fuzzed) >= 20, [op.label for op in operations]
    failures = [f for op in fuzzed for mode in GenerationMode for f in fuzz(op, mode)]
    assert not failures, "\n\n".join(failures[:20])


def test_fuzzing_reached_the_data(running: Gateway) -> None:
    """The gateway fuzzed above really serves the history (not an empty store answering 404 everywhere)."""
    params = {"interval": "1d", "limit": 5}
    r = httpx.get(f"{running.base}/v1/candles/ETH", params=params, headers={"X-API-Key": running.key})
    assert r.status_code == 200 and len(r.json()["data"]) == 5


def test_forged_cursors_and_hostile_resumes_answer_4xx(running: Gateway) -> None:
    schema = schemathesis.openapi.from_url(f"{running.base}/openapi.json")
    operations = {op.label: op for op in (r.ok() for r in schema.get_all_operations())}
    paginated = [op for op in operations.values() if any(p.name == "cursor" for p in op.iter_parameters())]
    assert len(paginated) >= 7, [op.label for op in paginated]
    failures = [f for op in paginated for f in forged(op)]
    stream = operations["GET /v1/stream"]
    failures += [f for h, q in HOSTILE_RESUMES if (f := call(stream.Case(headers=h, query=q), h, True))]
    assert not failures, "\n\n".join(failures[:20])
