"""Versioned, idempotent ClickHouse schema migrations.

Ownership (which process writes which table) is documented in docs/operations.md:
the store writer (part of the gateway target, consumer group
``tokenpulse-writer``) writes every event table; the gateway API writes
``api_keys``. Tables that hold events are replacing engines keyed by the
event's natural identity, so a redelivered event replaces itself instead of
adding a row; inserts also carry a deduplication token built from event ids.
"""

from __future__ import annotations

from dataclasses import dataclass

DEDUP = "non_replicated_deduplication_window = 10000"
TS = "DateTime64(3, 'UTC') CODEC(Delta, ZSTD)"


def event_table(
    name: str,
    columns: str,
    engine: str = "ReplacingMergeTree(produced_at)",
    *,
    partition: str = "toYear(ts)",
    order: str,
    ttl_days: int = 0,
) -> str:
    """The DDL of a table of events: its own columns, then the event's id and time; inserts deduplicated. By
    default a newer publication of a row replaces the older one, and rows are partitioned by year."""
    ttl = f"TTL toDateTime(produced_at) + INTERVAL {ttl_days} DAY " if ttl_days else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {name} ({columns}, event_id String, produced_at {TS}) ENGINE = {engine} "
        f"PARTITION BY {partition} ORDER BY {order} {ttl}SETTINGS {DEDUP}"
    )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event tables",
        (
            event_table(
                "candles",
                f"""symbol LowCardinality(String), interval LowCardinality(String), ts {TS}, open Float64,
                    high Float64, low Float64, close Float64, volume Float64, trades UInt32,
                    source LowCardinality(String), version UInt64""",
                "ReplacingMergeTree(version)",
                partition="toYear(ts)",
                order="(symbol, interval, ts)",
            ),
            event_table(
                "ticks",
                f"""symbol LowCardinality(String), source LowCardinality(String), ts {TS}, price Float64,
                    size Float64, side LowCardinality(String), dedup_key String""",
                "ReplacingMergeTree",
                partition="toYYYYMM(ts)",
                order="(symbol, ts, source, dedup_key)",
                ttl_days=30,
            ),
            event_table(
                "prices",
                f"""symbol LowCardinality(String), ts {TS}, price Float64, volume_24h Nullable(Float64),
                    sources Array(LowCardinality(String)), stale UInt8""",
                "ReplacingMergeTree",
                partition="toYYYYMM(ts)",
                order="(symbol, ts)",
                ttl_days=400,
            ),
            event_table(
                "grades",
                f"""symbol LowCardinality(String), ts {TS}, trader_grade Nullable(Float64),
                    investor_grade Nullable(Float64), components String, method LowCardinality(String)""",
                order="(symbol, ts)",
            ),
            event_table(
                "signals",
                f"""symbol LowCardinality(String), interval LowCardinality(String), ts {TS},
                    direction LowCardinality(String), strength Float64, reasons Array(String)""",
                order="(symbol, interval, ts)",
            ),
            event_table(
                "predictions",
                f"""symbol LowCardinality(String), horizon LowCardinality(String), made_at {TS}, target_ts {TS},
                    point Float64, lower Float64, upper Float64, interval Float64, model LowCardinality(String),
                    backtest String""",
                "ReplacingMergeTree(produced_at)",
                partition="toYear(made_at)",
                order="(symbol, horizon, model, made_at)",
            ),
            event_table(
                "alerts_fired",
                f"""rule_id String, owner String, symbol LowCardinality(String), ts {TS}, price Nullable(Float64),
                    message String, deliveries String""",
                "ReplacingMergeTree(produced_at)",
                partition="toYYYYMM(ts)",
                order="(owner, rule_id, ts, event_id)",
            ),
            event_table(
                "dead_letters",
                """topic LowCardinality(String), consumer LowCardinality(String), reason String, payload String,
                    msg_key Nullable(String)""",
                "ReplacingMergeTree",
                partition="toYYYYMM(produced_at)",
                order="(topic, produced_at, event_id)",
                ttl_days=90,
            ),
        ),
    ),
    Migration(
        2,
        "api keys",
        (
            f"""CREATE TABLE IF NOT EXISTS api_keys (
                key_hash String,
                key_id String,
                name String,
                email Nullable(String),
                tier LowCardinality(String),
                created_at {TS},
                revoked UInt8,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY key_hash""",
        ),
    ),
    Migration(
        3,
        "market caps",
        (
            event_table(
                "market_caps",
                f"""symbol LowCardinality(String), ts {TS}, market_cap Float64, volume_24h Nullable(Float64),
                    source LowCardinality(String)""",
                order="(symbol, ts)",
            ),
        ),
    ),
    Migration(
        4,
        "indicators",
        (
            event_table(
                "indicators",
                f"""symbol LowCardinality(String), interval LowCardinality(String), ts {TS},
                    rsi_14 Nullable(Float64), macd Nullable(Float64), macd_signal Nullable(Float64),
                    macd_hist Nullable(Float64), ema_20 Nullable(Float64), ema_50 Nullable(Float64),
                    sma_200 Nullable(Float64), bb_upper Nullable(Float64), bb_middle Nullable(Float64),
                    bb_lower Nullable(Float64), atr_14 Nullable(Float64), candle_version UInt64""",
                "ReplacingMergeTree(candle_version)",
                partition="toYear(ts)",
                order="(symbol, interval, ts)",
            ),
        ),
    ),
    Migration(
        5,
        "fundamental metrics",
        (
            event_table(
                "metrics",
                f"symbol LowCardinality(String), ts {TS}, metrics String, source LowCardinality(String)",
                order="(symbol, ts, source)",
            ),
        ),
    ),
    Migration(
        6,
        "alert rules and the firing log",
        (
            f"""CREATE TABLE IF NOT EXISTS alert_rules (
                rule_id String,
                owner String,
                symbol LowCardinality(String),
                rule String,
                created_at {TS},
                deleted UInt8,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY rule_id""",
            "DROP TABLE IF EXISTS alerts_fired",
            event_table(
                "alert_firings",
                f"""firing_id String, rule_id String, owner String, symbol LowCardinality(String), ts {TS},
                    price Nullable(Float64), message String, trigger_event_id String, status LowCardinality(String),
                    deliveries String, version UInt64""",
                "ReplacingMergeTree(version)",
                partition="toYYYYMM(ts)",
                order="(owner, firing_id)",
            ),
        ),
    ),
    Migration(
        7,
        "predictions: 95% interval bounds, kind",
        (
            "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS lower_95 Nullable(Float64) AFTER upper",
            "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS upper_95 Nullable(Float64) AFTER lower_95",
            "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'live' AFTER model",
        ),
    ),
    Migration(
        8,
        "signals: retractions",
        ("ALTER TABLE signals ADD COLUMN IF NOT EXISTS retracted UInt8 DEFAULT 0 AFTER reasons",),
    ),
)
