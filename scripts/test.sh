#!/usr/bin/env bash
# Runs the whole test suite against a real, fresh Kafka broker that this script starts and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_dir="$(mktemp -d /tmp/tokenpulse-test-kafka.XXXXXX)"
rmdir "$run_dir"  # kafka-local.sh creates and owns it
cleanup() { scripts/kafka-local.sh stop "$run_dir" --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT

scripts/kafka-local.sh fetch
bootstrap="$(scripts/kafka-local.sh start "$run_dir" | tail -n 1)"
echo "test broker: $bootstrap"
TOKENPULSE_TEST_KAFKA="$bootstrap" .venv/bin/pytest -q -p no:cacheprovider "$@"
