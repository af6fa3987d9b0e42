"""Embedded mode with the shipped 1,000-token universe: memory, and ``/v1/tokens`` latency at a fixed rate.

``tokenpulse up`` with ``TOKENPULSE_UNIVERSE=data/universe/top1000.csv`` and synthetic ticks (offline, one tick per
token per ``--tick-s``), on a fresh data dir (the bundled history loads first). Once ready and warmed up, ``hey``
sends ``--rate`` requests/s (10 connections) for ``--seconds`` to each query below; the process's resident memory
(psutil, sampled every 0.5 s from start to end) gives the peak. Goal (issue 22): ≤ 2 GB RSS and
``/v1/tokens?limit=100`` p99 ≤ 20 ms at 200 req/s.

    .venv/bin/python -m bench.embedded_universe [--rate 200] [--seconds 30] [--json OUT] [--probe]

``server_cpu_cores``: the server process's CPU time (all its threads) over the measured windows, in cores.
``--probe`` runs the server under ``bench.loop_stalls`` and adds, for the measurement windows only, the event-loop
callbacks over 15 ms (by task, with where the loop thread was), the collector's passes and the loop's lateness.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from bench.gateway import free_port, hey, hey_binary, wait_ok
from bench.loop_stalls import summarise
from testkit.procs import Proc

ROOT = Path(__file__).resolve().parents[1]

QUERIES = {
    "limit=100": "limit=100",
    "limit=100&sort=-market_cap": "limit=100&sort=-market_cap",
    "limit=100&sort=-change_24h&q=coin": "limit=100&sort=-change_24h&q=coin",
}


class PeakRss:
    """The largest resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.5)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


class ProbedProc(Proc):
    """``tokenpulse ARGS`` run under the loop-stall probe (``bench.loop_stalls``), its records to ``out``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, out: Path) -> None:
        self.log = log
        self.fh = log.open("wb")
        command = [sys.executable, "-m", "bench.loop_stalls", "--out", str(out), "--", *args]
        self.p = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=200, help="requests per second (10 connections)")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--tick-s", type=float, default=1.0, help="seconds between synthetic ticks per token")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--probe", action="store_true", help="record event-loop stalls (bench.loop_stalls)")
    args = ap.parse_args()
    binary = hey_binary()
    root = Path(tempfile.mkdtemp(prefix="tokenpulse-universe-bench-"))
    port = free_port()
    env = {
        "TOKENPULSE_UNIVERSE": str(ROOT / "data" / "universe" / "top1000.csv"),
        "TOKENPULSE_LIVE_FEED": "synthetic",
        "TOKENPULSE_SYNTHETIC_TICK_S": str(args.tick_s),
        "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "10000000",
        "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
        "TOKENPULSE_LOG_LEVEL": "WARNING",
    }
    started = time.monotonic()
    up_args = ["up", "--port", str(port), "--data-dir", str(root / "data")]
    probe_out = root / "stalls.json"
    up = ProbedProc(up_args, env, root / "up.log", probe_out) if args.probe else Proc(up_args, env, root / "up.log")
    windows: list[tuple[float, float]] = []
    rss = PeakRss(up.p.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ok(f"{base}/readyz", 600)
        ready_s = time.monotonic() - started
        key = httpx.post(f"{base}/v1/keys", json={"name": "bench"}, timeout=30).json()["key"]
        tokens = httpx.get(f"{base}/v1/tokens?limit=1000", headers={"X-API-Key": key}, timeout=60).json()["data"]
        priced = sum(1 for t in tokens if t["price"])
        results = {}
        server = psutil.Process(up.p.pid)
        cpu_before, cpu_s = server.cpu_times(), 0.0
        for name, query in QUERIES.items():
            url = f"{base}/v1/tokens?{query}"
            hey(binary, url, key, "-c", "10", "-z", "3s")  # warm-up
            per_conn = max(1, args.rate // 10)
            begun = time.time()
            results[name] = hey(binary, url, key, "-c", "10", "-q", str(per_conn), "-z", f"{args.seconds}s")
            windows.append((begun, time.time()))
            cpu_now = server.cpu_times()
            cpu_s += cpu_now.user + cpu_now.system - cpu_before.user - cpu_before.system
            cpu_before = server.cpu_times()  # the warm-up of the next query is left out
            print(f"{name}: {results[name]}", flush=True)
        steady = psutil.Process(up.p.pid).memory_info().rss
    finally:
        code = up.stop()
        peak = rss.stop()
    summary = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{psutil.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_avg": psutil.getloadavg(),
        "tokens_listed": len(tokens),
        "tokens_priced": priced,
        "ready_s": round(ready_s, 1),
        "rate": args.rate,
        "seconds": args.seconds,
        "queries": results,
        "server_cpu_cores": round(cpu_s / sum(end - start for start, end in windows), 2),
        "rss_peak_mb": round(peak / 2**20),
        "rss_steady_mb": round(steady / 2**20),
        "exit_code": code,
    }
    if args.probe:
        summary["probe"] = summarise(json.loads(probe_out.read_text()), windows)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
