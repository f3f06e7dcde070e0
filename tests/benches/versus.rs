//! distlock and rslock side by side, on one redis-server this bench starts, in the same run:
//! `cargo bench -p distlock-tests --bench versus`.
//!
//! Workloads, each run for both libraries in interleaved rounds (`BENCH_ROUNDS`, default 3;
//! the medians are printed at the end):
//! - **W1**: one task, acquire + release, p50 and p99 (`BENCH_PAIRS` pairs, default 5000);
//! - **W2**: 64 tasks of one client on distinct keys, pairs per second for a phase
//!   (`BENCH_SECONDS`, default 3);
//! - **W3**: 4 processes × 4 tasks on one key, a 1 ms critical section: share of the time
//!   the lock is held ("busy"), the mean idle gap between holders, wait p99 and Jain's index
//!   over the 16 tasks' counts.
//!
//! distlock runs with its defaults: fencing, the watchdog, notified fair waiting. rslock
//! (0.10, one server) takes locks with `SET NX PX`, releases with a compare-and-delete
//! script, and waits by retrying.

use std::time::{Duration, Instant};

use distlock::LockClient;
use distlock_tests::{
    RedisServer, WorkerReport, latency_histogram, run_rounds, spawn_bench_workers,
};
use hdrhistogram::Histogram;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lib {
    Distlock,
    Rslock,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::Distlock => "distlock",
            Lib::Rslock => "rslock",
        }
    }
}

/// A line of the summary: its name, the figure, and the scale it is printed at.
type Row = (&'static str, fn(&Figures) -> f64, f64);

/// The figures of one library in one round.
#[derive(Default, Clone, Copy)]
struct Figures {
    w1_p50_us: f64,
    w1_p99_us: f64,
    w2_pairs: f64,
    /// Redis server time (all commands) per W2 pair, µs.
    w2_server_us: f64,
    /// Commands (script calls included) Redis ran per W2 pair.
    w2_calls: f64,
    /// redis-server's CPU during W2, share of one core.
    w2_redis_cpu: f64,
    w3_busy: f64,
    w3_gap_ms: f64,
    w3_p99_ms: f64,
    w3_jain: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let phase = distlock_tests::bench_phase();
    let server = RedisServer::start();
    println!(
        "distlock vs rslock: {} cores, {rounds} rounds, phases of {phase:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results: Vec<(Lib, Figures)> = Vec::new();
    for round in 0..rounds {
        // Alternate which library goes first, so neither always gets the warmer machine.
        let order = if round % 2 == 0 {
            [Lib::Distlock, Lib::Rslock]
        } else {
            [Lib::Rslock, Lib::Distlock]
        };
        let mut figures = [Figures::default(); 2];
        for (i, lib) in order.iter().enumerate() {
            server.cmd::<()>(&["FLUSHALL"]);
            figures[i] = run_one(*lib, &server, phase).await;
            let f = figures[i];
            println!(
                "round {} {:9} W1 p50 {:5.0} µs p99 {:5.0} µs | W2 {:7.0} pairs/s ({:.2} calls, {:.1} µs server, redis {:.0}% cpu) | W3 busy {:5.1}% gap {:.2} ms wait p99 {:6.1} ms Jain {:.3}",
                round + 1,
                lib.name(),
                f.w1_p50_us,
                f.w1_p99_us,
                f.w2_pairs,
                f.w2_calls,
                f.w2_server_us,
                100.0 * f.w2_redis_cpu,
                100.0 * f.w3_busy,
                f.w3_gap_ms,
                f.w3_p99_ms,
                f.w3_jain
            );
        }
        for (i, lib) in order.iter().enumerate() {
            results.push((*lib, figures[i]));
        }
    }

    let median = |lib: Lib, pick: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(l, _)| *l == lib)
            .map(|(_, f)| pick(f))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!("medians of {rounds} rounds      | rslock      | distlock    | distlock / rslock");
    let rows: [Row; 7] = [
        ("W1 1 task p50 (µs)", |f| f.w1_p50_us, 1.0),
        ("W1 1 task p99 (µs)", |f| f.w1_p99_us, 1.0),
        ("W2 64 tasks (pairs/s)", |f| f.w2_pairs, 1.0),
        ("W3 4×4 busy (%)", |f| f.w3_busy, 100.0),
        ("W3 hand-off gap (ms)", |f| f.w3_gap_ms, 1.0),
        ("W3 wait p99 (ms)", |f| f.w3_p99_ms, 1.0),
        ("W3 Jain", |f| f.w3_jain, 1.0),
    ];
    for (name, pick, scale) in rows {
        let (r, d) = (median(Lib::Rslock, pick), median(Lib::Distlock, pick));
        println!(
            "{name:26} | {:11.3} | {:11.3} | {:.2}",
            r * scale,
            d * scale,
            d / r
        );
    }
}

async fn run_one(lib: Lib, server: &RedisServer, phase: Duration) -> Figures {
    let pairs: u32 = env_or("BENCH_PAIRS", 5000);
    let mut f = Figures::default();
    match lib {
        Lib::Distlock => {
            let client = LockClient::connect(&server.url()).await.unwrap();
            let w1 = w1(pairs, || {
                let client = client.clone();
                async move {
                    let guard = client.lock("w1").await.unwrap();
                    guard.release().await.unwrap();
                }
            })
            .await;
            (f.w1_p50_us, f.w1_p99_us) = w1;
            let before = ServerStats::read(server);
            let (total, wall) = run_rounds(64, phase, move |t| {
                let client = client.clone();
                async move {
                    let guard = client.lock(format!("w2:{t}")).await.unwrap();
                    guard.release().await.unwrap();
                }
            })
            .await;
            f.w2_pairs = total as f64 / wall.as_secs_f64();
            ServerStats::read(server).since(&before, total, wall, &mut f);
        }
        Lib::Rslock => {
            let manager = rslock::LockManager::new(vec![server.url()]);
            let ttl = Duration::from_secs(10);
            let w1 = w1(pairs, || {
                let manager = manager.clone();
                async move {
                    let lock = manager.lock("w1", ttl).await.unwrap();
                    manager.unlock(&lock).await;
                }
            })
            .await;
            (f.w1_p50_us, f.w1_p99_us) = w1;
            let before = ServerStats::read(server);
            let (total, wall) = run_rounds(64, phase, move |t| {
                let manager = manager.clone();
                async move {
                    let lock = manager
                        .lock(format!("w2:{t}").as_bytes(), ttl)
                        .await
                        .unwrap();
                    manager.unlock(&lock).await;
                }
            })
            .await;
            f.w2_pairs = total as f64 / wall.as_secs_f64();
            ServerStats::read(server).since(&before, total, wall, &mut f);
        }
    }
    w3(lib, server, phase, &mut f).await;
    f
}

/// Totals from `INFO commandstats` and `INFO cpu`.
struct ServerStats {
    calls: f64,
    usec: f64,
    cpu: f64,
}

impl ServerStats {
    fn read(server: &RedisServer) -> Self {
        let stats: String = server.cmd(&["INFO", "commandstats"]);
        let field = |line: &str, name: &str| {
            line.split(',')
                .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.ends_with(name)))
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (mut calls, mut usec) = (0.0, 0.0);
        for line in stats.lines().filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_info")
                && !l.starts_with("cmdstat_config")
        }) {
            calls += field(line, "calls");
            usec += field(line, "usec");
        }
        let info: String = server.cmd(&["INFO", "cpu"]);
        let cpu = info
            .lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .filter_map(|l| l.split(':').nth(1))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum();
        Self { calls, usec, cpu }
    }

    fn since(&self, before: &Self, pairs: u64, wall: Duration, f: &mut Figures) {
        let pairs = pairs.max(1) as f64;
        f.w2_calls = (self.calls - before.calls) / pairs;
        f.w2_server_us = (self.usec - before.usec) / pairs;
        f.w2_redis_cpu = (self.cpu - before.cpu) / wall.as_secs_f64();
    }
}

/// One task: `pairs` acquire+release pairs after 500 to warm up; p50 and p99 in µs.
async fn w1<F, Fut>(pairs: u32, pair: F) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut h = latency_histogram();
    for i in 0..pairs + 500 {
        let t = Instant::now();
        pair().await;
        if i >= 500 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// 4 worker processes × 4 tasks on one key, 1 ms critical section.
async fn w3(lib: Lib, server: &RedisServer, phase: Duration, f: &mut Figures) {
    let seconds = phase.as_secs_f64().to_string();
    let workers = spawn_bench_workers(
        env!("CARGO_BIN_EXE_contend-worker"),
        4,
        &[lib.name(), &server.url(), "w3", "4", "{start}", &seconds],
    );
    let mut counts = Vec::new();
    let mut held = 0u128;
    let mut wall = 0u128;
    let mut waits: Histogram<u64> = latency_histogram();
    for worker in workers {
        let out = worker.wait_with_output().await.unwrap();
        assert!(out.status.success(), "contend-worker failed");
        let report = WorkerReport::parse(&String::from_utf8_lossy(&out.stdout));
        for (rounds, task_held) in report.tasks {
            counts.push(rounds);
            held += task_held;
        }
        for &w in report.waits.get("waits").into_iter().flatten() {
            waits.record(w).unwrap();
        }
        wall = wall.max(report.wall);
    }
    let sum: f64 = counts.iter().sum();
    f.w3_busy = held as f64 / wall as f64;
    f.w3_gap_ms = (wall as f64 - held as f64) / sum.max(1.0) / 1e6;
    f.w3_p99_ms = waits.value_at_quantile(0.99) as f64 / 1e6;
    f.w3_jain = sum * sum / (counts.len() as f64 * counts.iter().map(|c| c * c).sum::<f64>());
}
