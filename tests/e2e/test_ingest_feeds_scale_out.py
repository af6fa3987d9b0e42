"""Feed ownership across ingest replicas, through the real broker: each (venue, pair) subscription belongs to
exactly one replica, and a replica killed with SIGKILL has its pairs taken over by the survivor.

Two ``tokenpulse run ingest`` processes in live mode stream from two fake exchanges on loopback (Binance and
Coinbase, recorded real frames). The universe is this run's own tokens, two on each partition of the
universe topic, so any non-empty share of the partitions holds pairs. Counted at the fakes: how many open
connections are subscribed to each of this run's pairs — exactly one each, the replicas sharing them, then,
after the kill, exactly one each again, all on the survivor, within the session timeout and a rebalance.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from testkit.fake_exchange import FakeExchanges
from testkit.procs import Proc, free_port, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

VENUES = ("binance", "coinbase")
UNIVERSE_PARTITIONS = 6  # the test broker's default: the universe topic as ensure_topics creates it
PER_PARTITION = 2
SESSION_TIMEOUT_S = 6  # the broker's floor
REBALANCE_SLACK_S = 10  # a rejoin, the assignment and the resubscription, on 2 shared cores


def run_symbols(run: str) -> list[str]:
    """``PER_PARTITION`` symbols of this run on each universe partition (placed as the bus places keys)."""
    place = DefaultPartitioner()
    every = list(range(UNIVERSE_PARTITIONS))
    by_partition: dict[int, list[str]] = {p: [] for p in every}
    k = 0
    while any(len(v) < PER_PARTITION for v in by_partition.values()):
        symbol = f"F{run}{k}"
        held = by_partition[place(symbol.encode(), every, every)]
        if len(held) < PER_PARTITION:
            held.append(symbol)
        k += 1
    return sorted(s for v in by_partition.values() for s in v)


def subscribed(exchanges: FakeExchanges, symbols: list[str]) -> dict[tuple[str, str], int]:
    """(venue, pair) -> open connections subscribed to it, for every pair of ``symbols`` (0 included)."""

    async def snapshot() -> dict[str, Counter[str]]:
        return {name: fake.open_subscriptions() for name, fake in exchanges.fakes.items()}

    now = exchanges.call(snapshot)
    return {(n, f.venue(s)): now[n][f.venue(s)] for n, f in exchanges.fakes.items() for s in symbols}


def shares(p: Proc) -> list[list[int]]:
    """The universe partitions a replica's feeds were assigned, rebalance by rebalance (from its log)."""
    found = re.findall(r"universe partitions \[([\d, ]*)\] assigned", p.log.read_text())
    return [[int(x) for x in f.split(",") if x.strip()] for f in found]


def test_two_replicas_subscribe_each_pair_once_and_the_survivor_takes_over(own_kafka: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:5].upper()
    symbols = run_symbols(run)
    prefix = f"e2e-feeds-{run.lower()}"
    with FakeExchanges({v: v for v in VENUES}, dict.fromkeys(symbols, 100.0), stream_s=0.2) as exchanges:

        def env(n: int) -> dict[str, str]:
            return {
                "TOKENPULSE_KAFKA_BOOTSTRAP": own_kafka,
                "TOKENPULSE_CONSUMER_GROUP_PREFIX": prefix,
                "TOKENPULSE_DATA_DIR": str(tmp_path / f"data-{n}"),
                "TOKENPULSE_METRICS_PORT": str(free_port()),
                "TOKENPULSE_SYMBOLS": ",".join(symbols),
                "TOKENPULSE_LIVE_FEED": "live",
                "TOKENPULSE_FEED_EXCHANGES": ",".join(VENUES),
                "TOKENPULSE_UNIVERSE_DISCOVERY": "false",
                "TOKENPULSE_REST_BACKFILL_GAPS": "false",
                "TOKENPULSE_KAFKA_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
                **{f"TOKENPULSE_{name.upper()}_WS_URL": fake.url for name, fake in exchanges.fakes.items()},
            }

        procs = [Proc(["run", "ingest"], env(n), tmp_path / f"ingest-{n}.log") for n in (1, 2)]
        try:

            def split_once() -> bool:
                last = [s[-1] if s else [] for s in map(shares, procs)]
                split = all(last) and sorted(last[0] + last[1]) == list(range(UNIVERSE_PARTITIONS))
                return split and set(subscribed(exchanges, symbols).values()) == {1}

            wait_until(split_once, 120, "each pair subscribed once, the replicas sharing them", procs)
            time.sleep(3)  # and it stays so: no late subscription of a pair by the other replica
            counts = subscribed(exchanges, symbols)
            assert set(counts.values()) == {1}, f"pairs not subscribed exactly once: {counts}"

            victim, survivor = procs
            victim.p.kill()  # SIGKILL: its connections drop, its group membership lapses after the session timeout
            victim.p.wait()
            killed = time.monotonic()

            def all_on_survivor() -> bool:
                """Every partition is the survivor's and each pair subscribed once (the fakes may count the killed
                replica's connections for a moment: alone that is no takeover)."""
                last = shares(survivor)
                everything = bool(last) and last[-1] == list(range(UNIVERSE_PARTITIONS))
                return everything and set(subscribed(exchanges, symbols).values()) == {1}

            patience = SESSION_TIMEOUT_S + REBALANCE_SLACK_S + 30
            wait_until(all_on_survivor, patience, "the survivor to take every pair", [survivor])
            took = time.monotonic() - killed
            assert took <= SESSION_TIMEOUT_S + REBALANCE_SLACK_S, f"the takeover took {took:.1f} s"
            assert shares(survivor)[-1] == list(range(UNIVERSE_PARTITIONS))
            time.sleep(3)
            counts = subscribed(exchanges, symbols)
            assert set(counts.values()) == {1}, f"after the takeover, pairs not subscribed exactly once: {counts}"
            print(f"takeover of the killed replica's pairs: {took:.1f} s after the kill")
        finally:
            for p in procs:
                p.stop()
