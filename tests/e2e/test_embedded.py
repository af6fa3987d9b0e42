"""Embedded mode end to end: ``tokenpulse up`` serves the real history, keeps prices moving, renders the
dashboard in a real headless Chromium, and restarts on the same data dir without losing or duplicating
anything."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.store import Store

from tests.e2e.procs import Proc, api_key, fetch_all, free_port, wait_until

pytestmark = pytest.mark.e2e
ENV = {"TOKENPULSE_SYNTHETIC_TICK_S": "0.25", "TOKENPULSE_LOG_FORMAT": "json"}


class Embedded:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.starts = 0
        self.proc: Proc | None = None
        self.base = ""

    def start(self) -> str:
        self.starts += 1
        port = free_port()
        self.proc = Proc(
            ["up", "--port", str(port), "--data-dir", str(self.data_dir)], ENV, self.root / f"up{self.starts}.log"
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200, 120, "ready", [self.proc])
        return api_key(self.base)

    def stop(self) -> None:
        assert self.proc is not None
        assert self.proc.stop() == 0, self.proc.tail()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    up = Embedded(tmp_path_factory.mktemp("embedded"))
    yield up
    if up.proc is not None and up.proc.p.poll() is None:
        up.stop()


def test_up_serves_the_real_history_and_moving_prices(embedded: Embedded) -> None:
    key = embedded.start()
    base = embedded.base
    expected_btc = next(b for s, i, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1]))
    candles = fetch_all(base, "/v1/candles/BTC", key, {"interval": "1d"})
    assert candles[0]["ts"] == "2011-01-01T00:00:00Z"
    assert [c["close"] for c in candles] == [b.close for b in expected_btc]

    def prices() -> dict[str, float]:
        data = httpx.get(f"{base}/v1/tokens", headers={"X-API-Key": key}, timeout=10).json()["data"]
        return {t["symbol"]: t["price"] for t in data}

    first = prices()
    assert set(first) == set(Settings().symbols) and all(p > 0 for p in first.values())
    wait_until(lambda: all(prices()[s] != first[s] for s in first), 30, "prices to move", [embedded.proc])  # type: ignore[list-item]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("no Chromium found: install it (Debian: apt-get install chromium); scripts/test.sh does when root")


def test_the_dashboard_renders_tokens_and_cycles_in_headless_chromium(embedded: Embedded) -> None:
    assert embedded.proc is not None and embedded.proc.p.poll() is None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={embedded.root / 'chromium'}",
        "--virtual-time-budget=30000",
    ]
    url = f"{embedded.base}/dashboard"
    dom = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="true"' in dom, dom[-2000:]
    assert "Bitcoin" in dom and "Dogecoin" in dom  # the tokens table
    for fact in ("2013-12-04", "92.6x", "2017-12-16", "29.9x", "2021-11-08", "bear", "base", "moon"):
        assert fact in dom, fact  # runs, projection and track record from the real history
    assert "<polyline" in dom  # the price chart was drawn
    shot = embedded.root / "dashboard.png"
    subprocess.run(
        [chromium(), *flags, "--window-size=1300,1800", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 50_000


def test_a_restart_on_the_same_data_dir_keeps_everything_and_adds_nothing(embedded: Embedded) -> None:
    key = api_key(embedded.base)
    before = [c["ts"] for c in fetch_all(embedded.base, "/v1/candles/BTC", key, {"interval": "1d"})]
    embedded.stop()
    key = embedded.start()
    after = [c["ts"] for c in fetch_all(embedded.base, "/v1/candles/BTC", key, {"interval": "1d"})]
    assert after == before
    embedded.stop()
    assert "history already loaded" in (embedded.root / "up2.log").read_text()
    expected_rows = sum(len(b) for _, _, b in iter_bundle(DEFAULT_BUNDLE, Settings().symbols))

    async def count_rows() -> int:
        store = await Store(f"chdb://{(embedded.data_dir / 'clickhouse').resolve()}").open(migrate=False)
        try:
            return int((await store.query("SELECT count() FROM candles WHERE source != 'ticks'"))[0][0])
        finally:
            await store.close()

    # raw rows, not FINAL: the second start added nothing
    assert asyncio.run(count_rows()) == expected_rows
