//! One process of the primitives benchmark (`benches/primitives.rs`):
//! `primitives-worker <semaphore|rwlock> <distlock|rslock> <redis-url> <name> <tasks> <start-unix-ms> <seconds>`.
//!
//! Waits until the start time, then runs `tasks` tasks until `seconds` have passed:
//! - `semaphore`: take one of 4 permits (waiting as long as it takes), hold it 1 ms, let go.
//!   With rslock, the permits are 4 rslock locks tried in turn, with rslock's own retries: the
//!   hand-rolled semaphore a team writes without one.
//! - `rwlock`: 9 of 10 rounds read, 1 writes; each holds 1 ms. With rslock, every round takes
//!   one rslock lock: what a team without a read/write lock does.
//!
//! Prints one line per task, `task <rounds> <held-ns>`, then `reads <ns>...` and `writes <ns>...`
//! with the waits from asking to holding (the semaphore's are all `reads`), then `wall <ns>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PERMITS: usize = 4;
const SECTION: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Locker {
    Distlock(distlock::LockClient),
    Rslock(Arc<rslock::LockManager>),
}

/// Round numbers per process, so that the rslock permits are tried from different starts.
static TURN: AtomicU64 = AtomicU64::new(0);

impl Locker {
    /// One round: (wait, held, was a write).
    async fn round(&self, mode: &str, name: &str, write: bool) -> (Duration, Duration) {
        let asked = Instant::now();
        match self {
            Locker::Distlock(client) => {
                let request = match (mode, write) {
                    ("semaphore", _) => client.semaphore(name, PERMITS).acquire(),
                    (_, false) => client.rw_lock(name).read(),
                    (_, true) => client.rw_lock(name).write(),
                };
                let guard = request.wait(WAIT).await.expect("distlock acquire");
                let got = Instant::now();
                tokio::time::sleep(SECTION).await;
                guard.release().await.expect("distlock release");
                (got - asked, got.elapsed())
            }
            Locker::Rslock(manager) => {
                let lock = if mode == "semaphore" {
                    let mut turn = TURN.fetch_add(1, Ordering::Relaxed) as usize;
                    loop {
                        let slot = format!("{name}:{}", turn % PERMITS);
                        // One rslock attempt (its own retries) per permit, in turn.
                        match manager.lock(slot.as_bytes(), Duration::from_secs(10)).await {
                            Ok(lock) => break lock,
                            Err(_) => turn += 1,
                        }
                        assert!(asked.elapsed() < WAIT, "rslock semaphore starved");
                    }
                } else {
                    manager
                        .acquire_no_guard(name.as_bytes(), Duration::from_secs(10))
                        .await
                        .expect("rslock acquire")
                };
                let got = Instant::now();
                tokio::time::sleep(SECTION).await;
                manager.unlock(&lock).await;
                (got - asked, got.elapsed())
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, lib, url, name, tasks, start, seconds] = &args[..] else {
        eprintln!(
            "usage: primitives-worker <semaphore|rwlock> <distlock|rslock> <redis-url> <name> <tasks> <start-unix-ms> <seconds>"
        );
        std::process::exit(2);
    };
    let tasks: u64 = tasks.parse().expect("tasks");
    let start: u64 = start.parse().expect("start");
    let seconds: f64 = seconds.parse().expect("seconds");
    let locker = match lib.as_str() {
        "distlock" => Locker::Distlock(
            distlock::LockClient::connect(url)
                .await
                .expect("distlock client"),
        ),
        "rslock" => {
            let mut manager = rslock::LockManager::new(vec![url.clone()]);
            manager.set_retry(3, Duration::from_millis(2));
            Locker::Rslock(Arc::new(manager))
        }
        other => panic!("unknown library {other}"),
    };
    // Connect before the start (one round, on a name of our own).
    let own = format!("{name}:warm:{}", std::process::id());
    let _ = locker.round(mode, &own, false).await;

    distlock_tests::sleep_until_unix_ms(start).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (locker, stop) = (locker.clone(), stop.clone());
            let (mode, name) = (mode.clone(), name.clone());
            tokio::spawn(async move {
                let (mut count, mut held) = (0u64, Duration::ZERO);
                let (mut reads, mut writes) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    // Every tenth round of the rwlock writes, spread over the tasks.
                    let write = mode == "rwlock" && (count + task) % 10 == 0;
                    let (wait, hold) = locker.round(&mode, &name, write).await;
                    let waits = if write { &mut writes } else { &mut reads };
                    waits.push(wait.as_nanos() as u64);
                    held += hold;
                    count += 1;
                }
                (count, held, reads, writes)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all_reads, mut all_writes) = (Vec::new(), Vec::new());
    for handle in handles {
        let (count, held, reads, writes) = handle.await.expect("task");
        println!("task {count} {}", held.as_nanos());
        all_reads.extend(reads);
        all_writes.extend(writes);
    }
    let line = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    println!("reads {}", line(&all_reads));
    println!("writes {}", line(&all_writes));
    println!("wall {}", started.elapsed().as_nanos());
}
