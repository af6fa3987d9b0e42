"""API fuzzing: schemathesis against the OpenAPI document of a running gateway.

``tokenpulse up`` (the embedded app under uvicorn on loopback, the real chDB engine, the bundled
real daily history of ETH and SOL with scoring's grades and signals) is started once; schemathesis
reads its ``/openapi.json`` and, per operation, sends schema-valid and schema-violating requests
(hypothesis-generated paths, queries, headers and bodies) with a valid key and the admin token.
Every answer must be a non-5xx whose status code, content type and body are the ones the document
declares. The budget is bounded for CI (``FUZZ_EXAMPLES`` per operation, no shrinking).
``/v1/stream`` (an endless event stream) is left out: tests/integration/test_gateway_product.py
covers it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.procs import Proc, api_key, free_port, wait_until

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("TOKENPULSE_FUZZ_EXAMPLES", "12"))
ADMIN = "fuzz-admin-token-0123456789"


class Gateway:
    base = ""
    key = ""


GATEWAY = Gateway()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        "TOKENPULSE_SYMBOLS": "ETH,SOL",
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_ADMIN_TOKEN": ADMIN,
        "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000",
        "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
        "TOKENPULSE_KEY_ISSUE_PER_HOUR": "1000000",
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    proc = Proc(["up", "--port", str(port), "--data-dir", str(root / "data")], env, root / "up.log")
    GATEWAY.base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{GATEWAY.base}/readyz", timeout=5).status_code == 200, 240, "ready", [proc])
        GATEWAY.key = api_key(GATEWAY.base)
        yield GATEWAY
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.log.read_text(), proc.tail(80)


@pytest.fixture(scope="module")
def api_schema(running: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{running.base}/openapi.json").exclude(path="/v1/stream")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_answers_within_its_contract(case: schemathesis.Case) -> None:
    headers = {"X-API-Key": GATEWAY.key, "X-Admin-Token": ADMIN}
    if case.headers:  # a generated header (If-None-Match, ...) stays; the credentials stay valid
        headers = {**case.headers, **headers}
    case.call_and_validate(
        base_url=GATEWAY.base,
        headers=headers,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        timeout=30,
    )


def test_fuzzing_reached_the_data(running: Gateway) -> None:
    """The gateway fuzzed above really serves the history (not an empty store answering 404 everywhere)."""
    r = httpx.get(f"{running.base}/v1/candles/ETH", params={"interval": "1d", "limit": 5}, headers={"X-API-Key": running.key})
    assert r.status_code == 200 and len(r.json()["data"]) == 5
