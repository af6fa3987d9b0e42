"""Gateway read benchmark (issue #8), run with `make bench-gateway`: requests/s and latency of the hot
endpoints of `tokenpulse up` (embedded mode), next to a bare FastAPI endpoint in the same run (the
framework ceiling), with `hey` as the load generator (built from the Go module proxy when missing).

For each target: the most it serves (`hey -c 32` for BENCH_SECONDS s) and latency at a fixed 500 req/s
(`hey -c 10 -q 50`). The gateway runs one process (embedded mode holds one chDB engine per process);
the bare app is measured with 1 and 2 uvicorn workers. All servers run at once and are measured in
BENCH_ROUNDS interleaved rounds (the machine is shared: a ratio is taken within one round, then the
median over rounds). Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DURATION = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
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
    cmd = [binary, *([] if "-z" in args else ["-z", f"{DURATION}s"]), *args]
    if key:
        cmd += ["-H", f"X-API-Key: {key}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    bad = sum(int(n) for c, n in codes.items() if c != "200")
    return {"rps": rps, "p50": pct.get(50, float("nan")), "p99": pct.get(99, float("nan")), "non200": bad}


def children(pid: int) -> list[str]:
    """Command lines of the child processes of ``pid`` (e.g. a prediction retrain the gateway started)."""
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def start_bare(workers: int, procs: list[subprocess.Popen[bytes]]) -> str:
    port = free_port()
    procs.append(
        subprocess.Popen(
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
    )
    wait_ok(f"http://127.0.0.1:{port}/bare", 60)
    return f"http://127.0.0.1:{port}/bare"


def start_gateway(work: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[str, str, int]:
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
    return base, key, gw.pid


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    binary = hey_binary()
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-gw-"))
    results: dict[str, list[dict[str, float]]] = {}
    loads: list[str] = []
    try:
        base, key, gw_pid = start_gateway(work, procs)
        # the scoring service's first prediction retrain runs in a child process for minutes: not what we measure
        deadline = time.monotonic() + float(os.environ.get("BENCH_WAIT_RETRAIN_S", "600"))
        while children(gw_pid) and time.monotonic() < deadline:
            time.sleep(5)
        busy = children(gw_pid)
        targets: list[tuple[str, str, str | None]] = [
            ("bare FastAPI `/bare`, 1 worker", start_bare(1, procs), None),
            ("gateway `/v1/tokens` (memory)", f"{base}/v1/tokens", key),
            ("gateway `/v1/tokens/BTC` (memory + cached analytics)", f"{base}/v1/tokens/BTC", key),
            (
                "gateway `/v1/candles/BTC?interval=1d&limit=100` (ClickHouse, cached page)",
                f"{base}/v1/candles/BTC?interval=1d&limit=100",
                key,
            ),
        ]
        if os.environ.get("BENCH_BARE_2_WORKERS", "1") == "1":
            targets.insert(1, ("bare FastAPI `/bare`, 2 workers", start_bare(2, procs), None))
        for r in range(ROUNDS):
            loads.append(load_average())
            for label, url, k in targets:  # interleaved: every round measures the ceiling next to the gateway
                hey(binary, url, k, "-c", "8", "-z", "2s")  # warm-up
                top = hey(binary, url, k, "-c", "32")
                paced = hey(binary, url, k, "-c", "10", "-q", "50")
                results.setdefault(label, []).append(
                    {
                        "rps": top["rps"],
                        "p50": top["p50"],
                        "p99": top["p99"],
                        "paced": paced["rps"],
                        "pp50": paced["p50"],
                        "pp99": paced["p99"],
                        "non200": top["non200"] + paced["non200"],
                    }
                )
                print(f"round {r + 1}: {label}: {results[label][-1]}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nRun {now}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{ROUNDS} interleaved rounds of hey -z {DURATION}s per measurement, medians; load generator on the same "
        f"machine; load average (1/5/15 min) at the start of each round: {', '.join(loads)}"
        + (f"; a child process was still running: {busy}" if busy else "")
        + ".\n"
    )
    print(
        "| target | max req/s (c=32) | p50 ms | p99 ms | paced req/s (target 500) | p50 ms | p99 ms | non-200 "
        "| max req/s / bare 1 worker, same round (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ceiling = results["bare FastAPI `/bare`, 1 worker"]
    for label, runs in results.items():
        ratio = median([run["rps"] / c["rps"] for run, c in zip(runs, ceiling, strict=True)])
        m = {k: median([run[k] for run in runs]) for k in runs[0]}
        print(
            f"| {label} | {m['rps']:,.0f} | {m['p50']:.1f} | {m['p99']:.1f} | {m['paced']:,.0f} | {m['pp50']:.1f} | "
            f"{m['pp99']:.1f} | {int(sum(run['non200'] for run in runs))} | {ratio:.2f} |"
        )
    print("\nPer round (max req/s, p99 ms at 500 req/s):\n")
    for label, runs in results.items():
        print(f"- {label}: " + "; ".join(f"{run['rps']:,.0f} req/s, p99 {run['pp99']:.1f} ms" for run in runs))


if __name__ == "__main__":
    main()
