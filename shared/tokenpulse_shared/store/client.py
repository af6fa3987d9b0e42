"""Async facade over a clickhouse-connect client, for ``http(s)://`` servers and ``chdb://`` paths.

clickhouse-connect is synchronous, and chDB runs one engine per process. So
every call runs on an executor, never on the event loop: writes (inserts,
DDL) on one thread, so they stay ordered, and reads on their own threads, so a
query never waits behind a queue of bulk inserts (the engine serves both at
once). The same code serves a server and chDB: only the DSN differs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from tokenpulse_shared.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

_OPEN_ENGINES: set[str] = set()


class StoreUnavailable(Exception):
    """ClickHouse could not be reached or refused the operation for now."""


def dedup_token(ids: Sequence[str]) -> str:
    """A deterministic insert deduplication token from the event ids of a batch."""
    h = hashlib.blake2b(digest_size=16)
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


class Store:
    def __init__(self, dsn: str, *, workers: int = 4) -> None:
        self.dsn = dsn
        self.is_embedded = dsn.startswith("chdb:")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-write")
        self._reads = ThreadPoolExecutor(
            max_workers=2 if self.is_embedded else workers, thread_name_prefix="clickhouse-read"
        )
        self._client: Any = None

    @property
    def engine_path(self) -> str | None:
        if not self.is_embedded:
            return None
        parsed = urlparse(self.dsn)
        return parsed.path if not parsed.netloc else parsed.netloc + parsed.path

    async def _run(self, fn: Any, *args: Any, read: bool = False, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reads if read else self._writes, lambda: fn(*args, **kwargs))
        except OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def open(self, *, migrate: bool = True) -> Store:
        path = self.engine_path
        if path is not None:
            if _OPEN_ENGINES:
                raise RuntimeError(
                    f"a chDB engine ({next(iter(_OPEN_ENGINES))}) is already open in this process; chDB runs "
                    "one engine per process: share that Store instance or close it first"
                )
            await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)
        self._client = await self._run(self._connect)
        if path is not None:
            _OPEN_ENGINES.add(path)
        if migrate:
            await self.migrate()
        return self

    def _connect(self) -> Any:
        if self.is_embedded:
            return clickhouse_connect.get_client(dsn=self.dsn)
        return clickhouse_connect.get_client(dsn=self.dsn, autogenerate_session_id=False)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._run(client.close)
            path = self.engine_path
            if path is not None:
                _OPEN_ENGINES.discard(path)
        self._writes.shutdown(wait=True)
        self._reads.shutdown(wait=True)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("store is not open")
        return self._client

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return await self._run(self.client.command, sql, parameters=parameters)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = await self._run(self.client.query, sql, parameters=parameters, read=True)
        return list(result.result_rows)

    async def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup: str | None = None,
        interactive: bool = False,
    ) -> None:
        """Insert a column-oriented batch; ``dedup`` makes a retried insert a no-op.

        ``interactive`` inserts (a user waiting, e.g. a new API key) skip the queue of bulk
        writes: they run on the read threads, which the engine serves concurrently."""
        if not columns or not len(columns[0]):
            return
        settings = {"insert_deduplication_token": dedup} if dedup else None
        try:
            await self._run(
                self.client.insert,
                table,
                list(columns),
                column_names=list(column_names),
                column_oriented=True,
                settings=settings,
                read=interactive,
            )
        except (DatabaseError, ClickHouseError) as exc:
            if "Connection" in str(exc) or "timed out" in str(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def insert_arrow(self, table: str, data: Any, *, dedup: str | None = None) -> None:
        """Insert a pyarrow Table as it is (Arrow all the way to the engine, no Python object per row);
        ``dedup`` makes a repeated insert of the same block a no-op."""
        if not data.num_rows:
            return
        settings = {"insert_deduplication_token": dedup} if dedup else None
        await self._run(self.client.insert_arrow, table, data, settings=settings)

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self.client.ping, read=True))
        except Exception:
            return False

    async def migrate(self) -> list[int]:
        """Apply pending schema migrations in order; returns the versions applied."""
        await self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree "
            "ORDER BY version"
        )
        done = {row[0] for row in await self.query("SELECT version FROM schema_migrations FINAL")}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await self.command(statement)
            await self.insert("schema_migrations", [[migration.version], [migration.name]], ["version", "name"])
            applied.append(migration.version)
            log.info("applied store migration %d %s", migration.version, migration.name)
        return applied
