"""Gateway read benchmark (issue #8), run with `make bench-gateway`: requests/s and latency of the hot
endpoints of `tokenpulse up` (embedded mode), next to a bare FastAPI endpoint in the same run (the
framework ceiling), with `hey` as the load generator (built from the Go module proxy when missing).

For each target: the most it serves (`hey -c 32` for DURATION s) and latency at a fixed 500 req/s
(`hey -c 10 -q 50`). The gateway runs one process (embedded mode holds one chDB engine per process);
the bare app is measured with 1 and 2 uvicorn workers. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DURATION = int(os.environ.get("BENCH_SECONDS", "8"))
VENV_BIN = Path(sys.executable).parent


def hey_binary() -> str:
    found = shutil.which("hey") or next((str(p) for p in [Path.home() / "go" / "bin" / "hey"] if p.exists()), None)
    if found:
        return found
    if not shutil.which("go"):
        sys.exit("bench needs `hey` (go install github.com/rakyll/hey@v0.1.4) or Go to build it")
    gobin = Path(tempfile.gettempdir()) / "tokenpulse-bench-bin"
    subprocess.run(
        ["go", "install", "github.com/rakyll/hey@v0.1.4"], env={**os.environ, "GOBIN": str(gobin)}, check=True
    )
    return str(gobin / "hey")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ok(url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer 200 within {timeout} s")


def hey(binary: str, url: str, key: str | None, *args: str) -> dict[str, float]:
    cmd = [binary, "-z", f"{DURATION}s", *args]
    if key:
        cmd += ["-H", f"X-API-Key: {key}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    bad = sum(int(n) for c, n in codes.items() if c != "200")
    return {"rps": rps, "p50": pct.get(50, float("nan")), "p99": pct.get(99, float("nan")), "non200": bad}


def measure(binary: str, label: str, url: str, key: str | None, rows: list[str]) -> None:
    hey(binary, url, key, "-c", "8")  # warm-up
    top = hey(binary, url, key, "-c", "32")
    paced = hey(binary, url, key, "-c", "10", "-q", "50")
    rows.append(
        f"| {label} | {top['rps']:,.0f} | {top['p50']:.1f} | {top['p99']:.1f} | {paced['rps']:,.0f} | "
        f"{paced['p50']:.1f} | {paced['p99']:.1f} | {int(top['non200'] + paced['non200'])} |"
    )
    print(rows[-1], flush=True)


def main() -> None:
    binary = hey_binary()
    rows: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-gw-"))
    try:
        for workers in (1, 2):
            port = free_port()
            p = subprocess.Popen(
                [
                    str(VENV_BIN / "uvicorn"),
                    "bare_app:app",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=Path(__file__).parent,
            )
            procs.append(p)
            wait_ok(f"http://127.0.0.1:{port}/bare", 60)
            measure(
                binary,
                f"bare FastAPI `/bare`, {workers} worker{'s' if workers > 1 else ''}",
                f"http://127.0.0.1:{port}/bare",
                None,
                rows,
            )
            p.terminate()
            p.wait(30)
        port = free_port()
        env = {
            **os.environ,
            "TOKENPULSE_LIVE_FEED": "synthetic",
            "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000000",
            "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
            "TOKENPULSE_LOG_LEVEL": "WARNING",
        }
        gw = subprocess.Popen(
            [str(VENV_BIN / "tokenpulse"), "up", "--port", str(port), "--data-dir", str(work / "data")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(gw)
        base = f"http://127.0.0.1:{port}"
        wait_ok(f"{base}/readyz", 300)
        key = httpx.post(f"{base}/v1/keys", json={"name": "bench"}, timeout=10).json()["key"]
        for label, path in (
            ("gateway `/v1/tokens` (memory)", "/v1/tokens"),
            ("gateway `/v1/tokens/BTC` (memory + cached analytics)", "/v1/tokens/BTC"),
            ("gateway `/v1/candles/BTC?interval=1d&limit=100` (ClickHouse)", "/v1/candles/BTC?interval=1d&limit=100"),
        ):
            measure(binary, label, f"{base}{path}", key, rows)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nRun {now}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"hey -z {DURATION}s; load generator on the same machine.\n"
    )
    print("| target | max req/s (c=32) | p50 ms | p99 ms | paced req/s (target 500) | p50 ms | p99 ms | non-200 |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
