//! One process of the cross-process contention benchmark (`benches/versus.rs`):
//! `contend-worker <distlock|rslock> <redis-url> <key> <tasks> <start-unix-ms> <seconds>`.
//! With `probe` for the library, one task takes and lets go of `key` with a 2 ms pause
//! between pairs instead, and `waits` are the pairs' latencies (`benches/scale.rs`).
//!
//! Waits until the start time, then runs `tasks` tasks that each take `key`, hold it for a
//! 1 ms critical section and let it go, until `seconds` have passed. Prints one line per task,
//! `task <count> <held-ns>`, then one line `waits <ns> <ns> ...` with every wait from asking
//! to holding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone)]
enum Locker {
    Distlock(distlock::LockClient),
    Rslock(rslock::LockManager),
}

impl Locker {
    /// Takes `key` (waiting as long as it takes), holds it 1 ms, lets it go.
    async fn round(&self, key: &str) -> (Duration, Duration) {
        let asked = Instant::now();
        match self {
            Locker::Distlock(client) => {
                let guard = client
                    .lock(key)
                    .wait(Duration::from_secs(30))
                    .await
                    .expect("distlock acquire");
                let got = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                guard.release().await.expect("distlock release");
                (got - asked, got.elapsed())
            }
            Locker::Rslock(manager) => {
                let guard = manager
                    .acquire(key.as_bytes(), Duration::from_secs(10))
                    .await
                    .expect("rslock acquire");
                let got = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                guard.release().await;
                (got - asked, got.elapsed())
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, lib, url, key, tasks, start, seconds] = &args[..] else {
        eprintln!(
            "usage: contend-worker <distlock|rslock> <redis-url> <key> <tasks> <start-unix-ms> <seconds>"
        );
        std::process::exit(2);
    };
    let tasks: usize = tasks.parse().expect("tasks");
    let start: u64 = start.parse().expect("start");
    let seconds: f64 = seconds.parse().expect("seconds");
    let locker = match lib.as_str() {
        "distlock" | "probe" => Locker::Distlock(
            distlock::LockClient::connect(url)
                .await
                .expect("distlock client"),
        ),
        "rslock" => Locker::Rslock(rslock::LockManager::new(vec![url.clone()])),
        other => panic!("unknown library {other}"),
    };
    // Connect before the start (one round, on a key of our own).
    let _ = locker
        .round(&format!("{key}:warm:{}", std::process::id()))
        .await;

    distlock_tests::sleep_until_unix_ms(start).await;
    let started = Instant::now();
    if let ("probe", Locker::Distlock(client)) = (lib.as_str(), &locker) {
        let mut pairs = Vec::new();
        while started.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            let guard = client.lock(key.as_str()).await.expect("probe acquire");
            guard.release().await.expect("probe release");
            pairs.push(t.elapsed().as_nanos().to_string());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("waits {}", pairs.join(" "));
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (locker, stop, key) = (locker.clone(), stop.clone(), key.clone());
            tokio::spawn(async move {
                let (mut count, mut held, mut waits) = (0u64, Duration::ZERO, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let (wait, hold) = locker.round(&key).await;
                    waits.push(wait.as_nanos() as u64);
                    held += hold;
                    count += 1;
                }
                (count, held, waits)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all_waits = Vec::new();
    for handle in handles {
        let (count, held, waits) = handle.await.expect("task");
        println!("task {count} {}", held.as_nanos());
        all_waits.extend(waits);
    }
    let waits: Vec<String> = all_waits.iter().map(u64::to_string).collect();
    println!("waits {}", waits.join(" "));
    println!("wall {}", started.elapsed().as_nanos());
}
