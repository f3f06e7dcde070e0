//! Adversarial tests, round 9: the watchdog's per-chunk command permits and `in_round` marks
//! (dc8a1ce), and releases sent again after a dropped connection that are "unsure" and decided
//! from the holder's lease (4f1277e). Every test runs against real redis-server processes and
//! asserts a promise of the public contract.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{HeldLock, LockGuard};
use distlock_tests::attack::{
    Fault, debug_sleep, fault_thread, lost_before, panics, seed, watch_panics,
};
use distlock_tests::fuzz::rng::Rng;
use distlock_tests::{RedisServer, StormLedger, TcpProxy, client_with_timeout};
use futures_util::future::join_all;

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------

/// Tries `key` with `client` until granted or `within` passed.
async fn take_within(
    client: &distlock::LockClient,
    key: &str,
    ttl: Duration,
    within: Duration,
) -> Option<LockGuard> {
    let t0 = Instant::now();
    loop {
        if let Ok(g) = client.lock(key).ttl(ttl).await {
            return Some(g);
        }
        if t0.elapsed() > within {
            return None;
        }
        tokio::time::sleep(5 * MS).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. release() after the server lost the lock and handed it to another client
// ---------------------------------------------------------------------------------------

/// FINDING (fixed): `release()` answered Ok. The resent release found the token gone,
/// `RedisBackend::release` turned `NotHeld` into `Unsure` (sent again), and `let_go` mapped
/// `Unsure` to the *local* `lease.is_held()`, still true here (30 s lease, data lost on the
/// server). An unsure release is now an error saying the outcome is unknown: never Ok.
///
/// The server restarts and loses all data while A holds `k` (30 s lease: no renewal in the
/// window); B is then granted `k`. A's release goes out, its connection is cut before the
/// answer (the proxy holds it, then closes), it is sent again and finds the token gone.
/// `LockGuard::release` promises `Lost` "when the lock was already gone (expired or taken
/// over)": here B was granted the key *before* A let go, while A's lease was still "held"
/// locally. Reporting Ok tells A its critical section ran under the lock, which it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_resent_after_data_loss_and_a_new_holder_is_not_ok() {
    watch_panics();
    let mut server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client_with_timeout(proxy.url(), Duration::from_secs(2)).await;
    let b = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let ga = a.lock("dl:k").ttl(Duration::from_secs(30)).await.unwrap();
    let fence_a = ga.fencing_token();
    server.restart();
    // A's own connection died with the restart: make sure A reconnected (an inspect through
    // the proxy), so that what follows is the release's own resend, not the restart's.
    let t0 = Instant::now();
    while a.inspect("dl:other").await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(5), "A never reconnected");
        tokio::time::sleep(20 * MS).await;
    }
    let gb = take_within(&b, "dl:k", Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("B is granted the key the restart forgot");
    println!(
        "A fence {fence_a}, B fence {}, A believes held: {} ({:?} left)",
        gb.fencing_token(),
        ga.is_held(),
        ga.remaining()
    );
    // The release goes out into a blackhole; the connection is cut; it is sent again.
    proxy.blackhole(true);
    let release = tokio::spawn(ga.release());
    tokio::time::sleep(150 * MS).await;
    proxy.cut();
    proxy.blackhole(false);
    let released = tokio::time::timeout(Duration::from_secs(5), release)
        .await
        .expect("release answered within its bound")
        .unwrap();
    println!("A's release answered {released:?}");
    let b_held = gb.is_held();
    let owner = b.inspect("dl:k").await.unwrap();
    assert!(b_held, "B's lock was disturbed: {owner:?}");
    // `Lost`, or the error that says the outcome is unknown: never Ok.
    assert!(
        released.is_err(),
        "release() answered {released:?} although B (fence {}) was granted the key before A \
         let go; the key is held as {owner:?}",
        gb.fencing_token()
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}

/// The same without a proxy: the restart kills A's connection; A releases at once (its
/// first copy finds the connection dead, the second finds B's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_right_after_a_restart_that_gave_the_key_to_another_is_not_ok() {
    watch_panics();
    let mut server = RedisServer::start();
    let a = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let b = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let ga = a.lock("dl2:k").ttl(Duration::from_secs(30)).await.unwrap();
    server.restart();
    let gb = take_within(&b, "dl2:k", Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("B is granted the key the restart forgot");
    assert!(ga.is_held(), "A learned of the loss (no finding possible)");
    let released = ga.release().await;
    println!("A's release answered {released:?}");
    // `Lost`, or the error that says the outcome is unknown: never Ok.
    assert!(
        released.is_err(),
        "release() answered {released:?} although B (fence {}) holds the key since before A \
         let go",
        gb.fencing_token()
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}

// ---------------------------------------------------------------------------------------
// 2. A cancelled extend at the moment the watchdog's round leaves the lease out
// ---------------------------------------------------------------------------------------

/// FINDING (fixed): lost at ~5.95 s. The round's chunk left the lease out (permit taken by
/// the extend); a dropped extend settled `Unknown` through `Unsettled::drop` but never told
/// the watchdog, which slept until the lease's deadline. (Also so before dc8a1ce: the old
/// sweep skipped it the same way.) However an extension ends, the watchdog is now told, and
/// after an unknown one it renews again soon.
///
/// A holds one lock (6 s lease: the watchdog renews every 2 s). The server is busy for
/// 0.9 s (`DEBUG SLEEP`) around the first renewal; an `extend` started just before is stuck
/// behind it, so it has the lease's command permit when the round's chunk is sent: the
/// chunk leaves the lease out ("an extension in flight reschedules when done"). The extend is
/// then given up (dropped, as a `timeout` does) before it answers: it never reschedules.
/// After that the server is fine for over 4 s — far more than the 6 s lease needs to be
/// renewed — yet what must hold is that the lease stays held and B stays out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_extend_during_a_due_renewal_does_not_stop_the_watchdog() {
    watch_panics();
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let a = client_with_timeout(server.url(), Duration::from_secs(3)).await;
    let b = client_with_timeout(server.url(), Duration::from_secs(3)).await;
    let ttl = Duration::from_secs(6);
    let t0 = Instant::now();
    let ga = a.lock("ce:k").ttl(ttl).await.unwrap();
    // The first renewal is due 2 s after the acquire was sent.
    tokio::time::sleep_until((t0 + Duration::from_millis(1500)).into()).await;
    let sleeper = {
        let server = server.clone();
        std::thread::spawn(move || debug_sleep(&server, 0.9))
    };
    tokio::time::sleep(50 * MS).await;
    // Stuck behind DEBUG SLEEP until ~2.4 s; given up at 2.2 s (after the 2 s sweep).
    let extend =
        tokio::time::timeout_at((t0 + Duration::from_millis(2200)).into(), ga.extend(ttl)).await;
    println!("extend: {extend:?} at {:?}", t0.elapsed());
    sleeper.join().unwrap();
    // Watch until 7.5 s: two lease lengths of renewals were due.
    let lost_at = lost_before(&ga, t0, Duration::from_millis(7500)).await;
    let b_got = b.lock("ce:k").await;
    let b_got_it = b_got.is_ok();
    drop(b_got);
    assert!(
        lost_at.is_none() && !b_got_it,
        "the lease was lost at {lost_at:?} (B granted: {b_got_it}) although the server \
         answered normally from 2.4 s on and the lease is 6 s"
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}

/// The same with a proxy's latency instead of a busy server: 250 ms each way (a 500 ms round
/// trip for a 6 s lease), an extend in flight at the first renewal, given up after 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_extend_over_a_slow_link_does_not_stop_the_watchdog() {
    watch_panics();
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client_with_timeout(proxy.url(), Duration::from_secs(3)).await;
    let b = client_with_timeout(server.url(), Duration::from_secs(3)).await;
    let ttl = Duration::from_secs(6);
    proxy.set_latency(250 * MS);
    let t0 = Instant::now();
    let ga = a.lock("cel:k").ttl(ttl).await.unwrap();
    // Renewal due at 2 s; the extend is in flight from 1.8 s to ~2.3 s and given up at 2.1 s.
    tokio::time::sleep_until((t0 + Duration::from_millis(1800)).into()).await;
    let extend = tokio::time::timeout(300 * MS, ga.extend(ttl)).await;
    println!("extend: {extend:?} at {:?}", t0.elapsed());
    let lost_at = lost_before(&ga, t0, Duration::from_millis(7500)).await;
    let b_got = b.lock("cel:k").await;
    let b_got_it = b_got.is_ok();
    drop(b_got);
    assert!(
        lost_at.is_none() && !b_got_it,
        "the lease was lost at {lost_at:?} (B granted: {b_got_it}); round trip 500 ms, lease 6 s"
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}

// ---------------------------------------------------------------------------------------
// 3. Hundreds of short leases, mixed holds and extends, under every stall
// ---------------------------------------------------------------------------------------

const STORM_KEYS: usize = 400;

/// A keeps 400 keys held with short leases (200 ms – 2 s), some with `min_hold`/`max_hold`,
/// extends random ones shorter and longer (a fifth given up mid-flight), releases
/// (`release()`/`release_now()`) or drops random ones, while the server is frozen (SIGSTOP),
/// busy (`DEBUG SLEEP`) and its connections killed. B takes random keys one try at a time.
/// What must hold: B is never granted a key while A's guard for it says `is_held()`, fences
/// grow per key, A's `release()` never answers Ok for a key B was granted while A's guard
/// existed, every call is bounded, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_short_leases_with_mixed_holds_under_stalls_never_overlap() {
    watch_panics();
    let seed = seed("ATTACK9_SEED", 0xa9_0003);
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let timeout = 250 * MS;
    let a = client_with_timeout(server.url(), timeout).await;
    let b = client_with_timeout(server.url(), timeout).await;
    let keys: Arc<Vec<String>> = Arc::new((0..STORM_KEYS).map(|i| format!("h9:{i}")).collect());
    // Per key: A's guard, and how many times B was granted the key while that guard lived.
    type Slot = Mutex<Option<(LockGuard, u64)>>;
    let held: Arc<Vec<Slot>> = Arc::new((0..STORM_KEYS).map(|_| Mutex::new(None)).collect());
    let b_grants_per_key: Arc<Vec<AtomicUsize>> =
        Arc::new((0..STORM_KEYS).map(|_| AtomicUsize::new(0)).collect());
    let ledger = StormLedger::new(STORM_KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<[AtomicUsize; 5]> = Arc::new(Default::default()); // a grants, b grants, extends, releases, faults

    let faults = fault_thread(
        server.clone(),
        None,
        stop.clone(),
        seed,
        (150, 450),
        vec![
            (Fault::Pause(50, 400), 1),
            (Fault::Sleep(50, 300), 1),
            (Fault::Kill, 1),
        ],
    );

    // A: keep every key held; let go of some at random.
    let a_task = {
        let (a, keys, held, stop, counters, ledger, bgk) = (
            a.clone(),
            keys.clone(),
            held.clone(),
            stop.clone(),
            counters.clone(),
            ledger.clone(),
            b_grants_per_key.clone(),
        );
        tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[2]);
            while !stop.load(Ordering::SeqCst) {
                let mut letting_go = Vec::new();
                let want: Vec<usize> = (0..STORM_KEYS)
                    .filter(|&k| {
                        let mut slot = held[k].lock().unwrap();
                        if slot.as_ref().is_some_and(|(g, _)| !g.is_held()) {
                            *slot = None;
                        } else if slot.is_some() && rng.chance(3) {
                            letting_go.push((k, slot.take().unwrap()));
                        }
                        slot.is_none()
                    })
                    .collect();
                // Let go: release(), release_now() or a drop; release() answering Ok for a
                // key B was granted while the guard lived is a violation.
                let lets = letting_go.into_iter().map(|(k, (g, b_before))| {
                    let how = rng.below(3);
                    let (ledger, bgk, counters) = (ledger.clone(), bgk.clone(), counters.clone());
                    async move {
                        counters[3].fetch_add(1, Ordering::Relaxed);
                        let fence = g.fencing_token();
                        // B grants counted before A lets go happened before it.
                        let b_at_let = bgk[k].load(Ordering::SeqCst) as u64;
                        let t0 = Instant::now();
                        let answer = match how {
                            0 => Some(g.release().await),
                            1 => Some(g.release_now().await),
                            _ => {
                                drop(g);
                                None
                            }
                        };
                        let took = t0.elapsed();
                        if took > 2 * timeout + 500 * MS {
                            ledger.violation(format!("a release of key {k} took {took:?}"));
                        }
                        if matches!(answer, Some(Ok(()))) && b_at_let != b_before {
                            ledger.violation(format!(
                                "key {k}: A's release (fence {fence}) answered Ok although B \
                                 was granted the key while A's guard lived"
                            ));
                        }
                    }
                });
                join_all(lets).await;
                let tries = want.iter().map(|&k| {
                    let ttl = [200, 300, 500, 1000, 2000][rng.below(5)] * MS;
                    let mut request = a.lock(keys[k].as_str()).ttl(ttl);
                    match rng.below(4) {
                        0 => request = request.min_hold(rng.millis(100, 600)),
                        1 => request = request.max_hold(rng.millis(300, 1500)),
                        2 => {
                            let min = rng.millis(100, 400);
                            request = request.min_hold(min).max_hold(min + rng.millis(0, 800));
                        }
                        _ => {}
                    }
                    async move { (k, request.await) }
                });
                for (k, answer) in join_all(tries).await {
                    let Ok(g) = answer else { continue };
                    counters[0].fetch_add(1, Ordering::Relaxed);
                    ledger.fence(k, "A", g.fencing_token());
                    let b_now = bgk[k].load(Ordering::SeqCst) as u64;
                    *held[k].lock().unwrap() = Some((g, b_now));
                }
                tokio::time::sleep(10 * MS).await;
            }
        })
    };
    let b_grants_per_key = b_grants_per_key.clone();
    // A: extend random held leases, shorter or longer, some given up mid-flight.
    let extender = {
        let (held, stop, counters) = (held.clone(), stop.clone(), counters.clone());
        tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[3]);
            while !stop.load(Ordering::SeqCst) {
                let picked: Vec<HeldLock> = (0..24)
                    .filter_map(|_| {
                        let k = rng.below(STORM_KEYS);
                        held[k].lock().unwrap().as_ref().map(|(g, _)| g.held_lock())
                    })
                    .collect();
                let calls = picked.into_iter().map(|h| {
                    let ttl = rng.millis(100, 2000);
                    let cut = rng.chance(20).then(|| rng.millis(0, 20));
                    async move {
                        let t0 = Instant::now();
                        match cut {
                            Some(cut) => {
                                let _ = tokio::time::timeout(cut, h.extend(ttl)).await;
                            }
                            None => {
                                let _ = h.extend(ttl).await;
                            }
                        }
                        t0.elapsed()
                    }
                });
                for took in join_all(calls).await {
                    assert!(
                        took < 3 * timeout + Duration::from_secs(1),
                        "extend took {took:?}"
                    );
                }
                counters[2].fetch_add(24, Ordering::Relaxed);
                tokio::time::sleep(rng.millis(2, 15)).await;
            }
        })
    };
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    // B: one-try acquires of random keys; on a grant, A must not believe it holds the key.
    let b_tasks: Vec<_> = (0..4)
        .map(|task| {
            let (b, keys, held, stop, counters, ledger, bgk) = (
                b.clone(),
                keys.clone(),
                held.clone(),
                stop.clone(),
                counters.clone(),
                ledger.clone(),
                b_grants_per_key.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng::derive(seed, &[4, task as u64]);
                while !stop.load(Ordering::SeqCst) {
                    let k = rng.below(STORM_KEYS);
                    if let Ok(g) = b.lock(keys[k].as_str()).ttl(Duration::from_secs(20)).await {
                        bgk[k].fetch_add(1, Ordering::SeqCst);
                        counters[1].fetch_add(1, Ordering::Relaxed);
                        if let Some((ga, _)) = held[k].lock().unwrap().as_ref()
                            && ga.is_held()
                        {
                            ledger.violation(format!(
                                "B was granted key {k} (fence {}) while A's guard (fence {}) \
                                 believes it holds it for {:?} more",
                                g.fencing_token(),
                                ga.fencing_token(),
                                ga.remaining()
                            ));
                        }
                        ledger.fence(k, "B", g.fencing_token());
                        tokio::time::sleep(rng.millis(0, 2)).await;
                        let _ = g.release().await;
                    } else {
                        tokio::time::sleep(rng.millis(0, 3)).await;
                    }
                }
            })
        })
        .collect();
    stopper.await.unwrap();
    a_task.await.unwrap();
    extender.await.expect("extends bounded");
    for t in b_tasks {
        t.await.unwrap();
    }
    let injected: usize = faults.join().unwrap().iter().sum();
    counters[4].store(injected, Ordering::Relaxed);
    server.resume();
    let c: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!("A grants, B grants, extends, lets go, faults: {c:?}");
    for slot in held.iter() {
        drop(slot.lock().unwrap().take());
    }
    let violations = ledger.violations();
    assert!(
        violations.is_empty() && panics().is_empty(),
        "seed {seed}\n{} violations: {:#?}\npanics: {:#?}",
        violations.len(),
        &violations[..violations.len().min(15)],
        panics()
    );
    assert!(c[1] > 20, "B was never let in: the stalls did not bite");
}

// ---------------------------------------------------------------------------------------
// 4. A healthy server: many leases, extends in flight and given up, nothing may be lost
// ---------------------------------------------------------------------------------------

/// FINDING (fixed): ~20 of 300 leases lost. A given-up *shorter* extend settled `Unknown`:
/// the deadline dropped to `sent + ttl` (correctly), but the watchdog's `next_renew` stayed a
/// third of the old lease away and nobody woke it: the lease ran out before its renewal.
///
/// A holds 300 locks (1 s leases) through a proxy adding 2 ms each way, on a server that is
/// fine throughout, while extends (shorter and longer, 300 ms – 2 s) are started on random
/// locks and most of them are given up after 0–6 ms, i.e. while in flight. Nothing goes
/// wrong with the server, so what must hold: no lease is ever reported lost, and B is
/// granted none of the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_with_extends_given_up_in_flight_are_never_lost_on_a_healthy_server() {
    healthy_extend_storm(0xa9_0004, 300).await;
}

/// As above, but every extend asks for at least the lease itself (1 – 2 s): a given-up
/// extend can then never shorten the deadline (`Unknown` keeps the old one), so a loss can
/// only come from the watchdog not renewing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_with_longer_extends_given_up_in_flight_are_never_lost() {
    healthy_extend_storm(0xa9_0005, 1000).await;
}

async fn healthy_extend_storm(default_seed: u64, min_extend_ms: u64) {
    watch_panics();
    let seed = seed("ATTACK9_SEED", default_seed);
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    proxy.set_latency(2 * MS);
    let a = client_with_timeout(proxy.url(), Duration::from_secs(2)).await;
    let b = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let n = 300;
    let keys: Vec<String> = (0..n).map(|i| format!("hl:{i}")).collect();
    let guards: Arc<Vec<LockGuard>> = Arc::new(
        join_all(
            keys.iter()
                .map(|k| a.lock(k.as_str()).ttl(Duration::from_secs(1)).into_future()),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let extender = {
        let (guards, stop) = (guards.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[1]);
            let mut extends = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let calls = (0..16).map(|_| {
                    let h = guards[rng.below(n)].held_lock();
                    let ttl = rng.millis(min_extend_ms, 2000);
                    let cut = rng.chance(80).then(|| rng.millis(0, 6));
                    async move {
                        match cut {
                            Some(cut) => {
                                let _ = tokio::time::timeout(cut, h.extend(ttl)).await;
                            }
                            None => {
                                let _ = h.extend(ttl).await;
                            }
                        }
                    }
                });
                join_all(calls).await;
                extends += 16;
                tokio::time::sleep(rng.millis(1, 8)).await;
            }
            extends
        })
    };
    let t0 = Instant::now();
    let mut lost = Vec::new();
    while t0.elapsed() < Duration::from_secs(8) {
        for (i, g) in guards.iter().enumerate() {
            if !g.is_held() && !lost.iter().any(|(j, _)| *j == i) {
                lost.push((i, t0.elapsed()));
            }
        }
        tokio::time::sleep(10 * MS).await;
    }
    stop.store(true, Ordering::SeqCst);
    let extends = extender.await.unwrap();
    let mut b_granted = Vec::new();
    for k in keys.iter().take(60) {
        if let Ok(g) = b.lock(k.as_str()).await {
            b_granted.push(k.clone());
            drop(g);
        }
    }
    println!("extends {extends}, lost {}", lost.len());
    assert!(
        lost.is_empty() && b_granted.is_empty(),
        "seed {seed}: {} of {n} leases lost on a healthy server (first: {:?}); B granted {:?}",
        lost.len(),
        &lost[..lost.len().min(10)],
        b_granted
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}
