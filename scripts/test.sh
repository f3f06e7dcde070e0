#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need when it is
# missing (redis-server through apt-get, cargo-nextest through cargo), then runs the doc tests
# and every test (real redis-server processes on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server missing: installing it with apt-get"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq redis-server
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest missing: installing it"
  cargo install --locked cargo-nextest
fi
redis-server --version

cargo test --workspace --doc
cargo nextest run --workspace --no-fail-fast "$@"

# The jobs example end to end: 4 worker processes, 20 ticks, on a redis-server of its own; it
# exits non-zero unless every tick ran exactly once.
jobs_redis=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
  port=$((20000 + RANDOM % 30000))
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  jobs_redis=$!
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    kill -0 "$jobs_redis" 2>/dev/null || break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  jobs_redis=""
done
[ -n "$jobs_redis" ] || { echo "could not start a redis-server for the jobs example"; exit 1; }
trap 'kill "$jobs_redis" 2>/dev/null || true' EXIT
REDIS_URL="redis://127.0.0.1:$port" cargo run -q -p examples --example jobs
# The primitives example on the same server: it asserts what it prints (permits never
# exceeded, no reader beside a writer, no account in two transfers, no deadlock).
REDIS_URL="redis://127.0.0.1:$port" cargo run -q -p examples --example primitives
