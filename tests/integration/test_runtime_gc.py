"""The runtime freezes its start-up state out of the collector's full passes once every service is warm
(`TOKENPULSE_GC_FREEZE`, on by default): over 100,000 alert rules each full pass paused the alerts process
0.4-0.8 s (docs/benchmarks.md). The real embedded alerts service (in-process bus)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from tokenpulse_shared.settings import Settings

from tokenpulse.runtime import Runtime


def settings(tmp_path: Path, *, gc_freeze: bool) -> Settings:
    runtime = {"symbols": ["BTC"], "backfill_on_start": False, "gc_freeze": gc_freeze}
    return Settings(runtime=runtime, store={"data_dir": tmp_path / "data"})


async def frozen_after_warm(s: Settings) -> tuple[bool, int]:
    gc.unfreeze()
    runtime = Runtime(s, ["alerts"], embedded=True)
    await runtime.start()
    try:
        alerts = runtime.services[0]
        await asyncio.wait_for(alerts.ready.wait(), 30)  # type: ignore[attr-defined]
        freezing = [t for t in runtime.tasks if t.get_name() == "gc-freeze"]
        assert len(freezing) == (1 if s.runtime.gc_freeze else 0)
        if freezing:
            await asyncio.wait_for(freezing[0], 30)
        return runtime.frozen, gc.get_freeze_count()
    finally:
        await runtime.stop()


@pytest.mark.parametrize("enabled", [True, False])
async def test_start_up_state_is_frozen_once_warm_and_released_at_stop(tmp_path: Path, enabled: bool) -> None:
    frozen, count = await frozen_after_warm(settings(tmp_path, gc_freeze=enabled))
    assert frozen is enabled
    if enabled:
        # everything alive at the freeze: the service, its rule book, the loaded modules' objects
        assert count > 10_000
    else:
        assert count == 0
    assert gc.get_freeze_count() == 0  # stop() released them
