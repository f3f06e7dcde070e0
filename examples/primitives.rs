//! Semaphores, read/write locks and `lock_all`, each shown by tasks that count what they see.
//!
//! 1. Eight export tasks share a semaphore of three permits: never more than three export at
//!    once, and every task gets its turn.
//! 2. Readers and a writer share a catalog: readers overlap each other, never the writer, and
//!    every write carries a larger fencing token.
//! 3. Transfers lock two accounts each, named in opposite orders by half of them: all finish
//!    (no deadlock), and no account is in two transfers at once.
//!
//! ```text
//! cargo run -p examples --example primitives                                  # in-process
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example primitives # on Redis
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use distlock::{LockClient, LockError};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let client = examples::client_from_env().await?;
    semaphore(&client).await?;
    rw_lock(&client).await?;
    transfers(&client).await?;
    Ok(())
}

/// Raises `now` and records the highest value it reached in `peak`; lowers it on drop.
struct Count<'a> {
    now: &'a AtomicI64,
}

impl<'a> Count<'a> {
    fn enter(now: &'a AtomicI64, peak: &AtomicI64) -> Self {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        Count { now }
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn semaphore(client: &LockClient) -> Result<(), LockError> {
    let (now, peak) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let exports = client.semaphore("demo:exports", 3);
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (exports, now, peak) = (exports.clone(), now.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = exports.acquire().wait(WAIT).await?;
                {
                    let _count = Count::enter(&now, &peak);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                permit.release().await?;
            }
            Ok::<_, LockError>(task)
        }));
    }
    for task in tasks {
        task.await.expect("export task")?;
    }
    let peak = peak.load(Ordering::SeqCst);
    println!("semaphore: 8 tasks × 3 exports on 3 permits; at most {peak} at once");
    assert!(peak <= 3, "more exports at once than permits");
    Ok(())
}

async fn rw_lock(client: &LockClient) -> Result<(), LockError> {
    let (readers, writers) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let (peak_readers, overlaps) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let last_fence = Arc::new(AtomicU64::new(0));
    let catalog = client.rw_lock("demo:catalog");
    let mut tasks = Vec::new();
    for task in 0..6u64 {
        let catalog = catalog.clone();
        let (readers, writers) = (readers.clone(), writers.clone());
        let (peak_readers, overlaps) = (peak_readers.clone(), overlaps.clone());
        let last_fence = last_fence.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5u64 {
                if (task + round) % 5 == 0 {
                    let write = catalog.write().wait(WAIT).await?;
                    let fence = write.fencing_token();
                    assert!(
                        fence > last_fence.swap(fence, Ordering::SeqCst),
                        "fences increase"
                    );
                    {
                        let _count = Count::enter(&writers, &AtomicI64::new(0));
                        if readers.load(Ordering::SeqCst) > 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    write.release().await?;
                } else {
                    let read = catalog.read().wait(WAIT).await?;
                    {
                        let _count = Count::enter(&readers, &peak_readers);
                        if writers.load(Ordering::SeqCst) > 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    read.release().await?;
                }
            }
            Ok::<_, LockError>(())
        }));
    }
    for task in tasks {
        task.await.expect("catalog task")?;
    }
    let (peak, overlaps) = (
        peak_readers.load(Ordering::SeqCst),
        overlaps.load(Ordering::SeqCst),
    );
    println!("rw_lock: up to {peak} readers at once, {overlaps} reader/writer overlaps");
    assert_eq!(overlaps, 0, "a writer overlapped a reader");
    Ok(())
}

async fn transfers(client: &LockClient) -> Result<(), LockError> {
    let busy: Arc<[AtomicI64; 3]> = Arc::new(Default::default());
    let clashes = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for task in 0..6usize {
        let (client, busy, clashes) = (client.clone(), busy.clone(), clashes.clone());
        tasks.push(tokio::spawn(async move {
            // Half name the accounts one way round, half the other.
            let (from, to) = (task % 3, (task + 1) % 3);
            let (first, second) = if task % 2 == 0 {
                (from, to)
            } else {
                (to, from)
            };
            for _ in 0..4 {
                let accounts = [
                    format!("demo:account:{first}"),
                    format!("demo:account:{second}"),
                ];
                let both = client.lock_all(accounts).wait(WAIT).await?;
                for account in [first, second] {
                    if busy[account].fetch_add(1, Ordering::SeqCst) > 0 {
                        clashes.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                for account in [first, second] {
                    busy[account].fetch_sub(1, Ordering::SeqCst);
                }
                both.release().await?;
            }
            Ok::<_, LockError>(())
        }));
    }
    for task in tasks {
        task.await.expect("transfer task")?;
    }
    let clashes = clashes.load(Ordering::SeqCst);
    println!("lock_all: 24 transfers over 3 accounts in both orders, all done, {clashes} clashes");
    assert_eq!(clashes, 0, "an account was in two transfers at once");
    Ok(())
}
