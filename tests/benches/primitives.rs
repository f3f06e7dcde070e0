//! Semaphores and read/write locks across processes, distlock beside what a team hand-rolls on
//! rslock, in one run: `cargo bench -p distlock-tests --bench primitives`.
//!
//! - **Semaphore**: 4 processes × 4 tasks (16 holders) on 4 permits, each round holding a
//!   permit 1 ms. distlock's `semaphore(name, 4)` against 4 rslock locks tried in turn (with
//!   rslock's retries). Reported: rounds/s, how busy the permits were (held time / 4 × wall),
//!   wait p50/p99 and Jain's fairness index over the 16 tasks.
//! - **Read/write lock, 90 % reads**: 4 × 4 tasks, each round reading (9 in 10) or writing
//!   (1 in 10) for 1 ms. distlock's `rw_lock` against one rslock lock for every round (what a
//!   team without a read/write lock does). Reported: rounds/s, read and write wait p99, Jain.
//!
//! Environment: `BENCH_ROUNDS` (default 3, interleaved, medians), `BENCH_SECONDS` (per phase),
//! `BENCH_ONLY=semaphore|rwlock`.

use distlock_tests::{RedisServer, WorkerReport, latency_histogram, spawn_bench_workers};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rounds_per_s: f64,
    busy: f64,
    read_p50_ms: f64,
    read_p99_ms: f64,
    write_p99_ms: f64,
    jain: f64,
}

async fn run(mode: &str, lib: &str, server: &RedisServer, seconds: f64) -> Figures {
    let name = format!("bench-{mode}");
    let seconds = seconds.to_string();
    let workers = spawn_bench_workers(
        env!("CARGO_BIN_EXE_primitives-worker"),
        4,
        &[mode, lib, &server.url(), &name, "4", "{start}", &seconds],
    );
    let mut counts = Vec::new();
    let (mut held, mut wall) = (0u128, 0u128);
    let mut reads: Histogram<u64> = latency_histogram();
    let mut writes: Histogram<u64> = latency_histogram();
    for worker in workers {
        let out = worker.wait_with_output().await.unwrap();
        assert!(out.status.success(), "primitives-worker failed");
        let report = WorkerReport::parse(&String::from_utf8_lossy(&out.stdout));
        for (rounds, task_held) in report.tasks {
            counts.push(rounds);
            held += task_held;
        }
        for (name, h) in [("reads", &mut reads), ("writes", &mut writes)] {
            for &w in report.waits.get(name).into_iter().flatten() {
                h.record(w).unwrap();
            }
        }
        wall = wall.max(report.wall);
    }
    let sum: f64 = counts.iter().sum();
    let permits = if mode == "semaphore" { 4.0 } else { 1.0 };
    let ms = |h: &Histogram<u64>, q| h.value_at_quantile(q) as f64 / 1e6;
    Figures {
        rounds_per_s: sum / (wall as f64 / 1e9),
        busy: held as f64 / (permits * wall as f64),
        read_p50_ms: ms(&reads, 0.5),
        read_p99_ms: ms(&reads, 0.99),
        write_p99_ms: ms(&writes, 0.99),
        jain: sum * sum / (counts.len() as f64 * counts.iter().map(|c| c * c).sum::<f64>()),
    }
}

fn median(v: &[Figures], pick: fn(&Figures) -> f64) -> f64 {
    let mut v: Vec<f64> = v.iter().map(pick).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seconds = distlock_tests::bench_phase().as_secs_f64();
    let server = RedisServer::start();
    println!(
        "primitives, distlock vs hand-rolled on rslock: {} cores, {rounds} rounds of {seconds} s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    type Row = (&'static str, fn(&Figures) -> f64, f64);
    for (mode, rows) in [
        (
            "semaphore",
            [
                (
                    "16 holders on 4 permits: rounds/s",
                    (|f| f.rounds_per_s) as fn(&Figures) -> f64,
                    1.0,
                ),
                ("permits busy (%)", |f| f.busy, 100.0),
                ("wait p50 (ms)", |f| f.read_p50_ms, 1.0),
                ("wait p99 (ms)", |f| f.read_p99_ms, 1.0),
                ("Jain", |f| f.jain, 1.0),
            ] as [Row; 5],
        ),
        (
            "rwlock",
            [
                ("90 % reads, 16 tasks: rounds/s", |f| f.rounds_per_s, 1.0),
                ("read wait p50 (ms)", |f| f.read_p50_ms, 1.0),
                ("read wait p99 (ms)", |f| f.read_p99_ms, 1.0),
                ("write wait p99 (ms)", |f| f.write_p99_ms, 1.0),
                ("Jain", |f| f.jain, 1.0),
            ],
        ),
    ] {
        if std::env::var("BENCH_ONLY").is_ok_and(|only| only != mode) {
            continue;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                ["distlock", "rslock"]
            } else {
                ["rslock", "distlock"]
            };
            for lib in order {
                server.cmd::<()>(&["FLUSHALL"]);
                let f = run(mode, lib, &server, seconds).await;
                println!("round {} {mode} {lib:8} {f:?}", round + 1);
                if lib == "distlock" {
                    ours.push(f)
                } else {
                    theirs.push(f)
                }
            }
        }
        println!("\n{mode}: medians of {rounds} rounds | hand-rolled on rslock | distlock | ratio");
        for (name, pick, scale) in rows {
            let (r, d) = (median(&theirs, pick), median(&ours, pick));
            println!(
                "{name:36} | {:10.3} | {:10.3} | {:.2}",
                r * scale,
                d * scale,
                d / r
            );
        }
        println!();
    }
}
