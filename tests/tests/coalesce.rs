//! Coalescing: acquires and releases waiting on one connection go to Redis as one script
//! call. Each operation must keep the outcome it has alone: its own answer, its own error,
//! and no lock left behind by a caller that went away while its operation was queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distlock::LockClient;
use distlock_tests::RedisServer;

/// The number of script calls the server has run (`EVALSHA` and `EVAL`).
fn script_calls(server: &RedisServer) -> u64 {
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Many concurrent acquires and releases share calls: fewer script calls than operations,
/// and every lock was taken and given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_share_script_calls() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    let guard = client.lock(format!("many:{t}")).await.unwrap();
                    assert!(guard.fencing_token() > 0, "task {t} round {round}");
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let operations = 64 * 20 * 2;
    let calls = script_calls(&server);
    assert!(
        calls < operations,
        "{calls} script calls for {operations} operations: nothing was coalesced"
    );
    for t in 0..64 {
        assert!(
            client
                .inspect(&format!("many:{t}"))
                .await
                .unwrap()
                .is_none(),
            "many:{t} is still held"
        );
    }
}

/// Callers that go away while their acquire waits in the queue or is in flight leave no
/// lock behind: every key can be taken at once afterwards (a left-over lock would hold it
/// for the 30 s default lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_dropped_in_the_queue_leave_no_lock() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    for round in 0..5 {
        let tasks: Vec<_> = (0..128)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let guard = client.lock(format!("dropped:{round}:{i}")).await;
                    // Kept: the test only drops the ones it aborts.
                    std::future::pending::<()>().await;
                    drop(guard);
                })
            })
            .collect();
        // Let some be sent, then drop them all wherever they are.
        tokio::task::yield_now().await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
    let other = LockClient::connect(&server.url()).await.unwrap();
    for round in 0..5 {
        for i in 0..128 {
            let key = format!("dropped:{round}:{i}");
            let guard = other
                .lock(key.as_str())
                .wait(Duration::from_secs(2))
                .await
                .unwrap_or_else(|e| panic!("`{key}` was left held: {e}"));
            guard.release().await.unwrap();
        }
    }
}

/// A key holding another type of value fails its own acquire with `KeyConflict`; the
/// acquires coalesced with it succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_fails_only_its_own_operation() {
    let server = RedisServer::start();
    server.cmd::<()>(&["RPUSH", "distlock:mixed:7", "not a lock"]);
    server.cmd::<()>(&["SET", "distlock:mixed:13", "not a lock either"]);
    let client = LockClient::connect(&server.url()).await.unwrap();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (client, conflicts) = (client.clone(), conflicts.clone());
            tokio::spawn(async move {
                match client.lock(format!("mixed:{i}")).await {
                    Ok(guard) => {
                        assert!(i != 7 && i != 13, "mixed:{i} was taken over");
                        guard.release().await.unwrap();
                    }
                    Err(distlock::LockError::KeyConflict { key }) => {
                        assert_eq!(key, format!("mixed:{i}"));
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("mixed:{i}: {e}"),
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(conflicts.load(Ordering::Relaxed), 2);
    let kept: String = server.cmd(&["GET", "distlock:mixed:13"]);
    assert_eq!(kept, "not a lock either");
}

/// Exclusion holds through coalesced calls: 32 tasks on 4 keys, each critical section
/// checks that it is alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_acquires_keep_exclusion() {
    let server = RedisServer::start();
    let clients = [
        LockClient::connect(&server.url()).await.unwrap(),
        LockClient::connect(&server.url()).await.unwrap(),
    ];
    let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (client, inside) = (clients[t % 2].clone(), inside.clone());
            tokio::spawn(async move {
                for round in 0..15 {
                    let k = (t + round) % 4;
                    let guard = client
                        .lock(format!("excl:{k}"))
                        .wait(Duration::from_secs(20))
                        .await
                        .unwrap();
                    assert_eq!(
                        inside[k].fetch_add(1, Ordering::SeqCst),
                        0,
                        "two inside excl:{k}"
                    );
                    tokio::task::yield_now().await;
                    inside[k].fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Calls that are out together each fall back to `EVAL` on their own after `SCRIPT FLUSH`,
/// and the releases for callers that went away are sent while those calls are out. 64
/// acquires (four calls) are sent to a frozen server whose script cache was flushed, their
/// callers go away, then the server thaws: no key may be left held (a left-over lock would
/// hold it for the 30 s default lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_dropped_in_flight_over_a_script_flush_leave_no_lock() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    for round in 0..3 {
        // The scripts are cached; then the cache is emptied behind the client's back.
        client.lock("warm").await.unwrap().release().await.unwrap();
        server.cmd::<()>(&["SCRIPT", "FLUSH"]);
        server.pause();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let guard = client.lock(format!("flushed:{round}:{i}")).await;
                    std::future::pending::<()>().await;
                    drop(guard);
                })
            })
            .collect();
        // The frozen server's socket takes the calls: 200 ms to write them, then the callers
        // go away (a call not yet written is not sent at all, which proves nothing but
        // cannot fail the test).
        tokio::time::sleep(Duration::from_millis(200)).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        server.resume();
    }
    let other = LockClient::connect(&server.url()).await.unwrap();
    for round in 0..3 {
        for i in 0..64 {
            let key = format!("flushed:{round}:{i}");
            let guard = other
                .lock(key.as_str())
                .wait(Duration::from_secs(3))
                .await
                .unwrap_or_else(|e| panic!("`{key}` was left held: {e}"));
            guard.release().await.unwrap();
        }
    }
}
