#!/usr/bin/env bash
# Where a cross-process hand-over's time goes (W3 of `cargo bench --bench versus`), as Redis
# sees it: 4 `contend-worker` processes × 4 tasks take one key with a 1 ms critical section
# for SECONDS while `redis-cli MONITOR` records every command with its server time.
#
#   scripts/w3-timeline.sh [SECONDS]      # default 2
#
# Prints, from the recording: how long after a release (that reserved the lock for the next
# queued client and published its notice) that client's acquire reached the server (p10, p50,
# p90); and how many acquires per hand-over came from clients the lock was not reserved for.
# MONITOR itself slows the server down a little, so the absolute figures are upper bounds.
set -euo pipefail
seconds="${1:-2}"
cd "$(dirname "$0")/.."
cargo build --release --quiet -p distlock-tests --bin contend-worker
target="${CARGO_TARGET_DIR:-target}/release"

# shellcheck source=scripts/start-redis.sh
source scripts/start-redis.sh

timeout "$((seconds + 3))" redis-cli -p "$port" monitor >"$dir/monitor.txt" || true &
start=$(($(date +%s%3N) + 1000))
for _ in 1 2 3 4; do
  "$target/contend-worker" distlock "redis://127.0.0.1:$port" w3 4 "$start" "$seconds" >/dev/null &
done
wait

python3 - "$dir/monitor.txt" <<'EOF'
import re, sys
line = re.compile(r'(\d+\.\d+) \[0 ([^\]]+)\] "(\w+)"(.*)')
calls = []  # (time, connection, "A" or "R") for the batch calls on the contended key
for text in open(sys.argv[1], errors="replace"):
    m = line.match(text)
    if not m or m.group(3) not in ("EVALSHA", "EVAL") or '"distlock:w3"' not in m.group(4):
        continue
    args = re.findall(r'"([^"]*)"', m.group(4))
    ops = [a for a in args[args.index("distlock:w3") + 4:] if a in ("A", "R")]
    calls.append((float(m.group(1)), m.group(2), ops[0] if ops else "?"))
after, stray, releases = [], 0, 0
for i, (t, conn, op) in enumerate(calls):
    if op != "R":
        continue
    releases += 1
    for t2, conn2, op2 in calls[i + 1:]:
        if op2 == "R":
            break
        if conn2 == conn:
            stray += 1  # the releasing process's next task, turned away (reserved)
        elif not after or after[-1][0] != t:
            after.append((t, (t2 - t) * 1e6))
gaps = sorted(g for _, g in after)
if not gaps:
    sys.exit("no hand-overs recorded")
q = lambda p: gaps[min(len(gaps) - 1, int(p * len(gaps)))]
print(f"{releases} releases, {len(gaps)} hand-overs to another process")
print(f"release -> next client's acquire at the server: p10 {q(0.1):.0f} µs, p50 {q(0.5):.0f} µs, p90 {q(0.9):.0f} µs")
print(f"acquires from the releasing process right after its release (turned away): {stray / releases:.2f} per release")
EOF
