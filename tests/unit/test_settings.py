"""Settings in sections keep the public environment names, read each section from the environment under
overrides, keep every secret secret, and the command line loads them without touching ``os.environ``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenpulse_ingest.venues.registry import VENUES
from tokenpulse_ingest.venues.registry import venue as registry_venue
from tokenpulse_shared.settings import Settings, VenueSettings, variables
from typer.testing import CliRunner

from tokenpulse.cli import app
from tokenpulse.config import load_settings

# The public contract (README, docs/configuration.md, docker-compose.yml, deploy/, .env.example): every
# variable the settings read, as they were before the sections (and PUBLISH_V1, added with the v2 topics). A
# rename here breaks deployments.
PUBLIC_NAMES = """
ENV DATA_DIR CLICKHOUSE_URL KAFKA_BOOTSTRAP BUNDLE_DIR SYMBOLS LOG_LEVEL LOG_FORMAT OTEL_EXPORTER KAFKA_REPLICATION
KAFKA_PARTITIONS CONSUMER_GROUP_PREFIX BUS_MAX_BATCH GC_FREEZE BUS_RETRIES SHUTDOWN_GRACE_S METRICS_PORT LIVE_FEED
FEED_EXCHANGES FEED_PAIRS BINANCE_WS_URL COINBASE_WS_URL KRAKEN_WS_URL BINANCE_REST_URL COINBASE_REST_URL
KRAKEN_REST_URL FEED_CONNECT_TIMEOUT_S FEED_STALL_S FEED_BACKOFF_S FEED_BACKOFF_MAX_S SYNTHETIC_TICK_S SYNTHETIC_SEED
BACKFILL_ON_START INGEST_RESTORE_LOOKBACK_S PRICE_STALE_AFTER_S PRICE_HALF_LIFE_S PRICE_OUTLIER_K PRICE_OUTLIER_FLOOR
USDT_USD_RATE BINANCE_WEIGHT_PER_MINUTE COINBASE_REQUESTS_PER_S KRAKEN_REQUESTS_PER_S REST_MAX_WAIT_S
OKX_WS_URL OKX_REST_URL OKX_REQUESTS_PER_S BYBIT_WS_URL BYBIT_REST_URL BYBIT_REQUESTS_PER_S COINBASE_ADVANCED_WS_URL
COINBASE_ADVANCED_REST_URL COINBASE_ADVANCED_REQUESTS_PER_S CCXT_WS_URL CCXT_REST_URL CCXT_POLL_S CCXT_WATCH
REST_BACKFILL_GAPS REST_BACKFILL_EXCHANGE REST_BACKFILL_MAX_BARS MARKETCAP_POLL MARKETCAP_URL MARKETCAP_API_KEY
MARKETCAP_POLL_S MARKETCAP_CACHE_TTL_S MARKETCAP_CALLS_PER_MINUTE MARKETCAP_CALLS_PER_MONTH MARKETCAP_IDS SMTP_URL
TELEGRAM_BOT_TOKEN TELEGRAM_API_URL DISCORD_API_URL SLACK_API_URL WEBHOOK_ALLOWLIST ALERTS_SIGNING_KEY
DELIVERY_ATTEMPTS DELIVERY_BACKOFF_S WEBHOOK_CONCURRENCY ALERTS_SUMMARY_AFTER MAX_RULES_PER_KEY PREDICTIONS
PREDICTIONS_RETRAIN_HOURS HOST PORT PERSIST FREE_LIMIT_PER_MINUTE FREE_LIMIT_PER_MONTH KEY_ISSUE_PER_HOUR
KEY_CACHE_TTL_S KEY_CACHE_SIZE KEY_MISS_TTL_S AUTH_FAILURES_PER_MINUTE TRUSTED_PROXIES HTTP_KEEPALIVE_S
HTTP_HEADER_TIMEOUT_S HTTP_BODY_TIMEOUT_S HISTORY_CACHE_TTL_S ADMIN_TOKEN REDIS_URL CORS_ORIGINS MAX_BODY_BYTES
REQUEST_TIMEOUT_S STREAM_HEARTBEAT_S STREAM_BUFFER UNIVERSE UNIVERSE_TOP_N UNIVERSE_RANK_BY UNIVERSE_REFRESH_S
UNIVERSE_DISCOVERY UNIVERSE_DISCOVERY_S PUBLISH_V1
KAFKA_SESSION_TIMEOUT_S CANDLE_IDLE_CLOSE_S INGEST_CHECKPOINT_INTERVAL_S
"""
SECRETS = {"CLICKHOUSE_URL", "SMTP_URL", "TELEGRAM_BOT_TOKEN", "ALERTS_SIGNING_KEY", "ADMIN_TOKEN", "REDIS_URL"}
SECRETS |= {"MARKETCAP_API_KEY"}


def test_the_sections_read_exactly_the_public_variable_names() -> None:
    names = [v.name for v in variables()]
    assert len(names) == len(set(names))
    assert set(names) == {f"TOKENPULSE_{n}" for n in PUBLIC_NAMES.split()}


def test_each_section_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TOKENPULSE_SYMBOLS": "btc, eth",
        "TOKENPULSE_KAFKA_BOOTSTRAP": "kafka:9092",
        "TOKENPULSE_DATA_DIR": "/tmp/elsewhere",
        "TOKENPULSE_LOG_FORMAT": "json",
        "TOKENPULSE_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "TOKENPULSE_INGEST_RESTORE_LOOKBACK_S": "60",
        "TOKENPULSE_PREDICTIONS": "false",
        "TOKENPULSE_WEBHOOK_ALLOWLIST": "Relay.Internal:8080",
        "TOKENPULSE_MAX_BODY_BYTES": "2048",
        "TOKENPULSE_BINANCE_WS_URL": "ws://127.0.0.1:9/b",
        "TOKENPULSE_KRAKEN_REQUESTS_PER_S": "2",
        "TOKENPULSE_MARKETCAP_IDS": "foo:foo-coin,BAR:bar",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.runtime.symbols == ["BTC", "ETH"] and s.bus.kafka_bootstrap == "kafka:9092"
    assert s.store.data_dir == Path("/tmp/elsewhere") and s.telemetry.log_format == "json"
    assert s.http.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"] and s.ingest.ingest_restore_lookback_s == 60
    assert s.scoring.predictions is False and s.alerts.webhook_allowlist == ["relay.internal:8080"]
    assert s.gateway.max_body_bytes == 2048 and s.binance.ws_url == "ws://127.0.0.1:9/b"
    assert s.kraken.requests_per_s == 2 and s.marketcap.ids == {"FOO": "foo-coin", "BAR": "bar"}


def test_an_override_keeps_the_rest_of_its_section_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENPULSE_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("TOKENPULSE_FREE_LIMIT_PER_MINUTE", "7")
    s = Settings(gateway={"free_limit_per_minute": 5})
    assert s.gateway.free_limit_per_minute == 5  # the override wins over the environment
    assert s.gateway.max_body_bytes == 2048  # ... and the section's other fields still come from it


def test_bad_values_unknown_sections_and_unknown_venues_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings(gateway={"max_body_bytes": 10})
    with pytest.raises(ValidationError, match="gatway"):
        Settings(gatway={"max_body_bytes": 2048})  # a misspelt section is not silently ignored
    with pytest.raises(ValidationError, match="REST_BACKFILL_EXCHANGE"):
        Settings(ingest={"rest_backfill_exchange": "mtgox"})
    assert Settings(ingest={"rest_backfill_exchange": "kraken"}).ingest.rest_backfill_exchange == "kraken"


def test_every_venue_of_the_registry_has_its_settings_section_and_no_section_is_orphaned() -> None:
    sections = {name for name, section in Settings() if isinstance(section, VenueSettings)}
    assert sections == set(VENUES) | {"ccxt"}  # ccxt: the one section of every ccxt:<id> venue
    for name, venue in VENUES.items():
        assert venue.section(Settings()) is not None and venue.name == name
    settings = Settings()
    assert registry_venue("ccxt:kraken").section(settings) is settings.ccxt


def test_secrets_are_secret_str_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {v.name for v in variables() if v.secret} == {f"TOKENPULSE_{n}" for n in SECRETS}
    marker = "hunter2-very-secret"
    for name in SECRETS - {"CLICKHOUSE_URL", "REDIS_URL", "SMTP_URL"}:
        monkeypatch.setenv(f"TOKENPULSE_{name}", marker)
    monkeypatch.setenv("TOKENPULSE_CLICKHOUSE_URL", f"http://tokenpulse:{marker}@clickhouse:8123/tokenpulse")
    monkeypatch.setenv("TOKENPULSE_REDIS_URL", f"redis://:{marker}@redis:6379/0")
    monkeypatch.setenv("TOKENPULSE_SMTP_URL", f"mailtos://alerts:{marker}@smtp.example.com")
    s = Settings()
    assert marker not in repr(s) and marker not in str(s) and marker not in str(s.model_dump())
    assert s.store.where == "http://tokenpulse:***@clickhouse:8123/tokenpulse" and marker in s.store.dsn
    admin_token = s.require_admin_token()
    assert admin_token is not None and admin_token.get_secret_value() == marker
    assert s.require_signing_key() == marker
    shown = CliRunner().invoke(app, ["config"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and marker not in shown.output


def test_production_refuses_placeholder_secrets() -> None:
    production = Settings(runtime={"env": "production"}, gateway={"admin_token": "changeme"})
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        production.require_admin_token()
    with pytest.raises(ValueError, match="SIGNING_KEY"):
        production.require_signing_key()


def test_the_command_line_passes_its_options_in_without_writing_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOKENPULSE_PORT", raising=False)
    monkeypatch.setenv("TOKENPULSE_HOST", "0.0.0.0")
    s = load_settings(http={"port": 9123, "host": None}, store={"data_dir": Path("/tmp/cli-data")})
    assert s.http.port == 9123 and s.store.data_dir == Path("/tmp/cli-data")
    assert s.http.host == "0.0.0.0"  # an option not given (None) leaves the environment's value
    assert "TOKENPULSE_PORT" not in os.environ and "TOKENPULSE_DATA_DIR" not in os.environ


def test_the_configuration_tables_are_grouped_by_section() -> None:
    out = CliRunner().invoke(app, ["config", "--markdown"]).output
    headings = [line.split("`")[1] for line in out.splitlines() if line.startswith("## `")]
    assert headings == list(Settings.model_fields)
    gateway = out.split("## `gateway`")[1].split("## `")[0]
    assert "`TOKENPULSE_MAX_BODY_BYTES`" in gateway and "`TOKENPULSE_BINANCE_WS_URL`" not in gateway
