#!/usr/bin/env bash
# Redis' own time per acquire + release pair in the batch script, the cost the server pays
# for each lock under load (W2 of `cargo bench --bench versus`), without any client in the way.
#
#   scripts/bench-batch-script.sh [PAIRS_PER_CALL]     # default 8
#
# Starts redis-server on a free loopback port, loads the batch script exactly as the client
# builds it (acquire.lua and release.lua as functions, then batch.lua), and has
# redis-benchmark send one call of PAIRS_PER_CALL pairs (each an acquire then a release of its
# own key, so every acquire after the first call finds the last release's tombstone: the
# re-acquire path) 20 000 times from 4 connections, pipelined by 4. Prints the server time
# per pair from `INFO commandstats` (the script call's time, with the commands it runs).
set -euo pipefail
pairs="${1:-8}"
cd "$(dirname "$0")/.."
scripts=lock-runtime/src/backend/scripts

# shellcheck source=scripts/start-redis.sh
source scripts/start-redis.sh

{
  printf 'local function acquire(KEYS, ARGV)\n'
  cat "$scripts/acquire.lua"
  printf '\nend\nlocal function release(KEYS, ARGV)\n'
  cat "$scripts/release.lua"
  printf '\nend\n'
  cat "$scripts/batch.lua"
} >"$dir/batch.lua"
sha="$(redis-cli -p "$port" script load "$(cat "$dir/batch.lua")")"

# batch.lua's layout: the shared release arguments, then per operation its own.
owner="bench-host.example/12345/1732000000000"
keys=()
args=(10000 250 PUBLISH)
for i in $(seq "$pairs"); do
  token="$(printf '%032x' $((i * 7919)))"
  keys+=("bench:$i" "bench:$i")
  args+=(A "$token" 30000 "$owner" "" R "$token")
done
redis-benchmark -p "$port" -q -n 20000 -c 4 -P 4 \
  evalsha "$sha" "${#keys[@]}" "${keys[@]}" "${args[@]}" >/dev/null
redis-cli -p "$port" info commandstats | grep '^cmdstat_evalsha:' |
  sed -E 's/.*calls=([0-9]+),usec=([0-9]+).*/\1 \2/' |
  awk -v pairs="$pairs" '{ printf "server time per acquire + release pair: %.2f µs (%d pairs per call)\n", $2 / $1 / pairs, pairs }'
echo "last value of bench:1 (a tombstone): $(redis-cli -p "$port" get bench:1)"
