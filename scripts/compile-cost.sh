#!/usr/bin/env bash
# Compile-time cost of #[distributed_lock]: builds a throwaway crate with 50 annotated async
# fns, then the same 50 fns taking the lock by hand, and prints the incremental build times
# (dependencies built beforehand). The crate is generated under target/, never committed.
#
#   scripts/compile-cost.sh [N]     # N fns, default 50
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-50}"
dir="$root/target/compile-cost"
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "compile-cost"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
distlock = { path = "$root/lock-runtime" }
TOML

generate() { # $1 = macro|hand
  {
    echo 'use distlock::{LockClient, LockError};'
    echo 'pub struct Order { pub id: u64, pub tenant: String }'
    for i in $(seq 1 "$n"); do
      if [ "$1" = macro ]; then
        echo "#[distlock::distributed_lock(key = \"order:{order.tenant}:{order.id}:$i\", client = locks, ttl = \"10s\", wait = \"1s\")]"
        echo "pub async fn job_$i(locks: &LockClient, order: &Order) -> Result<u64, LockError> { Ok(order.id + $i) }"
      else
        echo "pub async fn job_$i(locks: &LockClient, order: &Order) -> Result<u64, LockError> {"
        echo "    let guard = locks.lock(format!(\"order:{}:{}:$i\", order.tenant, order.id))"
        echo "        .ttl(std::time::Duration::from_secs(10)).wait(std::time::Duration::from_secs(1)).await?;"
        echo "    let out = order.id + $i;"
        echo "    guard.release().await?;"
        echo "    Ok(out)"
        echo "}"
      fi
    done
  } > "$dir/src/lib.rs"
}

cd "$dir"
generate macro
cargo build --quiet 2>/dev/null || cargo build   # dependencies (and distlock-macros), once
for variant in hand macro hand macro; do
  generate "$variant"
  start=$(date +%s%N)
  cargo build --quiet
  end=$(date +%s%N)
  printf '%-6s %3d fns: %d ms\n' "$variant" "$n" $(( (end - start) / 1000000 ))
done
