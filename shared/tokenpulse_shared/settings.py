"""Settings: one section per concern, each read from its ``TOKENPULSE_*`` environment variables.

:class:`Settings` composes the sections: the common ones (``runtime``, ``bus``, ``store``,
``telemetry``, ``http``), one per service (``ingest``, ``scoring``, ``alerts``, ``gateway``) and one
per data source (``binance``, ``coinbase``, ``kraken``, ``okx``, ``bybit``, ``coinbase_advanced``, ``ccxt``,
``marketcap``). Every section is a
pydantic-settings class with an ``env_prefix``: a field's variable is the prefix plus its name in
upper case (``settings.gateway.max_body_bytes`` is ``TOKENPULSE_MAX_BODY_BYTES``,
``settings.binance.ws_url`` is ``TOKENPULSE_BINANCE_WS_URL``), so the names stay the public ones
and no alias table can drift from them. Every service reads the same object (a single process
runs them all in embedded mode). The configuration table in the docs is generated from
:func:`variables` (``tokenpulse config --markdown``).

Overrides (tests, the command line) go into the constructor by section, e.g.
``Settings(ingest={"live_feed": "off"})``: pydantic builds a section from a dict with the
section's own constructor (BaseSettings overrides ``__init__``), so the dict goes on top of the
environment and the section's other fields still come from ``TOKENPULSE_*``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1].parent
DEFAULT_BUNDLE = REPO_ROOT / "data"
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "admin"}
# Development only (refused in production): lets separately started dev processes agree on webhook signatures.
DEV_SIGNING_KEY = "tokenpulse-development-signing-key"
PREFIX = "TOKENPULSE_"


def _csv(normalise: Callable[[str], str]) -> BeforeValidator:
    """A comma-separated environment value as a list (a list given in code passes unchanged)."""
    return BeforeValidator(
        lambda v: [normalise(p.strip()) for p in v.split(",") if p.strip()] if isinstance(v, str) else v
    )


def _pairs(value: object) -> object:
    """``A:x,B:y`` as ``{"A": "x", "B": "y"}`` (keys upper case)."""
    if not isinstance(value, str):
        return value
    items = [p.split(":", 1) for p in value.split(",") if p.strip()]
    return {k.strip().upper(): v.strip() for k, v, *_ in ([*p, ""] for p in items)}


UpperList = Annotated[list[str], NoDecode, _csv(str.upper)]
LowerList = Annotated[list[str], NoDecode, _csv(str.lower)]
TextList = Annotated[list[str], NoDecode, _csv(str)]


class Section(BaseSettings):
    """A group of settings; each field is read from ``env_prefix`` + its name, upper case."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=None, extra="ignore", validate_default=True)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


# --------------------------------------------------------------------------------------------- common


class RuntimeSettings(Section):
    """What the process runs on: environment, tokens, bundled history, lifecycle."""

    env: Literal["development", "test", "production"] = Field(
        "development", description="Deployment environment; placeholder secrets are refused in production."
    )
    symbols: UpperList = Field(
        default_factory=lambda: ["BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "LTC"],
        description="Tracked tokens, comma separated (the short form of a universe; UNIVERSE, when set, wins).",
    )
    universe: Path | None = Field(
        None,
        description="Universe file: CSV `symbol,name[,venue...]` (one column per venue, its pair there; blank = "
        "not listed), file order = rank; e.g. `data/universe/top1000.csv`. Ingest re-reads it while running.",
    )
    universe_top_n: int = Field(
        0, ge=0, le=100_000, description="Track only the first N tokens of the universe (by UNIVERSE_RANK_BY); 0 = all."
    )
    universe_rank_by: Literal["rank", "quote_volume", "market_cap"] = Field(
        "rank",
        description="What UNIVERSE_TOP_N ranks by: `rank` (file order), `quote_volume` (24 h dollar volume summed "
        "over the feed exchanges' tickers) or `market_cap` (CoinGecko `/coins/markets` at MARKETCAP_URL); "
        "re-read every UNIVERSE_DISCOVERY_S, by rank until figures arrive, the last figures while unreachable.",
    )
    bundle_dir: Path = Field(DEFAULT_BUNDLE, description="Folder of the bundled real market history.")
    backfill_on_start: bool = Field(True, description="Embedded mode: load the bundled history on a first start.")
    gc_freeze: bool = Field(
        True,
        description="Once start-up state is loaded (alert rules, scoring warm-up, bundled history), exclude it "
        "from the garbage collector's full passes (gc.freeze): over 100,000 alert rules each full pass paused "
        "the process 0.4-0.8 s.",
    )
    shutdown_grace_s: float = Field(
        25.0,
        gt=0,
        le=600,
        description="On SIGTERM: how long a Kafka consumer waits for the batch its handler is on before it leaves "
        "(keep below the orchestrator's kill timeout: Kubernetes' terminationGracePeriodSeconds, compose's "
        "stop_grace_period).",
    )


class BusSettings(Section):
    """The event bus: Kafka in distributed mode, and what both bus adapters share."""

    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers (`host:port,...`). Required by `tokenpulse run`."
    )
    kafka_replication: int = Field(1, ge=1, le=5, description="Replication factor of the topics Tokenpulse creates.")
    kafka_partitions: int = Field(
        6,
        ge=1,
        le=1000,
        description="Partitions of the topics Tokenpulse creates: the most replicas of one service that share a "
        "topic's work (existing topics keep theirs; see Operate it).",
    )
    consumer_group_prefix: str = Field("tokenpulse", description="Kafka consumer groups are PREFIX-SERVICE.")
    kafka_session_timeout_s: float = Field(
        10.0,
        ge=1.0,
        le=300.0,
        description="How long a consumer may go silent before its group gives its partitions to the other "
        "replicas: the takeover time after a kill -9 (the broker's group.min.session.timeout.ms, 6 s by "
        "default, is the floor).",
    )
    bus_max_batch: int = Field(
        5000,
        ge=1,
        le=20000,
        description="Largest batch handed to one handler call (Kafka commits once per batch: small batches cap "
        "a consumer at ~11k events/s here, 5,000 reach ~35k).",
    )
    bus_retries: int = Field(3, ge=0, le=20, description="Handler attempts before an event is dead-lettered.")
    publish_v1: bool = Field(
        True,
        description="Ingest and scoring also publish tokenpulse.prices.v1, candles.v1 and indicators.v1 (one event "
        "per row of their v2 batch topics, same ids) for readers of the v1 topics; true for this release, then "
        "false. Our own consumers read the v2 topics and skip these copies.",
    )

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ValueError(
                "TOKENPULSE_KAFKA_BOOTSTRAP is not set: point it at your Kafka brokers "
                "(for a local broker run `scripts/kafka-local.sh start`)"
            )
        return self.kafka_bootstrap


class StoreSettings(Section):
    """The ClickHouse store: a server in distributed mode, the embedded engine (chDB) otherwise."""

    data_dir: Path = Field(
        Path(".tokenpulse"), description="Embedded mode: where the embedded ClickHouse engine keeps its data."
    )
    clickhouse_url: SecretStr | None = Field(
        None,
        description="ClickHouse DSN: `http://user:pass@host:8123/db` (distributed) or `chdb:///abs/path`. "
        "Default: chDB under DATA_DIR/clickhouse. Secret (it may carry a password): never logged.",
    )

    @property
    def dsn(self) -> str:
        """The DSN to connect with (it may hold a password: show :attr:`where` instead)."""
        if self.clickhouse_url is not None and self.clickhouse_url.get_secret_value():
            return self.clickhouse_url.get_secret_value()
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def where(self) -> str:
        """The DSN without its password, for messages."""
        return redact_url(self.dsn)

    @property
    def server_url(self) -> str | None:
        """The configured ClickHouse server (other processes can read it too); None for the embedded engine."""
        dsn = self.dsn
        return None if dsn.startswith("chdb:") else dsn


class TelemetrySettings(Section):
    """Logs and traces (metrics are Prometheus', on the HTTP servers)."""

    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field("console", description="Log output format.")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Trace exporter; `otlp` uses the standard OTEL_EXPORTER_OTLP_ENDPOINT variable.",
    )


class HttpSettings(Section):
    """The HTTP servers: the gateway's API, and the other services' operations endpoint."""

    host: str = Field("127.0.0.1", description="Bind address of the gateway and of the operations endpoints.")
    port: int = Field(8000, ge=0, le=65535, description="Gateway: port.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Ingest, scoring, alerts (`tokenpulse run`): port (on HOST) of their `/healthz`, `/readyz` and "
        "`/metrics` endpoint; 0 = off. The gateway serves them on its API port.",
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
    trusted_proxies: TextList = Field(
        default_factory=list,
        description="Addresses or CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed "
        "(comma separated; default none: the client address is the TCP peer).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        """Each entry an address or a network, normalised: a typo must not silently trust nobody (or everybody)."""
        try:
            return [str(ipaddress.ip_network(e, strict=False) if "/" in e else ipaddress.ip_address(e)) for e in value]
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {exc}; give IP addresses or CIDRs") from exc


# --------------------------------------------------------------------------------------------- services


class IngestSettings(Section):
    """The ingest service: live feed, candles, reference price, REST backfill."""

    live_feed: Literal["auto", "live", "synthetic", "off"] = Field(
        "auto",
        description="Live data source; `auto` tries the exchanges and falls back to synthetic ticks when "
        "none answers within FEED_CONNECT_TIMEOUT_S (switching back to live once their trades flow again), "
        "`live` only the exchanges, `synthetic` only the generator, `off` none (ticks only from the topic).",
    )
    feed_exchanges: LowerList = Field(
        default_factory=lambda: ["binance", "coinbase", "kraken"],
        description="Exchanges whose public trade streams feed live prices, comma separated: binance, coinbase, "
        "kraken, okx, bybit, coinbase_advanced, or `ccxt:<id>` for any exchange ccxt knows (e.g. `ccxt:gate`).",
    )
    feed_pairs: TextList = Field(
        default_factory=list,
        description="Symbol mapping overrides `exchange:SYMBOL=PAIR` (comma separated; PAIR `-` drops the "
        "token there), e.g. `binance:BTC=BTCFDUSD,kraken:DOGE=-,ccxt:gate:BTC=BTC/USDC`. Default pairs: BTCUSDT "
        "(binance, bybit), BTC-USD (coinbase, coinbase_advanced), BTC/USD (kraken), BTC-USDT (okx), BTC/USDT (ccxt).",
    )
    feed_connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="`auto` falls back to synthetic ticks (until an exchange answers) when no exchange "
        "connects this fast.",
    )
    feed_stall_s: float = Field(
        30.0, gt=0, description="A feed silent this long (no trade, no heartbeat) is reconnected."
    )
    feed_backoff_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles per failed attempt, jittered.")
    feed_backoff_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    universe_refresh_s: float = Field(
        30.0,
        ge=0,
        description="Seconds between two reads of the universe file: a token added is followed, one removed "
        "stops, without a restart; 0 = read once at start.",
    )
    universe_discovery: bool = Field(
        True,
        description="While the live feed may use the exchanges (LIVE_FEED auto or live), check the universe's pairs "
        "against each feed exchange's listing endpoint (Binance exchangeInfo, Coinbase products, Kraken "
        "AssetPairs, OKX instruments, Bybit instruments-info, Coinbase Advanced products, ccxt load_markets): "
        "delisted pairs dropped, listed ones added; an exchange that does not answer, or not in its documented "
        "shape, keeps its previous pairs.",
    )
    universe_discovery_s: float = Field(
        3600.0,
        ge=1,
        description="Seconds between two reads of the exchanges' listing endpoints (and of the figures "
        "UNIVERSE_RANK_BY ranks by).",
    )
    synthetic_tick_s: float = Field(1.0, gt=0, description="Seconds between synthetic ticks per token.")
    synthetic_seed: int = Field(7, description="Seed of the synthetic generator.")
    candle_idle_close_s: float = Field(
        5.0,
        gt=0,
        description="A token without a trade for this many seconds (wall time) has its candles that ended closed "
        "and published; trades that come later correct them (a higher version).",
    )
    ingest_restore_lookback_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="At start, the open candles are rebuilt from the ticks counted before the restart, read "
        "from the start of the UTC day of (now - this): longer than any restart gap across midnight.",
    )
    ingest_checkpoint_interval_s: float = Field(
        60.0,
        ge=0,
        description="Kafka: how often each replica writes a checkpoint of its ticks partitions' open candles "
        "(topic tokenpulse.ingest-checkpoints.v1), so a restart or takeover replays only the ticks after it; 0 = "
        "none (every restore replays the day).",
    )
    price_stale_after_s: float = Field(
        30.0, gt=0, description="A source whose latest trade is older than this is left out of the price."
    )
    price_half_life_s: float = Field(
        10.0, gt=0, description="Freshness weight of a source halves with every this many seconds of age."
    )
    price_outlier_k: float = Field(
        3.0,
        gt=0,
        description="A source further than K robust deviations (1.4826 x MAD) from the median is out.",
    )
    price_outlier_floor: float = Field(
        0.005, ge=0, lt=1, description="...but never one within this fraction of the median (0.005 = 0.5 %)."
    )
    usdt_usd_rate: float = Field(
        1.0,
        gt=0,
        description="USD per USDT assumed for USDT-quoted trades while no fresh USDT/USD ticks are seen.",
    )
    rest_max_wait_s: float = Field(
        120.0, gt=0, description="Longest Retry-After honoured; a longer ban abandons the backfill."
    )
    rest_backfill_gaps: bool = Field(
        True, description="Backfill over REST the candles of every gap a live connector reports."
    )
    rest_backfill_exchange: str | None = Field(
        None, description="On start, backfill candles from the last stored one to now from this exchange."
    )
    rest_backfill_max_bars: int = Field(
        1500, ge=1, le=100_000, description="Most candles one backfill fetches per interval (oldest dropped)."
    )


class ScoringSettings(Section):
    """The scoring service: indicators, grades, signals, predictions."""

    predictions: bool = Field(
        True,
        description="Price predictions (models in DATA_DIR/models/predictions, inference on the daily close).",
    )
    predictions_retrain_hours: float = Field(
        24.0, gt=0, description="Hours between two retrains of the prediction models."
    )


class AlertsSettings(Section):
    """The alerts service: channels, webhook signing and delivery."""

    smtp_url: SecretStr | None = Field(
        None,
        description="Outgoing mail server as an apprise URL, e.g. "
        "`mailtos://user:pass@smtp.example.com?from=alerts@example.com` (e-mail channel off when unset). Secret.",
    )
    telegram_bot_token: SecretStr | None = Field(None, description="Telegram bot token (telegram channel). Secret.")
    telegram_api_url: str = Field("https://api.telegram.org", description="Telegram Bot API base URL.")
    discord_api_url: str = Field(
        "https://discord.com/api/webhooks", description="Base URL that Discord webhook ids are posted to."
    )
    slack_api_url: str = Field(
        "https://hooks.slack.com/services", description="Base URL that Slack webhook tokens are posted to."
    )
    webhook_allowlist: LowerList = Field(
        default_factory=list,
        description="Hosts, host:port or CIDRs that webhooks may reach although private/loopback "
        "(comma separated; e.g. an in-cluster relay).",
    )
    alerts_signing_key: SecretStr | None = Field(
        None,
        description="Secret that webhook signing keys are derived from (alerts and gateway; required in "
        "production; a fixed development key otherwise).",
    )
    delivery_attempts: int = Field(4, ge=1, le=20, description="Attempts per delivery before it is failed.")
    delivery_backoff_s: float = Field(1.0, gt=0, le=300, description="First retry delay; doubles per attempt.")
    webhook_concurrency: int = Field(
        20,
        ge=1,
        le=200,
        description="Webhook requests in flight per receiving origin (scheme, host, port); the rest "
        "wait their turn (spares the receiver, and kept httpx's pool queue short: 1.6x the deliveries/s).",
    )
    alerts_summary_after: int = Field(
        5, ge=2, le=1000, description="More firings than this for one target at once → one summary message."
    )


class GatewaySettings(Section):
    """The gateway: the REST API, its keys and limits, the store writer."""

    persist: bool = Field(
        True,
        description="Run the store writer (consumer group PREFIX-writer) that persists topics to ClickHouse.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Admin token for /v1/admin (required in production; admin API off when unset). Secret."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis for request limits shared by all replicas (`redis://host:6379/0`); "
        "unset = in process memory. Secret (it may carry a password).",
    )
    free_limit_per_minute: int = Field(60, ge=1, description="Free-tier requests per minute.")
    free_limit_per_month: int = Field(10000, ge=1, description="Free-tier requests per 30 days.")
    key_issue_per_hour: int = Field(10, ge=1, description="Free keys one client IP may create per hour.")
    max_rules_per_key: int = Field(
        10, ge=1, description="Alert rules one free key may own (pro 100, enterprise 10,000)."
    )
    key_cache_ttl_s: float = Field(
        30.0, ge=0, description="Seconds a replica trusts a key lookup (a revocation elsewhere waits this)."
    )
    key_cache_size: int = Field(
        10_000, ge=1, le=10_000_000, description="Known keys a replica keeps cached (least recently used go)."
    )
    key_miss_ttl_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Seconds a replica remembers that a key is unknown (kept apart from the known keys, "
        "so wrong keys cannot push them out).",
    )
    auth_failures_per_minute: int = Field(
        20,
        ge=1,
        description="Unknown or revoked keys one client address may send per minute; then 429 for keys "
        "this replica does not already know, until the minute has room again.",
    )
    http_body_timeout_s: float = Field(
        15.0, gt=0, le=600, description="A request's body must arrive within this (408 after)."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body accepted (413 above).")
    request_timeout_s: float = Field(30.0, gt=0, description="Time limit of one API request (504 after).")
    cors_origins: TextList = Field(
        default_factory=list, description="Browser origins allowed by CORS, comma separated (default none)."
    )
    history_cache_ttl_s: float = Field(
        10.0,
        ge=0,
        description="Seconds a replica reuses a candles or indicators page (dropped on a new candle); 0: off.",
    )
    stream_heartbeat_s: float = Field(15.0, gt=0, description="Seconds between /v1/stream heartbeats.")
    stream_buffer: int = Field(
        2000, ge=10, le=1_000_000, description="Recent stream events kept for Last-Event-ID resumption."
    )


# --------------------------------------------------------------------------------------------- data sources


class VenueSettings(Section):
    """What every exchange has: a WebSocket stream for live trades and a REST API for candles."""

    ws_url: str
    rest_url: str


class BinanceSettings(VenueSettings):
    """Binance spot: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}BINANCE_")

    ws_url: str = Field("wss://stream.binance.com:9443", description="WebSocket base (combined streams).")
    rest_url: str = Field("https://api.binance.com", description="REST base URL (gap backfill).")
    weight_per_minute: int = Field(
        1200, ge=1, description="Request weight per minute the backfill may use (the IP limit is 6000)."
    )


class CoinbaseSettings(VenueSettings):
    """Coinbase Exchange: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}COINBASE_")

    ws_url: str = Field("wss://ws-feed.exchange.coinbase.com", description="WebSocket feed.")
    rest_url: str = Field("https://api.exchange.coinbase.com", description="REST base URL (gap backfill).")
    requests_per_s: float = Field(5.0, gt=0, description="REST requests per second (public limit 10/s per IP).")


class KrakenSettings(VenueSettings):
    """Kraken spot: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}KRAKEN_")

    ws_url: str = Field("wss://ws.kraken.com/v2", description="WebSocket (v2; a URL without `/v2` speaks v1).")
    rest_url: str = Field("https://api.kraken.com", description="REST base URL (gap backfill).")
    requests_per_s: float = Field(0.5, gt=0, description="REST requests per second (public endpoints allow about 1/s).")


class OkxSettings(VenueSettings):
    """OKX spot: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}OKX_")

    ws_url: str = Field("wss://ws.okx.com:8443/ws/v5/public", description="WebSocket (v5 public channels).")
    rest_url: str = Field("https://www.okx.com", description="REST base URL (gap backfill).")
    requests_per_s: float = Field(
        5.0, gt=0, description="REST requests per second (history-candles allows 20 per 2 s per IP)."
    )


class BybitSettings(VenueSettings):
    """Bybit spot: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}BYBIT_")

    ws_url: str = Field("wss://stream.bybit.com/v5/public/spot", description="WebSocket (v5 public, spot).")
    rest_url: str = Field("https://api.bybit.com", description="REST base URL (gap backfill).")
    requests_per_s: float = Field(5.0, gt=0, description="REST requests per second (the IP limit is 600 per 5 s).")


class CoinbaseAdvancedSettings(VenueSettings):
    """Coinbase Advanced Trade: live trades and candle history (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}COINBASE_ADVANCED_")

    ws_url: str = Field("wss://advanced-trade-ws.coinbase.com", description="WebSocket (public market data).")
    rest_url: str = Field(
        "https://api.coinbase.com/api/v3/brokerage", description="REST base URL (public market endpoints)."
    )
    requests_per_s: float = Field(5.0, gt=0, description="REST requests per second (public limit 10/s per IP).")


class CcxtSettings(VenueSettings):
    """Any exchange ccxt knows (``ccxt:<id>`` in TOKENPULSE_FEED_EXCHANGES): history and live trades (ingest)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}CCXT_")

    ws_url: str = Field(
        "", description="Replaces every ccxt.pro WebSocket URL of the exchange (a mirror); empty: ccxt's."
    )
    rest_url: str = Field("", description="Replaces every ccxt REST API URL of the exchange (a mirror); empty: ccxt's.")
    poll_s: float = Field(
        2.0, gt=0, description="Seconds between `fetch_trades` polls, for exchanges without `watch_trades`."
    )
    watch: bool = Field(True, description="Use ccxt.pro `watch_trades` where the exchange has it; false: poll.")


class MarketCapSettings(Section):
    """Market caps from a CoinGecko-compatible API (ingest): per token, total market, BTC dominance."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}MARKETCAP_")

    poll: bool = Field(False, description="Poll market caps, total market cap and BTC dominance.")
    url: str = Field("https://api.coingecko.com/api/v3", description="CoinGecko-compatible API base URL.")
    api_key: SecretStr | None = Field(None, description="CoinGecko API key (demo or pro; optional). Secret.")
    poll_s: float = Field(300.0, ge=1, description="Seconds between market-cap polls.")
    cache_ttl_s: float = Field(
        600.0, ge=0, description="Seconds a fetched market cap is reused before it is fetched again."
    )
    calls_per_minute: int = Field(30, ge=1, description="API calls per minute (CoinGecko demo plan: 30).")
    calls_per_month: int = Field(
        10_000, ge=1, description="API calls per month (demo plan: 10,000); counted in DATA_DIR."
    )
    ids: Annotated[dict[str, str], NoDecode, BeforeValidator(_pairs)] = Field(
        default_factory=dict,
        description="Extra SYMBOL:coingecko-id pairs, comma separated (BTC:bitcoin etc. are built in).",
    )


# --------------------------------------------------------------------------------------------- all of them


class Settings(BaseModel):
    """Runtime configuration of every Tokenpulse service, one section per concern."""

    model_config = ConfigDict(extra="forbid")  # a misspelt section must fail, not be ignored

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    binance: BinanceSettings = Field(default_factory=BinanceSettings)
    coinbase: CoinbaseSettings = Field(default_factory=CoinbaseSettings)
    kraken: KrakenSettings = Field(default_factory=KrakenSettings)
    okx: OkxSettings = Field(default_factory=OkxSettings)
    bybit: BybitSettings = Field(default_factory=BybitSettings)
    coinbase_advanced: CoinbaseAdvancedSettings = Field(default_factory=CoinbaseAdvancedSettings)
    ccxt: CcxtSettings = Field(default_factory=CcxtSettings)
    marketcap: MarketCapSettings = Field(default_factory=MarketCapSettings)

    @model_validator(mode="after")
    def _backfill_from_a_known_venue(self) -> Settings:
        name = self.ingest.rest_backfill_exchange
        venues = [n for n, section in self if isinstance(section, VenueSettings) and n != "ccxt"]
        if name is not None and name not in venues and not name.startswith("ccxt:"):
            raise ValueError(
                f"TOKENPULSE_REST_BACKFILL_EXCHANGE={name!r}: choose one of {', '.join(venues)} or ccxt:<id>"
            )
        return self

    def require_admin_token(self) -> SecretStr | None:
        """The gateway's admin token, still secret (None when unset or empty); in production a real one is required."""
        token = self.gateway.admin_token
        value = token.get_secret_value() if token else ""
        if self.runtime.env == "production" and value.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("TOKENPULSE_ADMIN_TOKEN must be set to a real secret in production")
        return token if value else None

    def require_signing_key(self) -> str:
        """The secret webhook signing keys derive from; refused at a placeholder in production."""
        key = self.alerts.alerts_signing_key.get_secret_value() if self.alerts.alerts_signing_key else ""
        if self.runtime.env == "production" and key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("TOKENPULSE_ALERTS_SIGNING_KEY must be set to a real secret in production")
        return key or DEV_SIGNING_KEY


@dataclass(frozen=True)
class Variable:
    """One setting as an operator sees it: its environment variable, default and meaning."""

    section: str
    name: str
    default: object
    description: str
    secret: bool


def variables() -> Iterator[Variable]:
    """Every setting, section by section, in declaration order (the docs' configuration table)."""
    for section_name, section in Settings.model_fields.items():
        cls = section.annotation
        assert isinstance(cls, type) and issubclass(cls, Section)
        prefix = str(cls.model_config.get("env_prefix", PREFIX))
        for field_name, field in cls.model_fields.items():
            yield Variable(
                section=section_name,
                name=f"{prefix}{field_name}".upper(),
                default=field.get_default(call_default_factory=True),
                description=field.description or "",
                secret=SecretStr in (field.annotation, *get_args(field.annotation)),
            )
