//! Adversarial tests, round 3: attacks on the fixes of the second round (the shaped lease and
//! the minimum hold, letting go, the local gate turn, Redlock). Each test asserts a promise of
//! the public contract against real redis-server processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlock::LockClient;
use distlock_tests::{RedisServer, TcpProxy, first_take};

const MS: Duration = Duration::from_millis(1);

async fn client(url: String) -> LockClient {
    distlock_tests::client_with_timeout(url, Duration::from_secs(2)).await
}

fn redlock_nodes() -> Vec<RedisServer> {
    (0..3)
        .map(|_| {
            let server = RedisServer::start();
            server.kept_data_for_an_hour();
            server
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------

/// The minimum hold was reckoned from the acquire's answer while the acquire's own lease ran
/// from when the server set the key: with a round trip longer than twice the drift margin
/// (here 2 × 40 ms against 7 ms) an unrenewed lease ran out inside the minimum. The minimum is
/// now measured from when the acquire was sent (as `max_hold` is), which the acquire's own
/// lease covers: B never gets the key within it, and not much later either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_is_kept_under_latency_without_renewal() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client(proxy.url()).await;
    let b = client(server.url()).await;
    proxy.set_latency(40 * MS);
    let min = Duration::from_millis(500);
    let sent = Instant::now();
    let guard = a
        .lock("report")
        .ttl(100 * MS)
        .watchdog(false)
        .min_hold(min)
        .await
        .unwrap();
    let taken = first_take(&b, "report", sent, min + 300 * MS).await;
    let (at, _other) = taken.expect("B takes the key once the minimum is over");
    assert!(
        at >= min,
        "B took the key {at:?} after A's acquire was sent, inside A's {min:?} minimum \
         hold (A still believes it holds: is_held = {}, remaining {:?})",
        guard.is_held(),
        guard.remaining()
    );
    drop(guard);
}

/// On Redlock, keeping the rest of the minimum at release is a renew with that rest as its
/// lease, and Redlock gives each node a tenth of a command's lease to answer. Nodes 2 ms away
/// (4 ms round trip): a release 20 ms before the end of the minimum keeps ~20 ms, the
/// per-node timeout is 2 ms, no node answers in time, the release fails, and the key stays
/// for its whole (3 s) lease instead of being "kept for what remains of [the minimum], and
/// then runs out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_release_near_the_end_of_the_minimum_frees_the_key_after_it() {
    let nodes = redlock_nodes();
    let proxies: Vec<TcpProxy> = nodes.iter().map(|n| TcpProxy::start(n.port())).collect();
    let build = |urls: Vec<String>| async move {
        LockClient::builder()
            .redlock(urls)
            .redlock_quarantine(Duration::from_secs(10))
            .default_ttl(Duration::from_secs(3))
            .command_timeout(Duration::from_secs(1))
            .build()
            .await
            .unwrap()
    };
    let a = build(proxies.iter().map(TcpProxy::url).collect()).await;
    let b = build(nodes.iter().map(RedisServer::url).collect()).await;
    for p in &proxies {
        p.set_latency(2 * MS);
    }
    let min = 300 * MS;
    let mut failures = Vec::new();
    for attempt in 0..2 {
        let key = format!("rl-tick{attempt}");
        let sent = Instant::now(); // the minimum is measured from when the acquire was sent
        let guard = a
            .lock(key.as_str())
            .ttl(Duration::from_secs(3))
            .min_hold(min)
            .await
            .unwrap();
        // keep_until = sent + 300 ms + drift (5 ms): release about 20 ms before it.
        tokio::time::sleep(min - 15 * MS).await;
        let released = guard.release().await;
        let taken = first_take(&b, key.as_str(), sent, Duration::from_secs(2)).await;
        let at = taken.as_ref().map(|(t, _)| *t);
        if released.is_err() || at.is_none_or(|t| t > min + 300 * MS) {
            failures.push(format!(
                "{key}: release said {released:?}; B took it at {at:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "a release near the end of the minimum kept the key for its lease: {failures:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Attacks that held (regression tests)
// ---------------------------------------------------------------------------------------

/// A release within the minimum whose future is dropped (the server paused, so the keep
/// command hangs) still keeps the minimum, and the key is free soon after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_dropped_mid_flight_keeps_the_minimum_and_then_frees_it() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let min = 600 * MS;
    let sent = Instant::now(); // the minimum is measured from when the acquire was sent
    let guard = a
        .lock("dropped")
        .ttl(Duration::from_secs(5))
        .min_hold(min)
        .await
        .unwrap();
    server.pause();
    let r = tokio::time::timeout(50 * MS, guard.release()).await;
    assert!(r.is_err(), "the release was cut short: {r:?}");
    tokio::time::sleep(100 * MS).await;
    server.resume();
    let taken = first_take(&b, "dropped", sent, Duration::from_secs(3)).await;
    let (at, _g) = taken.expect("the key is free after the minimum");
    assert!(at >= min, "taken at {at:?}, inside the {min:?} minimum");
    assert!(
        at < Duration::from_secs(2),
        "the key stayed for its lease after the minimum: taken at {at:?}"
    );
}

/// A local waiter behind an unrenewed lease that ran out (guard still alive, nobody watching
/// `lost()`) gets the lock soon after the server let the key go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_waiter_behind_an_expired_unrenewed_guard_gets_the_lock() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let guard = a.lock("gate").ttl(200 * MS).watchdog(false).await.unwrap();
    let t0 = Instant::now();
    let second = a.lock("gate").wait(Duration::from_secs(3)).await;
    let at = t0.elapsed();
    assert!(second.is_ok(), "{second:?}");
    assert!(at < Duration::from_secs(1), "waited {at:?}");
    assert!(!guard.is_held());
    drop(guard);
}

/// A retry prompted by `lost()` after the key was force-released is not refused by the local
/// gate (the turn is handed on before the loss is seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_lost_is_not_busy_from_the_local_gate() {
    let server = RedisServer::start();
    let a = LockClient::builder()
        .url(server.url())
        .default_ttl(300 * MS)
        .build()
        .await
        .unwrap();
    let op = client(server.url()).await;
    let guard = a.lock("retry").await.unwrap();
    let info = op.inspect("retry").await.unwrap().unwrap();
    assert!(op.force_release("retry", info.fencing_token).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("the watchdog saw the loss");
    let again = a.lock("retry").await;
    assert!(again.is_ok(), "{again:?}");
    drop(guard);
}

/// An extend (through the guard and a `HeldLock`) racing a release within the minimum never
/// keeps the key past the minimum, and neither believes it holds after the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extends_racing_a_release_within_the_minimum_do_not_outlive_it() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client(proxy.url()).await;
    let b = client(server.url()).await;
    proxy.set_latency(20 * MS);
    let min = 400 * MS;
    // The minimum is measured from when the acquire was sent.
    let sent = Instant::now();
    let guard = a
        .lock("race")
        .ttl(Duration::from_secs(1))
        .min_hold(min)
        .await
        .unwrap();
    let held = guard.held_lock();
    let ext = tokio::spawn({
        let held = held.clone();
        async move { held.extend(Duration::from_secs(20)).await }
    });
    tokio::time::sleep(5 * MS).await;
    let released = guard.release().await;
    let ext = ext.await.unwrap();
    let late = held.extend(Duration::from_secs(20)).await;
    assert!(late.is_err(), "an extend after the release: {late:?}");
    assert!(!held.is_held());
    let taken = first_take(&b, "race", sent, Duration::from_secs(3)).await;
    let (at, _g) = taken.expect("free after the minimum");
    assert!(
        at >= min && at < min + 400 * MS,
        "taken at {at:?} (release {released:?}, racing extend {ext:?})"
    );
}

/// With `max_hold`, extends and renewals never make the holder believe past the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extends_never_carry_belief_past_the_cap() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client(proxy.url()).await;
    proxy.set_latency(10 * MS);
    let cap = 400 * MS;
    let t0 = Instant::now();
    let guard = Arc::new(
        a.lock("capped")
            .ttl(150 * MS)
            .min_hold(300 * MS)
            .max_hold(cap)
            .await
            .unwrap(),
    );
    let mut believed_past = None;
    while t0.elapsed() < cap + 200 * MS {
        let _ = guard.extend(Duration::from_secs(10)).await;
        if guard.is_held() && t0.elapsed() >= cap {
            believed_past = Some(t0.elapsed());
        }
        tokio::time::sleep(3 * MS).await;
    }
    assert_eq!(believed_past, None, "held past the {cap:?} cap");
}

/// A shorter extend (through a `HeldLock`) of an unrenewed lease inside the minimum is raised
/// to cover the minimum: nobody takes the key before it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_extend_inside_the_minimum_is_raised_to_cover_it() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let min = 500 * MS;
    let t0 = Instant::now();
    let guard = a
        .lock("short-extend")
        .ttl(100 * MS)
        .watchdog(false)
        .min_hold(min)
        .await
        .unwrap();
    guard.held_lock().extend(100 * MS).await.unwrap();
    let taken = first_take(&b, "short-extend", t0, min + 300 * MS).await;
    let (at, _g) = taken.expect("free after the minimum");
    assert!(at >= min, "taken at {at:?}, inside the {min:?} minimum");
    drop(guard);
}

/// A guard acquired on a runtime that is gone is dropped on another: the minimum is kept,
/// then the key is free (no hang, no panic).
#[test]
fn a_guard_outliving_its_runtime_keeps_the_minimum_and_frees_the_key() {
    let server = RedisServer::start();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, guard, t0) = first.block_on(async {
        let a = client(server.url()).await;
        let t0 = Instant::now();
        let g = a
            .lock("orphan")
            .ttl(Duration::from_secs(5))
            .min_hold(400 * MS)
            .await
            .unwrap();
        (a, g, t0)
    });
    drop(first);
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let b = client(server.url()).await;
        drop(guard);
        let taken = tokio::time::timeout(
            Duration::from_secs(5),
            first_take(&b, "orphan", t0, Duration::from_secs(3)),
        )
        .await
        .expect("no hang");
        let (at, _g) = taken.expect("free after the minimum");
        assert!(
            at >= 400 * MS && at < Duration::from_secs(2),
            "taken at {at:?}"
        );
        let again = tokio::time::timeout(Duration::from_secs(3), a.lock("other")).await;
        assert!(matches!(again, Ok(Ok(_))), "{again:?}");
    });
}

#[distlock::distributed_lock(key = "scope-released", client = client)]
async fn nested_steps(client: &LockClient) -> Result<u32, distlock::LockError> {
    let mut steps = 0;
    for _ in 0..40 {
        tokio::time::sleep(25 * MS).await;
        steps += 1;
    }
    Ok(steps)
}

/// A cancelling guarded call re-entering a `HeldLock::scope` whose guard is released meanwhile
/// (by another task) stops with `Lost`, and does not run while another client holds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_call_stops_when_the_scope_guard_is_released_under_it() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let guard = a.lock("scope-released").await.unwrap();
    let held = guard.held_lock();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(150 * MS).await;
        guard.release().await
    });
    let t0 = Instant::now();
    let result = held.scope(nested_steps(&a)).await;
    let ended = t0.elapsed();
    releaser.await.unwrap().unwrap();
    assert!(
        result.as_ref().is_err_and(distlock::LockError::is_lost) && ended < 400 * MS,
        "the nested call returned {result:?} after {ended:?}"
    );
    let other = b.lock("scope-released").await;
    assert!(other.is_ok(), "{other:?}");
}

/// A handler whose lock is force-released (and taken by another client) while it runs a
/// blocking step (no await point to stop it at) answers 503, not 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_finished_after_its_lock_was_taken_gets_503() {
    use axum::Router;
    use axum::routing::post;
    use distlock_tower::{LockLayer, PathParam};
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let op = client(server.url()).await;
    let taken = Arc::new(std::sync::Mutex::new(None));
    let app = Router::new()
        .route(
            "/jobs/{id}",
            post(|| async {
                // Blocking work: the lock is taken away meanwhile.
                std::thread::sleep(Duration::from_millis(400));
                "done"
            }),
        )
        .route_layer(
            LockLayer::new(a.clone(), PathParam::new("id"))
                .namespace("req:")
                .ttl(Duration::from_secs(3)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}/jobs/7"))
            .send()
            .await
            .unwrap()
            .status()
    });
    distlock_tests::wait_until_held(&op, "req:7").await;
    let info = op.inspect("req:7").await.unwrap().unwrap();
    assert!(op.force_release("req:7", info.fencing_token).await.unwrap());
    let other = op.lock("req:7").ttl(Duration::from_secs(5)).await.unwrap();
    *taken.lock().unwrap() = Some(other.fencing_token());
    let status = call.await.unwrap();
    assert_eq!(
        status.as_u16(),
        503,
        "the handler's answer claims it ran under a lock another client held"
    );
    drop(other);
}
