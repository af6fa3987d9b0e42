"""API fuzzing: schemathesis against the OpenAPI document of a running gateway.

``tokenpulse up`` (the embedded app under uvicorn on loopback, the real chDB engine, the bundled
real daily history of BTC and ETH with scoring's grades and signals) is started once; schemathesis
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
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from tests.e2e.procs import Proc, api_key, free_port, trimmed_bundle, wait_until

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("TOKENPULSE_FUZZ_EXAMPLES", "8"))
ADMIN = "fuzz-admin-token-0123456789"


class Gateway:
    base = ""
    key = ""


GATEWAY = Gateway()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


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
    @given(operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), "X-API-Key": GATEWAY.key, "X-Admin-Token": ADMIN}
        try:
            case.call_and_validate(base_url=GATEWAY.base, headers=headers, checks=CHECKS, timeout=30)
        except BaseException as exc:  # collect all: one report for every operation, not the first failure only
            if not isinstance(exc, Exception) and not isinstance(exc, BaseExceptionGroup):
                raise
            failures.append(f"{operation.label} [{mode.value}] {case.path_parameters} {case.query}: {exc}"[:1500])

    try:
        run()
    except Unsatisfiable:  # nothing to violate (an operation without parameters or body): no negative case
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


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
