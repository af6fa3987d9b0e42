"""Tokenpulse service processes for the benchmarks: ``tokenpulse run SERVICE`` with its own log, readiness and
resource use (psutil: CPU seconds, resident memory)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil

from testkit.procs import Proc, free_port


class ServiceProc(Proc):
    """One ``tokenpulse run SERVICE`` process; ``port`` serves /readyz (the API port for the gateway)."""

    def __init__(self, service: str, name: str, env: dict[str, str], work: Path) -> None:
        self.service = service
        self.name = name
        self.port = free_port()
        port_var = "TOKENPULSE_PORT" if service == "gateway" else "TOKENPULSE_METRICS_PORT"
        env = {**env, port_var: str(self.port), "TOKENPULSE_DATA_DIR": str(work / name)}
        super().__init__(["run", service], env, work / f"{name}.log")
        self.ps = psutil.Process(self.p.pid)
        self.peak_rss = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.p.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def sample_rss(self) -> int:
        """Resident memory now (bytes); the peak of the samples is kept in ``peak_rss``."""
        rss = int(self.ps.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        return rss


def wait_ready(procs: list[ServiceProc], timeout: float = 240) -> None:
    """Until every process answers /readyz with 200; a process that exits meanwhile fails with its log."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        for p in list(pending):
            if not p.alive():
                raise RuntimeError(f"{p.name} exited ({p.p.returncode}):\n{p.tail()}")
            if p.ready():
                pending.remove(p)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(p.name for p in pending)}")
        time.sleep(0.5)
