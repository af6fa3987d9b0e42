from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from tokenpulse_shared.store import Store

from testkit.wiring import chdb_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real ClickHouse engine (chDB) on a fresh data path, migrated."""
    async with chdb_store(tmp_path / "ch") as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    """One engine for a module whose fixtures load the history once and whose tests only read it (or add keys)."""
    async with chdb_store(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "ch") as s:
        yield s


@pytest.fixture
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("TOKENPULSE_TEST_KAFKA")
    if not bootstrap:
        pytest.fail("TOKENPULSE_TEST_KAFKA is not set: run the suite with `make test`, which starts Kafka")
    return bootstrap


KAFKA_LOCAL = Path(__file__).resolve().parents[1] / "scripts" / "kafka-local.sh"


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of the test's own, for tests whose new consumer groups would otherwise first replay (and rebuild
    state from) everything the rest of the suite left on the shared broker."""
    work = tmp_path_factory.mktemp("kafka")
    out = subprocess.run([str(KAFKA_LOCAL), "start", str(work)], capture_output=True, text=True, check=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_LOCAL), "stop", str(work), "--clean"], capture_output=True, check=False)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis that scripts/test.sh starts (`make test` always sets TOKENPULSE_TEST_REDIS)."""
    url = os.environ.get("TOKENPULSE_TEST_REDIS")
    if not url:
        pytest.skip("TOKENPULSE_TEST_REDIS is not set: run the suite with `make test`, which starts Redis")
    return url


# Retraining the prediction models is a minutes-long background job of the scoring service; tests
# that start scoring for other reasons run without it. tests/*/test_predictions* enable it.
os.environ.setdefault("TOKENPULSE_PREDICTIONS", "false")

# No test reaches the real exchanges: `auto` (the product default) would try them. Tests of the live
# feed point the connectors at the fake exchanges in testkit/fake_exchange.py and set the mode themselves.
os.environ.setdefault("TOKENPULSE_LIVE_FEED", "synthetic")
# Nor their REST APIs: a test of gap backfill points the REST URLs at testkit/ fakes and enables it.
os.environ.setdefault("TOKENPULSE_REST_BACKFILL_GAPS", "false")
