//! Semaphores, read/write locks and `lock_all` on every deployment: what each grants, what it
//! turns away, how waiters are served, and that nothing is left taken by a refused set.
//!
//! One test per deployment runs every scenario on one started deployment, with two clients
//! (two connections, two watchdogs), as two processes would have.

use std::time::Duration;

use distlock::{LockClient, LockError};
use distlock_tests::fuzz::deploy::{Deployment, Kind};
use distlock_tests::{wait_until_contended, wait_until_held};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(2);
const LONG_WAIT: Duration = Duration::from_secs(10);

async fn scenarios(kind: Kind) {
    let deployment = Deployment::start(kind, 2);
    let a = deployment.target(0).client(TIMEOUT).await;
    let b = deployment.target(1).client(TIMEOUT).await;
    if kind == Kind::Redlock {
        // A node votes once it kept its data for the quarantine, counted from the boot marker
        // the first acquire leaves: time itself is what is waited for.
        let _ = a.lock("warm-up").await;
        tokio::time::sleep(distlock_tests::fuzz::deploy::QUARANTINE + Duration::from_millis(200))
            .await;
    }
    // Redlock keeps no queue of waiters: waiting there is notified but not ordered.
    let queues = kind != Kind::Redlock;

    semaphore_grants_at_most_its_permits(&a, &b).await;
    acquire_many_takes_all_or_none(&a, &b).await;
    semaphore_waiters_are_served_as_permits_come_back(&a, &b, queues).await;
    a_dead_holders_permit_frees_itself(&a, &b).await;
    bad_counts_are_refused(&a).await;
    readers_share_and_writers_exclude(&a, &b).await;
    a_waiting_writer_is_not_passed_by_later_readers(&a, &b, queues).await;
    lock_all_takes_every_key_or_none(&a, &b).await;
    overlapping_sets_in_opposite_orders_do_not_deadlock(&a, &b).await;
    a_set_reports_the_loss_of_any_of_its_locks(&a).await;
}

async fn semaphore_grants_at_most_its_permits(a: &LockClient, b: &LockClient) {
    let on_a = a.semaphore("sem-max", 3);
    let on_b = b.semaphore("sem-max", 3);
    let p1 = on_a.acquire().await.expect("first permit");
    let p2 = on_a.acquire().await.expect("second permit");
    let p3 = on_b.acquire().await.expect("third permit");
    let err = on_b.acquire().await.expect_err("no fourth permit");
    assert!(err.is_busy(), "{err}");
    assert!(err.to_string().contains("sem-max"), "{err}");
    let holders = on_b.holders().await.expect("holders");
    assert_eq!(holders.len(), 3, "{holders:?}");
    let mut fences: Vec<u64> = [&p1, &p2, &p3].iter().map(|p| p.fencing_token()).collect();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 3, "each permit has its own fence");
    p2.release().await.expect("release");
    let p4 = on_b.acquire().await.expect("a permit came back");
    for p in [p1, p3, p4] {
        p.release().await.expect("release");
    }
    assert!(on_a.holders().await.expect("holders").is_empty());
}

async fn acquire_many_takes_all_or_none(a: &LockClient, b: &LockClient) {
    let on_a = a.semaphore("sem-many", 4);
    let on_b = b.semaphore("sem-many", 4);
    let two = on_a.acquire_many(2).await.expect("two permits");
    assert_eq!(two.fencing_tokens().count(), 2);
    let err = on_b.acquire_many(3).await.expect_err("only two are left");
    assert!(err.is_busy(), "{err}");
    assert_eq!(
        on_b.holders().await.expect("holders").len(),
        2,
        "a refused set left nothing"
    );
    let other_two = on_b.acquire_many(2).await.expect("the two left");
    assert!(on_b.acquire().await.expect_err("none left").is_busy());
    // A waiting gatherer gets all it asked for once enough come back.
    let waiter = tokio::spawn({
        let on_b = on_b.clone();
        async move { on_b.acquire_many(3).wait(LONG_WAIT).await }
    });
    two.release().await.expect("release");
    other_two.release().await.expect("release");
    let three = waiter
        .await
        .expect("task")
        .expect("three permits after the wait");
    assert_eq!(three.fencing_tokens().count(), 3);
    assert_eq!(on_a.holders().await.expect("holders").len(), 3);
    three.release().await.expect("release");
}

async fn semaphore_waiters_are_served_as_permits_come_back(
    a: &LockClient,
    b: &LockClient,
    queues: bool,
) {
    let on_a = a.semaphore("sem-wait", 1);
    let held = on_a.acquire().await.expect("the permit");
    let (served, mut order) = mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for name in ["first", "second"] {
        let sem = b.semaphore("sem-wait", 1);
        let served = served.clone();
        waiters.push(tokio::spawn(async move {
            let permit = sem.acquire().wait(LONG_WAIT).await.expect("served");
            served.send(name).expect("the test listens");
            // Held a moment, so that the next one is served after.
            tokio::time::sleep(Duration::from_millis(50)).await;
            permit.release().await.expect("release");
        }));
        if queues {
            // The first is queued before the second asks.
            wait_until_contended(a, "semaphore:sem-wait:0").await;
        }
    }
    held.release().await.expect("release");
    let got = [order.recv().await.unwrap(), order.recv().await.unwrap()];
    if queues {
        assert_eq!(got, ["first", "second"], "served in the order they came");
    }
    for w in waiters {
        w.await.expect("waiter");
    }
}

async fn a_dead_holders_permit_frees_itself(a: &LockClient, b: &LockClient) {
    let dead = a
        .semaphore("sem-dead", 1)
        .acquire()
        .ttl(Duration::from_millis(300))
        .watchdog(false)
        .await
        .expect("permit");
    // The holder vanishes without releasing: nothing renews, nothing releases.
    std::mem::forget(dead);
    let permit = b
        .semaphore("sem-dead", 1)
        .acquire()
        .wait(LONG_WAIT)
        .await
        .expect("the dead holder's permit ran out");
    permit.release().await.expect("release");
}

async fn bad_counts_are_refused(a: &LockClient) {
    for (permits, count) in [(0, 1), (2, 0), (2, 3), (distlock::MAX_PERMITS + 1, 1)] {
        let err = a
            .semaphore("sem-bad", permits)
            .acquire_many(count)
            .await
            .expect_err("refused");
        assert!(matches!(err, LockError::InvalidCount { .. }), "{err:?}");
    }
    let err = a.lock_all(Vec::<String>::new()).await.expect_err("no keys");
    assert!(matches!(err, LockError::InvalidCount { .. }), "{err:?}");
    let err = a.lock_all(["ok", ""]).await.expect_err("an empty key");
    assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
    let err = a
        .rw_lock("bad\nkey")
        .read()
        .await
        .expect_err("a control character");
    assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
    let err = a
        .semaphore("", 2)
        .holders()
        .await
        .expect_err("an empty name");
    assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
}

async fn readers_share_and_writers_exclude(a: &LockClient, b: &LockClient) {
    let on_a = a.rw_lock("rw-basic");
    let on_b = b.rw_lock("rw-basic");
    let r1 = on_a.read().await.expect("a reader");
    let r2 = on_b.read().await.expect("a second reader");
    assert!(on_b.write().await.expect_err("readers hold").is_busy());
    // The refused writer left nothing behind: a third reader gets in.
    let r3 = on_a.read().await.expect("a third reader");
    for r in [r1, r2, r3] {
        r.release().await.expect("release");
    }
    let w1 = on_b.write().await.expect("a writer");
    assert!(on_a.read().await.expect_err("a writer holds").is_busy());
    assert!(on_a.write().await.expect_err("a writer holds").is_busy());
    let first = w1.fencing_token();
    w1.release().await.expect("release");
    let w2 = on_a.write().await.expect("the next writer");
    assert!(w2.fencing_token() > first, "write fences increase");
    w2.release().await.expect("release");
    // As many readers as there are slots, and no more.
    let mut readers = Vec::new();
    for _ in 0..distlock::MAX_READERS {
        readers.push(on_a.read().await.expect("a reader slot"));
    }
    assert!(
        on_b.read()
            .await
            .expect_err("every slot is taken")
            .is_busy()
    );
    drop(readers);
    let w3 = on_b
        .write()
        .wait(LONG_WAIT)
        .await
        .expect("the dropped readers let go");
    w3.release().await.expect("release");
}

async fn a_waiting_writer_is_not_passed_by_later_readers(
    a: &LockClient,
    b: &LockClient,
    queues: bool,
) {
    let reader = a.rw_lock("rw-fair").read().await.expect("a reader");
    let writer = tokio::spawn({
        let rw = b.rw_lock("rw-fair");
        async move { rw.write().wait(LONG_WAIT).await }
    });
    // The writer holds the write lock and every slot but the reader's, and waits for it.
    // Every slot is awaited: the writer's acquires of the free ones are still in flight when
    // the write lock is first seen held (a reader could take one of those first, which is
    // not what this test is about).
    wait_until_held(a, "rwlock:rw-fair:write").await;
    for slot in 0..distlock::MAX_READERS {
        wait_until_held(a, &format!("rwlock:rw-fair:read:{slot}")).await;
    }
    if queues {
        let held = reader
            .fencing_tokens()
            .map(|(key, _)| key.to_owned())
            .next()
            .expect("the reader's slot");
        wait_until_contended(a, &held).await;
    }
    let err = a
        .rw_lock("rw-fair")
        .read()
        .await
        .expect_err("a writer waits");
    assert!(err.is_busy(), "{err}");
    reader.release().await.expect("release");
    let write = writer.await.expect("task").expect("the writer got in");
    assert!(write.is_held());
    write.release().await.expect("release");
}

async fn lock_all_takes_every_key_or_none(a: &LockClient, b: &LockClient) {
    let set = a
        .lock_all(["la:b", "la:a", "la:c", "la:a"])
        .await
        .expect("the set");
    let keys: Vec<&str> = set.fencing_tokens().map(|(k, _)| k).collect();
    assert_eq!(keys, ["la:a", "la:b", "la:c"], "sorted, duplicates once");
    assert!(b.lock("la:b").await.expect_err("in the set").is_busy());
    set.release().await.expect("release");

    let middle = b.lock("la:b").await.expect("one key");
    let err = a
        .lock_all(["la:a", "la:b", "la:c"])
        .await
        .expect_err("one is busy");
    assert!(err.is_busy(), "{err}");
    assert!(
        err.to_string().contains("la:b"),
        "names the busy key: {err}"
    );
    for free in ["la:a", "la:c"] {
        assert!(
            b.inspect(free).await.expect("inspect").is_none(),
            "{free} went back"
        );
    }
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.lock_all(["la:c", "la:b", "la:a"]).wait(LONG_WAIT).await }
    });
    wait_until_held(b, "la:a").await;
    middle.release().await.expect("release");
    let set = waiting
        .await
        .expect("task")
        .expect("the set after the wait");
    assert!(set.is_held());
    set.release().await.expect("release");
}

async fn overlapping_sets_in_opposite_orders_do_not_deadlock(a: &LockClient, b: &LockClient) {
    let rounds = 15;
    let run = |client: LockClient, keys: &'static [&'static str]| async move {
        for _ in 0..rounds {
            let set = client
                .lock_all(keys.iter().copied())
                .ttl(Duration::from_secs(2))
                .wait(LONG_WAIT)
                .await
                .expect("no deadlock: the set comes within the wait");
            tokio::task::yield_now().await;
            set.release().await.expect("release");
        }
    };
    let one = tokio::spawn(run(a.clone(), &["dl:x", "dl:y", "dl:z"]));
    let two = tokio::spawn(run(b.clone(), &["dl:z", "dl:y", "dl:w"]));
    let three = tokio::spawn(run(a.clone(), &["dl:w", "dl:x"]));
    for t in [one, two, three] {
        t.await.expect("task");
    }
}

async fn a_set_reports_the_loss_of_any_of_its_locks(a: &LockClient) {
    let set = a
        .lock_all(["lost:a", "lost:b"])
        .ttl(Duration::from_millis(300))
        .watchdog(false)
        .await
        .expect("the set");
    tokio::time::timeout(Duration::from_secs(5), set.lost())
        .await
        .expect("the leases ran out and the set says so");
    assert!(!set.is_held());
    // The server's lease ends a drift margin after the guard's.
    for key in ["lost:a", "lost:b"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while a.inspect(key).await.expect("inspect").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} never ran out"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let err = set.release().await.expect_err("already gone");
    assert!(err.is_lost(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory() {
    scenarios(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    scenarios(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sentinel() {
    scenarios(Kind::Sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redlock() {
    scenarios(Kind::Redlock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_cluster() {
    scenarios(Kind::Cluster).await;
}
