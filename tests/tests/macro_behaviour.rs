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
