//! One client holding many locks, and what that costs everyone else:
//! `cargo bench -p distlock-tests --bench scale` (`SCALE_LOCKS` locks, default 100 000;
//! `SCALE_LEASE` in seconds, default 6; `SCALE_SECONDS` per phase, default 12).
//!
//! Prints another client's acquire + release latency (p50, p99, max; in a process of its
//! own, as another application would be) with nothing held and while the many locks are held
//! and renewed, the holder's CPU while it only renews, the longest commands in Redis' slow
//! log (over 1 ms), and whether every lease was kept.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distlock::LockClient;
use distlock_tests::{RedisServer, latency_histogram};
use futures_util::StreamExt;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Another client, in a process of its own, takes and lets go of its own key every 2 ms for
/// `phase`: p50, p99 and max of the pairs, in µs.
async fn other_client(server: &RedisServer, phase: Duration) -> (f64, f64, f64) {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 500;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_contend-worker"))
        .args([
            "probe",
            &server.url(),
            "scale:other",
            "1",
            &start.to_string(),
            &phase.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("contend-worker");
    assert!(out.status.success(), "the probe failed");
    let mut h = latency_histogram();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for ns in stdout
        .lines()
        .filter_map(|l| l.strip_prefix("waits "))
        .flat_map(|l| l.split(' '))
        .filter_map(|v| v.parse::<u64>().ok())
    {
        h.record(ns).unwrap();
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3,
    )
}

#[tokio::main]
async fn main() {
    let locks: usize = env_or("SCALE_LOCKS", 100_000);
    let phase = Duration::from_secs(env_or("SCALE_SECONDS", 12));
    let lease = Duration::from_secs(env_or("SCALE_LEASE", 6));
    let server = RedisServer::start();
    let holder = LockClient::builder()
        .url(server.url())
        .default_ttl(lease)
        .build()
        .await
        .unwrap();
    println!("scale: {locks} locks held by one client, lease {lease:?}, phases of {phase:?}");

    let (p50, p99, max) = other_client(&server, phase).await;
    println!(
        "other client, nothing held:       acquire+release p50 {p50:.0} µs  p99 {p99:.0} µs  max {max:.0} µs"
    );

    let started = Instant::now();
    let guards: Vec<_> = futures_util::stream::iter(0..locks)
        .map(|i| {
            let holder = holder.clone();
            async move { holder.lock(format!("scale:{i}")).await.unwrap() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    println!(
        "took {locks} locks in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    server.cmd::<()>(&["CONFIG", "SET", "slowlog-log-slower-than", "1000"]);
    server.cmd::<()>(&["SLOWLOG", "RESET"]);
    let cpu = process_cpu();
    let idle_from = Instant::now();
    tokio::time::sleep(phase).await;
    let renew_cpu = (process_cpu() - cpu) / idle_from.elapsed().as_secs_f64();
    println!(
        "holder renewing only:             {:.1}% of a core",
        100.0 * renew_cpu
    );

    let (p50, p99, max) = other_client(&server, phase).await;
    println!(
        "other client, {locks} held:  acquire+release p50 {p50:.0} µs  p99 {p99:.0} µs  max {max:.0} µs"
    );

    let slow: Vec<redis::Value> = server.cmd(&["SLOWLOG", "GET", "1000"]);
    let durations: Vec<i64> = slow
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => fields
                .get(2)
                .and_then(|d| redis::from_redis_value_ref::<i64>(d).ok()),
            _ => None,
        })
        .collect();
    println!(
        "slow log (> 1 ms) while holding:  {} commands, longest {:.2} ms",
        durations.len(),
        durations.iter().copied().max().unwrap_or(0) as f64 / 1e3
    );

    let kept = guards.iter().filter(|g| g.is_held()).count();
    println!("leases kept:                      {kept} of {locks}");
    for guard in guards {
        let _ = guard.release().await;
    }
}
