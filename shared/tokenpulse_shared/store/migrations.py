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
            f"""CREATE TABLE IF NOT EXISTS candles (
                symbol LowCardinality(String),
                interval LowCardinality(String),
                ts {TS},
                open Float64, high Float64, low Float64, close Float64,
                volume Float64,
                trades UInt32,
                source LowCardinality(String),
                version UInt64,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(version)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, interval, ts)
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS ticks (
                symbol LowCardinality(String),
                source LowCardinality(String),
                ts {TS},
                price Float64,
                size Float64,
                side LowCardinality(String),
                dedup_key String,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(ts)
            ORDER BY (symbol, ts, source, dedup_key)
            TTL toDateTime(produced_at) + INTERVAL 30 DAY
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS prices (
                symbol LowCardinality(String),
                ts {TS},
                price Float64,
                volume_24h Nullable(Float64),
                sources Array(LowCardinality(String)),
                stale UInt8,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(ts)
            ORDER BY (symbol, ts)
            TTL toDateTime(produced_at) + INTERVAL 400 DAY
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS grades (
                symbol LowCardinality(String),
                ts {TS},
                trader_grade Nullable(Float64),
                investor_grade Nullable(Float64),
                components String,
                method LowCardinality(String),
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, ts)
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS signals (
                symbol LowCardinality(String),
                interval LowCardinality(String),
                ts {TS},
                direction LowCardinality(String),
                strength Float64,
                reasons Array(String),
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, interval, ts)
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS predictions (
                symbol LowCardinality(String),
                horizon LowCardinality(String),
                made_at {TS},
                target_ts {TS},
                point Float64, lower Float64, upper Float64,
                interval Float64,
                model LowCardinality(String),
                backtest String,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYear(made_at)
            ORDER BY (symbol, horizon, model, made_at)
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS alerts_fired (
                rule_id String,
                owner String,
                symbol LowCardinality(String),
                ts {TS},
                price Nullable(Float64),
                message String,
                deliveries String,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (owner, rule_id, ts, event_id)
            SETTINGS {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS dead_letters (
                topic LowCardinality(String),
                consumer LowCardinality(String),
                reason String,
                payload String,
                msg_key Nullable(String),
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(produced_at)
            ORDER BY (topic, produced_at, event_id)
            TTL toDateTime(produced_at) + INTERVAL 90 DAY
            SETTINGS {DEDUP}""",
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
            f"""CREATE TABLE IF NOT EXISTS market_caps (
                symbol LowCardinality(String),
                ts {TS},
                market_cap Float64,
                volume_24h Nullable(Float64),
                source LowCardinality(String),
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, ts)
            SETTINGS {DEDUP}""",
        ),
    ),
    Migration(
        4,
        "indicators",
        (
            f"""CREATE TABLE IF NOT EXISTS indicators (
                symbol LowCardinality(String),
                interval LowCardinality(String),
                ts {TS},
                rsi_14 Nullable(Float64), macd Nullable(Float64), macd_signal Nullable(Float64),
                macd_hist Nullable(Float64), ema_20 Nullable(Float64), ema_50 Nullable(Float64),
                sma_200 Nullable(Float64), bb_upper Nullable(Float64), bb_middle Nullable(Float64),
                bb_lower Nullable(Float64), atr_14 Nullable(Float64),
                candle_version UInt64,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(candle_version)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, interval, ts)
            SETTINGS {DEDUP}""",
        ),
    ),
    Migration(
        5,
        "fundamental metrics",
        (
            f"""CREATE TABLE IF NOT EXISTS metrics (
                symbol LowCardinality(String),
                ts {TS},
                metrics String,
                source LowCardinality(String),
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(produced_at)
            PARTITION BY toYear(ts)
            ORDER BY (symbol, ts, source)
            SETTINGS {DEDUP}""",
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
            f"""CREATE TABLE IF NOT EXISTS alert_firings (
                firing_id String,
                rule_id String,
                owner String,
                symbol LowCardinality(String),
                ts {TS},
                price Nullable(Float64),
                message String,
                trigger_event_id String,
                status LowCardinality(String),
                deliveries String,
                version UInt64,
                event_id String,
                produced_at {TS}
            ) ENGINE = ReplacingMergeTree(version)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (owner, firing_id)
            SETTINGS {DEDUP}""",
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
