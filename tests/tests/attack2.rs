//! Adversarial tests, round 2: minimum and maximum holds, `HeldLock` and its scope, leader
//! election, the tower layer's handler view, listing / force release / labels, and what the
//! tracing and metrics output carry. Each test asserts a promise of the public contract
//! against real redis-server processes (or in-process where that is the subject).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError};
use distlock_tests::{RedisServer, TcpProxy, first_take};
use futures_util::TryStreamExt;

const MS: Duration = Duration::from_millis(1);

async fn client(url: String) -> LockClient {
    client_with(url, Duration::from_secs(2)).await
}

use distlock_tests::client_with_timeout as client_with;

// ---------------------------------------------------------------------------------------
// 1. Minimum hold
// ---------------------------------------------------------------------------------------

/// `min_hold` "keeps the lock at least this long after it was acquired, also after the guard
/// is released" and may be longer than the lease (holds.rs tests that a *release* lengthens a
/// short lease to the minimum). A scheduled job whose lease is not renewed (watchdog off)
/// and runs a little past its lease, well inside the minimum, must still turn the other
/// instances away for the whole minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_is_kept_while_the_guard_is_still_held_past_an_unrenewed_lease() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let min = Duration::from_millis(1500);
    let t0 = Instant::now();
    let guard = a
        .lock("nightly")
        .ttl(200 * MS)
        .watchdog(false)
        .min_hold(min)
        .await
        .unwrap();
    // The job runs for 500 ms; another instance's trigger fires meanwhile.
    let taken = first_take(&b, "nightly", t0, 500 * MS).await;
    let released = guard.release().await;
    if let Some((at, _)) = &taken {
        panic!(
            "another instance took the job's lock {at:?} after it was acquired, inside its \
             {min:?} minimum hold (the job's own release then said {released:?})"
        );
    }
}

/// The minimum is kept on the server until `acquired + min_hold + drift`; a release whose
/// remainder is under the library's shortest command lease (5 ms) deletes the lock instead of
/// keeping it, so another instance gets in before the minimum is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_in_the_last_milliseconds_of_the_minimum_does_not_free_it_early() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let min = 10 * MS;
    let mut early = Vec::new();
    for attempt in 0..10 {
        let key = format!("tick{attempt}");
        let t0 = Instant::now();
        let guard = a.lock(key.as_str()).min_hold(min).await.unwrap();
        let answered = Instant::now();
        // Inside the minimum's drift margin (10 ms + 2.1 ms), 2.4 ms before the minimum.
        while answered.elapsed() < Duration::from_micros(7_600) {
            std::hint::spin_loop();
        }
        guard.release().await.unwrap();
        if let Ok(next) = b.lock(key.as_str()).await {
            let at = t0.elapsed();
            if at < min {
                early.push(at);
            }
            next.release().await.unwrap();
        }
    }
    assert!(
        early.is_empty(),
        "another instance acquired within the {min:?} minimum hold (measured from before \
         the first acquire was sent): {early:?}"
    );
}

/// The same with `min_hold == max_hold` (allowed: "never shorter than `min_hold`"): near the
/// cap the rest to keep is under 5 ms, and the release deletes the lock, before the minimum
/// counted from the grant is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_near_a_cap_equal_to_the_minimum_does_not_free_it_early() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let min = 200 * MS;
    let mut early = Vec::new();
    for attempt in 0..8 {
        let key = format!("capped-tick{attempt}");
        let t0 = Instant::now();
        let guard = a
            .lock(key.as_str())
            .min_hold(min)
            .max_hold(min)
            .await
            .unwrap();
        // 3 ms before the cap (measured from before the acquire was sent).
        while t0.elapsed() < min - 3 * MS {
            if t0.elapsed() < min - 20 * MS {
                tokio::time::sleep(MS).await;
            } else {
                std::hint::spin_loop();
            }
        }
        let _ = guard.release().await;
        if let Ok(next) = b.lock(key.as_str()).await {
            let at = t0.elapsed();
            if at < min {
                early.push(at);
            }
            next.release().await.unwrap();
        }
    }
    assert!(
        early.is_empty(),
        "another instance acquired within the {min:?} minimum hold (= max_hold): {early:?}"
    );
}

/// A guard taken on one runtime, that runtime shut down, the guard dropped on a thread with
/// no runtime at all: the minimum hold is still kept (by the library's own runtime), and not
/// much longer.
#[test]
fn a_minimum_hold_is_kept_when_the_guard_outlives_its_runtime() {
    let server = RedisServer::start();
    let url = server.url();
    let min = Duration::from_millis(800);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (guard, acquired) = first.block_on(async {
        let a = client(url.clone()).await;
        let t = Instant::now();
        (a.lock("job").min_hold(min).await.unwrap(), t)
    });
    drop(first);
    std::thread::spawn(move || drop(guard)).join().unwrap();
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let b = client(url).await;
        let taken = first_take(&b, "job", acquired, Duration::from_secs(3)).await;
        let (at, _) = taken.expect("free after the minimum");
        assert!(
            at >= min,
            "taken {at:?} after the acquire, within the minimum"
        );
        assert!(at < min + 300 * MS, "kept {at:?}: longer than the minimum");
    });
}

/// guarantees.rs: letting go within the minimum "sets its lease to what remains"; HeldLock:
/// "once the guard is released ..., `extend` fails". A `HeldLock::extend` racing the
/// guard's `release()` (the handler extends while the job finishes) must either land before
/// the release (which then cuts the lease to the minimum's rest) or fail. Here it lands
/// after the release kept the minimum and returned `Ok`: the key is then held for the
/// extension's 20 s by nobody, and every other instance is turned away for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extend_racing_a_release_within_the_minimum_never_outlives_it() {
    let server = RedisServer::start();
    let c = client(server.url()).await;
    let min = 300 * MS;
    let mut leaked = Vec::new();
    for i in 0..100 {
        let key = format!("race:{i}");
        let guard = c.lock(key.as_str()).min_hold(min).await.unwrap();
        let held = guard.held_lock();
        let extending = tokio::spawn(async move { held.extend(Duration::from_secs(20)).await });
        tokio::task::yield_now().await;
        let released = guard.release().await;
        let extended = extending.await.unwrap();
        let ttl = c.inspect(&key).await.unwrap().and_then(|info| info.ttl);
        if released.is_ok() && ttl.is_some_and(|t| t > min + 100 * MS) {
            leaked.push((i, ttl.unwrap(), extended.is_ok()));
        }
    }
    assert!(
        leaked.is_empty(),
        "{} of 100 locks released within their {min:?} minimum were left held by nobody for \
         the racing extension's lease (iteration, TTL left, extend said Ok): {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------
// 2. Maximum hold
// ---------------------------------------------------------------------------------------

/// guarantees.rs: every command on the lease is shortened to end by the cap when it is sent;
/// the server's TTL may pass the cap only by the command's transit. The cap is measured on the
/// holder's clock from before the acquire was sent, but the extension's lease is counted by
/// the server from when the command *arrives*: a slow link moves the server's TTL past the
/// cap by the delay, and nobody else can take the lock until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_bounds_the_server_lease_also_for_a_slow_extension() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client_with(proxy.url(), Duration::from_secs(5)).await;
    let b = client(server.url()).await;
    let max = 800 * MS;
    let t0 = Instant::now();
    let guard = a
        .lock("capped")
        .ttl(Duration::from_secs(2))
        .max_hold(max)
        .watchdog(false)
        .await
        .unwrap();
    // Warm the script cache (so the slow extension is one command, not EVALSHA + EVAL),
    // and watch when A stops believing it holds.
    guard.extend(Duration::from_secs(2)).await.unwrap();
    let lost = guard.held_lock().lost();
    let believed = tokio::spawn(async move {
        lost.await;
        t0.elapsed()
    });
    proxy.set_latency(400 * MS);
    let extending = tokio::spawn(async move {
        let extended = guard.extend(Duration::from_secs(10)).await;
        (extended, guard)
    });
    let (taken_at, _b) = first_take(&b, "capped", t0, Duration::from_secs(5))
        .await
        .expect("taken at last");
    let a_lost_at = believed.await.unwrap();
    let (extended, _guard) = extending.await.unwrap();
    assert!(
        a_lost_at <= taken_at,
        "overlap: A believed it held until {a_lost_at:?}, B took it at {taken_at:?}"
    );
    // Documented (guarantees, "Scheduled jobs"): the server starts a command's lease when
    // it arrives, so its TTL may pass the cap by the command's transit (400 ms here), no more.
    assert!(
        taken_at <= max + 400 * MS + 150 * MS,
        "the lock outlived its {max:?} max_hold on the server by more than the extension's \
         transit: B could take it only {taken_at:?} after A's acquire was sent (A's extend \
         said {extended:?}, A stopped believing at {a_lost_at:?})"
    );
}

/// `extend` (on the guard or a `HeldLock`) never takes the holder's own belief past the cap,
/// and the watchdog stops at it: the deadline ends before `max_hold`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_and_renewals_never_take_the_belief_past_max_hold() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let max = 700 * MS;
    let t0 = Instant::now();
    let guard = a
        .lock("cap-belief")
        .ttl(300 * MS)
        .max_hold(max)
        .await
        .unwrap();
    let held = guard.held_lock();
    held.extend(Duration::from_secs(60)).await.unwrap();
    assert!(
        held.remaining() < max,
        "remaining {:?} past the cap",
        held.remaining()
    );
    guard.extend(Duration::from_secs(3600)).await.unwrap();
    assert!(guard.remaining() <= max);
    tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("lost at the cap");
    assert!(t0.elapsed() <= max + 50 * MS, "held {:?}", t0.elapsed());
    assert!(
        held.extend(Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_lost()
    );
}

// ---------------------------------------------------------------------------------------
// 3. HeldLock::scope and guarded calls
// ---------------------------------------------------------------------------------------

/// A guarded fn with the default `on_lost = "cancel"`: counts its steps, and the steps it
/// took while the lock it runs under was no longer held.
#[distlock::distributed_lock(key = "scoped-job", client = client)]
async fn scoped_job(client: &LockClient, unheld_steps: Arc<AtomicUsize>) -> Result<u32, LockError> {
    let held = distlock::current().expect("runs under a lock");
    let mut steps = 0;
    for _ in 0..40 {
        tokio::time::sleep(25 * MS).await;
        if !held.is_held() {
            unheld_steps.fetch_add(1, Ordering::SeqCst);
        }
        steps += 1;
    }
    Ok(steps)
}

/// `HeldLock::scope` lets a guarded call on the same key re-enter the lock. The guarded call
/// says `on_lost = "cancel"`: "when the lease is lost the body is dropped at its next await
/// and the fn returns `Err(LockError::Lost)`". Re-entered, it is never cancelled: it runs to
/// its end while another client holds the key, and returns `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_call_re_entering_a_scope_is_cancelled_when_the_lock_is_lost() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let t0 = Instant::now();
    let guard = a
        .lock("scoped-job")
        .ttl(300 * MS)
        .watchdog(false)
        .await
        .unwrap();
    let held = guard.held_lock();
    let unheld = Arc::new(AtomicUsize::new(0));
    let other =
        tokio::spawn(async move { first_take(&b, "scoped-job", t0, Duration::from_secs(3)).await });
    let result = held.scope(scoped_job(&a, unheld.clone())).await;
    let taken = other.await.unwrap();
    let taken_at = taken.as_ref().map(|(at, _)| *at);
    let unheld = unheld.load(Ordering::SeqCst);
    assert!(
        result.as_ref().is_err_and(LockError::is_lost) && unheld <= 1,
        "the guarded call ran on after its lock was lost: it returned {result:?} after {:?}, \
         taking {unheld} steps (of 25 ms) without the lock, while client B held the key from \
         {taken_at:?}",
        t0.elapsed()
    );
    drop(guard);
}

/// The same through nesting alone: the outer guarded fn lets a lost lock finish
/// (`on_lost = "ignore"`), the inner one asks to be cancelled; the inner is a re-entry and is
/// not cancelled either.
#[distlock::distributed_lock(key = "nested-job", client = client, on_lost = "ignore")]
async fn outer_ignoring(
    client: &LockClient,
    unheld: Arc<AtomicUsize>,
) -> Result<Result<u32, LockError>, LockError> {
    Ok(inner_cancelling(client, unheld).await)
}

#[distlock::distributed_lock(key = "nested-job", client = client)]
async fn inner_cancelling(client: &LockClient, unheld: Arc<AtomicUsize>) -> Result<u32, LockError> {
    let held = distlock::current().expect("runs under a lock");
    let mut steps = 0;
    for _ in 0..40 {
        tokio::time::sleep(25 * MS).await;
        if !held.is_held() {
            unheld.fetch_add(1, Ordering::SeqCst);
        }
        steps += 1;
    }
    Ok(steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_cancelling_call_nested_in_an_ignoring_one_is_cancelled_on_loss() {
    let server = RedisServer::start();
    let a = LockClient::builder()
        .url(server.url())
        .default_ttl(300 * MS)
        .build()
        .await
        .unwrap();
    let operator = client(server.url()).await;
    let b = client(server.url()).await;
    let unheld = Arc::new(AtomicUsize::new(0));
    let job = tokio::spawn({
        let (a, unheld) = (a.clone(), unheld.clone());
        async move { outer_ignoring(&a, unheld).await }
    });
    distlock_tests::wait_until_held(&operator, "nested-job").await;
    tokio::time::sleep(100 * MS).await;
    let info = operator.inspect("nested-job").await.unwrap().unwrap();
    assert!(
        operator
            .force_release("nested-job", info.fencing_token)
            .await
            .unwrap()
    );
    let t0 = Instant::now();
    let taken = first_take(&b, "nested-job", t0, Duration::from_secs(2)).await;
    assert!(taken.is_some(), "B took the released key");
    let inner = job.await.unwrap().expect("the outer call ignores the loss");
    let unheld = unheld.load(Ordering::SeqCst);
    assert!(
        inner.as_ref().is_err_and(LockError::is_lost) && unheld <= 1,
        "the inner guarded call (on_lost = \"cancel\") ran on without its lock: it returned \
         {inner:?}, taking {unheld} steps without the lock while B held the key"
    );
}

// ---------------------------------------------------------------------------------------
// 4. The tower layer's handler view
// ---------------------------------------------------------------------------------------

/// "A lock lost mid-request stops the request: `503`" (`cancel_on_lost`, the default). A
/// handler with a synchronous section (CPU work, a blocking driver) cannot be stopped at an
/// await point, but once the lock was lost while it ran, its answer must not go out as a
/// success: the macro's equivalent returns `Err(Lost)` when the release finds the lease
/// gone. Here the handler sees its `HeldLock` turn false and another client take the key
/// while it runs, and the layer still answers `200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_handler_that_ran_past_the_loss_of_its_lock_is_not_answered_ok() {
    use distlock_tower::{HeaderKey, LockLayer};
    use tower::{Layer, ServiceExt};

    let server = RedisServer::start();
    let locks = client(server.url()).await;
    let operator = client(server.url()).await;
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<distlock::HeldLock>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let saw_unheld = Arc::new(AtomicBool::new(false));
    let handler = tower::service_fn({
        let saw_unheld = saw_unheld.clone();
        move |req: http::Request<String>| {
            let (held_tx, go_rx, saw_unheld) = (held_tx.clone(), go_rx.clone(), saw_unheld.clone());
            async move {
                let held = req
                    .extensions()
                    .get::<distlock::HeldLock>()
                    .cloned()
                    .expect("a locked request");
                held_tx.send(held.clone()).unwrap();
                // A synchronous section: no await point until it is done.
                go_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap();
                saw_unheld.store(!held.is_held(), Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(http::Response::new("charged".to_owned()))
            }
        }
    });
    let service = LockLayer::new(locks.clone(), HeaderKey::new("x-job"))
        .ttl(300 * MS)
        .layer(handler);
    let request = http::Request::post("/")
        .header("x-job", "charge-7")
        .body(String::new())
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    let held = held_rx.recv().await.expect("the handler runs");
    // The lock is lost while the handler runs: an operator clears it, another client takes it.
    assert!(
        operator
            .force_release(held.key(), held.fencing_token())
            .await
            .unwrap()
    );
    tokio::time::timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("the holder learns of the loss at its next renewal");
    let other = operator
        .lock(held.key())
        .await
        .expect("another client takes the key");
    go_tx.send(()).unwrap();
    let response = call.await.unwrap().unwrap();
    assert!(
        saw_unheld.load(Ordering::SeqCst),
        "the handler saw its lock lost"
    );
    assert_ne!(
        response.status(),
        200,
        "the layer answered 200 for a request whose lock was lost while it ran (another \
         client has held `{}` since, fence {} > {})",
        held.key(),
        other.fencing_token(),
        held.fencing_token()
    );
}

// ---------------------------------------------------------------------------------------
// 5. Redlock: what inspect, list and current_leader report
// ---------------------------------------------------------------------------------------

/// Three Redlock nodes whose boot markers say they kept their data for an hour.
fn redlock_nodes() -> Vec<RedisServer> {
    (0..3)
        .map(|_| {
            let server = RedisServer::start();
            server.kept_data_for_an_hour();
            server
        })
        .collect()
}

async fn redlock_client(nodes: &[RedisServer]) -> LockClient {
    LockClient::builder()
        .redlock(nodes.iter().map(RedisServer::url))
        .redlock_quarantine(Duration::from_secs(2))
        .default_ttl(Duration::from_secs(2))
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap()
}

/// `LockInfo::fencing_token` is "the holder's fencing token" and `LeaderInfo::term` "the
/// fencing token of its leader lock (`Leadership::fencing_token`)"; `list` reports the
/// largest of the nodes' fences, which is what the holder was handed. `inspect` (and so
/// `current_leader` and the CLI's `inspect` / `release --fence` check) reports whichever
/// node answered first, whose fence differs from node to node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_inspect_and_current_leader_report_the_holders_fence() {
    let nodes = redlock_nodes();
    let c = redlock_client(&nodes).await;
    let mut mismatches = Vec::new();
    for i in 0..8 {
        let key = format!("rl:{i}");
        let guard = c.lock(key.as_str()).await.unwrap();
        let listed: Vec<distlock::LockInfo> = c.list(&key).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        let inspected = c.inspect(&key).await.unwrap().unwrap().fencing_token;
        // Documented: each node derives its own fence; the guard has the largest among the
        // first majority to answer, inspect and list the largest among the nodes holding it.
        if inspected < guard.fencing_token() || listed[0].fencing_token != inspected {
            let stored: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let v: String = n.cmd(&["GET", &format!("distlock:{key}")]);
                    v.get(33..49).unwrap_or("?").to_owned()
                })
                .collect();
            mismatches.push(format!(
                "`{key}`: the guard's fence {}, list {}, inspect {inspected}, the nodes store {stored:?}",
                guard.fencing_token(),
                listed[0].fencing_token,
            ));
        }
        guard.release().await.unwrap();
    }
    for _ in 0..4 {
        let leadership = c.leader("sched").await.unwrap();
        let leader = c.current_leader("sched").await.unwrap().unwrap();
        if leader.term < leadership.fencing_token() {
            mismatches.push(format!(
                "current_leader term {}, the leader's term {}",
                leader.term,
                leadership.fencing_token()
            ));
        }
        leadership.resign().await.unwrap();
    }
    assert!(
        mismatches.is_empty(),
        "Redlock reports fences the holder does not have:\n{}",
        mismatches.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 6. Labels, keys and listing
// ---------------------------------------------------------------------------------------

/// Hostile owner labels (the separators `|` `/` `%` and `:`, state letters, control
/// characters, huge and multi-byte text) and keys with glob and separator characters: the
/// queue of waiters, renewals, the hand-over on release, fences and the listing all keep
/// working, and labels read back as written (cut, control characters replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_labels_and_keys_keep_the_queue_renewals_and_listing_working() {
    let server = RedisServer::start();
    let labels: Vec<String> = vec![
        "a|b".into(),
        "|".into(),
        "||W|H|R|T".into(),
        "/x/y/1/2".into(),
        "%7C%2F%".into(),
        ":0000000000000000:".into(),
        "line\nbreak\r\u{0}\u{1b}[2J".into(),
        "😀".repeat(40),
        "é".repeat(200),
        "|".repeat(1000),
        "\u{202e}rtl\u{200b}".into(),
    ];
    let expected = |label: &str| -> String {
        let mut end = label.len().min(distlock::MAX_LABEL_LEN);
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        label[..end]
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect()
    };
    let holder = LockClient::builder()
        .url(server.url())
        .label("client|label/%")
        .build()
        .await
        .unwrap();
    let w1 = client(server.url()).await;
    let w2 = client(server.url()).await;
    let observer = client(server.url()).await;
    let mut last_fence = 0;
    for (i, label) in labels.iter().enumerate() {
        let key = format!("lbl:{i}|/%*?[]\\:H");
        let guard = holder
            .lock(key.as_str())
            .label(label.as_str())
            .ttl(300 * MS)
            .await
            .unwrap();
        assert!(guard.fencing_token() > last_fence);
        last_fence = guard.fencing_token();
        let first = tokio::spawn({
            let (w1, key, label) = (w1.clone(), key.clone(), label.clone());
            async move { w1.lock(key).label(label).wait(Duration::from_secs(5)).await }
        });
        distlock_tests::wait_until_contended(&observer, &key).await;
        let second = tokio::spawn({
            let (w2, key) = (w2.clone(), key.clone());
            async move {
                w2.lock(key)
                    .label("|second|")
                    .wait(Duration::from_secs(5))
                    .await
            }
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let info = observer.inspect(&key).await.unwrap().expect("held");
            if info.waiters == 2 {
                assert_eq!(
                    info.label.as_deref(),
                    Some(expected(label).as_str()),
                    "label {i}"
                );
                assert_eq!(info.fencing_token, guard.fencing_token());
                break;
            }
            assert!(Instant::now() < deadline, "waiters never queued: {info:?}");
            tokio::time::sleep(5 * MS).await;
        }
        let listed: Vec<distlock::LockInfo> = observer.list(&key).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].key, key);
        // Renewed through the queue (several ttl/3 periods).
        tokio::time::sleep(450 * MS).await;
        assert!(guard.is_held(), "lost with label {i}");
        guard.release().await.unwrap();
        let first = first.await.unwrap().expect("the first waiter gets it");
        assert!(first.fencing_token() > last_fence);
        let info = observer.inspect(&key).await.unwrap().unwrap();
        assert_eq!(info.label.as_deref(), Some(expected(label).as_str()));
        assert_eq!(info.waiters, 1);
        first.release().await.unwrap();
        let second = second.await.unwrap().expect("then the second");
        assert_eq!(
            observer
                .inspect(&key)
                .await
                .unwrap()
                .unwrap()
                .label
                .as_deref(),
            Some("|second|")
        );
        last_fence = second.fencing_token();
        second.release().await.unwrap();
        assert!(
            observer.inspect(&key).await.unwrap().is_none(),
            "leaked: {key}"
        );
    }
}

/// Listing by a prefix holding glob characters lists exactly the keys starting with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_prefixes_with_glob_characters_is_literal() {
    let server = RedisServer::start();
    let c = client(server.url()).await;
    let keys = ["g*1", "g?2", "g[3]", "g\\4", "gx5", "g*1x", "g[^3]"];
    let mut guards = Vec::new();
    for key in keys {
        guards.push(c.lock(key).await.unwrap());
    }
    for (prefix, want) in [
        ("g*", vec!["g*1", "g*1x"]),
        ("g?", vec!["g?2"]),
        ("g[", vec!["g[3]", "g[^3]"]),
        ("g[^", vec!["g[^3]"]),
        ("g\\", vec!["g\\4"]),
        ("g", keys.to_vec()),
    ] {
        let mut got: Vec<String> = c
            .list(prefix)
            .map_ok(|info| info.key)
            .try_collect()
            .await
            .unwrap();
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(str::to_owned).collect();
        want.sort();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Leader election
// ---------------------------------------------------------------------------------------

/// CPU time this process used so far (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the whole line are utime and stime; `after` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// How many scripts the server ran so far.
fn scripts_run(server: &RedisServer) -> u64 {
    let info: String = server.cmd(&["INFO", "commandstats"]);
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A campaign behind a leader waits on notices, and behind a frozen server backs off: no
/// busy loop (CPU) and no polling (scripts run on the server); it is elected at once when
/// the leader resigns, with a larger term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_neither_spins_nor_polls_and_takes_over_at_once() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client_with(server.url(), 300 * MS).await;
    let leader = a.leader("quiet").ttl(Duration::from_secs(3)).await.unwrap();
    let (cpu0, scripts0) = (cpu_time(), scripts_run(&server));
    let elected_at = Arc::new(Mutex::new(None));
    let campaign = tokio::spawn({
        let elected_at = elected_at.clone();
        async move {
            b.leader("quiet")
                .ttl(Duration::from_secs(3))
                .run(|leadership| {
                    *elected_at.lock().unwrap() = Some(Instant::now());
                    async move { Ok::<_, LockError>(leadership.fencing_token()) }
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (cpu, scripts) = (cpu_time() - cpu0, scripts_run(&server) - scripts0);
    assert!(cpu < 400 * MS, "campaigning burned {cpu:?} of CPU in 1.5 s");
    // The leader's renewals (every second) and a handful of campaign steps.
    assert!(
        scripts < 15,
        "{scripts} scripts in 1.5 s: the campaign polls"
    );
    // A frozen server: errors, retried with backoff.
    server.pause();
    let cpu0 = cpu_time();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = cpu_time() - cpu0;
    server.resume();
    assert!(
        cpu < 400 * MS,
        "campaigning against a frozen server burned {cpu:?}"
    );
    assert!(
        elected_at.lock().unwrap().is_none(),
        "elected while A leads"
    );
    let term = leader.fencing_token();
    let resigned = Instant::now();
    leader.resign().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("elected after the resignation")
        .unwrap()
        .unwrap();
    let took = elected_at.lock().unwrap().unwrap() - resigned;
    assert!(next > term, "term {next} after {term}");
    assert!(
        took < Duration::from_secs(1),
        "took over {took:?} after the resignation"
    );
}

/// Three replicas run `run`; the leader is partitioned away (its proxy blackholed), then the
/// server is frozen past the lease. Polling `is_leader` every millisecond inside each term's
/// work, no two terms are ever seen leading at once, and terms increase in election order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_leaders_through_a_partition_and_a_frozen_server() {
    type Seen = Arc<Mutex<Vec<(u64, usize, Instant, Instant)>>>;
    let server = RedisServer::start();
    let proxies: Vec<TcpProxy> = (0..3).map(|_| TcpProxy::start(server.port())).collect();
    let seen: Seen = Arc::default();
    let mut replicas = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let c = client_with(proxy.url(), 200 * MS).await;
        let seen = seen.clone();
        replicas.push(tokio::spawn(async move {
            c.leader("partitioned")
                .ttl(500 * MS)
                .run(move |leadership| {
                    let seen = seen.clone();
                    async move {
                        let term = leadership.fencing_token();
                        let first = Instant::now();
                        loop {
                            let now = Instant::now();
                            if leadership.is_leader() {
                                let mut seen = seen.lock().unwrap();
                                match seen.iter_mut().find(|s| s.0 == term) {
                                    Some(s) => s.3 = now,
                                    None => seen.push((term, i, first, now)),
                                }
                            }
                            tokio::time::sleep(MS).await;
                        }
                        #[allow(unreachable_code)]
                        Ok::<(), LockError>(())
                    }
                })
                .await
        }));
    }
    let leader_now = || {
        seen.lock()
            .unwrap()
            .iter()
            .max_by_key(|s| s.0)
            .map(|s| (s.0, s.1))
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while leader_now().is_none() {
        assert!(Instant::now() < deadline, "nobody elected");
        tokio::time::sleep(5 * MS).await;
    }
    let (first_term, first) = leader_now().unwrap();
    proxies[first].blackhole(true);
    let deadline = Instant::now() + Duration::from_secs(4);
    while leader_now().unwrap().0 == first_term {
        assert!(
            Instant::now() < deadline,
            "no failover from the partitioned leader"
        );
        tokio::time::sleep(5 * MS).await;
    }
    let (second_term, _) = leader_now().unwrap();
    server.pause();
    tokio::time::sleep(900 * MS).await;
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(4);
    while leader_now().unwrap().0 == second_term {
        assert!(Instant::now() < deadline, "nobody elected after the freeze");
        tokio::time::sleep(5 * MS).await;
    }
    tokio::time::sleep(100 * MS).await;
    proxies[first].blackhole(false);
    tokio::time::sleep(300 * MS).await;
    for r in &replicas {
        r.abort();
    }
    let mut terms = seen.lock().unwrap().clone();
    terms.sort_by_key(|s| s.2);
    assert!(terms.len() >= 3, "{terms:?}");
    for pair in terms.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.0 > a.0, "terms out of order: {terms:?}");
        assert!(
            a.3 < b.2,
            "two leaders: term {} (replica {}) still led {:?} after term {} (replica {}) began",
            a.0,
            a.1,
            a.3 - b.2,
            b.0,
            b.1
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. What tracing and metrics carry
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Everything(Arc<Mutex<Vec<String>>>);

struct Text<'a>(&'a mut String);

impl tracing::field::Visit for Text<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Everything {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = format!("span {}", attrs.metadata().name());
        attrs.record(&mut Text(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = "record".to_owned();
        values.record(&mut Text(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = format!("event {}", event.metadata().target());
        event.record(&mut Text(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

/// With every span and event recorded (TRACE) and a metrics recorder installed: a password
/// server whose password changes under the client (reconnects fail), a Redlock deployment
/// with a node down, a leader campaign against a frozen server, losses and holds. No span
/// field, event or metric label shows the password, and no metric label shows a key's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_key_id_in_spans_events_or_metric_labels() {
    use tracing_subscriber::layer::SubscriberExt;
    let everything = Everything::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::Registry::default().with(everything.clone()),
    )
    .unwrap();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let pw = "Pa55-w0rd-XYZZY";
    let server = RedisServer::start_with(&["--requirepass", pw]);
    let proxy = TcpProxy::start(server.port());
    let url = format!("redis://:{pw}@127.0.0.1:{}", proxy.port());
    let c = client_with(url.clone(), 300 * MS).await;
    let held = c.lock("acct-884411").ttl(300 * MS).await.unwrap();
    let short = c
        .lock("order:884412")
        .ttl(200 * MS)
        .watchdog(false)
        .await
        .unwrap();
    short.lost().await;
    let _ = c
        .lock("order:884412")
        .wait(Duration::from_secs(1))
        .await
        .unwrap()
        .release()
        .await;
    let b = client_with(url.clone(), 300 * MS).await;
    let _ = b.lock("acct-884411").wait(50 * MS).await; // busy
    // The password changes and every connection is cut: renewals and reconnects fail.
    let mut admin = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "another-one"])
        .query(&mut admin)
        .unwrap();
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("lost when renewals fail");
    let _ = c.lock("job:884413").wait(300 * MS).await;
    let campaign = tokio::time::timeout(Duration::from_millis(800), c.leader("sched-884414")).await;
    assert!(campaign.is_err(), "elected without a working connection?");
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", pw])
        .query(&mut admin)
        .unwrap();
    // Redlock: one node down (its URL carries the password too).
    let r = LockClient::builder()
        .redlock([
            url.clone(),
            format!("redis://:{pw}@127.0.0.1:{}", distlock_tests::free_port()),
            format!(
                "redis://user:{pw}@127.0.0.1:{}",
                distlock_tests::free_port()
            ),
        ])
        .redlock_quarantine(Duration::from_secs(1))
        .default_ttl(Duration::from_secs(1))
        .command_timeout(200 * MS)
        .build()
        .await;
    if let Ok(r) = r {
        let _ = r.lock("rl:884415").await;
        let _ = r.inspect("rl:884415").await;
        let _ = r.list("rl:").try_collect::<Vec<_>>().await;
    }
    tokio::time::sleep(300 * MS).await;

    let lines = everything.0.lock().unwrap().clone();
    assert!(lines.len() > 20, "the subscriber saw too little: {lines:?}");
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(pw)).collect();
    assert!(
        leaks.is_empty(),
        "the password in tracing output: {leaks:#?}"
    );
    let mut labels = Vec::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        for label in key.key().labels() {
            labels.push(format!("{}={}", label.key(), label.value()));
        }
    }
    assert!(!labels.is_empty(), "no metrics recorded");
    let bad: Vec<&String> = labels
        .iter()
        .filter(|l| l.contains(pw) || l.contains("8844"))
        .collect();
    assert!(
        bad.is_empty(),
        "metric labels with a password or a key's id: {bad:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Request keys through the tower layer's defaults (no namespace)
// ---------------------------------------------------------------------------------------

/// distlock::metrics: "A raw key (`order:8841`) must never become a label value"; the tower
/// layer's keys come from requests ("Keys from requests are untrusted"). With the layer's
/// default (empty) namespace, the key label is the request's own text before its first `:`:
/// a client chooses metric label values (an account number here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_request_keys_do_not_become_metric_labels() {
    use distlock_tower::{HeaderKey, LockLayer};
    use tower::{Layer, ServiceExt};

    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let server = RedisServer::start();
    let locks = client(server.url()).await;
    let service = LockLayer::new(locks, HeaderKey::new("x-account")).layer(tower::service_fn(
        |_req: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        },
    ));
    for account in ["4111111111111111:refund", "alice@example.com:charge"] {
        let request = http::Request::post("/")
            .header("x-account", account)
            .body(String::new())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let mut labels = Vec::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        for label in key.key().labels() {
            labels.push(format!("{}={}", label.key(), label.value()));
        }
    }
    labels.sort();
    labels.dedup();
    let from_requests: Vec<&String> = labels
        .iter()
        .filter(|l| l.contains("4111111111111111") || l.contains("alice@example.com"))
        .collect();
    assert!(
        from_requests.is_empty(),
        "metric labels carry text from the requests' keys: {from_requests:?}"
    );
}

/// An election is "the ordinary lock `leader:<name>`" under the client's prefix. The tower
/// layer with its default (empty) namespace locks whatever key a request names (documented);
/// with a namespace an HTTP client sending `leader:<name>` cannot take the application's
/// election lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_request_keys_cannot_take_the_applications_election() {
    use distlock_tower::{HeaderKey, LockLayer};
    use tower::{Layer, ServiceExt};

    let server = RedisServer::start();
    let locks = client(server.url()).await;
    let (inside_tx, mut inside_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Documented: without a namespace a request can name any lock of the client; a layer
    // sharing its client with the application gives its locks a namespace.
    let service = LockLayer::new(locks.clone(), HeaderKey::new("x-job"))
        .namespace("jobs:")
        .layer(tower::service_fn(move |_req: http::Request<String>| {
            let inside_tx = inside_tx.clone();
            async move {
                inside_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        }));
    let request = http::Request::post("/")
        .header("x-job", "leader:scheduler")
        .body(String::new())
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    let took_it = tokio::time::timeout(Duration::from_millis(500), inside_rx.recv())
        .await
        .is_ok();
    let campaign =
        tokio::time::timeout(Duration::from_millis(300), locks.leader("scheduler")).await;
    let leader = locks.current_leader("scheduler").await.unwrap();
    let response = call.await.unwrap().unwrap();
    assert!(took_it, "the request ran, under its namespaced lock");
    assert!(
        campaign.is_ok(),
        "a request keyed `leader:scheduler` held the election lock (answer {}), the replica's \
         campaign could not be elected meanwhile, and current_leader named it: {leader:?}",
        response.status()
    );
}

/// `inspect` is "who holds `key` right now" and `current_leader` "who leads the election
/// right now"; on Redlock a lock is held by a majority (`list` counts it so). A leader
/// resigns while its release cannot reach one node (that node keeps the old lock until its
/// lease runs out); the next leader is elected by the other two. Asked meanwhile by an
/// observer to whom that node answers first, `current_leader` and `inspect` name the
/// resigned leader: the old leader "leads" while the new one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_current_leader_never_names_a_resigned_leader_while_another_leads() {
    let nodes = redlock_nodes();
    let proxies: Vec<TcpProxy> = nodes.iter().map(|n| TcpProxy::start(n.port())).collect();
    let through_proxies = || {
        LockClient::builder()
            .redlock(proxies.iter().map(TcpProxy::url))
            .redlock_quarantine(Duration::from_secs(3))
            .default_ttl(Duration::from_secs(3))
            .command_timeout(Duration::from_millis(300))
    };
    let a = through_proxies().label("old-leader").build().await.unwrap();
    let b = through_proxies().label("new-leader").build().await.unwrap();
    // The observer reaches the node that will miss the release fastest (a nearer node).
    let near: Vec<TcpProxy> = nodes.iter().map(|n| TcpProxy::start(n.port())).collect();
    near[1].set_latency(15 * MS);
    near[2].set_latency(15 * MS);
    let observer = LockClient::builder()
        .redlock(near.iter().map(TcpProxy::url))
        .redlock_quarantine(Duration::from_secs(3))
        .default_ttl(Duration::from_secs(3))
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let old = a.leader("sched").await.unwrap();
    let old_term = old.fencing_token();
    // A's release never reaches node 0: held back, then the connection is cut.
    proxies[0].blackhole(true);
    old.resign().await.expect("resigned on a majority");
    tokio::time::sleep(400 * MS).await; // node 0's release times out
    proxies[0].cut();
    proxies[0].blackhole(false);
    let new = tokio::time::timeout(Duration::from_secs(2), b.leader("sched"))
        .await
        .expect("elected on the other two nodes")
        .unwrap();
    assert!(new.is_leader());
    // What node 0 still holds: the resigned leader's lock.
    let stale: String = nodes[0].cmd(&["GET", "distlock:leader:sched"]);
    let stale_term: u64 = stale
        .get(33..49)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("node 0 holds {stale:?}"));
    // Node 0 keeps the resigned leader's lock unless the release reached it after all (a
    // retry on the re-made connection); then it holds the new leader's lock, under node 0's
    // own clock as its fence, and naming that term is right.
    let stale_is_old = stale.contains("old-leader");
    let (mut named_old, mut inspected_old) = (0, 0);
    for _ in 0..30 {
        let leader = observer.current_leader("sched").await.unwrap();
        if leader.is_some_and(|l| l.term == old_term || (stale_is_old && l.term == stale_term)) {
            named_old += 1;
        }
        let info = observer.inspect("leader:sched").await.unwrap();
        if info.is_some_and(|i| i.label.as_deref() == Some("old-leader")) {
            inspected_old += 1;
        }
    }
    assert!(new.is_leader(), "the new leader still leads");
    assert!(
        named_old == 0 && inspected_old == 0,
        "while term {} (label new-leader) leads, current_leader named the resigned leader \
         (term {old_term}, {stale_term} on the node that missed its release) {named_old} times \
         of 30, and inspect said `old-leader` holds the election {inspected_old} times of 30",
        new.fencing_token(),
    );
}
