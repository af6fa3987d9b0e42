"""A real ``tokenpulse up`` to attack: the embedded platform under uvicorn on loopback, the real chDB
engine, the bundled daily history of BTC and ETH, its log captured to a file per run.

``server`` is one such process for the whole package (limits raised so the cases do not trip them);
``up_server`` starts another with settings of a test's own (a limit, a trusted proxy) and stops it after.
``LoopProbe`` polls ``/healthz`` in a thread while a case runs: how long the event loop was held.
Every key handed out by :meth:`UpServer.key` is searched for in the server's logs when it stops: no log line
may carry one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from testkit.procs import Proc, api_key, free_port, trimmed_bundle, wait_until

ADMIN = "security-suite-admin-token-7c1f"
RELAXED = {
    "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000",
    "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
    "TOKENPULSE_KEY_ISSUE_PER_HOUR": "1000000",
    "TOKENPULSE_AUTH_FAILURES_PER_MINUTE": "1000000",
}


class UpServer:
    """``tokenpulse up`` on a free port over one data dir; ``restart`` keeps the data dir, each run logs
    to its own file and :meth:`logs` reads them all."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bundle = root / "bundle"
        if not bundle.exists():
            trimmed_bundle(DEFAULT_BUNDLE, bundle)
        self.env = {
            "TOKENPULSE_SYMBOLS": "BTC,ETH",
            "TOKENPULSE_BUNDLE_DIR": str(bundle),
            "TOKENPULSE_LIVE_FEED": "off",
            "TOKENPULSE_ADMIN_TOKEN": ADMIN,
            **env,
        }
        self.runs: list[Proc] = []
        self.issued: list[str] = []

    @property
    def proc(self) -> Proc:
        return self.runs[-1]

    def start(self, timeout: float = 240) -> UpServer:
        log = self.root / f"up.{len(self.runs) + 1}.log"
        args = ["up", "--port", str(self.port), "--data-dir", str(self.root / "data")]
        self.runs.append(Proc(args, self.env, log))
        ready = lambda: httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200  # noqa: E731
        wait_until(ready, timeout, "ready", [self.proc])
        return self

    def stop(self) -> int:
        return self.proc.stop()

    def restart(self, timeout: float = 240) -> UpServer:
        code = self.stop()
        assert code == 0, self.proc.tail(80)
        return self.start(timeout)

    def key(self) -> str:
        key = api_key(self.base)
        self.issued.append(key)
        return key

    def tier_key(self, name: str, tier: str) -> str:
        """A key of ``tier``, issued through the admin API."""
        admin = {"X-Admin-Token": ADMIN}
        r = httpx.post(f"{self.base}/v1/admin/keys", json={"name": name, "tier": tier}, headers=admin)
        r.raise_for_status()
        key = str(r.json()["key"])
        self.issued.append(key)
        return key

    def logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.runs)

    def leaked_keys(self) -> list[str]:
        """The issued keys of which any 12 characters in a row of the secret part are in the logs."""
        return leaked(self.issued, self.logs())


def leaked(keys: list[str], text: str, window: int = 12) -> list[str]:
    """Keys (``tp_`` + 43 random characters) of which ``text`` holds a piece: a truncated copy leaks too."""
    return [k for k in keys if any(k[i : i + window] in text for i in range(3, len(k) - window + 1))]


class LoopProbe:
    """``/healthz`` every ``every_s`` in a thread while the ``with`` block runs; ``worst_s`` is the slowest
    answer seen (a blocked event loop shows here first)."""

    def __init__(self, base: str, every_s: float = 0.02) -> None:
        self.base = base
        self.every_s = every_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.latencies.append(time.perf_counter() - t0)
                time.sleep(self.every_s)

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while not self.latencies and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # a block shorter than one probe still gets one answer measured
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    yield from serving(UpServer(tmp_path_factory.mktemp("hostile"), RELAXED), "the log of the hostile session")


def serving(up: UpServer, log_name: str) -> Iterator[UpServer]:
    """A session's server, started; after the session it must exit cleanly with no API key in its log."""
    up.start()
    try:
        yield up
    finally:
        code = up.stop()
    assert code == 0, up.proc.tail(80)
    assert not up.leaked_keys(), f"API keys in {log_name}"


@pytest.fixture
def up_server(tmp_path: Path) -> Iterator[Callable[..., UpServer]]:
    """Start a ``tokenpulse up`` of the test's own: ``up_server(TOKENPULSE_X="...")``; stopped after the test."""
    started: list[UpServer] = []

    def start(**env: str) -> UpServer:
        up = UpServer(tmp_path / f"up{len(started)}", env).start()
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()
    assert not [k for up in started for k in up.leaked_keys()], "API keys in a server's log"
