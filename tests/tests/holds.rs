//! `min_hold` and `max_hold` on a lock request, and the `HeldLock` handle: the scheduler
//! semantics under `#[distributed_lock(at_least, at_most)]`, on Redis and in-process.

mod common;

use std::time::{Duration, Instant};

use common::{Env, MS};
use distlock::LockError;

/// Released within its minimum hold, the lock stays held for the rest of it: a one-try
/// acquire is turned away, a waiting one gets it only once the minimum is over.
async fn a_release_within_the_minimum_keeps_the_lock(env: &Env) {
    let first = env.client().await;
    let other = env.client().await;
    let min = 600 * MS;
    // The minimum is measured from when the acquire was sent.
    let acquired = Instant::now();
    let guard = first.lock("report").min_hold(min).await.unwrap();
    guard.release().await.unwrap();
    let busy = other.lock("report").await.unwrap_err();
    assert!(busy.is_busy(), "taken within the minimum hold: {busy:?}");
    let ttl = other.inspect("report").await.unwrap().unwrap().ttl.unwrap();
    assert!(
        ttl <= min + 20 * MS,
        "kept for {ttl:?}, longer than the minimum"
    );
    let again = other
        .lock("report")
        .wait(Duration::from_secs(5))
        .await
        .expect("free after the minimum");
    assert!(
        acquired.elapsed() >= min,
        "taken {:?} after the first acquire, within the {min:?} minimum",
        acquired.elapsed()
    );
    again.release().await.unwrap();
}

/// Past its minimum, a release deletes as usual.
async fn a_release_after_the_minimum_frees_at_once(env: &Env) {
    let client = env.client().await;
    let guard = client.lock("quick").min_hold(150 * MS).await.unwrap();
    tokio::time::sleep(250 * MS).await; // time is the subject: past the minimum
    guard.release().await.unwrap();
    assert!(client.inspect("quick").await.unwrap().is_none());
    let _free = client.lock("quick").await.expect("free at once");
}

/// `release_now` ignores the minimum (a failed run that another instance may retry).
async fn release_now_ignores_the_minimum(env: &Env) {
    let client = env.client().await;
    let guard = client
        .lock("failed")
        .min_hold(Duration::from_secs(30))
        .await
        .unwrap();
    guard.release_now().await.unwrap();
    let _free = client.lock("failed").await.expect("free at once");
}

/// A dropped guard keeps the minimum (a panicking job is not retried by every instance at
/// once), unless told otherwise.
async fn a_dropped_guard_keeps_the_minimum_unless_told(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let guard = client
        .lock("dropped")
        .min_hold(Duration::from_secs(30))
        .await
        .unwrap();
    drop(guard);
    distlock_tests::wait_until_held(&other, "dropped").await;
    let ttl = wait_for_ttl_below(&other, "dropped", Duration::from_secs(31)).await;
    assert!(ttl > Duration::from_secs(25), "kept for {ttl:?}");
    assert!(other.lock("dropped").await.unwrap_err().is_busy());

    let mut guard = client
        .lock("dropped-free")
        .min_hold(Duration::from_secs(30))
        .await
        .unwrap();
    guard.keep_minimum_on_drop(false);
    drop(guard);
    let _free = other
        .lock("dropped-free")
        .wait(Duration::from_secs(2))
        .await
        .expect("released at once");
}

/// The minimum may outlast the lease: the release step sets the lease to what remains.
async fn the_minimum_may_be_longer_than_the_lease(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let guard = client
        .lock("long-min")
        .ttl(200 * MS)
        .watchdog(false)
        .min_hold(Duration::from_secs(2))
        .await
        .unwrap();
    guard.release().await.unwrap();
    let ttl = other
        .inspect("long-min")
        .await
        .unwrap()
        .unwrap()
        .ttl
        .unwrap();
    assert!(
        ttl > Duration::from_secs(1),
        "kept for {ttl:?}: the release did not lengthen the lease to the minimum"
    );
    assert!(other.lock("long-min").await.unwrap_err().is_busy());
}

/// Within one client too: a task waiting for the key gets it only after the minimum.
async fn local_waiters_respect_the_minimum(env: &Env) {
    let client = env.client().await;
    let min = 500 * MS;
    let acquired = Instant::now();
    let guard = client.lock("local").min_hold(min).await.unwrap();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move {
            let guard = client.lock("local").wait(Duration::from_secs(5)).await;
            (guard.map(|g| g.fencing_token()), Instant::now())
        }
    });
    guard.release().await.unwrap();
    let (fence, at) = waiter.await.unwrap();
    assert!(fence.is_ok(), "the waiter failed: {fence:?}");
    assert!(
        at.duration_since(acquired) >= min,
        "a local waiter got the key {:?} after the acquire, within the minimum",
        at.duration_since(acquired)
    );
}

/// The maximum holds even while the watchdog renews: the lease ends at it, the guard reports
/// it lost, and another client takes the key — never while the first still believes it
/// holds it.
async fn the_maximum_ends_a_renewed_lease(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let max = 700 * MS;
    let guard = client
        .lock("hung-job")
        .ttl(300 * MS)
        .max_hold(max)
        .await
        .unwrap();
    let acquired = Instant::now();
    let taken = other
        .lock("hung-job")
        .wait(Duration::from_secs(5))
        .await
        .expect("free after the maximum");
    let after = acquired.elapsed();
    assert!(
        !guard.is_held(),
        "two holders: the capped guard still believes it holds the key"
    );
    assert!(
        after >= max - 50 * MS,
        "taken {after:?} after the acquire: the cap ended the lease early"
    );
    assert!(after < max + Duration::from_secs(2), "held {after:?}");
    tokio::time::timeout(Duration::from_millis(100), guard.lost())
        .await
        .expect("lost() fired at the cap");
    assert!(taken.is_held());
}

/// `extend` never reaches past the maximum: the server's TTL stops at the cap too.
async fn extend_stops_at_the_maximum(env: &Env) {
    let client = env.client().await;
    let guard = client
        .lock("capped-extend")
        .ttl(Duration::from_secs(1))
        .max_hold(Duration::from_secs(2))
        .await
        .unwrap();
    guard.extend(Duration::from_secs(60)).await.unwrap();
    let held = guard.held_lock();
    assert!(held.remaining() <= Duration::from_secs(2));
    let ttl = client
        .inspect("capped-extend")
        .await
        .unwrap()
        .unwrap()
        .ttl
        .unwrap();
    assert!(
        ttl <= Duration::from_secs(2),
        "server TTL {ttl:?} past the cap"
    );
    assert!(ttl > Duration::from_secs(1), "server TTL {ttl:?}");
}

/// A `HeldLock` follows its guard: held while it is, not after release, and it cannot
/// extend a released lock.
async fn a_held_lock_follows_its_guard(env: &Env) {
    let client = env.client().await;
    let guard = client
        .lock("handle")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap();
    let held = guard.held_lock();
    assert_eq!(held.key(), "handle");
    assert_eq!(held.fencing_token(), guard.fencing_token());
    assert!(held.is_held());
    assert!(held.remaining() > Duration::from_secs(4));
    held.extend(Duration::from_secs(20)).await.unwrap();
    assert!(guard.remaining() > Duration::from_secs(19));
    let lost = held.lost();
    guard.release().await.unwrap();
    tokio::time::timeout(Duration::from_millis(100), lost)
        .await
        .expect("lost() resolves once released");
    assert!(!held.is_held());
    assert_eq!(held.remaining(), Duration::ZERO);
    let err = held.extend(Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert!(client.inspect("handle").await.unwrap().is_none());
}

/// Bad holds are refused with a clear error, before anything is sent.
async fn bad_holds_are_refused(env: &Env) {
    let client = env.client().await;
    let cases = [
        (
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(1)),
            "min_hold",
        ),
        (None, Some(50 * MS), "max_hold"),
        (Some(Duration::from_secs(40 * 86_400)), None, "min_hold"),
    ];
    for (min, max, what) in cases {
        let mut request = client.lock("bad");
        if let Some(min) = min {
            request = request.min_hold(min);
        }
        if let Some(max) = max {
            request = request.max_hold(max);
        }
        match request.await {
            Err(LockError::InvalidDuration { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{min:?}/{max:?} gave {other:?}"),
        }
    }
    assert!(client.inspect("bad").await.unwrap().is_none());
}

async fn wait_for_ttl_below(client: &distlock::LockClient, key: &str, below: Duration) -> Duration {
    for _ in 0..200 {
        if let Some(ttl) = client.inspect(key).await.unwrap().and_then(|i| i.ttl)
            && ttl < below
        {
            return ttl;
        }
        tokio::time::sleep(5 * MS).await;
    }
    panic!("the TTL of `{key}` never went below {below:?}");
}

on_both_backends!(
    a_release_within_the_minimum_keeps_the_lock,
    a_release_after_the_minimum_frees_at_once,
    release_now_ignores_the_minimum,
    a_dropped_guard_keeps_the_minimum_unless_told,
    the_minimum_may_be_longer_than_the_lease,
    local_waiters_respect_the_minimum,
    the_maximum_ends_a_renewed_lease,
    extend_stops_at_the_maximum,
    a_held_lock_follows_its_guard,
    bad_holds_are_refused,
    a_scope_outliving_its_guard_does_not_lend_the_lock,
);

/// On Redlock the minimum hold becomes a lease, so it is bounded by the quarantine like one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redlock_minimum_longer_than_the_quarantine_is_refused() {
    let servers: Vec<_> = (0..3)
        .map(|_| distlock_tests::RedisServer::start())
        .collect();
    let client = distlock::LockClient::builder()
        .redlock(servers.iter().map(|s| s.url()))
        .redlock_quarantine(Duration::from_secs(2))
        .default_ttl(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let err = client
        .lock("k")
        .min_hold(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LockError::InvalidDuration {
                what: "min_hold",
                ..
            }
        ),
        "{err:?}"
    );
}

#[distlock::distributed_lock(key = "scoped", client = client)]
async fn scoped_job(client: &distlock::LockClient) -> Result<u64, LockError> {
    Ok(distlock::current().expect("held").fencing_token())
}

/// A `HeldLock` scope lets guarded calls on the same key re-enter it only while the lock is
/// held: once its guard is released, a guarded call under the scope acquires for itself and
/// is turned away by the next holder, never runs unlocked.
async fn a_scope_outliving_its_guard_does_not_lend_the_lock(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let guard = client.lock("scoped").await.unwrap();
    let held = guard.held_lock();
    let fence = guard.fencing_token();
    let inside = held.clone().scope(scoped_job(&client)).await.unwrap();
    assert_eq!(inside, fence, "re-entered while held");
    guard.release().await.unwrap();
    let _next = other.lock("scoped").await.unwrap();
    let after = held.scope(scoped_job(&client)).await;
    assert!(
        after.as_ref().is_err_and(LockError::is_busy),
        "ran under a released lock: {after:?}"
    );
}
