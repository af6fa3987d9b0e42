"""Errors are cheap, one line and leak nothing; no input reaches a 500.

Against a real ``tokenpulse up`` (``server``): every input that used to answer 500 (forged cursors on every
paginated endpoint, times outside the store, a cycles projection past any date, ``Last-Event-ID: ²``) answers a
4xx in the contract's error shape, without a log line or a held event loop. Against a gateway with a genuine
server-side fault (``failing_gateway``: the same ``serve`` as ``tokenpulse up``, a dropped table): a 500 quotes
its request id and is logged as exactly one line with that id and without the key, under console and JSON
logs, and a burst of them leaves ``/healthz`` as fast as it was.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.procs import Proc, api_key, free_port, wait_until
from tests.security.conftest import LoopProbe, UpServer, leaked
from tests.security.failing_gateway import BROKEN

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


FORGED_CURSORS = {
    "boolean": '{"ts": true}',
    "float": '{"ts": 1.5}',
    "int64 overflow": '{"ts": 9223372036854775808}',
    "huge int": '{"ts": ' + "9" * 60 + "}",
    "negative": '{"ts": -1}',
    "string for int": '{"ts": "1"}',
    "nested object": '{"ts": {"ts": 1}}',
    "nested arrays": "[" * 70 + "]" * 70,
    "deep nesting": '{"ts": ' + "[" * 5000 + "]" * 5000 + "}",
    "extra key": '{"ts": 1, "x": 1}',
    "wrong model": '{"symbol": true, "rule_id": [1], "id": null}',
}
PAGINATED = [
    "/v1/candles/BTC",
    "/v1/indicators/BTC",
    "/v1/grades/BTC",
    "/v1/signals",
    "/v1/alerts/events",
    "/v1/alerts",
    "/v1/tokens",
]
Case = tuple[str, dict[str, Any], dict[str, Any], int, str]
CASES: dict[str, Case] = {
    **{
        f"{path} cursor {name}": (path, {"cursor": b64(cursor)}, {}, 400, "invalid_cursor")
        for path in PAGINATED
        for name, cursor in FORGED_CURSORS.items()
    },
    "start after the store": ("/v1/candles/BTC", {"start": "9999-01-01T00:00:00Z"}, {}, 400, "invalid_time"),
    "end before the store": ("/v1/grades/BTC", {"end": "1800-01-01T00:00:00+01:00"}, {}, 400, "invalid_time"),
    "year one with an offset": ("/v1/signals", {"start": "0001-01-01T00:00:00+01:00"}, {}, 400, "invalid_time"),
    "cycles past every date": (
        "/v1/cycles/btc",
        {"previous_length_days": 20000, "bear_length_multiplier": 1000},
        {},
        400,
        "invalid_parameters",
    ),
    "cycles price overflow": ("/v1/cycles/btc", {"start_price": "1e308"}, {}, 422, "invalid_request"),
    "cycles infinite roi": ("/v1/cycles/btc", {"base_roi_reduction": "1e-300"}, {}, 422, "invalid_request"),
    "cycles nan": ("/v1/cycles/btc", {"previous_roi": "nan"}, {}, 422, "invalid_request"),
    "cycles as_of past the range": ("/v1/cycles/btc", {"as_of": "9999-12-31"}, {}, 400, "invalid_parameters"),
    "Last-Event-ID superscript two": ("/v1/stream", {}, {"Last-Event-ID": b"\xb2"}, 400, "invalid_last_event_id"),
    "Last-Event-ID past int64": (
        "/v1/stream",
        {},
        {"Last-Event-ID": "9" * 20},
        400,
        "invalid_last_event_id",
    ),
    "Last-Event-ID Arabic-Indic digits": (
        "/v1/stream",
        {},
        {"Last-Event-ID": "١٢٣".encode()},
        400,
        "invalid_last_event_id",
    ),
    "since past int64": ("/v1/stream", {"since": str(2**63)}, {}, 422, "invalid_request"),
}


@pytest.fixture(scope="module")
def key(server: UpServer) -> str:
    return server.key()


def ask(base: str, key: str, case: Case, request_id: str | None = None) -> httpx.Response:
    path, params, headers, _, _ = case
    extra = {"X-Request-ID": request_id} if request_id else {}
    return httpx.get(f"{base}{path}", params=params, headers={"X-API-Key": key, **headers, **extra}, timeout=30)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_answers_4xx_in_the_error_shape(server: UpServer, key: str, name: str) -> None:
    case = CASES[name]
    r = ask(server.base, key, case)
    assert (r.status_code, r.json()["error"]["code"]) == (case[3], case[4]), r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["message"]


def test_the_hostile_batch_is_not_logged_and_holds_no_loop(server: UpServer, key: str) -> None:
    """4xx answers are the client's business: no log line, and the loop keeps answering ``/healthz``."""
    before = server.logs().count("\n")
    with LoopProbe(server.base) as probe:
        statuses = [ask(server.base, key, case).status_code for case in CASES.values()]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert probe.latencies and probe.worst_s < 1.0, probe.worst_s
    time.sleep(0.5)
    new = server.logs().splitlines()[before:]
    assert not [line for line in new if "error" in line.lower()], new[:5]


def test_a_request_id_is_kept_when_well_formed_and_made_otherwise(server: UpServer, key: str) -> None:
    mine = httpx.get(f"{server.base}/healthz", headers={"X-Request-ID": "client-7f3a.1"})
    assert mine.headers["x-request-id"] == "client-7f3a.1"
    for junk in ("", "a" * 65, "<script>", "x y", "é".encode(), b"\xb2", "id\twith-tab"):
        r = httpx.get(f"{server.base}/v1/usage", headers={"X-Request-ID": junk, "X-API-Key": key})
        made = r.headers["x-request-id"]
        assert r.status_code == 200 and made != junk and len(made) == 16 and made.isalnum() and made.isascii()


# --- a genuine 500 ---------------------------------------------------------------------------------------------


class FailingGateway:
    def __init__(self, root: Path, log_format: str) -> None:
        self.format = log_format
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / "gateway.log"
        env = {
            "TOKENPULSE_PORT": str(self.port),
            "TOKENPULSE_DATA_DIR": str(root / "data"),
            "TOKENPULSE_SYMBOLS": "BTC,ETH",
            "TOKENPULSE_LIVE_FEED": "off",
            "TOKENPULSE_LOG_FORMAT": log_format,
            "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000",
        }
        self.proc = ScriptProc(["-m", "tests.security.failing_gateway"], env, self.log)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def settled_lines(self) -> list[str]:
        """The log once what the last request wrote is all there: logging happens on the event loop, so once
        ``/healthz`` answered twice, it is done."""
        for _ in range(2):
            httpx.get(f"{self.base}/healthz", timeout=60).raise_for_status()
        time.sleep(0.3)
        return self.lines()


class ScriptProc(Proc):
    """A :class:`Proc` running this interpreter on a module of the test suite instead of ``tokenpulse``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.fh = log.open("wb")
        self.p = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env={**os.environ, **env}, stdout=self.fh, stderr=subprocess.STDOUT
        )


@pytest.fixture(scope="module", params=["console", "json"])
def failing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailingGateway]:
    gw = FailingGateway(tmp_path_factory.mktemp(f"failing-{request.param}"), request.param)
    try:
        wait_until(lambda: BROKEN in gw.log.read_text(), 120, "the broken gateway", [gw.proc])
        yield gw
    finally:
        assert gw.proc.stop() == 0, gw.proc.tail()


def test_a_genuine_500_quotes_its_request_id_and_is_one_log_line(failing: FailingGateway) -> None:
    key = api_key(failing.base)
    before = len(failing.lines())
    rid = "err-test-0001"
    r = httpx.get(f"{failing.base}/v1/indicators/BTC", headers={"X-Request-ID": rid, "X-API-Key": key}, timeout=30)
    assert r.status_code == 500
    new = failing.settled_lines()[before:]
    assert not leaked([key], "\n".join(new)), "the key is in the log"
    assert len(new) == 1, "\n".join(new[:40])
    line = new[0]
    for part in (rid, "unhandled error", "GET", "/v1/indicators/{symbol}", "DatabaseError", "Unknown table"):
        assert part in line, (part, line)
    for never in ("Traceback", "x-api-key", "locals", "Exception in ASGI application"):
        assert never not in line, (never, line)
    assert r.headers["x-request-id"] == rid
    assert r.json()["error"]["code"] == "internal" and rid in r.json()["error"]["message"]
    if failing.format == "json":  # the same facts as fields
        fields = json.loads(line)
        assert fields["level"] == "error" and fields["request_id"] == rid and fields["method"] == "GET"
        assert fields["route"] == "/v1/indicators/{symbol}" and "tokenpulse_gateway.routes.history" in fields["where"]
        assert len(fields["error"]) <= 300


def test_a_burst_of_500s_costs_the_loop_nothing_measurable(failing: FailingGateway) -> None:
    """The loop's answer time under a burst of failing requests is compared with a burst of answered ones
    of the same route shape, side by side: the machine's own load moves both alike, a blocking error path
    (a rendered traceback) shows as the difference."""
    key = api_key(failing.base)

    def burst(path: str, status: int) -> LoopProbe:
        with LoopProbe(failing.base) as probe, httpx.Client(base_url=failing.base, timeout=30) as client:
            started = time.perf_counter()
            while time.perf_counter() - started < 3:
                assert client.get(path, headers={"X-API-Key": key}).status_code == status
        return probe

    answered = burst("/v1/candles/BTC", 200)
    failed = burst("/v1/indicators/BTC", 500)
    control, loaded = statistics.median(answered.latencies), statistics.median(failed.latencies)
    assert failed.worst_s < 1.0 and loaded < 2 * control + 0.005, (answered.worst_s, control, failed.worst_s, loaded)
    assert not leaked([key], failing.log.read_text())
