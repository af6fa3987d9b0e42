"""Settings: one pydantic-settings class, read from ``TOKENPULSE_*`` environment variables.

Every service reads the same class (so a single process can run them all in
embedded mode); each field says which service uses it. The README's
configuration table is generated from these fields (``tokenpulse config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1].parent
DEFAULT_BUNDLE = REPO_ROOT / "data"
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "admin"}
# Development only (refused in production): lets separately started dev processes agree on webhook signatures.
DEV_SIGNING_KEY = "tokenpulse-development-signing-key"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Runtime configuration of every Tokenpulse service."""

    model_config = SettingsConfigDict(env_prefix="TOKENPULSE_", env_file=None, extra="ignore", validate_default=True)

    env: Literal["development", "test", "production"] = Field(
        "development", description="Deployment environment; placeholder secrets are refused in production."
    )
    data_dir: Path = Field(
        Path(".tokenpulse"), description="Embedded mode: where the embedded ClickHouse engine keeps its data."
    )
    clickhouse_url: str | None = Field(
        None,
        description="ClickHouse DSN: `http://user:pass@host:8123/db` (distributed) or `chdb:///abs/path`. "
        "Default: chDB under DATA_DIR/clickhouse.",
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers (`host:port,...`). Required by `tokenpulse run`."
    )
    bundle_dir: Path = Field(DEFAULT_BUNDLE, description="Folder of the bundled real market history.")
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "LTC"],
        description="Tracked tokens, comma separated.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field("console", description="Log output format.")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Trace exporter; `otlp` uses the standard OTEL_EXPORTER_OTLP_ENDPOINT variable.",
    )
    # bus
    kafka_replication: int = Field(1, ge=1, le=5, description="Replication factor of the topics Tokenpulse creates.")
    consumer_group_prefix: str = Field("tokenpulse", description="Kafka consumer groups are PREFIX-SERVICE.")
    bus_max_batch: int = Field(
        5000,
        ge=1,
        le=20000,
        description="Largest batch handed to one handler call (Kafka commits once per batch: small batches cap "
        "a consumer at ~11k events/s here, 5,000 reach ~35k).",
    )
    bus_retries: int = Field(3, ge=0, le=20, description="Handler attempts before an event is dead-lettered.")
    # ingest
    live_feed: Literal["auto", "synthetic", "off"] = Field(
        "auto", description="Ingest: live data source; `auto` falls back to synthetic when no exchange answers."
    )
    synthetic_tick_s: float = Field(1.0, gt=0, description="Ingest: seconds between synthetic ticks per token.")
    synthetic_seed: int = Field(7, description="Ingest: seed of the synthetic generator.")
    backfill_on_start: bool = Field(True, description="Embedded mode: load the bundled history on a first start.")
    # alerts
    smtp_url: str | None = Field(
        None,
        description="Alerts: outgoing mail server as an apprise URL, e.g. "
        "`mailtos://user:pass@smtp.example.com?from=alerts@example.com` (e-mail channel off when unset).",
    )
    telegram_bot_token: str | None = Field(None, description="Alerts: Telegram bot token (telegram channel).")
    telegram_api_url: str = Field("https://api.telegram.org", description="Alerts: Telegram Bot API base URL.")
    discord_api_url: str = Field(
        "https://discord.com/api/webhooks", description="Alerts: base URL that Discord webhook ids are posted to."
    )
    slack_api_url: str = Field(
        "https://hooks.slack.com/services", description="Alerts: base URL that Slack webhook tokens are posted to."
    )
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Alerts: hosts, host:port or CIDRs that webhooks may reach although private/loopback "
        "(comma separated; e.g. an in-cluster relay).",
    )
    alerts_signing_key: str | None = Field(
        None,
        description="Alerts: secret that webhook signing keys are derived from (required in production; "
        "a fixed development key otherwise).",
    )
    delivery_attempts: int = Field(4, ge=1, le=20, description="Alerts: attempts per delivery before it is failed.")
    delivery_backoff_s: float = Field(1.0, gt=0, le=300, description="Alerts: first retry delay; doubles per attempt.")
    alerts_summary_after: int = Field(
        5, ge=2, le=1000, description="Alerts: more firings than this for one target at once → one summary message."
    )
    max_rules_per_key: int = Field(
        10, ge=1, description="Gateway: alert rules one free key may own (pro 100, enterprise 10,000)."
    )
    predictions: bool = Field(
        True,
        description="Scoring: price predictions (models in DATA_DIR/models/predictions, inference on the daily close).",
    )
    predictions_retrain_hours: float = Field(
        24.0, gt=0, description="Scoring: hours between two retrains of the prediction models."
    )
    # gateway
    host: str = Field("127.0.0.1", description="Gateway: bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Gateway: port.")
    persist: bool = Field(
        True,
        description="Gateway: run the store writer (consumer group PREFIX-writer) that persists topics to ClickHouse.",
    )
    free_limit_per_minute: int = Field(60, ge=1, description="Gateway: free-tier requests per minute.")
    free_limit_per_month: int = Field(10000, ge=1, description="Gateway: free-tier requests per 30 days.")
    key_issue_per_hour: int = Field(10, ge=1, description="Gateway: free keys one client IP may create per hour.")
    key_cache_ttl_s: float = Field(
        30.0, ge=0, description="Gateway: seconds a replica trusts a key lookup (a revocation elsewhere waits this)."
    )
    history_cache_ttl_s: float = Field(
        10.0,
        ge=0,
        description="Gateway: seconds a replica reuses a candles or indicators page (dropped on a new candle); 0: off.",
    )
    admin_token: str | None = Field(
        None, description="Gateway: admin token for /v1/admin (required in production; admin API off when unset)."
    )
    redis_url: str | None = Field(
        None,
        description="Gateway: Redis for request limits shared by all replicas (`redis://host:6379/0`); "
        "unset = in process memory.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Gateway: browser origins allowed by CORS, comma separated (default none)."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Gateway: largest request body accepted (413 above).")
    request_timeout_s: float = Field(30.0, gt=0, description="Gateway: time limit of one API request (504 after).")
    stream_heartbeat_s: float = Field(15.0, gt=0, description="Gateway: seconds between /v1/stream heartbeats.")
    stream_buffer: int = Field(
        2000, ge=10, le=1_000_000, description="Gateway: recent stream events kept for Last-Event-ID resumption."
    )

    @model_validator(mode="before")
    @classmethod
    def _symbols_from_csv(cls, data: object) -> object:
        if isinstance(data, dict) and "symbols" in data:
            data["symbols"] = _split_csv(data["symbols"])
        if isinstance(data, dict) and isinstance(data.get("webhook_allowlist"), str):
            data["webhook_allowlist"] = [h.strip().lower() for h in data["webhook_allowlist"].split(",") if h.strip()]
        if isinstance(data, dict) and isinstance(data.get("cors_origins"), str):
            data["cors_origins"] = [o.strip() for o in data["cors_origins"].split(",") if o.strip()]
        return data

    def require_admin_token(self) -> str | None:
        """The gateway's admin token; in production a real secret is required (placeholders refused)."""
        if self.env == "production" and (self.admin_token or "").lower() in PLACEHOLDER_SECRETS:
            raise ValueError("TOKENPULSE_ADMIN_TOKEN must be set to a real secret in production")
        return self.admin_token

    def require_signing_key(self) -> str:
        """The secret webhook signing keys derive from; refused at a placeholder in production."""
        key = self.alerts_signing_key or ""
        if self.env == "production" and key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("TOKENPULSE_ALERTS_SIGNING_KEY must be set to a real secret in production")
        return key or DEV_SIGNING_KEY

    @property
    def store_dsn(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ValueError(
                "TOKENPULSE_KAFKA_BOOTSTRAP is not set: point it at your Kafka brokers "
                "(for a local broker run `scripts/kafka-local.sh start`)"
            )
        return self.kafka_bootstrap
