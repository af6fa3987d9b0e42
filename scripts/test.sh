#!/usr/bin/env bash
# Runs the whole test suite against a real, fresh Kafka broker that this script starts and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_dir="$(mktemp -d /tmp/tokenpulse-test-kafka.XXXXXX)"
rmdir "$run_dir"  # kafka-local.sh creates and owns it
cleanup() { scripts/kafka-local.sh stop "$run_dir" --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The dashboard test drives a real headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium (Debian package) for the dashboard test"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

scripts/kafka-local.sh fetch
bootstrap="$(scripts/kafka-local.sh start "$run_dir" | tail -n 1)"
echo "test broker: $bootstrap"
TOKENPULSE_TEST_KAFKA="$bootstrap" .venv/bin/pytest -q -p no:cacheprovider "$@"
