//! A scheduled job run by several workers: on every tick each worker tries to run the nightly
//! report, and exactly one of them does. The others are turned away by the lock (busy) or see
//! that the tick is done already.
//!
//! ```text
//! cargo run -p examples --example jobs                                  # in-process
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example jobs # on Redis
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{LockClient, LockError, MemoryStore, distributed_lock};

/// What a worker did on one tick.
#[derive(Debug)]
enum Outcome {
    Ran { fence: u64 },
    AlreadyDone,
    Busy,
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("a stale writer (fence {0}) was refused")]
    Fenced(u64),
}

/// Where the report lands: it remembers which tick was written with which fence, and refuses
/// writes carrying an older fence than one it has seen (a holder whose lease ran out).
#[derive(Default)]
struct Ledger {
    done: Mutex<BTreeMap<u64, (String, u64)>>,
    highest_fence: Mutex<u64>,
}

impl Ledger {
    fn record(&self, tick: u64, worker: &str, fence: u64) -> Result<bool, JobError> {
        let mut highest = self.highest_fence.lock().unwrap();
        if fence < *highest {
            return Err(JobError::Fenced(fence));
        }
        *highest = fence;
        let mut done = self.done.lock().unwrap();
        if done.contains_key(&tick) {
            return Ok(false);
        }
        done.insert(tick, (worker.to_owned(), fence));
        Ok(true)
    }
}

struct Worker {
    name: String,
    locks: LockClient,
    ledger: Arc<Ledger>,
}

impl Worker {
    fn skew_ms(&self, tick: u64) -> u64 {
        let id: u64 = self.name.bytes().map(u64::from).sum();
        (tick.wrapping_mul(31) ^ id.wrapping_mul(17)) % 10
    }

    /// Runs the report for `tick`, at most one worker at a time.
    #[distributed_lock(key = "jobs:nightly-report:{tick}", client = self.locks, ttl = "5s")]
    async fn nightly_report(&self, tick: u64) -> Result<Outcome, JobError> {
        let fence = distlock::current()
            .expect("inside the lock")
            .fencing_token();
        tokio::time::sleep(Duration::from_millis(50)).await; // the work
        if self.ledger.record(tick, &self.name, fence)? {
            Ok(Outcome::Ran { fence })
        } else {
            Ok(Outcome::AlreadyDone)
        }
    }

    async fn on_tick(&self, tick: u64) -> Result<Outcome, JobError> {
        // Machines' clocks and schedulers never agree to the millisecond.
        tokio::time::sleep(Duration::from_millis(self.skew_ms(tick))).await;
        match self.nightly_report(tick).await {
            Err(JobError::Lock(err)) if err.is_busy() => Ok(Outcome::Busy),
            other => other,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), JobError> {
    let redis_url = std::env::var("REDIS_URL").ok();
    let store = MemoryStore::new();
    match &redis_url {
        Some(url) => println!("backend: Redis at {url}"),
        None => println!("backend: in-process (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)"),
    }
    let ledger = Arc::new(Ledger::default());
    let mut workers = Vec::new();
    for i in 1..=4 {
        // One client per worker, as if each ran in its own process.
        let locks = match &redis_url {
            Some(url) => LockClient::connect(url).await?,
            None => LockClient::builder().memory(store.clone()).build().await?,
        };
        workers.push(Arc::new(Worker {
            name: format!("worker-{i}"),
            locks,
            ledger: ledger.clone(),
        }));
    }

    let run_id = std::process::id() as u64 * 1000;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    for tick in run_id + 1..=run_id + 5 {
        ticks.tick().await;
        let handles: Vec<_> = workers
            .iter()
            .map(|w| {
                let w = w.clone();
                tokio::spawn(async move { (w.name.clone(), w.on_tick(tick).await) })
            })
            .collect();
        let mut line = format!("tick {}:", tick - run_id);
        for handle in handles {
            let (name, outcome) = handle.await.expect("worker task");
            let what = match outcome? {
                Outcome::Ran { fence } => format!("ran it (fence {fence})"),
                Outcome::AlreadyDone => "found it done".to_owned(),
                Outcome::Busy => "was turned away".to_owned(),
            };
            line.push_str(&format!("  {name} {what};"));
        }
        println!("{line}");
    }
    let done = ledger.done.lock().unwrap();
    println!("{} ticks, {} reports written, one per tick", 5, done.len());
    assert_eq!(done.len(), 5);
    Ok(())
}
