#!/usr/bin/env bash
# Runs the whole test suite against a real, fresh Kafka broker that this script starts and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_dir="$(mktemp -d /tmp/tokenpulse-test-kafka.XXXXXX)"
rmdir "$run_dir"  # kafka-local.sh creates and owns it
redis_dir="$(mktemp -d /tmp/tokenpulse-test-redis.XXXXXX)"
cleanup() {
  scripts/kafka-local.sh stop "$run_dir" --clean >/dev/null 2>&1 || true
  if [ -f "$redis_dir/redis.pid" ]; then kill "$(cat "$redis_dir/redis.pid")" 2>/dev/null || true; fi
  sleep 0.2
  rm -rf "$redis_dir"
}
trap cleanup EXIT

# The dashboard test drives a real headless Chromium, the shared rate limit a real Redis (Debian's packages).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the dashboard and rate-limit tests"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A private Redis on a free loopback port, in a temp dir, no persistence; stopped on exit.
redis_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir" --save "" --appendonly no \
  --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
for _ in $(seq 1 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "redis-server did not start:"; cat "$redis_dir/redis.log"; exit 1; }
export TOKENPULSE_TEST_REDIS="redis://127.0.0.1:$redis_port/0"
echo "test redis: $TOKENPULSE_TEST_REDIS"

scripts/kafka-local.sh fetch
bootstrap="$(scripts/kafka-local.sh start "$run_dir" | tail -n 1)"
echo "test broker: $bootstrap"
TOKENPULSE_TEST_KAFKA="$bootstrap" .venv/bin/pytest -q -p no:cacheprovider "$@"
