"""Gateway read benchmark (issue #8), run with `make bench-gateway`: requests/s and latency of the hot
endpoints of `tokenpulse up` (embedded mode), next to a bare FastAPI endpoint in the same run (the
framework ceiling), with `hey` as the load generator (built from the Go module proxy when missing).

For each target: the most it serves (`hey -c 32`) and latency at a fixed 500 req/s
(`hey -c 10 -q 50`). The gateway runs one process (embedded mode holds one chDB engine per process);
the bare app is measured with 1 and 2 uvicorn workers. All servers run at once. The machine is
shared, so throughput is measured in BENCH_PAIRS short alternating pairs (the 1-worker ceiling for
BENCH_PAIR_SECONDS, then the endpoint): each pair gives a ratio, the table the median. Latency is
BENCH_ROUNDS interleaved rounds at 500 req/s, medians. Prints Markdown for docs/benchmarks.md.

Then (BENCH_REPLICAS=on, the default) the same targets with 2 gateway workers: embedded mode holds one
chDB engine per process, so two workers are the distributed mode's two ``tokenpulse run gateway``
replicas, each with its own data dir and consumer groups (so each fills its own memory state and store
from the bus), with ``tokenpulse run ingest`` (synthetic feed) and ``tokenpulse run scoring`` on a real
Kafka broker (started here unless TOKENPULSE_TEST_KAFKA is set) and the bundled history backfilled
through it. The embedded gateway is stopped first. Load is split over the replicas: one ``hey`` per
replica with half the connections (and half the paced rate), started together; req/s summed, p50 the
mean and p99 the larger of the two. Pairs are against the bare app with 2 workers.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import broker, plot
from testkit.procs import Proc

DURATION = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PAIRS = int(os.environ.get("BENCH_PAIRS", "5"))
PAIR_SECONDS = int(os.environ.get("BENCH_PAIR_SECONDS", "3"))
REPLICAS = os.environ.get("BENCH_REPLICAS", "on") == "on"
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


def hey_split(binary: str, targets: Sequence[tuple[str, str | None]], conns: int, *args: str) -> dict[str, float]:
    """``hey`` against several servers at once (one process each, ``conns`` connections split between them):
    req/s summed, p50 the mean, p99 the largest, non-200 summed."""
    share = max(1, conns // len(targets))
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = list(pool.map(lambda t: hey(binary, t[0], t[1], "-c", str(share), *args), targets))
    return {
        "rps": sum(r["rps"] for r in runs),
        "p50": statistics.fmean(r["p50"] for r in runs),
        "p99": max(r["p99"] for r in runs),
        "non200": sum(r["non200"] for r in runs),
    }


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of the machine's CPU time spent busy over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(limit_s: float = 300, below: float = 0.25) -> float:
    """Wait (at most ``limit_s``) until the machine is less than ``below`` busy, e.g. after a backfill that the
    services are still scoring and storing; returns the seconds waited."""
    t = time.monotonic()
    while time.monotonic() - t < limit_s and cpu_busy() >= below:
        pass
    return time.monotonic() - t


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
        # the first prediction retrain is minutes of model fitting in a child process on the same cores;
        # BENCH_PREDICTIONS=on keeps it (the bench then waits for it, but it may start after the wait)
        "TOKENPULSE_PREDICTIONS": "true" if os.environ.get("BENCH_PREDICTIONS") == "on" else "false",
    }
    gw = subprocess.Popen(
        [str(VENV_BIN / "tokenpulse"), "up", "--port", str(port), "--data-dir", str(work / "data")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    procs.append(gw)
    base = f"http://127.0.0.1:{port}"
    wait_ok(f"{base}/readyz", 900)  # the backfill of a fresh data dir; minutes on a busy machine
    key = httpx.post(f"{base}/v1/keys", json={"name": "bench"}, timeout=10).json()["key"]
    return base, key, gw.pid


def start_replicas(work: Path, procs: list[Proc], bootstrap: str) -> tuple[list[str], list[str]]:
    """Distributed mode on ``bootstrap``: ingest (synthetic feed), scoring and two gateway replicas, the bundled
    history backfilled through Kafka; returns the replicas' base URLs and one API key for each."""
    tp = str(VENV_BIN / "tokenpulse")
    common = {
        "TOKENPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENPULSE_LIVE_FEED": "synthetic",
        "TOKENPULSE_PREDICTIONS": "false",
        "TOKENPULSE_LOG_LEVEL": "WARNING",
        "TOKENPULSE_METRICS_PORT": "0",
        "TOKENPULSE_FREE_LIMIT_PER_MINUTE": "1000000000",
        "TOKENPULSE_FREE_LIMIT_PER_MONTH": "1000000000",
    }
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def run(args: list[str], env: dict[str, str], log: str) -> None:
        procs.append(Proc(args, {**common, **env}, logs / log))

    for svc in ("ingest", "scoring"):
        run(["run", svc], {"TOKENPULSE_CONSUMER_GROUP_PREFIX": "bench", "TOKENPULSE_DATA_DIR": str(work / svc)}, svc)
    bases = []
    for i in (1, 2):
        port = free_port()
        env = {
            "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"bench-gw{i}",  # each replica reads every event
            "TOKENPULSE_DATA_DIR": str(work / f"gateway{i}"),
            "TOKENPULSE_PORT": str(port),
        }
        run(["run", "gateway"], env, f"gateway{i}")
        bases.append(f"http://127.0.0.1:{port}")
    for base in bases:
        wait_ok(f"{base}/readyz", 300)
    subprocess.run([tp, "backfill"], env={**os.environ, **common}, check=True, stdout=subprocess.DEVNULL)
    keys = [httpx.post(f"{b}/v1/keys", json={"name": "bench"}, timeout=10).json()["key"] for b in bases]
    deadline = time.monotonic() + 300
    for base, key in zip(bases, keys, strict=True):  # every replica has the history (a full candles page) and BTC
        for path in ("/v1/candles/BTC?interval=1d&limit=100", "/v1/tokens/BTC"):
            while True:
                r = httpx.get(f"{base}{path}", headers={"X-API-Key": key}, timeout=10)
                if r.status_code == 200 and (path.startswith("/v1/tokens") or len(r.json()["data"]) == 100):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"replica {base}{path}: {r.status_code} {r.text[:200]}")
                time.sleep(1)
    return bases, keys


def replicas_phase(
    binary: str, work: Path, bare2: tuple[str, str, None]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[dict[str, float]]]]:
    """Throughput pairs (bare 2 workers, then the 2 replicas) and paced rounds of the three reads on 2 replicas."""
    ratios: dict[str, list[float]] = {}
    tops: dict[str, list[float]] = {}
    paced: dict[str, list[dict[str, float]]] = {}
    procs: list[Proc] = []
    with broker.kafka(work) as bootstrap:
        try:
            bases, keys = start_replicas(work, procs, bootstrap)
            waited = wait_quiet()  # the services are still scoring and storing the backfilled history
            print(f"replicas ready: {bases}; waited {waited:.0f} s for the machine to settle", flush=True)
            targets = [
                (f"gateway x2 `{path}`", [(f"{b}{path}", k) for b, k in zip(bases, keys, strict=True)])
                for path in ("/v1/tokens", "/v1/tokens/BTC", "/v1/candles/BTC?interval=1d&limit=100")
            ]
            for _, t in targets:
                hey_split(binary, t, 8, "-z", "2s")  # warm-up
            for pair in range(PAIRS):
                for label, t in targets:
                    ceiling = hey(binary, bare2[1], None, "-c", "32", "-z", f"{PAIR_SECONDS}s")["rps"]
                    got = hey_split(binary, t, 32, "-z", f"{PAIR_SECONDS}s")["rps"]
                    tops.setdefault(bare2[0], []).append(ceiling)
                    tops.setdefault(label, []).append(got)
                    ratios.setdefault(label, []).append(got / ceiling)
                    print(f"pair {pair + 1}: {label}: {got:,.0f} / {ceiling:,.0f} = {got / ceiling:.2f}", flush=True)
            for r in range(ROUNDS):
                for label, t in targets:
                    m = hey_split(binary, t, 10, "-q", "50")  # 5 connections x 50 req/s per replica: 500 req/s
                    paced.setdefault(label, []).append(m)
                    print(f"paced round {r + 1}: {label}: {m}", flush=True)
        finally:
            for p in procs:
                p.stop()
    return ratios, tops, paced


def table(
    labels: list[str],
    ratios: dict[str, list[float]],
    tops: dict[str, list[float]],
    paced: dict[str, list[dict[str, float]]],
    ceiling: str,
) -> None:
    print(
        f"| target | max req/s (c=32, median) | / {ceiling}, same pair (median, min to max) | "
        "paced req/s (target 500) | p50 ms | p99 ms | non-200 |"
    )
    print("|---|---|---|---|---|---|---|")
    for label in labels:
        rs = ratios.get(label, [])
        ratio = f"{median(rs):.2f} ({min(rs):.2f} to {max(rs):.2f})" if rs else "1.00"
        runs = paced[label]
        m = {k: median([run[k] for run in runs]) for k in ("rps", "p50", "p99")}
        print(
            f"| {label} | {median(tops[label]):,.0f} | {ratio} | {m['rps']:,.0f} | {m['p50']:.1f} | {m['p99']:.1f} | "
            f"{int(sum(run['non200'] for run in runs))} |"
        )
    print("\nPaced p99 per round (ms): ")
    for label in labels:
        print(f"- {label}: " + ", ".join(f"{run['p99']:.1f}" for run in paced[label]))


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    binary = hey_binary()
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-gw-"))
    ratios: dict[str, list[float]] = {}
    tops: dict[str, list[float]] = {}
    paced: dict[str, list[dict[str, float]]] = {}
    loads: list[str] = []
    r_ratios: dict[str, list[float]] = {}
    r_tops: dict[str, list[float]] = {}
    r_paced: dict[str, list[dict[str, float]]] = {}
    r_loads: list[str] = []
    try:
        base, key, gw_pid = start_gateway(work, procs)
        # the scoring service's first prediction retrain runs in a child process for minutes: not what we measure
        deadline = time.monotonic() + float(os.environ.get("BENCH_WAIT_RETRAIN_S", "600"))
        while children(gw_pid) and time.monotonic() < deadline:
            time.sleep(5)
        busy = children(gw_pid)
        wait_quiet()
        bare = ("bare FastAPI `/bare`, 1 worker", start_bare(1, procs), None)
        bare2 = ("bare FastAPI `/bare`, 2 workers", start_bare(2, procs), None)
        gateway: list[tuple[str, str, str | None]] = [
            ("gateway `/v1/tokens` (memory)", f"{base}/v1/tokens", key),
            ("gateway `/v1/tokens/BTC` (memory + cached analytics)", f"{base}/v1/tokens/BTC", key),
            (
                "gateway `/v1/candles/BTC?interval=1d&limit=100` (ClickHouse, cached page)",
                f"{base}/v1/candles/BTC?interval=1d&limit=100",
                key,
            ),
        ]
        for _, url, k in [bare, bare2, *gateway]:
            hey(binary, url, k, "-c", "8", "-z", "2s")  # warm-up
        # throughput: short alternating pairs (the ceiling, then a gateway endpoint), so both halves of a
        # pair see the same background load on the shared machine; the ratio is taken per pair
        for pair in range(PAIRS):
            loads.append(load_average())
            for label, url, k in [bare2, *gateway]:
                ceiling = hey(binary, bare[1], None, "-c", "32", "-z", f"{PAIR_SECONDS}s")["rps"]
                got = hey(binary, url, k, "-c", "32", "-z", f"{PAIR_SECONDS}s")["rps"]
                tops.setdefault(bare[0], []).append(ceiling)
                tops.setdefault(label, []).append(got)
                ratios.setdefault(label, []).append(got / ceiling)
                print(f"pair {pair + 1}: {label}: {got:,.0f} / {ceiling:,.0f} = {got / ceiling:.2f}", flush=True)
        # latency at a fixed 500 req/s
        for r in range(ROUNDS):
            for label, url, k in [bare, bare2, *gateway]:
                m = hey(binary, url, k, "-c", "10", "-q", "50")
                paced.setdefault(label, []).append(m)
                print(f"paced round {r + 1}: {label}: {m}", flush=True)
        if REPLICAS:
            procs[0].terminate()  # the embedded gateway: the replicas phase runs without it
            procs[0].wait(60)
            r_loads = [load_average()]
            r_ratios, r_tops, r_paced = replicas_phase(binary, work, bare2)
            r_loads.append(load_average())
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nRun {now}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"throughput: {PAIRS} alternating pairs of hey -c 32 -z {PAIR_SECONDS}s (ceiling, endpoint) per endpoint; "
        f"latency: {ROUNDS} rounds of hey -c 10 -q 50 -z {DURATION}s per target; medians; load generator on the "
        f"same machine; load average (1/5/15 min) at the start of each pair round: {', '.join(loads)}"
        + (f"; a child process was still running: {busy}" if busy else "")
        + ".\n"
    )
    table([bare[0], bare2[0], *(g[0] for g in gateway)], ratios, tops, paced, "bare 1 worker")
    if r_paced:
        print(
            "\n2 workers: two gateway replicas (distributed mode, Kafka; load average before and after this phase: "
            f"{', '.join(r_loads)}), pairs against the bare app with 2 workers:\n"
        )
        table([bare2[0], *r_paced], r_ratios, r_tops, {bare2[0]: paced[bare2[0]], **r_paced}, "bare 2 workers")
    labels = [bare[0], bare2[0], *(g[0] for g in gateway)]
    tops.update({k: v for k, v in r_tops.items() if k != bare2[0]})
    paced.update(r_paced)
    labels += list(r_paced)
    plot.save(
        "gateway",
        "Gateway reads vs a bare FastAPI endpoint (hey on loopback)",
        [
            plot.bars("most req/s (hey -c 32, median of pairs)", {k: median(tops[k]) for k in labels}, "req/s"),
            plot.groups(
                "latency at 500 req/s (hey -c 10 -q 50, median of rounds)",
                {k: {p: median([run[p] for run in paced[k]]) for p in ("p50", "p99")} for k in labels},
                "ms",
                fmt="{:.1f}",
            ),
        ],
        columns=1,
        footer=plot.footer(f"{PAIRS} pairs x {PAIR_SECONDS} s, {ROUNDS} paced rounds x {DURATION} s"),
    )


if __name__ == "__main__":
    main()
