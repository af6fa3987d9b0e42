"""The store port: ClickHouse through clickhouse-connect, on a server or embedded (chDB)."""

from tokenpulse_shared.store.client import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
