//! The `distlock` runtime end to end: every behaviour on a real redis-server and in-process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Env, MS};
use distlock::LockError;

on_both_backends!(
    acquire_release_and_fences_increase,
    busy_without_wait_reports_the_holders_lease,
    only_the_owner_releases,
    extend_sets_a_new_lease_and_fails_once_lost,
    no_lost_updates_under_contention,
    waiter_is_woken_by_release_not_by_polling,
    wait_runs_out_as_busy,
    waiter_takes_over_when_the_lease_runs_out,
    watchdog_keeps_a_short_lease_alive,
    flush_while_held_fires_lost,
    no_renewals_outlive_their_release,
    dropped_guard_releases_at_once,
    dropped_acquire_never_leaks_a_lock,
    inspect_names_the_holder,
    bad_keys_and_durations_are_typed_errors,
);

async fn acquire_release_and_fences_increase(env: &Env) {
    let client = env.client().await;
    let mut last = 0;
    for _ in 0..20 {
        let guard = client.lock("fence").await.expect("free lock");
        assert!(guard.is_held());
        assert_eq!(guard.key(), "fence");
        assert!(
            guard.fencing_token() > last,
            "fences must strictly increase"
        );
        last = guard.fencing_token();
        guard.release().await.expect("release");
    }
    // After expiry too.
    let guard = client
        .lock("fence")
        .ttl(Duration::from_millis(100))
        .watchdog(false)
        .await
        .unwrap();
    guard.lost().await;
    // lost() fires a drift margin before the server expires the key: wait out the margin.
    let after_expiry = client
        .lock("fence")
        .wait(Duration::from_secs(1))
        .await
        .unwrap();
    assert!(after_expiry.fencing_token() > last);
    assert_eq!(client.held_locks(), 1);
}

async fn busy_without_wait_reports_the_holders_lease(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let _held = a.lock("busy").ttl(Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let err = b.lock("busy").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "one try, no wait"
    );
    assert!(err.is_busy(), "{err}");
    assert_eq!(err.key(), Some("busy"));
    let retry = err.retry_after().expect("holder's remaining lease");
    assert!(
        retry > Duration::from_secs(3) && retry <= Duration::from_secs(5),
        "{retry:?}"
    );
    // The same client's second request is busy as well (local queue, no self-deadlock).
    let err = a.lock("busy").await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(err.retry_after().is_some());
}

async fn only_the_owner_releases(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let old = a
        .lock("owner")
        .ttl(Duration::from_millis(150))
        .watchdog(false)
        .await
        .unwrap();
    old.lost().await;
    let new = b.lock("owner").wait(Duration::from_secs(2)).await.unwrap();
    // The stale holder's release must not delete the new holder's lock.
    let err = old.release().await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    let info = b.inspect("owner").await.unwrap().expect("still held by b");
    assert_eq!(info.fencing_token, new.fencing_token());
    assert!(a.lock("owner").await.unwrap_err().is_busy());
    new.release().await.unwrap();
}

async fn extend_sets_a_new_lease_and_fails_once_lost(env: &Env) {
    let client = env.client().await;
    let guard = client
        .lock("extend")
        .ttl(Duration::from_millis(300))
        .watchdog(false)
        .await
        .unwrap();
    guard.extend(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // time is the subject here
    assert!(guard.is_held(), "extended past the first lease");
    let ttl = client
        .inspect("extend")
        .await
        .unwrap()
        .unwrap()
        .ttl
        .unwrap();
    assert!(ttl > Duration::from_secs(4), "{ttl:?}");
    env.flush();
    let err = guard.extend(Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(!guard.is_held());
    let err = guard.extend(Duration::from_millis(10)).await.unwrap_err();
    assert!(matches!(err, LockError::InvalidDuration { .. }), "{err}");
}

async fn no_lost_updates_under_contention(env: &Env) {
    // 16 tasks over 4 clients (as 4 processes would be) x 50 rounds of a read-modify-write
    // that loses updates without mutual exclusion.
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = env.client().await;
        for t in 0..4 {
            let client = client.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let guard = client
                        .lock("counter")
                        .wait(Duration::from_secs(30))
                        .await
                        .unwrap_or_else(|e| panic!("client {c} task {t}: {e}"));
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 16 * 50, "lost updates");
}

async fn waiter_is_woken_by_release_not_by_polling(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let held = a.lock("notify").ttl(Duration::from_secs(30)).await.unwrap();
    let waiter = tokio::spawn(async move {
        let guard = b.lock("notify").wait(Duration::from_secs(20)).await;
        (guard.map(|g| g.fencing_token()), Instant::now())
    });
    // Let the waiter settle into its wait: by now its backoff is at the 1 s cap (±25 %), so
    // only a release notice can wake it within the bound below.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!waiter.is_finished());
    let released_at = Instant::now();
    let first_fence = held.fencing_token();
    held.release().await.unwrap();
    let (fence, acquired_at) = waiter.await.unwrap();
    assert!(fence.unwrap() > first_fence);
    let latency = acquired_at - released_at;
    // Notified: well under a second with a 30 s lease (the backoff cap alone would be ≥ 75ms
    // late after a 300ms wait; the notice is a round trip).
    assert!(
        latency < Duration::from_millis(60),
        "woken after {latency:?}"
    );
}

async fn wait_runs_out_as_busy(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let _held = a.lock("patience").await.unwrap();
    let started = Instant::now();
    let err = b
        .lock("patience")
        .wait(Duration::from_millis(400))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_busy(), "{err}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

async fn waiter_takes_over_when_the_lease_runs_out(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let held = a
        .lock("expiry")
        .ttl(Duration::from_millis(400))
        .watchdog(false)
        .await
        .unwrap();
    let started = Instant::now();
    let next = b.lock("expiry").wait(Duration::from_secs(5)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "took over early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1000),
        "slow takeover: {waited:?}"
    );
    assert!(next.fencing_token() > held.fencing_token());
    assert!(!held.is_held());
}

async fn watchdog_keeps_a_short_lease_alive(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let guard = a
        .lock("renewed")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await; // four leases long
    assert!(guard.is_held());
    assert!(b.lock("renewed").await.unwrap_err().is_busy());
    guard.release().await.unwrap();
    let _next = b.lock("renewed").await.unwrap();
}

async fn flush_while_held_fires_lost(env: &Env) {
    let client = env.client().await;
    let ttl = Duration::from_millis(1500);
    let guard = client.lock("flushed").ttl(ttl).await.unwrap();
    env.flush();
    let flushed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() fires");
    let after = flushed_at.elapsed();
    // Noticed by the next renewal (due ttl/3 after the acquire), not by the lease running out.
    assert!(after < ttl / 3 + 400 * MS, "noticed after {after:?}");
    assert!(!guard.is_held());
    assert_eq!(client.held_locks(), 0, "a lost lease leaves the watchdog");
    assert!(guard.release().await.unwrap_err().is_lost());
}

async fn no_renewals_outlive_their_release(env: &Env) {
    let client = env.client().await;
    for i in 0..10_000u32 {
        let guard = client.lock(format!("cycle:{}", i % 8)).await.unwrap();
        if i % 2 == 0 {
            guard.release().await.unwrap();
        } else {
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
    // Dropped guards release in the background; give those a moment to land.
    for _ in 0..100 {
        if client.held_locks() == 0 {
            break;
        }
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(client.held_locks(), 0, "the watchdog's table must be empty");
    for k in 0..8 {
        let key = format!("cycle:{k}");
        let guard = client.lock(key.as_str()).wait(Duration::from_secs(2)).await;
        assert!(guard.is_ok(), "{key} still held after its release");
    }
}

async fn dropped_guard_releases_at_once(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    let guard = a
        .lock("dropped")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    drop(guard);
    let started = Instant::now();
    let _next = b
        .lock("dropped")
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

async fn dropped_acquire_never_leaks_a_lock(env: &Env) {
    let a = env.client().await;
    let b = env.client().await;
    for _ in 0..50 {
        // Polled once (the acquire is sent), then dropped before the answer.
        let _ = tokio::time::timeout(
            Duration::ZERO,
            a.lock("cancelled").ttl(Duration::from_secs(30)),
        )
        .await;
        let started = Instant::now();
        let guard = b
            .lock("cancelled")
            .wait(Duration::from_secs(5))
            .await
            .expect("a dropped acquire released its lock");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        guard.release().await.unwrap();
    }
    assert_eq!(a.held_locks(), 0);
}

async fn inspect_names_the_holder(env: &Env) {
    let client = env.client().await;
    assert_eq!(client.inspect("who").await.unwrap(), None);
    let guard = client
        .lock("who")
        .ttl(Duration::from_secs(9))
        .await
        .unwrap();
    let info = client.inspect("who").await.unwrap().expect("held");
    assert_eq!(info.fencing_token, guard.fencing_token());
    assert_eq!(info.pid, Some(std::process::id()));
    assert!(info.host.is_some_and(|h| !h.is_empty()));
    assert!(info.acquired_at_ms.unwrap() > 1_600_000_000_000);
    assert!(info.ttl.unwrap() <= Duration::from_secs(9));
    assert!(!info.contended);
    assert!(env.client().await.lock("who").await.is_err());
    let info = client.inspect("who").await.unwrap().unwrap();
    assert!(!info.contended, "a one-try acquire leaves no trace");
    let waited = env
        .client()
        .await
        .lock("who")
        .wait(Duration::from_millis(150));
    assert!(waited.await.is_err());
    assert!(client.inspect("who").await.unwrap().unwrap().contended);
}

async fn bad_keys_and_durations_are_typed_errors(env: &Env) {
    let client = env.client().await;
    for key in [
        String::new(),
        "x".repeat(distlock::MAX_KEY_LEN + 1),
        "a\r\nb".into(),
    ] {
        let err = client.lock(key).await.unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err}");
    }
    let err = client
        .lock("k")
        .ttl(Duration::from_millis(99))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LockError::InvalidDuration { what: "ttl", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("100ms"), "{err}");
    let err = env
        .builder()
        .default_ttl(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidDuration { .. }), "{err}");
    // A key of exactly the limit is fine.
    let _longest = client
        .lock("k".repeat(distlock::MAX_KEY_LEN))
        .await
        .unwrap();
    assert_eq!(client.held_locks(), 1);
}
