"""Settings: one pydantic-settings class, read from ``TOKENPULSE_*`` environment variables.

Every service reads the same class (so a single process can run them all in
embedded mode); each field says which service uses it. The README's
configuration table is generated from these fields (``tokenpulse config``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    kafka_partitions: int = Field(
        6,
        ge=1,
        le=1000,
        description="Partitions of the topics Tokenpulse creates: the most replicas of one service that share a "
        "topic's work (existing topics keep theirs; see Operate it).",
    )
    consumer_group_prefix: str = Field("tokenpulse", description="Kafka consumer groups are PREFIX-SERVICE.")
    bus_max_batch: int = Field(
        5000,
        ge=1,
        le=20000,
        description="Largest batch handed to one handler call (Kafka commits once per batch: small batches cap "
        "a consumer at ~11k events/s here, 5,000 reach ~35k).",
    )
    gc_freeze: bool = Field(
        True,
        description="Once start-up state is loaded (alert rules, scoring warm-up, bundled history), exclude it "
        "from the garbage collector's full passes (gc.freeze): over 100,000 alert rules each full pass paused "
        "the process 0.4-0.8 s.",
    )
    bus_retries: int = Field(3, ge=0, le=20, description="Handler attempts before an event is dead-lettered.")
    shutdown_grace_s: float = Field(
        25.0,
        gt=0,
        le=600,
        description="On SIGTERM: how long a Kafka consumer waits for the batch its handler is on before it leaves "
        "(keep below the orchestrator's kill timeout: Kubernetes' terminationGracePeriodSeconds, compose's "
        "stop_grace_period).",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Ingest, scoring, alerts (`tokenpulse run`): port (on HOST) of their `/healthz`, `/readyz` and "
        "`/metrics` endpoint; 0 = off. The gateway serves them on its API port.",
    )
    # ingest
    live_feed: Literal["auto", "live", "synthetic", "off"] = Field(
        "auto",
        description="Ingest: live data source; `auto` tries the exchanges and falls back to synthetic ticks when "
        "none answers within FEED_CONNECT_TIMEOUT_S (switching back to live once their trades flow again), "
        "`live` only the exchanges, `synthetic` only the generator, `off` none: ticks come only from the "
        "topic (outside producers on tokenpulse.ticks.v1).",
    )
    feed_exchanges: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["binance", "coinbase", "kraken"],
        description="Ingest: exchanges whose public trade streams feed live prices, comma separated.",
    )
    feed_pairs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Ingest: symbol mapping overrides `exchange:SYMBOL=PAIR` (comma separated; PAIR `-` drops the "
        "token there), e.g. `binance:BTC=BTCFDUSD,kraken:DOGE=-`. Default pairs: BTCUSDT, BTC-USD, BTC/USD.",
    )
    binance_ws_url: str = Field(
        "wss://stream.binance.com:9443", description="Ingest: Binance spot WebSocket base (combined streams)."
    )
    coinbase_ws_url: str = Field(
        "wss://ws-feed.exchange.coinbase.com", description="Ingest: Coinbase Exchange WebSocket feed."
    )
    kraken_ws_url: str = Field(
        "wss://ws.kraken.com/v2", description="Ingest: Kraken WebSocket (v2; a URL without `/v2` speaks v1)."
    )
    binance_rest_url: str = Field(
        "https://api.binance.com", description="Ingest: Binance spot REST base URL (gap backfill)."
    )
    coinbase_rest_url: str = Field(
        "https://api.exchange.coinbase.com", description="Ingest: Coinbase Exchange REST base URL (gap backfill)."
    )
    kraken_rest_url: str = Field("https://api.kraken.com", description="Ingest: Kraken REST base URL (gap backfill).")
    feed_connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Ingest: `auto` falls back to synthetic ticks (until an exchange answers) when no exchange "
        "connects this fast.",
    )
    feed_stall_s: float = Field(
        30.0, gt=0, description="Ingest: a feed silent this long (no trade, no heartbeat) is reconnected."
    )
    feed_backoff_s: float = Field(
        0.5, gt=0, description="Ingest: first reconnect delay; doubles per failed attempt, jittered."
    )
    feed_backoff_max_s: float = Field(30.0, gt=0, description="Ingest: longest reconnect delay.")
    synthetic_tick_s: float = Field(1.0, gt=0, description="Ingest: seconds between synthetic ticks per token.")
    synthetic_seed: int = Field(7, description="Ingest: seed of the synthetic generator.")
    backfill_on_start: bool = Field(True, description="Embedded mode: load the bundled history on a first start.")
    publish_v1: bool = Field(
        True,
        description="Ingest and scoring also publish tokenpulse.prices.v1, candles.v1 and indicators.v1 (one event "
        "per row of their v2 batch topics) for readers of the v1 topics; default true for this release, then false. "
        "Our own consumers read the v2 topics and skip these copies.",
    )
    ingest_restore_lookback_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="Ingest: at start, the open candles are rebuilt from the ticks counted before the restart, read "
        "from the start of the UTC day of (now - this): longer than any restart gap across midnight.",
    )
    # ingest: reconciliation of several sources into one reference price
    price_stale_after_s: float = Field(
        30.0, gt=0, description="Ingest: a source whose latest trade is older than this is left out of the price."
    )
    price_half_life_s: float = Field(
        10.0, gt=0, description="Ingest: freshness weight of a source halves with every this many seconds of age."
    )
    price_outlier_k: float = Field(
        3.0,
        gt=0,
        description="Ingest: a source further than K robust deviations (1.4826 x MAD) from the median is out.",
    )
    price_outlier_floor: float = Field(
        0.005, ge=0, lt=1, description="Ingest: ...but never one within this fraction of the median (0.005 = 0.5 %)."
    )
    usdt_usd_rate: float = Field(
        1.0,
        gt=0,
        description="Ingest: USD per USDT assumed for USDT-quoted trades while no fresh USDT/USD ticks are seen.",
    )
    # ingest: REST backfill of candles from the exchanges
    binance_weight_per_minute: int = Field(
        1200,
        ge=1,
        description="Ingest: request weight per minute the backfill may use at Binance (the IP limit is 6000).",
    )
    coinbase_requests_per_s: float = Field(
        5.0, gt=0, description="Ingest: Coinbase REST requests per second (public limit 10/s per IP)."
    )
    kraken_requests_per_s: float = Field(
        0.5, gt=0, description="Ingest: Kraken REST requests per second (public endpoints allow about 1/s)."
    )
    rest_max_wait_s: float = Field(
        120.0, gt=0, description="Ingest: longest Retry-After honoured; a longer ban abandons the backfill."
    )
    rest_backfill_gaps: bool = Field(
        True, description="Ingest: backfill over REST the candles of every gap a live connector reports."
    )
    rest_backfill_exchange: Literal["binance", "coinbase", "kraken"] | None = Field(
        None, description="Ingest: on start, backfill candles from the last stored one to now from this exchange."
    )
    rest_backfill_max_bars: int = Field(
        1500, ge=1, le=100_000, description="Ingest: most candles one backfill fetches per interval (oldest dropped)."
    )
    # ingest: market caps (CoinGecko-style API)
    marketcap_poll: bool = Field(False, description="Ingest: poll market caps, total market cap and BTC dominance.")
    marketcap_url: str = Field(
        "https://api.coingecko.com/api/v3", description="Ingest: CoinGecko-compatible API base URL."
    )
    marketcap_api_key: SecretStr | None = Field(
        None, description="Ingest: CoinGecko API key (demo or pro; optional, never logged)."
    )
    marketcap_poll_s: float = Field(300.0, ge=1, description="Ingest: seconds between market-cap polls.")
    marketcap_cache_ttl_s: float = Field(
        600.0, ge=0, description="Ingest: seconds a fetched market cap is reused before it is fetched again."
    )
    marketcap_calls_per_minute: int = Field(
        30, ge=1, description="Ingest: market-cap API calls per minute (CoinGecko demo plan: 30)."
    )
    marketcap_calls_per_month: int = Field(
        10_000, ge=1, description="Ingest: market-cap API calls per month (demo plan: 10,000); counted in DATA_DIR."
    )
    marketcap_ids: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Ingest: extra SYMBOL:coingecko-id pairs, comma separated (BTC:bitcoin etc. are built in).",
    )
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
    webhook_concurrency: int = Field(
        20,
        ge=1,
        le=200,
        description="Alerts: webhook requests in flight per receiving origin (scheme, host, port); the rest "
        "wait their turn (spares the receiver, and kept httpx's pool queue short: 1.6x the deliveries/s).",
    )
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
    key_cache_size: int = Field(
        10_000, ge=1, le=10_000_000, description="Gateway: known keys a replica keeps cached (least recently used go)."
    )
    key_miss_ttl_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Gateway: seconds a replica remembers that a key is unknown (kept apart from the known keys, "
        "so wrong keys cannot push them out).",
    )
    auth_failures_per_minute: int = Field(
        20,
        ge=1,
        description="Gateway: unknown or revoked keys one client address may send per minute; then 429 for keys "
        "this replica does not already know, until the minute has room again.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Gateway: addresses or CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed "
        "(comma separated; default none: the client address is the TCP peer).",
    )
    http_keepalive_s: int = Field(
        5, ge=1, le=300, description="Gateway and ops endpoints: an idle keep-alive connection is closed after this."
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Gateway and ops endpoints: a request's line and headers must arrive within this many seconds "
        "of the connection (or of the previous answer on it); the connection is closed otherwise (slowloris).",
    )
    http_body_timeout_s: float = Field(
        15.0, gt=0, le=600, description="Gateway: a request's body must arrive within this (408 after)."
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
        if isinstance(data, dict) and isinstance(data.get("marketcap_ids"), str):
            pairs = [p.split(":", 1) for p in data["marketcap_ids"].split(",") if p.strip()]
            data["marketcap_ids"] = {k.strip().upper(): v.strip() for k, v, *_ in ([*p, ""] for p in pairs)}
        if isinstance(data, dict) and isinstance(data.get("feed_exchanges"), str):
            data["feed_exchanges"] = [e.strip().lower() for e in data["feed_exchanges"].split(",") if e.strip()]
        if isinstance(data, dict) and isinstance(data.get("feed_pairs"), str):
            data["feed_pairs"] = [p.strip() for p in data["feed_pairs"].split(",") if p.strip()]
        if isinstance(data, dict) and isinstance(data.get("trusted_proxies"), str):
            data["trusted_proxies"] = [p.strip() for p in data["trusted_proxies"].split(",") if p.strip()]
        if isinstance(data, dict) and isinstance(data.get("cors_origins"), str):
            data["cors_origins"] = [o.strip() for o in data["cors_origins"].split(",") if o.strip()]
        return data

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        """Each entry an address or a network, normalised: a typo must not silently trust nobody (or everybody)."""
        try:
            return [str(ipaddress.ip_network(e, strict=False) if "/" in e else ipaddress.ip_address(e)) for e in value]
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {exc}; give IP addresses or CIDRs") from exc

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
