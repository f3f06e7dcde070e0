//! `min_hold` and `max_hold` under faults, on a real `redis-server`: what the randomized
//! checker (`tests/tests/fuzz.rs`) pointed at, pinned down deterministically.

use std::time::Duration;

use distlock_tests::RedisServer;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// How the holder lets go while its renewal is stuck.
#[derive(Debug, Clone, Copy)]
enum LetGo {
    Release,
    Drop,
}

/// A holder with `min_hold` = `max_hold` = 1.5 s and a 900 ms lease (renewed by the watchdog
/// at about 300 ms) lets go at 450 ms while that renewal is stuck at a frozen server (frozen
/// from 150 ms to 750 ms, within the acquire's lease; the command timeout outlasts the
/// freeze, so the renewal is answered when the server resumes). Keeping the minimum waits for
/// that renewal (commands on a lease never race), then sets the lease to what remains. What
/// remains must be reckoned when the keep is sent (750 ms then), not when the holder let go
/// (1050 ms): otherwise the lock outlives both its minimum and its cap by the wait. Returns
/// how far past the cap the server kept it, as seen from 50 ms after the server resumed (the
/// stuck renewal itself lands late and sets its lease from then; the keep overwrites it).
async fn kept_past_the_cap(how: LetGo) -> Duration {
    let server = RedisServer::start();
    let holder = server.client_with_timeout(Duration::from_secs(2)).await;
    let observer = server.client_with_timeout(Duration::from_secs(2)).await;
    let hold = 1500 * MS;
    let guard = holder
        .lock("job")
        .ttl(900 * MS)
        .min_hold(hold)
        .max_hold(hold)
        .await
        .unwrap();
    // The cap is `max_hold` after the acquire was sent: no later than this.
    let cap = Instant::now() + hold;
    tokio::time::sleep(150 * MS).await;
    server.pause();
    // The renewal (at ttl/3) is on its way to the frozen server by now.
    tokio::time::sleep(300 * MS).await;
    let letting_go = tokio::spawn(async move {
        match how {
            LetGo::Release => guard.release().await.unwrap(),
            LetGo::Drop => drop(guard),
        }
    });
    tokio::time::sleep(300 * MS).await;
    server.resume();
    letting_go.await.unwrap();
    tokio::time::sleep(50 * MS).await;
    // Follow the lock until it is gone: the furthest its lease was seen to reach.
    let mut reach = None;
    let give_up = Instant::now() + Duration::from_secs(3);
    while Instant::now() < give_up {
        let asked = Instant::now();
        match observer.inspect("job").await.unwrap() {
            Some(info) => {
                let until = asked + info.ttl.unwrap_or_default();
                reach = reach.max(Some(until));
            }
            None if reach.is_some() => break,
            None => {}
        }
        tokio::time::sleep(5 * MS).await;
    }
    let reach = reach.expect("the lock was kept for its minimum");
    assert!(
        reach + 50 * MS >= cap,
        "the minimum was not kept: the lock ended {:?} before it",
        cap - reach
    );
    reach.saturating_duration_since(cap)
}

// Failed on the runtime as of 593cb1b: `LockGuard::release` and `Drop` reckoned what remains
// of the minimum before waiting for the renewal in flight, so the lock was kept ~300 ms past
// its cap here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_behind_a_stuck_renewal_keeps_the_lock_no_longer_than_its_cap() {
    let past = kept_past_the_cap(LetGo::Release).await;
    assert!(
        past <= 50 * MS,
        "the released lock was kept {past:?} past its max_hold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_behind_a_stuck_renewal_keeps_the_lock_no_longer_than_its_cap() {
    let past = kept_past_the_cap(LetGo::Drop).await;
    assert!(
        past <= 50 * MS,
        "the dropped guard's lock was kept {past:?} past its max_hold"
    );
}
