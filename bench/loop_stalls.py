"""Event-loop stall probe: a ``tokenpulse`` command run in this process, every slow loop callback recorded.

Each asyncio callback (``Handle._run``) is timed; one over ``--threshold-ms`` is recorded with its wall time, its
task's name and the functions a sampler thread saw on the loop thread while it ran (every ``--sample-ms``). The
collector's passes are timed through ``gc.callbacks``, and a heartbeat every 10 ms gives the loop's lateness
(which also counts time lost to other threads holding the GIL). At exit the records go to ``--out`` (JSON);
``bench.embedded_universe --probe`` sums them over its measurement windows.

    .venv/bin/python -m bench.loop_stalls --out OUT.json [--threshold-ms 15] -- up --port 8000 ...
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

OWN_CODE = ("tokenpulse_", "/tokenpulse/")


class Probe:
    def __init__(self, threshold_s: float, sample_s: float) -> None:
        self.threshold_s = threshold_s
        self.sample_s = sample_s
        self.current: object | None = None
        self.samples: list[tuple[str, str]] = []
        self.stalls: list[dict[str, Any]] = []
        self.gc_passes: list[tuple[float, int, float]] = []
        self.lateness: list[tuple[float, float]] = []
        self.frozen_at: float | None = None
        self._gc_started = 0.0
        self._gc_in_callback = 0.0
        self._main = threading.get_ident()

    def install(self) -> None:
        original = asyncio.events.Handle._run
        probe = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            probe.current, probe.samples, probe._gc_in_callback = handle, [], 0.0
            started = time.perf_counter()
            try:
                original(handle)
            finally:
                took = time.perf_counter() - started
                probe.current = None
                if took >= probe.threshold_s:
                    probe.record(handle, took)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._sample, daemon=True, name="loop-stall-sampler").start()

    def record(self, handle: asyncio.events.Handle, took: float) -> None:
        gc_ms = self._gc_in_callback * 1000
        stall = {"wall": time.time(), "ms": took * 1000, "gc_ms": gc_ms, "what": label(handle), "samples": self.samples}
        self.stalls.append(stall)

    def _sample(self) -> None:
        while True:
            time.sleep(self.sample_s)
            if self.current is None:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is not None:
                self.samples.append(where(frame))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            self._gc_in_callback += took
            self.gc_passes.append((time.time(), info["generation"], took * 1000))

    async def heartbeat(self) -> None:
        while True:
            due = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.lateness.append((time.time(), (time.perf_counter() - due) * 1000))
            if self.frozen_at is None and gc.get_freeze_count():
                self.frozen_at = time.time()

    def dump(self, out: Path) -> None:
        report = {"stalls": self.stalls, "gc": self.gc_passes, "lateness": self.lateness, "frozen_at": self.frozen_at}
        out.write_text(json.dumps(report))


def label(handle: asyncio.events.Handle) -> str:
    """The task a callback steps (its name and coroutine), or the callback's own name."""
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        name = owner.get_name()  # an unnamed task's number says nothing: its coroutine does
        name = "" if name.startswith("Task-") else name.rsplit(":", 1)[0] + " "  # one bus consumer, all partitions
        return f"{name}{getattr(coro, '__qualname__', coro)}"
    return getattr(callback, "__qualname__", repr(callback))


def where(frame: Any) -> tuple[str, str]:
    """The innermost function of this repository's code on the stack, and the innermost function of all."""
    leaf = f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name})"
    own = leaf
    while frame is not None:
        if (
            any(part in frame.f_code.co_filename for part in OWN_CODE)
            and "site-packages" not in frame.f_code.co_filename
        ):
            own = f"{frame.f_code.co_qualname} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
            break
        frame = frame.f_back
    return own, leaf


def summarise(report: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """The stalls, collector passes and heartbeat lateness of ``report`` inside ``windows`` (wall times)."""

    def inside(wall: float) -> bool:
        return any(start <= wall <= end for start, end in windows)

    stalls = [s for s in report["stalls"] if inside(s["wall"])]
    by_what: dict[str, list[tuple[float, float]]] = {}
    for s in stalls:
        by_what.setdefault(s["what"], []).append((s["ms"], s["gc_ms"]))
    own: Counter[str] = Counter(own for s in stalls for own, _ in s["samples"])
    passes = [(generation, ms) for wall, generation, ms in report["gc"] if inside(wall)]
    late = sorted(ms for wall, ms in report["lateness"] if inside(wall))
    seconds = sum(end - start for start, end in windows)
    frozen_at = report["frozen_at"]
    return {
        "seconds": round(seconds, 1),
        "gc_frozen_s_after_window_start": round(frozen_at - windows[0][0], 1) if frozen_at and windows else None,
        "stalls": {
            what: {
                "n": len(ms),
                "total_ms": round(sum(m for m, _ in ms)),
                "max_ms": round(max(m for m, _ in ms), 1),
                "of_which_gc_ms": round(sum(g for _, g in ms)),
            }
            for what, ms in sorted(by_what.items(), key=lambda kv: -sum(m for m, _ in kv[1]))
        },
        "sampled_in_stalls": dict(own.most_common(20)),
        "gc_over_5ms": {
            f"generation {g}": {
                "n": sum(ms > 5 for gen, ms in passes if gen == g),
                "max_ms": round(max((ms for gen, ms in passes if gen == g), default=0), 1),
            }
            for g in (0, 1, 2)
        },
        "heartbeat_late_ms": {
            "p50": round(late[len(late) // 2], 1) if late else None,
            "p99": round(late[int(len(late) * 0.99)], 1) if late else None,
            "max": round(late[-1], 1) if late else None,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threshold-ms", type=float, default=15.0)
    ap.add_argument("--sample-ms", type=float, default=10.0)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the tokenpulse command, after --")
    args = ap.parse_args()
    probe = Probe(args.threshold_ms / 1000, args.sample_ms / 1000)
    probe.install()
    atexit.register(probe.dump, args.out)
    original_run = asyncio.run

    def run_with_heartbeat(main: Any, **kwargs: Any) -> Any:
        async def both() -> Any:
            beat = asyncio.create_task(probe.heartbeat(), name="loop-stall-heartbeat")
            try:
                return await main
            finally:
                beat.cancel()

        return original_run(both(), **kwargs)

    asyncio.run = run_with_heartbeat  # type: ignore[assignment]
    from tokenpulse.cli import app

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    app(command, prog_name="tokenpulse")


if __name__ == "__main__":
    main()
