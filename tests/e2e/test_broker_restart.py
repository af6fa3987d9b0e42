"""The Kafka broker restarted mid-stream (slow: starts a broker of its own, twice — ~1-2 min).

A broker of this test's own (scripts/kafka-local.sh in a temp run dir; the shared test broker is left
alone) carries ticks from a publisher to the real store writer on the real chDB engine. Midway the
broker is stopped (SIGTERM) and started again on the same data and ports while the publisher keeps
going (it retries a batch the broker did not acknowledge, as ingest's caller would). Counted by event
id afterwards: every tick stored, none twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tokenpulse_gateway.writer import StoreWriter
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import TICKS

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.slow]

SCRIPT = str(Path(__file__).resolve().parents[2] / "scripts" / "kafka-local.sh")


def broker(action: str, run_dir: Path) -> str:
    out = subprocess.run([SCRIPT, action, str(run_dir)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


async def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "kafka"
    bootstrap = broker("start", run_dir)
    sym = "K" + uuid.uuid4().hex[:6].upper()
    sent = [
        TickEvent(symbol=sym, source="restart", ts=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i), price=100.0)
        for i in range(4000)
    ]
    store = await Store(f"chdb://{tmp_path / 'ch'}").open()
    bus = KafkaBus(bootstrap, client_id="restart-writer", group_prefix="restart", backoff_s=0.05)
    StoreWriter(store).register(Context(settings=Settings(), bus=bus, store=store, embedded=False))
    feeder = KafkaBus(bootstrap, client_id="restart-feeder")
    retried = 0
    try:
        await bus.start()
        await feeder.start()
        restarted = asyncio.Event()

        async def restart() -> None:
            await asyncio.to_thread(broker, "stop", run_dir)
            await asyncio.to_thread(broker, "start", run_dir)
            restarted.set()

        task = None
        for n, i in enumerate(range(0, len(sent), 200)):
            if n == 5:
                task = asyncio.create_task(restart())  # mid-stream
            while True:
                try:
                    await asyncio.wait_for(feeder.publish(TICKS, sent[i : i + 200]), 60)
                    break
                except Exception:  # not acknowledged: send the same events again (same ids)
                    retried += 1
                    await asyncio.sleep(1.0)
            await asyncio.sleep(0.3)
        assert task is not None
        await task
        assert restarted.is_set()

        async def stored() -> tuple[int, int]:
            rows = await store.query(
                "SELECT count(), uniqExact(event_id) FROM ticks FINAL WHERE symbol = {s:String}", {"s": sym}
            )
            return rows[0][0], rows[0][1]

        async def stored_ids() -> set[str]:
            rows = await store.query("SELECT DISTINCT event_id FROM ticks WHERE symbol = {s:String}", {"s": sym})
            return {r[0] for r in rows}

        deadline = time.monotonic() + 180
        found = await stored()
        while found[0] < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await stored()
        await asyncio.sleep(2)
        found = await stored()
        ids = await stored_ids()
    finally:
        await feeder.stop()
        await bus.stop()
        await store.close()
        await asyncio.to_thread(
            subprocess.run, [SCRIPT, "stop", str(run_dir), "--clean"], capture_output=True, timeout=120
        )
    print(f"broker restart: {len(sent)} ticks, {retried} batches re-sent, stored {found}")
    assert found == (len(sent), len(sent))
    assert ids == {t.event_id for t in sent}  # by event id: none lost, none extra
