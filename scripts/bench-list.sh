#!/usr/bin/env bash
# Listing many held locks: time and peak memory of `client.list("")` and of
# `distlock list --json`, against a redis-server of its own.
#
#   scripts/bench-list.sh [COUNT]      # default 100000
#
# Builds `list-bench` (tests/src/bin/list_bench.rs) and the `distlock` binary in release mode,
# starts redis-server on a free loopback port, writes COUNT held locks, then runs each lister
# under `/usr/bin/time -v` and prints its answer, wall time and maximum resident set size.
set -euo pipefail
count="${1:-100000}"
cd "$(dirname "$0")/.."
cargo build --release --quiet -p distlock-tests --bin list-bench -p distlock-cli --bin distlock
target="${CARGO_TARGET_DIR:-target}/release"

# shellcheck source=scripts/start-redis.sh
source scripts/start-redis.sh
url="redis://127.0.0.1:$port"

"$target/list-bench" populate "$url" "$count"
echo "redis used_memory: $(redis-cli -p "$port" info memory | grep '^used_memory_human' | cut -d: -f2 | tr -d '\r')"

measure() {
  local name="$1"; shift
  /usr/bin/time -v "$@" 2>"$dir/time.txt" >"$dir/out.txt"
  echo "== $name"
  echo "   $(head -c 150 "$dir/out.txt" | head -1)"
  grep -E 'Elapsed \(wall clock\)|Maximum resident set size' "$dir/time.txt" | sed 's/^\s*/   /'
}
measure "client.list(\"\") streamed (list-bench list)" "$target/list-bench" list "$url"
measure "distlock list --json > file" "$target/distlock" --url "$url" --timeout 10s list --json
measure "distlock list (table) > file" "$target/distlock" --url "$url" --timeout 10s list
