"""Starting and stopping real ``tokenpulse`` processes for end-to-end tests."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TOKENPULSE = str(Path(sys.executable).with_name("tokenpulse"))


def trimmed_bundle(source: Path, dest: Path) -> Path:
    """A copy of the bundled history with the intraday files cut to their header: the daily series load
    in seconds, where BTC's hourly and one-minute bars take minutes."""
    shutil.copytree(source, dest)
    for f in (dest / "intraday").glob("*.csv.gz"):
        with gzip.open(f, "rt") as fh:
            header = fh.readline()
        with gzip.open(f, "wt") as fh:
            fh.write(header)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def distributed_env(bootstrap: str, prefix: str, data_dir: Path, symbols: str, **settings: str) -> dict[str, str]:
    """The environment of a process in distributed mode on a test broker: its consumer-group prefix, data
    directory and symbols, no live feed; ``settings`` add TOKENPULSE_NAME variables (name upper-cased)."""
    env = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENPULSE_CONSUMER_GROUP_PREFIX": prefix,
        "TOKENPULSE_DATA_DIR": str(data_dir),
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_SYMBOLS": symbols,
    }
    return env | {f"TOKENPULSE_{name.upper()}": value for name, value in settings.items()}


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.fh = log.open("wb")
        self.p = subprocess.Popen(
            [TOKENPULSE, *args], env={**os.environ, **env}, stdout=self.fh, stderr=subprocess.STDOUT
        )

    def stop(self, timeout: float = 30) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fh.close()
        return self.p.returncode

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def wait_until(check: Callable[[], Any], timeout: float, what: str, procs: list[Proc] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs or []:
            if p.p.poll() is not None:
                raise AssertionError(f"{p.log.name} exited early ({p.p.returncode}):\n{p.tail()}")
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    logs = "\n\n".join(f"--- {p.log.name}\n{p.tail()}" for p in procs or [])
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs}")


def api_key(base: str) -> str:
    r = httpx.post(f"{base}/v1/keys", json={"name": "e2e"}, timeout=10)
    r.raise_for_status()
    return str(r.json()["key"])


def fetch_all(base: str, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(f"{base}{path}", params=q, headers={"X-API-Key": key}, timeout=30)
        r.raise_for_status()
        body = r.json()
        out += body["data"]
        cursor = body["next_cursor"]
        if not cursor:
            return out
