//! Regression tests for ways two holders could overlap, a client could be locked out of a free
//! key, or a command could fail where it should not: each combines parts of the public API
//! (`extend`, renewals, runtimes, one-try acquires, retries) the way users do.

mod common;

use std::time::{Duration, Instant};

use common::{Env, MS};
use distlock::LockClient;
use distlock_tests::{RedisServer, TcpProxy};

/// `extend` to a shorter lease lowers the guard's own deadline: once another client holds the
/// key, the first no longer believes it does.
async fn extend_shorter_lowers_the_local_deadline(env: &Env) {
    let holder = env.client().await;
    let guard = holder
        .lock("shrink")
        .ttl(Duration::from_secs(30))
        .watchdog(false)
        .await
        .unwrap();
    guard.extend(Duration::from_millis(300)).await.unwrap();
    let started = Instant::now();
    let other = env.client().await;
    let taken = other
        .lock("shrink")
        .wait(Duration::from_secs(3))
        .await
        .expect("the shortened lease runs out");
    assert!(
        !guard.is_held(),
        "the first guard still believes it holds the key {:?} after shrinking it",
        started.elapsed()
    );
    // lost() has fired by now (it resolves at once).
    tokio::time::timeout(Duration::from_millis(50), guard.lost())
        .await
        .expect("lost() fired");
    assert!(taken.is_held());
}

/// A lease shortened and then lengthened keeps the longer one, and the watchdog keeps
/// renewing with the last value.
async fn extend_shorter_then_longer_keeps_the_lock(env: &Env) {
    let client = env.client().await;
    let guard = client
        .lock("both-ways")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap();
    guard.extend(Duration::from_millis(200)).await.unwrap();
    guard.extend(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // time is the subject: 3× the short lease
    assert!(guard.is_held());
    let ttl = client
        .inspect("both-ways")
        .await
        .unwrap()
        .unwrap()
        .ttl
        .unwrap();
    assert!(ttl > Duration::from_secs(4), "server TTL {ttl:?}");
}

/// A one-try acquire (the default, and the tower layer's) that finds the key busy leaves no
/// trace: when the holder releases, the key is free for anyone at once, not reserved for a
/// client that is not waiting.
async fn a_one_try_acquire_does_not_queue(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let c = env.client().await;
    let held = a.lock("one-try").await.unwrap();
    assert!(b.lock("one-try").await.unwrap_err().is_busy());
    held.release().await.unwrap();
    let got = c.lock("one-try").await;
    assert!(got.is_ok(), "a free key was refused: {got:?}");
}

/// A waiting client that gives up leaves the queue: the next release does not reserve the key
/// for it.
async fn a_waiter_that_gives_up_leaves_the_queue(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let c = env.client().await;
    let held = a.lock("gave-up").await.unwrap();
    let waited = b.lock("gave-up").wait(Duration::from_millis(100)).await;
    assert!(waited.unwrap_err().is_busy());
    held.release().await.unwrap();
    free_well_within_a_reservation(&c, "gave-up").await;
}

/// `key` can be taken within 100 ms, less than the 250 ms a release reserves a key for the
/// first queued client (the leave runs in the background, so allow it one round trip).
async fn free_well_within_a_reservation(client: &LockClient, key: &str) {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        match client.lock(key).await {
            Ok(_) => return,
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                tokio::time::sleep(2 * MS).await;
            }
            Err(e) => panic!("`{key}` stayed reserved for a client that is not waiting: {e}"),
        }
    }
}

/// A dropped waiting request leaves the queue too.
async fn a_dropped_waiter_leaves_the_queue(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let c = env.client().await;
    let held = a.lock("dropped-waiter").await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.lock("dropped-waiter").wait(Duration::from_secs(30)).await }
    });
    distlock_tests::wait_until_contended(&a, "dropped-waiter").await;
    waiting.abort();
    let _ = waiting.await;
    // The dropped request leaves in the background: on Redis, wait until the stored queue of
    // waiting clients (after the owner info: `|id|id|...`) is empty again.
    if let Some(server) = env.server() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while server
            .cmd::<Option<String>>(&["GET", "distlock:dropped-waiter"])
            .is_some_and(|v| v.matches('|').count() > 1)
        {
            assert!(
                Instant::now() < deadline,
                "the dropped waiter never left the queue"
            );
            tokio::time::sleep(2 * MS).await;
        }
    }
    held.release().await.unwrap();
    free_well_within_a_reservation(&c, "dropped-waiter").await;
}

/// The watchdog of a client created (and first used) on one runtime keeps renewing when that
/// runtime is gone and the client is used on another (a default client shared by several
/// `#[tokio::test]`s does exactly this).
async fn the_watchdog_outlives_the_first_runtime(env: &Env) {
    let builder = env.builder();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = builder.build().await.unwrap();
            // Start the watchdog here, then let this runtime die.
            let first = client.lock("first-runtime").await.unwrap();
            first.release().await.unwrap();
            client
        })
    })
    .join()
    .unwrap();
    let guard = client
        .lock("second-runtime")
        .ttl(Duration::from_millis(300))
        .wait(Duration::from_secs(2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // five leases long
    assert!(guard.is_held(), "the lease was not renewed");
    let other = env.client().await;
    assert!(other.lock("second-runtime").await.unwrap_err().is_busy());
    guard.release().await.unwrap();
}

on_both_backends!(
    extend_shorter_lowers_the_local_deadline,
    extend_shorter_then_longer_keeps_the_lock,
    a_one_try_acquire_does_not_queue,
    a_waiter_that_gives_up_leaves_the_queue,
    a_dropped_waiter_leaves_the_queue,
    the_watchdog_outlives_the_first_runtime,
);

/// `extend(longer)` while a watchdog renewal with the old, short lease is in flight: the
/// renewal must not land after the extension (or the guard must not trust the longer lease).
/// After every successful extension the server's TTL must be at least what the guard was
/// told, also once any renewal in flight has landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_longer_is_not_undone_by_a_renewal_in_flight() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = LockClient::builder()
        .url(proxy.url())
        .build()
        .await
        .unwrap();
    let observer = LockClient::connect(&server.url()).await.unwrap();
    proxy.set_latency(Duration::from_millis(30));
    for round in 0..12u64 {
        let key = format!("race:{round}");
        let guard = client
            .lock(key.as_str())
            .ttl(Duration::from_millis(300))
            .await
            .unwrap();
        // Land the extension at different points of the watchdog's 100 ms renewal cycle.
        tokio::time::sleep(Duration::from_millis(round * 17 % 100)).await;
        guard.extend(Duration::from_secs(5)).await.unwrap();
        // Any renewal sent before the extension has landed within two delayed round trips.
        for _ in 0..10 {
            let ttl = observer.inspect(&key).await.unwrap().and_then(|i| i.ttl);
            assert!(
                ttl.is_some_and(|t| t > Duration::from_secs(4)),
                "round {round}: the server has {ttl:?} while the guard trusts 5 s"
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        drop(guard);
    }
}

/// A waiting request dropped while its first attempt is still in flight leaves the queue that
/// attempt joins: the server is paused so that the attempt lands only after the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_before_its_first_answer_leaves_the_queue() {
    let server = RedisServer::start();
    let a = LockClient::connect(&server.url()).await.unwrap();
    let b = LockClient::connect(&server.url()).await.unwrap();
    let held = a.lock("in-flight").await.unwrap();
    server.cmd::<()>(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.lock("in-flight").wait(Duration::from_secs(30)).await }
    });
    // The attempt has reached the server once it is held there by the pause.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server
        .cmd::<String>(&["INFO", "clients"])
        .lines()
        .any(|l| l.strip_prefix("blocked_clients:").is_some_and(|n| n != "0"))
    {
        assert!(
            Instant::now() < deadline,
            "the attempt never reached the server"
        );
        tokio::time::sleep(2 * MS).await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    server.cmd::<()>(&["CLIENT", "UNPAUSE"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored = server.cmd::<Option<String>>(&["GET", "distlock:in-flight"]);
        if stored.as_ref().is_some_and(|v| v.matches('|').count() <= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped waiter stayed in the queue: {stored:?}"
        );
        tokio::time::sleep(2 * MS).await;
    }
    held.release().await.unwrap();
    free_well_within_a_reservation(&a, "in-flight").await;
}

/// `SCRIPT FLUSH` over and over while locks are taken and released: no `NOSCRIPT` reaches a
/// caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_never_reaches_callers() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = std::thread::spawn({
        let stop = stop.clone();
        let mut conn = server.conn();
        move || {
            let mut flushes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
                flushes += 1;
            }
            flushes
        }
    });
    for i in 0..300 {
        let guard = client
            .lock(format!("flush:{}", i % 7))
            .ttl(Duration::from_millis(500))
            .await
            .unwrap_or_else(|e| panic!("acquire {i}: {e}"));
        guard
            .extend(Duration::from_millis(800))
            .await
            .unwrap_or_else(|e| panic!("extend {i}: {e}"));
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("release {i}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flusher.join().unwrap() > 10);
}

/// The protocol's scripts are idempotent for their own token: a retry layer (Sentinel's
/// failover retry, the Cluster client) may resend an acquire or a release whose reply was
/// lost, and the copy must answer as the first did, not as a foreign holder or a lost lock.
#[test]
fn acquire_and_release_replays_answer_as_the_first_copy() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let acquire = redis::Script::new(include_str!(
        "../../lock-runtime/src/backend/scripts/acquire.lua"
    ));
    let release = redis::Script::new(include_str!(
        "../../lock-runtime/src/backend/scripts/release.lua"
    ));
    let token = "0123456789abcdef0123456789abcdef";
    let take = |conn: &mut redis::Connection| -> Vec<String> {
        acquire
            .key("replayed")
            .arg(token)
            .arg(5000)
            .arg("host/1/2")
            .arg("")
            .invoke(conn)
            .unwrap()
    };
    let first = take(&mut conn);
    let replay = take(&mut conn);
    assert_eq!(first[0], "1");
    assert_eq!(
        replay, first,
        "a replayed acquire must answer with the same fence"
    );
    let free = |conn: &mut redis::Connection| -> i64 {
        release
            .key("replayed")
            .arg(token)
            .arg(10_000)
            .arg(250)
            .invoke(conn)
            .unwrap()
    };
    assert_eq!(free(&mut conn), 1);
    assert_eq!(
        free(&mut conn),
        1,
        "a replayed release must not report a lost lock"
    );
    // And a stranger's token still finds nothing to release.
    let stranger: i64 = release
        .key("replayed")
        .arg("ffffffffffffffffffffffffffffffff")
        .arg(10_000)
        .arg(250)
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(stranger, 0);
}
