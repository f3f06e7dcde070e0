//! The cost of `#[distributed_lock]` over the same lock taken by hand:
//! `cargo bench -p distlock-tests --bench macro_overhead`.
//!
//! Runs 20 000 sequential calls of each, on a redis-server it starts and in-process (where the
//! network does not hide the CPU cost), and prints p50/p99 per call.

use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, distributed_lock};
use distlock_tests::{RedisServer, latency_histogram};
use hdrhistogram::Histogram;

#[distributed_lock(key = "bench:{id}", client = locks, ttl = "30s")]
async fn guarded(locks: &LockClient, id: u32) -> Result<u32, LockError> {
    Ok(id)
}

async fn by_hand(locks: &LockClient, id: u32) -> Result<u32, LockError> {
    let guard = locks
        .lock(format!("bench:{id}"))
        .ttl(Duration::from_secs(30))
        .await?;
    let out = id;
    guard.release().await?;
    Ok(out)
}

async fn measure<F, Fut>(label: &str, calls: u32, mut f: F) -> Histogram<u64>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u32, LockError>>,
{
    let mut h = latency_histogram();
    for i in 0..calls + 1000 {
        let t = Instant::now();
        f(i % 16).await.unwrap();
        if i >= 1000 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    println!(
        "{label:<34} p50 {:>7.2} µs  p99 {:>7.2} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    );
    h
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let server = RedisServer::start();
    let calls = 20_000;
    for (name, client) in [
        ("redis", LockClient::connect(&server.url()).await.unwrap()),
        ("memory", LockClient::memory()),
    ] {
        // Alternate twice so that warm-up and drift hit both sides alike.
        let mut hand = Vec::new();
        let mut mac = Vec::new();
        for _ in 0..2 {
            hand.push(measure(&format!("{name}: by hand"), calls, |i| by_hand(&client, i)).await);
            mac.push(
                measure(&format!("{name}: #[distributed_lock]"), calls, |i| {
                    guarded(&client, i)
                })
                .await,
            );
        }
        let p50 = |v: &[Histogram<u64>]| {
            v.iter().map(|h| h.value_at_quantile(0.5)).min().unwrap() as f64 / 1000.0
        };
        println!(
            "{name}: macro overhead at p50 (best of two): {:+.2} µs per call",
            p50(&mac) - p50(&hand)
        );
    }
}
