//! `#[distributed_lock]` at run time, on a real redis-server and in-process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use distlock::{LockClient, LockError, distributed_lock};
use distlock_tests::{wait_until_contended, wait_until_held};

on_both_backends!(
    callers_exclude_each_other,
    busy_without_wait,
    waits_then_runs,
    early_return_releases,
    panic_releases,
    dropped_future_releases,
    lost_lease_cancels_the_body,
    ignore_lets_the_body_finish,
    nested_calls_on_the_same_key_do_not_deadlock,
    siblings_in_one_task_exclude_each_other,
    joined_calls_inside_a_holder_take_turns,
    a_joined_call_without_wait_finds_its_sibling_busy,
    current_names_the_held_lock,
    skip_does_not_run_the_body_while_busy,
    skip_returns_other_lock_errors,
    at_least_turns_away_later_calls_within_it,
    on_error_hold_keeps_the_minimum_after_an_error,
    on_error_release_lets_the_next_call_in_after_an_error,
    a_panic_keeps_the_minimum_by_default,
    at_most_cancels_a_body_that_runs_forever,
    current_offers_remaining_and_extend_within_at_most,
);

#[distributed_lock(key = "excl:{id}", client = locks, wait = "10s")]
async fn critical(locks: &LockClient, id: u32, inside: &AtomicUsize) -> Result<usize, LockError> {
    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(20)).await;
    inside.fetch_sub(1, Ordering::SeqCst);
    Ok(now)
}

async fn callers_exclude_each_other(env: &Env) {
    let inside = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for _ in 0..4 {
        let client = env.client().await;
        let inside = inside.clone();
        calls.push(tokio::spawn(async move {
            let mut max = 0;
            for _ in 0..3 {
                max = max.max(critical(&client, 1, &inside).await.unwrap());
            }
            max
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 1, "two callers were inside at once");
    }
}

#[distributed_lock(key = "once:{name}", client = locks)]
async fn once(locks: &LockClient, name: &str) -> Result<(), LockError> {
    Ok(())
}

async fn busy_without_wait(env: &Env) {
    let other = env.client().await;
    let client = env.client().await;
    let _held = other.lock("once:a").await.unwrap();
    let err = once(&client, "a").await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(err.retry_after().is_some());
    once(&client, "b").await.unwrap();
}

#[distributed_lock(key = "patient", client = locks, wait = "5s")]
async fn patient(locks: &LockClient) -> Result<Instant, LockError> {
    Ok(Instant::now())
}

async fn waits_then_runs(env: &Env) {
    let other = env.client().await;
    let client = env.client().await;
    let held = other.lock("patient").await.unwrap();
    let call = tokio::spawn(async move { patient(&client).await });
    wait_until_contended(&other, "patient").await;
    let released = Instant::now();
    held.release().await.unwrap();
    let ran = call.await.unwrap().unwrap();
    assert!(ran >= released);
    assert!(
        ran - released < Duration::from_millis(500),
        "{:?}",
        ran - released
    );
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the job failed")]
    Failed,
}

#[distributed_lock(key = "fails", client = locks, ttl = "30s")]
async fn fails(locks: &LockClient) -> Result<(), JobError> {
    Err(JobError::Failed)?;
    Ok(())
}

/// The lock must be free at once (one try), not after the 30 s lease.
async fn free_now(client: &LockClient, key: &str) {
    let guard = client.lock(key).wait(Duration::from_secs(1)).await;
    assert!(guard.is_ok(), "`{key}` still held: {guard:?}");
}

async fn early_return_releases(env: &Env) {
    let client = env.client().await;
    assert!(matches!(fails(&client).await, Err(JobError::Failed)));
    free_now(&env.client().await, "fails").await;
    assert_eq!(client.held_locks(), 0);
}

#[distributed_lock(key = "panics", client = locks, ttl = "30s")]
async fn panics(locks: &LockClient) -> Result<(), LockError> {
    panic!("the body panicked");
}

async fn panic_releases(env: &Env) {
    let client = env.client().await;
    let task = tokio::spawn({
        let client = client.clone();
        async move { panics(&client).await }
    });
    assert!(task.await.unwrap_err().is_panic());
    free_now(&env.client().await, "panics").await;
}

#[distributed_lock(key = "forever", client = locks, ttl = "30s")]
async fn forever(locks: &LockClient) -> Result<(), LockError> {
    std::future::pending::<()>().await;
    Ok(())
}

async fn dropped_future_releases(env: &Env) {
    let client = env.client().await;
    let timed_out = tokio::time::timeout(Duration::from_millis(200), forever(&client)).await;
    assert!(timed_out.is_err());
    free_now(&env.client().await, "forever").await;
}

#[distributed_lock(key = "doomed", client = locks, ttl = "300ms")]
async fn doomed(locks: &LockClient, reached_end: &AtomicUsize) -> Result<(), LockError> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    reached_end.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn lost_lease_cancels_the_body(env: &Env) {
    let client = env.client().await;
    let reached_end = Arc::new(AtomicUsize::new(0));
    let call = tokio::spawn({
        let (client, reached_end) = (client.clone(), reached_end.clone());
        async move { doomed(&client, &reached_end).await }
    });
    wait_until_held(&client, "doomed").await;
    env.flush();
    let started = Instant::now();
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reached_end.load(Ordering::SeqCst),
        0,
        "the body was not cancelled"
    );
}

#[distributed_lock(key = "stubborn", client = locks, ttl = "300ms", on_lost = "ignore")]
async fn stubborn(locks: &LockClient) -> Result<u32, LockError> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(7)
}

async fn ignore_lets_the_body_finish(env: &Env) {
    let client = env.client().await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { stubborn(&client).await }
    });
    wait_until_held(&client, "stubborn").await;
    env.flush();
    assert_eq!(call.await.unwrap().unwrap(), 7);
}

#[distributed_lock(key = "account:{id}", client = locks)]
async fn outer(locks: &LockClient, id: u32) -> Result<(u64, u64), LockError> {
    let mine = distlock::current().unwrap().fencing_token();
    let inner = inner(locks, id).await?;
    assert_eq!(distlock::current().unwrap().fencing_token(), mine);
    Ok((mine, inner))
}

#[distributed_lock(key = "account:{id}", client = locks)]
async fn inner(locks: &LockClient, id: u32) -> Result<u64, LockError> {
    Ok(distlock::current().unwrap().fencing_token())
}

async fn nested_calls_on_the_same_key_do_not_deadlock(env: &Env) {
    let client = env.client().await;
    let (outer_fence, inner_fence) =
        tokio::time::timeout(Duration::from_secs(5), outer(&client, 1))
            .await
            .expect("no self-deadlock")
            .unwrap();
    assert_eq!(
        outer_fence, inner_fence,
        "the nested call runs under the outer lock"
    );
    assert_eq!(client.held_locks(), 0);
}

#[distributed_lock(key = "sibling", client = locks)]
async fn sibling(locks: &LockClient) -> Result<(), LockError> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn siblings_in_one_task_exclude_each_other(env: &Env) {
    let client = env.client().await;
    let (a, b) = tokio::join!(sibling(&client), sibling(&client));
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one sibling runs: {a:?} {b:?}"
    );
    assert!(a.err().or(b.err()).unwrap().is_busy());
}

/// How many guarded calls on one key are inside at once, and the most there ever were.
#[derive(Default)]
struct Occupancy {
    inside: AtomicUsize,
    most: AtomicUsize,
    entries: AtomicUsize,
    deepest: AtomicUsize,
}

impl Occupancy {
    fn enter(&self) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[distributed_lock(key = "ledger:{id}", client = locks)]
async fn settle_all(locks: &LockClient, id: u32, seen: &Occupancy) -> Result<u64, LockError> {
    let fence = distlock::current().unwrap().fencing_token();
    let (a, b) = tokio::join!(settle_one(locks, id, seen), settle_one(locks, id, seen));
    assert_eq!((a?, b?), (fence, fence), "both ran under the holder's lock");
    // Called directly (not joined), a nested call runs at once.
    assert_eq!(settle_one(locks, id, seen).await?, fence);
    Ok(fence)
}

#[distributed_lock(key = "ledger:{id}", client = locks, wait = "5s")]
async fn settle_one(locks: &LockClient, id: u32, seen: &Occupancy) -> Result<u64, LockError> {
    seen.enter();
    // Give a sibling every chance to run in between (no timing involved).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let deeper = audit(locks, id, seen).await;
    seen.leave();
    deeper
}

#[distributed_lock(key = "ledger:{id}", client = locks)]
async fn audit(locks: &LockClient, id: u32, seen: &Occupancy) -> Result<u64, LockError> {
    seen.deepest.fetch_add(1, Ordering::SeqCst);
    Ok(distlock::current().unwrap().fencing_token())
}

async fn joined_calls_inside_a_holder_take_turns(env: &Env) {
    let client = env.client().await;
    let seen = Occupancy::default();
    tokio::time::timeout(Duration::from_secs(10), settle_all(&client, 1, &seen))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(
        seen.most.load(Ordering::SeqCst),
        1,
        "joined calls re-entering one holder ran at the same time"
    );
    assert_eq!(seen.entries.load(Ordering::SeqCst), 3);
    assert_eq!(
        seen.deepest.load(Ordering::SeqCst),
        3,
        "a call nested in a nested call runs"
    );
    assert_eq!(client.held_locks(), 0);
}

#[distributed_lock(key = "batch:{id}", client = locks)]
async fn batch(
    locks: &LockClient,
    id: u32,
    seen: &Occupancy,
) -> Result<(Result<(), LockError>, Result<(), LockError>), LockError> {
    Ok(tokio::join!(item(locks, id, seen), item(locks, id, seen)))
}

#[distributed_lock(key = "batch:{id}", client = locks)]
async fn item(locks: &LockClient, id: u32, seen: &Occupancy) -> Result<(), LockError> {
    seen.enter();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    seen.leave();
    Ok(())
}

async fn a_joined_call_without_wait_finds_its_sibling_busy(env: &Env) {
    let client = env.client().await;
    let seen = Occupancy::default();
    let (a, b) = batch(&client, 1, &seen).await.unwrap();
    assert!(a.is_ok() != b.is_ok(), "exactly one runs: {a:?} {b:?}");
    assert!(a.err().or(b.err()).unwrap().is_busy());
    assert_eq!(seen.most.load(Ordering::SeqCst), 1);
}

#[distributed_lock(key = "report:{day}", client = locks)]
async fn report(locks: &LockClient, day: u32) -> Result<(String, u64), LockError> {
    let held = distlock::current().expect("inside a guarded call");
    let info = locks.inspect(held.key()).await?.expect("held");
    assert_eq!(info.fencing_token, held.fencing_token());
    Ok((held.key().to_owned(), held.fencing_token()))
}

async fn current_names_the_held_lock(env: &Env) {
    let client = env.client().await;
    assert!(distlock::current().is_none());
    let (key, fence) = report(&client, 3).await.unwrap();
    assert_eq!(key, "report:3");
    assert!(fence > 0);
    assert!(distlock::current().is_none());
}

#[distributed_lock(key = "nightly:{day}", client = locks, on_busy = "skip")]
async fn nightly(
    locks: &LockClient,
    day: &str,
    runs: &AtomicUsize,
) -> Result<Option<usize>, LockError> {
    Ok(Some(runs.fetch_add(1, Ordering::SeqCst) + 1))
}

async fn skip_does_not_run_the_body_while_busy(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let runs = AtomicUsize::new(0);
    let held = other.lock("nightly:1").await.unwrap();
    for _ in 0..5 {
        assert_eq!(nightly(&client, "1", &runs).await.unwrap(), None);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a skipped call ran the body"
    );
    // Another key is not busy.
    assert_eq!(nightly(&client, "2", &runs).await.unwrap(), Some(1));
    held.release().await.unwrap();
    assert_eq!(nightly(&client, "1", &runs).await.unwrap(), Some(2));
    assert_eq!(client.held_locks(), 0);
}

async fn skip_returns_other_lock_errors(env: &Env) {
    let client = env.client().await;
    let runs = AtomicUsize::new(0);
    // Not busy but refused: an invalid key is an error, not a skip.
    let long = "x".repeat(distlock::MAX_KEY_LEN + 1);
    let err = nightly(&client, &long, &runs).await.unwrap_err();
    assert!(!err.is_busy(), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

const AT_LEAST: Duration = Duration::from_millis(600);

#[distributed_lock(key = "tick:{n}", client = locks, on_busy = "skip", at_least = "600ms")]
async fn tick(locks: &LockClient, n: u32, runs: &AtomicUsize) -> Result<Option<()>, LockError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(Some(()))
}

/// Instances triggered for the same tick: the first runs the job, the ones triggered within
/// `at_least` after it took the lock are turned away (also after its body returned), the one
/// triggered after it runs.
async fn at_least_turns_away_later_calls_within_it(env: &Env) {
    let first = env.client().await;
    let later = env.client().await;
    let runs = AtomicUsize::new(0);
    let start = Instant::now();
    assert_eq!(tick(&first, 1, &runs).await.unwrap(), Some(()));
    // The body returned: nothing in this process keeps the lock (no watchdog entry, no task)...
    assert_eq!(first.held_locks(), 0);
    // ...but the key is kept for the rest of the minimum.
    assert_eq!(tick(&later, 1, &runs).await.unwrap(), None);
    assert_eq!(tick(&first, 1, &runs).await.unwrap(), None);
    let info = later.inspect("tick:1").await.unwrap().expect("kept");
    assert!(
        info.ttl.expect("a lease") <= AT_LEAST + Duration::from_millis(50),
        "{info:?}"
    );
    tokio::time::sleep_until((start + Duration::from_millis(250)).into()).await;
    let late_in_window = start.elapsed();
    assert_eq!(tick(&later, 1, &runs).await.unwrap(), None);
    assert!(
        late_in_window < Duration::from_millis(500),
        "the test itself was too slow to check inside the window: {late_in_window:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Past the minimum (its drift margin is 1 % + 2 ms): the next trigger runs.
    tokio::time::sleep_until((start + AT_LEAST + Duration::from_millis(300)).into()).await;
    assert_eq!(tick(&later, 1, &runs).await.unwrap(), Some(()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[distributed_lock(key = "import:{n}", client = locks, on_busy = "skip", at_least = "30s")]
async fn import_holding(locks: &LockClient, n: u32, fail: bool) -> Result<Option<()>, JobError> {
    if fail {
        return Err(JobError::Failed);
    }
    Ok(Some(()))
}

#[distributed_lock(
    key = "import:{n}",
    client = locks,
    on_busy = "skip",
    at_least = "30s",
    on_error = "release"
)]
async fn import_releasing(locks: &LockClient, n: u32, fail: bool) -> Result<Option<()>, JobError> {
    if fail {
        return Err(JobError::Failed);
    }
    Ok(Some(()))
}

async fn on_error_hold_keeps_the_minimum_after_an_error(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    assert!(matches!(
        import_holding(&client, 1, true).await,
        Err(JobError::Failed)
    ));
    // The failed run keeps the lock for the rest of the minimum: nobody retries it at once.
    assert_eq!(import_holding(&other, 1, false).await.unwrap(), None);
    assert_eq!(import_releasing(&other, 1, false).await.unwrap(), None);
}

async fn on_error_release_lets_the_next_call_in_after_an_error(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    assert!(matches!(
        import_releasing(&client, 1, true).await,
        Err(JobError::Failed)
    ));
    // Released at once: another instance retries and succeeds...
    assert_eq!(import_releasing(&other, 1, false).await.unwrap(), Some(()));
    // ...and a success keeps the minimum as usual.
    assert_eq!(import_releasing(&client, 1, false).await.unwrap(), None);
}

// A minimum of 3 s: the panic hook prints a backtrace before the guard drops, which on a
// loaded machine has taken longer than 800 ms (the minimum then passed before the drop).
#[distributed_lock(key = "fragile:{n}", client = locks, ttl = "30s", at_least = "3s")]
async fn fragile(locks: &LockClient, n: u32) -> Result<(), LockError> {
    panic!("the job panicked");
}

#[distributed_lock(
    key = "fragile:{n}",
    client = locks,
    ttl = "30s",
    at_least = "3s",
    on_error = "release"
)]
async fn fragile_releasing(locks: &LockClient, n: u32) -> Result<(), LockError> {
    panic!("the job panicked");
}

async fn a_panic_keeps_the_minimum_by_default(env: &Env) {
    let client = env.client().await;
    let other = env.client().await;
    let start = Instant::now();
    let task = tokio::spawn({
        let client = client.clone();
        async move { fragile(&client, 1).await }
    });
    assert!(task.await.unwrap_err().is_panic());
    // The dropped guard lets go in the background: the 30 s lease becomes what remains of
    // the 3 s minimum, and the key is kept until then.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = other.inspect("fragile:1").await.unwrap();
        let info = info.expect("the minimum hold was not kept after a panic");
        if info.ttl.expect("a lease") <= Duration::from_secs(3) {
            break;
        }
        assert!(Instant::now() < deadline, "never let go: {info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep_until((start + Duration::from_millis(3300)).into()).await;
    free_now(&other, "fragile:1").await;

    // With `on_error = "release"`, a panic frees the lock at once.
    let task = tokio::spawn({
        let client = client.clone();
        async move { fragile_releasing(&client, 2).await }
    });
    assert!(task.await.unwrap_err().is_panic());
    free_now(&other, "fragile:2").await;
}

#[distributed_lock(key = "hung", client = locks, ttl = "300ms", at_most = "700ms")]
async fn hung(locks: &LockClient, reached_end: &AtomicUsize) -> Result<(), LockError> {
    std::future::pending::<()>().await;
    reached_end.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn at_most_cancels_a_body_that_runs_forever(env: &Env) {
    let client = env.client().await;
    let reached_end = AtomicUsize::new(0);
    let start = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), hung(&client, &reached_end))
        .await
        .expect("at_most did not end the call")
        .unwrap_err();
    let took = start.elapsed();
    assert!(err.is_lost(), "{err}");
    assert_eq!(reached_end.load(Ordering::SeqCst), 0);
    // The watchdog renewed the 300 ms lease until the cap (less its drift margin), not past it.
    assert!(took >= Duration::from_millis(650), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(client.held_locks(), 0);
    free_now(&env.client().await, "hung").await;
}

#[distributed_lock(key = "extended", client = locks, ttl = "1s", at_most = "3s")]
async fn extended(
    locks: &LockClient,
    observed: &std::sync::Mutex<Vec<Duration>>,
) -> Result<(), LockError> {
    let held = distlock::current().expect("inside a guarded call");
    let seen = |d| observed.lock().unwrap().push(d);
    seen(held.remaining());
    held.extend(Duration::from_secs(2)).await?;
    seen(held.remaining());
    // Far past `at_most`: the lease stops at it.
    held.extend(Duration::from_secs(60)).await?;
    seen(held.remaining());
    let info = locks.inspect(held.key()).await?.expect("held");
    seen(info.ttl.expect("a lease"));
    Ok(())
}

async fn current_offers_remaining_and_extend_within_at_most(env: &Env) {
    let client = env.client().await;
    let observed = std::sync::Mutex::new(Vec::new());
    extended(&client, &observed).await.unwrap();
    let observed = observed.into_inner().unwrap();
    let [initial, extended, capped, server] = observed[..] else {
        panic!("{observed:?}");
    };
    let s = Duration::from_secs;
    assert!(
        initial <= s(1) && initial > Duration::from_millis(500),
        "{observed:?}"
    );
    assert!(extended <= s(2) && extended > s(1), "{observed:?}");
    assert!(capped <= s(3) && capped > s(2), "{observed:?}");
    assert!(server <= s(3) && server > s(2), "{observed:?}");
}
