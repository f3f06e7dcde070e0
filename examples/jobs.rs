//! A scheduled job on several instances: on every tick each instance's scheduler triggers the
//! report, a little early or late, and exactly one of them runs it.
//!
//! The job is written as a user would: `on_busy = "skip"` turns the other instances away
//! without an error, and `at_least` keeps the lock for a while after the (quick) run, so an
//! instance whose trigger comes a few milliseconds after the first one finished is turned
//! away too. That rests on the skew between the instances' triggers (here up to 150 ms) being
//! below `at_least` (300 ms), and `at_least` below the period (500 ms).
//!
//! ```text
//! cargo run -p examples --example jobs                                  # 4 workers in this process, in-process locks
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example jobs # 4 worker processes on Redis
//! cargo run -p examples --example jobs -- --workers 8 --ticks 40        # more of both
//! ```
//!
//! With `REDIS_URL` set the example starts copies of itself as worker processes and counts
//! what they report: it exits with an error unless every tick ran exactly once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distlock::{LockClient, LockError, MemoryStore, distributed_lock};

/// Time between two ticks of every instance's scheduler.
const PERIOD: Duration = Duration::from_millis(500);
/// The most an instance's trigger comes after the tick (clock skew, scheduler jitter).
const MAX_SKEW_MS: u64 = 150;

/// The report. One instance runs it per tick; the others get `Ok(None)`.
#[distributed_lock(key = "jobs:report", client = locks, ttl = "5s", at_least = "300ms", on_busy = "skip")]
async fn report(locks: &LockClient, tick: u64) -> Result<Option<u64>, LockError> {
    tokio::time::sleep(Duration::from_millis(30)).await; // the work, quicker than the skew
    let held = distlock::current().expect("inside the lock");
    // A real job would send the fence with its writes, so a store can refuse a stale holder.
    let _ = tick;
    Ok(Some(held.fencing_token()))
}

/// One instance: triggers the report on every tick, after its own random skew, and says what
/// happened, one line per tick: `ran <tick> <fence> <name>` or `skipped <tick> <name>`.
async fn instance(locks: LockClient, name: String, start_ms: u64, ticks: u64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut random = Random::new(&name);
    for tick in 1..=ticks {
        let at = start_ms + tick * PERIOD.as_millis() as u64 + random.below(MAX_SKEW_MS);
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
        let line = match report(&locks, tick).await {
            Ok(Some(fence)) => format!("ran {tick} {fence} {name}"),
            Ok(None) => format!("skipped {tick} {name}"),
            Err(err) => format!("failed {tick} {name}: {err}"),
        };
        println!("{line}");
        lines.push(line);
    }
    lines
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        // A worker process: `jobs worker <name> <start-ms> <ticks>`, locks on REDIS_URL.
        let (name, start_ms, ticks) = (args[1].clone(), args[2].parse()?, args[3].parse()?);
        let url = std::env::var("REDIS_URL")?;
        instance(LockClient::connect(&url).await?, name, start_ms, ticks).await;
        return Ok(());
    }
    let workers: u64 = flag(&args, "--workers").unwrap_or(4);
    let ticks: u64 = flag(&args, "--ticks").unwrap_or(20);
    // Every instance counts ticks from the same instant, as cron on synchronised clocks would.
    let start_ms = now_ms() + 500;

    let lines = match std::env::var("REDIS_URL") {
        Ok(url) => {
            println!(
                "backend: Redis at {}; {workers} worker processes, {ticks} ticks",
                examples::without_password(&url)
            );
            let children: Vec<_> = (1..=workers)
                .map(|i| {
                    Command::new(std::env::current_exe()?)
                        .args(["worker", &format!("worker-{i}")])
                        .args([start_ms.to_string(), ticks.to_string()])
                        .stdout(Stdio::piped())
                        .spawn()
                })
                .collect::<Result<_, _>>()?;
            let mut lines = Vec::new();
            for mut child in children {
                let out = BufReader::new(child.stdout.take().expect("piped"));
                for line in out.lines() {
                    let line = line?;
                    println!("{line}");
                    lines.push(line);
                }
                child.wait()?;
            }
            lines
        }
        Err(_) => {
            println!(
                "backend: in-process, {workers} workers, {ticks} ticks \
                 (set REDIS_URL=redis://127.0.0.1:6379 for worker processes on Redis)"
            );
            // One client per worker, as if each ran in its own process.
            let store = MemoryStore::new();
            let mut tasks = Vec::new();
            for i in 1..=workers {
                let locks = LockClient::builder().memory(store.clone()).build().await?;
                tasks.push(tokio::spawn(instance(
                    locks,
                    format!("worker-{i}"),
                    start_ms,
                    ticks,
                )));
            }
            let mut lines = Vec::new();
            for task in tasks {
                lines.extend(task.await?);
            }
            lines
        }
    };

    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for line in &lines {
        if let Some(tick) = line.strip_prefix("ran ").and_then(|r| r.split(' ').next()) {
            *runs.entry(tick.parse()?).or_default() += 1;
        }
    }
    let total: usize = runs.values().sum();
    println!("{ticks} ticks, {total} runs");
    if total as u64 != ticks || runs.values().any(|&n| n != 1) {
        return Err(format!("expected exactly one run per tick, got {runs:?}").into());
    }
    println!("exactly one run per tick");
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1)?.parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A small random source for the skew (splitmix64), seeded per instance.
struct Random(u64);

impl Random {
    fn new(name: &str) -> Self {
        let seed = name.bytes().fold(u64::from(std::process::id()), |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        Self(seed ^ now_ms())
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}
