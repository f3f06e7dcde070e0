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
