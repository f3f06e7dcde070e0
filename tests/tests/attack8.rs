//! Adversarial tests, round 8: coalescing with four calls out at once (out-of-order landing
//! after `EVAL` fallbacks and retries on new connections), the coalescer's own releases of
//! acquires whose callers went away, the connection's retry-until-timeout rule, the shared
//! server clock of a batch, and the watchdog's renewals in chunks of 64 (two out at once).
//! Every test runs against real redis-server processes and asserts a promise of the public
//! contract: one holder per key with growing fences, nothing left held, calls bounded, no
//! panic, no password in errors.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{HeldLock, LockClient, LockError, LockGuard};
use distlock_tests::attack::{Fault, fault_thread, not_free, panics, seed, watch_panics};
use distlock_tests::fuzz::rng::Rng;
use distlock_tests::{RedisServer, StormLedger, TcpProxy, client_with_timeout};
use futures_util::future::join_all;

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------

/// Runs `f` in each of `n` tasks until `stop`; panics in tasks fail the test.
async fn run_tasks<F, Fut>(n: usize, stop: &Arc<AtomicBool>, f: F)
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i, stop.clone()))).collect();
    for h in handles {
        h.await.expect("a task panicked");
    }
}

// ---------------------------------------------------------------------------------------
// 1. A storm on few keys: abandoned acquires and releases, every fault at once
// ---------------------------------------------------------------------------------------

const STORM_KEYS: usize = 6;

/// Keys with characters a key may hold: spaces, glob and Lua pattern characters, quotes,
/// braces, non-ASCII.
fn storm_key(k: usize) -> String {
    format!("a8 storm:{k}:ü🔒|*?[]%.-+\\\"'{{x}}")
}

/// Many tasks of four clients (one behind a proxy) take six keys with random waits, give up
/// many acquires and releases mid-flight (timeouts from 0 ms), and sometimes ask for a key
/// that holds a list, while the server's scripts are flushed, its clients killed, the proxy's
/// connections cut, and the server frozen (SIGSTOP) or busy (`DEBUG SLEEP`) for less than the
/// command timeout. What must hold: one holder per key at a time, fences growing in
/// acquisition order, the list key never granted, every acquire answered within wait + twice
/// the command timeout (a wait-less request may first wait out our own release in flight)
/// and every release within the command timeout (plus 1 s of scheduling slack), no panic,
/// and afterwards every key free (20 s leases: a leftover shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_four_calls_out_keeps_exclusion_bounds_and_leaves_nothing() {
    watch_panics();
    let seed = seed("ATTACK8_SEED", 0xa8_0001);
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let proxy = Arc::new(TcpProxy::start(server.port()));
    proxy.set_latency(MS);
    server.cmd::<()>(&["RPUSH", "distlock:a8 wrongtype", "x"]);
    let timeout = 300 * MS;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client_with_timeout(server.url(), timeout).await);
    }
    clients.push(client_with_timeout(proxy.url(), timeout).await);
    let clients = Arc::new(clients);
    let ledger = StormLedger::new(STORM_KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));

    let faults = fault_thread(
        server.clone(),
        Some(proxy.clone()),
        stop.clone(),
        seed,
        (5, 40),
        vec![
            (Fault::Flush, 40),
            (Fault::Kill, 15),
            (Fault::Cut, 10),
            (Fault::Pause(20, 150), 15),
            (Fault::Sleep(20, 150), 10),
        ],
    );
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(7)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let slack = Duration::from_secs(1);
    run_tasks(40, &stop, |task, stop| {
        let (clients, ledger, rounds, granted) = (
            clients.clone(),
            ledger.clone(),
            rounds.clone(),
            granted.clone(),
        );
        async move {
            let mut rng = Rng::derive(seed, &[1, task as u64]);
            let client = &clients[task % clients.len()];
            while !stop.load(Ordering::SeqCst) {
                rounds.fetch_add(1, Ordering::Relaxed);
                let wrong = rng.chance(4);
                let k = rng.below(STORM_KEYS);
                let key = if wrong {
                    "a8 wrongtype".to_owned()
                } else {
                    storm_key(k)
                };
                let wait = if rng.chance(30) {
                    Duration::ZERO
                } else {
                    rng.millis(10, 400)
                };
                let request = client
                    .lock(key.as_str())
                    .ttl(Duration::from_secs(20))
                    .wait(wait);
                let abandon = rng.chance(35).then(|| rng.millis(0, 40));
                let t0 = Instant::now();
                let answer = match abandon {
                    Some(cut) => tokio::time::timeout(cut, request.into_future()).await.ok(),
                    None => Some(request.await),
                };
                let took = t0.elapsed();
                if took > wait + 2 * timeout + slack {
                    ledger.violation(format!(
                        "an acquire of `{key}` (wait {wait:?}) answered after {took:?}"
                    ));
                }
                let guard = match answer {
                    Some(Ok(g)) => g,
                    Some(Err(e)) => {
                        if matches!(e, LockError::Lost { .. } | LockError::InvalidKey { .. }) {
                            ledger.violation(format!("acquire of `{key}` failed with {e:?}"));
                        }
                        continue;
                    }
                    None => continue,
                };
                if wrong {
                    ledger.violation(format!(
                        "the key holding a list was granted (fence {})",
                        guard.fencing_token()
                    ));
                    drop(guard);
                    continue;
                }
                granted.fetch_add(1, Ordering::Relaxed);
                ledger.enter(k, &format!("task {task}"), guard.fencing_token());
                if rng.chance(50) {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(rng.millis(0, 3)).await;
                }
                ledger.leave(k);
                match rng.weighted(&[50, 30, 20]) {
                    0 => {
                        let t0 = Instant::now();
                        let _ = guard.release().await;
                        if t0.elapsed() > timeout + slack {
                            ledger.violation(format!(
                                "a release of `{key}` answered after {:?}",
                                t0.elapsed()
                            ));
                        }
                    }
                    1 => drop(guard),
                    _ => {
                        let cut = rng.millis(0, 3);
                        let _ = tokio::time::timeout(cut, guard.release()).await;
                    }
                }
            }
        }
    })
    .await;
    stopper.await.unwrap();
    let counts = faults.join().unwrap();
    server.resume();
    println!(
        "rounds {}, granted {}, faults (flush, kill, cut, pause, sleep) {counts:?}",
        rounds.load(Ordering::Relaxed),
        granted.load(Ordering::Relaxed)
    );

    let checker = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let keys: Vec<String> = (0..STORM_KEYS).map(storm_key).collect();
    let left = not_free(&checker, &keys, Duration::from_secs(5)).await;
    let violations = ledger.violations();
    let panics = panics();
    drop(clients);
    assert!(
        violations.is_empty() && left.is_empty() && panics.is_empty(),
        "seed {seed}\nviolations: {violations:#?}\nkeys left held: {left:#?}\npanics: {panics:#?}"
    );
    assert!(
        granted.load(Ordering::Relaxed) > 100,
        "too few grants to mean anything"
    );
}

// ---------------------------------------------------------------------------------------
// 2. The watchdog renewing big batches of short leases while the server stalls
// ---------------------------------------------------------------------------------------

const WD_KEYS: usize = 320;

/// Client A keeps 320 short leases (200 ms – 1 s, so the watchdog renews five chunks of 64
/// every few tens of ms) and extends random ones shorter or longer while renewals are in
/// flight; client B keeps trying one-try acquires of the same keys; the server freezes
/// (SIGSTOP) or sleeps (`DEBUG SLEEP`) for 50–300 ms, longer than some leases, and its
/// clients are killed now and then. What must hold: whenever B is granted a key, A's guard on
/// it no longer believes it holds it (`is_held()` false: A's deadline is measured from
/// before its last command was sent, so it passes before the server can let B in), A is
/// never granted a key B is inside, fences grow per key, no panic, and at the end every key
/// is free once the guards are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_renewal_batches_and_extends_under_stalls_never_overlap_another_holder() {
    watch_panics();
    let seed = seed("ATTACK8_SEED", 0xa8_0002);
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let timeout = 250 * MS;
    let a = client_with_timeout(server.url(), timeout).await;
    let b = client_with_timeout(server.url(), timeout).await;
    let keys: Arc<Vec<String>> = Arc::new((0..WD_KEYS).map(|i| format!("wd:{i}")).collect());
    let held: Arc<Vec<Mutex<Option<LockGuard>>>> =
        Arc::new((0..WD_KEYS).map(|_| Mutex::new(None)).collect());
    let ledger = StormLedger::new(WD_KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let (a_grants, b_grants, extends) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );

    let faults = fault_thread(
        server.clone(),
        None,
        stop.clone(),
        seed,
        (150, 500),
        vec![
            (Fault::Pause(50, 300), 50),
            (Fault::Sleep(50, 250), 30),
            (Fault::Kill, 20),
        ],
    );

    // A: keep every key held, re-taking what was lost.
    let a_task = {
        let (a, keys, held, ledger, stop, grants) = (
            a.clone(),
            keys.clone(),
            held.clone(),
            ledger.clone(),
            stop.clone(),
            a_grants.clone(),
        );
        tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[2]);
            while !stop.load(Ordering::SeqCst) {
                let want: Vec<usize> = (0..WD_KEYS)
                    .filter(|&k| {
                        let mut slot = held[k].lock().unwrap();
                        if slot.as_ref().is_some_and(|g| !g.is_held()) {
                            *slot = None;
                        }
                        slot.is_none()
                    })
                    .collect();
                let tries = want.iter().map(|&k| {
                    let ttl = [200, 400, 1000][rng.below(3)] * MS;
                    let request = a.lock(keys[k].as_str()).ttl(ttl);
                    async move { (k, request.await) }
                });
                for (k, answer) in join_all(tries).await {
                    let Ok(g) = answer else { continue };
                    grants.fetch_add(1, Ordering::Relaxed);
                    if ledger.is_inside(k) {
                        ledger.violation(format!("A was granted key {k} while B is inside"));
                    }
                    ledger.fence(k, "A", g.fencing_token());
                    *held[k].lock().unwrap() = Some(g);
                }
                tokio::time::sleep(10 * MS).await;
            }
        })
    };
    // A: extend random held leases, shorter or longer, while renewals are out.
    let extender = {
        let (held, stop, extends) = (held.clone(), stop.clone(), extends.clone());
        tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[3]);
            while !stop.load(Ordering::SeqCst) {
                let picked: Vec<HeldLock> = (0..12)
                    .filter_map(|_| {
                        let k = rng.below(WD_KEYS);
                        held[k].lock().unwrap().as_ref().map(LockGuard::held_lock)
                    })
                    .collect();
                let calls = picked.into_iter().map(|h| {
                    let ttl = rng.millis(100, 1500);
                    let cut = rng.chance(20).then(|| rng.millis(0, 20));
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
                extends.fetch_add(12, Ordering::Relaxed);
                tokio::time::sleep(rng.millis(2, 15)).await;
            }
        })
    };
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    // B: one-try acquires of random keys; on a grant, A must not believe it holds the key.
    run_tasks(4, &stop, |task, stop| {
        let (b, keys, held, ledger, grants) = (
            b.clone(),
            keys.clone(),
            held.clone(),
            ledger.clone(),
            b_grants.clone(),
        );
        async move {
            let mut rng = Rng::derive(seed, &[4, task as u64]);
            while !stop.load(Ordering::SeqCst) {
                let k = rng.below(WD_KEYS);
                match b.lock(keys[k].as_str()).ttl(Duration::from_secs(20)).await {
                    Ok(g) => {
                        grants.fetch_add(1, Ordering::Relaxed);
                        if let Some(ga) = held[k].lock().unwrap().as_ref()
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
                        ledger.enter(k, "B", g.fencing_token());
                        tokio::time::sleep(rng.millis(0, 2)).await;
                        ledger.leave(k);
                        let _ = g.release().await;
                    }
                    Err(_) => tokio::time::sleep(rng.millis(0, 3)).await,
                }
            }
        }
    })
    .await;
    stopper.await.unwrap();
    a_task.await.unwrap();
    extender.await.unwrap();
    let counts = faults.join().unwrap();
    server.resume();
    println!(
        "A grants {}, B grants {}, extends {}, faults (pause, sleep, kill) {counts:?}",
        a_grants.load(Ordering::Relaxed),
        b_grants.load(Ordering::Relaxed),
        extends.load(Ordering::Relaxed)
    );
    for slot in held.iter() {
        drop(slot.lock().unwrap().take());
    }
    let checker = client_with_timeout(server.url(), Duration::from_secs(2)).await;
    let left = not_free(&checker, &keys, Duration::from_secs(5)).await;
    let violations = ledger.violations();
    let panics = panics();
    assert!(
        violations.is_empty() && left.is_empty() && panics.is_empty(),
        "seed {seed}\nviolations: {violations:#?}\nkeys left held: {left:#?}\npanics: {panics:#?}"
    );
    assert!(
        b_grants.load(Ordering::Relaxed) > 20,
        "B was never let in: the stalls did not bite"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Orphans: acquires given up exactly while their call is out, on two runtimes
// ---------------------------------------------------------------------------------------

/// The keys of `pattern` whose value is a held lock (`H`/`W`), with value and PTTL.
fn held_keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    let mut conn = server.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
    keys.into_iter()
        .filter_map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut conn).ok()?;
            let v = v?;
            if !(v.starts_with('H') || v.starts_with('W')) {
                return None;
            }
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut conn).unwrap_or(-3);
            Some(format!("{k} = {v} (pttl {pttl} ms)"))
        })
        .collect()
}

/// One task's loop: acquire fresh keys (nobody else ever asks for them), giving up many
/// acquires and releases at random points, some exactly as the answer comes back.
async fn orphan_loop(
    client: LockClient,
    prefix: String,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    late: Arc<Mutex<Vec<String>>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("{prefix}:{n}:ü 🔒|*");
        let request = client
            .lock(key.as_str())
            .ttl(Duration::from_secs(20))
            .wait(rng.millis(0, 50));
        let t0 = Instant::now();
        let answer = if rng.chance(60) {
            let cut = rng.millis(0, 250);
            tokio::time::timeout(cut, request.into_future()).await.ok()
        } else {
            Some(request.await)
        };
        if t0.elapsed() > 2 * timeout + Duration::from_millis(50) + Duration::from_secs(1) {
            late.lock()
                .unwrap()
                .push(format!("acquire of {key} took {:?}", t0.elapsed()));
        }
        if let Some(Ok(g)) = answer {
            match rng.below(3) {
                0 => drop(g),
                1 => {
                    let _ = g.release().await;
                }
                _ => {
                    let _ = tokio::time::timeout(rng.millis(0, 5), g.release()).await;
                }
            }
        }
    }
}

/// Acquires of keys nobody else wants, given up at random instants from 0 to 250 ms (the
/// command timeout is 250 ms) while the server is busy for up to 120 ms at a time (`DEBUG
/// SLEEP`, so callers time out while their batch is out and answers come back just after),
/// its scripts are flushed (calls land out of order) and its clients killed (calls retried on
/// a new connection); a second runtime uses a clone of the same client and is shut down in
/// the middle, dropping its requests wherever they are. What must hold: once everything is
/// over, no key is held (20 s leases) — every acquire that landed for a caller that went away
/// was given back — no call outlived its bound, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_given_up_while_their_call_is_out_leave_nothing_held() {
    watch_panics();
    let seed = seed("ATTACK8_SEED", 0xa8_0003);
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let timeout = 250 * MS;
    let a = client_with_timeout(server.url(), timeout).await;
    let stop = Arc::new(AtomicBool::new(false));
    let late = Arc::new(Mutex::new(Vec::new()));
    let faults = fault_thread(
        server.clone(),
        None,
        stop.clone(),
        seed,
        (10, 60),
        vec![
            (Fault::Sleep(40, 120), 55),
            (Fault::Flush, 35),
            (Fault::Kill, 10),
        ],
    );

    // A second runtime on its own thread, with a clone of the client, dropped mid-way.
    let other = {
        let (a, late, stop) = (a.clone(), late.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            for t in 0..12u64 {
                rt.spawn(orphan_loop(
                    a.clone(),
                    format!("orph2:{t}"),
                    Rng::derive(seed, &[5, t]),
                    stop.clone(),
                    timeout,
                    late.clone(),
                ));
            }
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(2500)).await });
            drop(rt);
        })
    };
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    run_tasks(32, &stop, |t, stop| {
        orphan_loop(
            a.clone(),
            format!("orph:{t}"),
            Rng::derive(seed, &[6, t as u64]),
            stop,
            timeout,
            late.clone(),
        )
    })
    .await;
    stopper.await.unwrap();
    other.join().unwrap();
    let counts = faults.join().unwrap();
    server.resume();
    let total: usize = server.cmd::<Vec<String>>(&["KEYS", "distlock:orph*"]).len();
    println!("keys touched {total}, faults (sleep, flush, kill) {counts:?}");

    // Whatever is still in flight finishes within a few command timeouts.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = held_keys(&server, "distlock:orph*");
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(50 * MS).await;
    };
    let late = late.lock().unwrap().clone();
    let panics = panics();
    assert!(
        left.is_empty() && late.is_empty() && panics.is_empty(),
        "seed {seed}\n{} keys left held 5 s after the end: {:#?}\nlate calls: {late:#?}\npanics: {panics:#?}",
        left.len(),
        &left[..left.len().min(20)]
    );
    assert!(total > 200, "too few acquires to mean anything");
}

// ---------------------------------------------------------------------------------------
// 4. No password in any error, whatever fails
// ---------------------------------------------------------------------------------------

/// A client of a password-protected server goes through every failure the new code paths
/// produce: timeouts (frozen server, `DEBUG SLEEP`), dropped connections retried until the
/// timeout (server killed, then restarted), a password changed under it (auth errors on
/// reconnect, including Redis' "unauthenticated" protocol error for a long batch), a key of
/// another type, flushed scripts. What must hold: no error's Display, Debug or source chain,
/// and no Debug of the client, a request or a guard, shows the password; no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_error_under_the_new_failure_paths() {
    watch_panics();
    const PASSWORD: &str = "Att4ck8-pw-zQx";
    let mut server =
        RedisServer::start_with(&["--requirepass", PASSWORD, "--enable-debug-command", "yes"]);
    let timeout = 200 * MS;
    let client = client_with_timeout(server.url(), timeout).await;
    let mut seen: Vec<String> = Vec::new();
    let record = |seen: &mut Vec<String>, what: &str, e: &LockError| {
        let mut text = format!("{what}: {e} / {e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(&format!(" / caused by {s} / {s:?}"));
            source = s.source();
        }
        seen.push(text);
    };
    // Many operations at once, so that batches carry several and their errors are shared.
    async fn burst(client: &LockClient, tag: &str) -> Vec<(String, LockError)> {
        let ops = (0..24).map(|i| async move {
            let key = format!("pw:{tag}:{i}");
            let mut errs = Vec::new();
            match client.lock(key.as_str()).ttl(Duration::from_secs(5)).await {
                Ok(g) => {
                    if let Err(e) = g.extend(Duration::from_secs(6)).await {
                        errs.push(("extend".to_owned(), e));
                    }
                    if let Err(e) = g.release().await {
                        errs.push(("release".to_owned(), e));
                    }
                }
                Err(e) => errs.push(("acquire".to_owned(), e)),
            }
            if let Err(e) = client.inspect(&key).await {
                errs.push(("inspect".to_owned(), e));
            }
            errs
        });
        join_all(ops).await.into_iter().flatten().collect()
    }
    let held = client
        .lock("pw:held")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap();
    seen.push(format!(
        "{client:?} / {held:?} / {:?}",
        client.lock("pw:req")
    ));

    server.cmd::<()>(&["RPUSH", "distlock:pw:list", "x"]);
    if let Err(e) = client.lock("pw:list").await {
        record(&mut seen, "wrongtype", &e);
    }
    server.cmd::<()>(&["SCRIPT", "FLUSH"]);
    for (w, e) in burst(&client, "flush").await {
        record(&mut seen, &w, &e);
    }
    // Frozen: timeouts.
    server.pause();
    let frozen = burst(&client, "frozen").await;
    let extend = held.extend(Duration::from_secs(7)).await;
    server.resume();
    for (w, e) in frozen {
        record(&mut seen, &w, &e);
    }
    if let Err(e) = extend {
        record(&mut seen, "extend frozen", &e);
    }
    // Busy: DEBUG SLEEP past the timeout.
    let sleeper = {
        let url = server.url();
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let _: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg(0.4).query(&mut conn);
        })
    };
    tokio::time::sleep(20 * MS).await;
    for (w, e) in burst(&client, "sleep").await {
        record(&mut seen, &w, &e);
    }
    sleeper.join().unwrap();
    // The password changes under the client: its connections are killed and it reconnects
    // with the old one.
    server.cmd::<()>(&["CONFIG", "SET", "requirepass", "other-Pw-9"]);
    {
        let mut conn =
            redis::Client::open(format!("redis://:other-Pw-9@127.0.0.1:{}", server.port()))
                .unwrap()
                .get_connection()
                .unwrap();
        let _: () = distlock_tests::kill_clients(&mut conn).unwrap();
    }
    for (w, e) in burst(&client, "auth").await {
        record(&mut seen, &w, &e);
    }
    if let Err(e) = held.extend(Duration::from_secs(7)).await {
        record(&mut seen, "extend auth", &e);
    }
    // Killed: connection refused until the timeout; then back with the first password.
    server.kill();
    for (w, e) in burst(&client, "down").await {
        record(&mut seen, &w, &e);
    }
    server.restart();
    for (w, e) in burst(&client, "restarted").await {
        record(&mut seen, &w, &e);
    }
    // A new client with a wrong password, and one to a dead port.
    let wrong = format!("redis://:{PASSWORD}x@127.0.0.1:{}", server.port());
    if let Err(e) = LockClient::builder()
        .url(wrong)
        .command_timeout(timeout)
        .build()
        .await
    {
        record(&mut seen, "build with a wrong password", &e);
    }
    if let Err(e) = held.release().await {
        record(&mut seen, "release held", &e);
    }
    let leaks: Vec<&String> = seen.iter().filter(|s| s.contains(PASSWORD)).collect();
    let panics = panics();
    println!("{} errors and debug strings checked", seen.len());
    assert!(
        leaks.is_empty() && panics.is_empty(),
        "the password shows in: {leaks:#?}\npanics: {panics:#?}"
    );
    assert!(seen.len() > 50, "too few errors seen: {seen:#?}");
}

// ---------------------------------------------------------------------------------------
// 5. An extension waits behind a whole round of renewal chunks
// ---------------------------------------------------------------------------------------

/// FINDING (fixed): a round of renewals held every lease's command permit from the sweep
/// until its last chunk answered, so `extend` waited for the whole round (five waves of
/// timed-out chunks here). Each chunk now takes its permits when it is sent and gives them
/// back when it answers.
///
/// A client holds 640 locks (ten renewal chunks of 64, two out at a time) with a 3 s lease;
/// the server freezes just before their renewal round is due. `extend` on one of them "waits
/// for a renewal in flight" (guarantees.rs) and is then bounded by the command timeout: what
/// must hold is that it answers within twice the command timeout (the renewal call in
/// flight, then its own), plus scheduling slack — not after every chunk of the round has
/// timed out one pair after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_during_a_stalled_renewal_round_answers_within_its_bound() {
    watch_panics();
    let server = RedisServer::start();
    let timeout = 200 * MS;
    let client = client_with_timeout(server.url(), timeout).await;
    let ttl = Duration::from_secs(3);
    let t0 = Instant::now();
    let guards: Vec<LockGuard> =
        join_all((0..640).map(|i| client.lock(format!("round:{i}")).ttl(ttl).into_future()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "the set-up took too long"
    );
    // Renewals are due at ttl/3 (sent up to ttl/12 early): freeze just before.
    tokio::time::sleep_until((t0 + Duration::from_millis(650)).into()).await;
    server.pause();
    tokio::time::sleep_until((t0 + Duration::from_millis(1050)).into()).await;
    let last = guards.last().unwrap();
    assert!(last.is_held());
    let started = Instant::now();
    let extended = last.extend(Duration::from_secs(4)).await;
    let took = started.elapsed();
    server.resume();
    println!("extend answered {extended:?} after {took:?}");
    let bound = 2 * timeout + Duration::from_millis(300);
    assert!(
        took <= bound,
        "extend on a frozen server answered after {took:?} (bound {bound:?}): {extended:?}"
    );
    assert!(panics().is_empty(), "{:#?}", panics());
}

// ---------------------------------------------------------------------------------------
// 6. A release whose reply was lost is not reported as a lost lock
// ---------------------------------------------------------------------------------------

/// FINDING (fixed): a release whose reply was lost with a killed connection was sent again,
/// and the copy that answered found the key already handed over by the first copy: it
/// answered "not held" and `release()` reported `Lost`. A release sent again that finds the
/// token gone is now unsure, and the holder decides from its lease (still held when it let
/// go: released).
///
/// Two clients pass eight keys back and forth (each side waits for the other's release, so
/// every release hands the key over at once), with 20 s leases held for a moment, while the
/// server's client connections are killed every few milliseconds: calls whose reply was lost
/// are sent again on a new connection. What must hold (`LockGuard::release`'s contract:
/// `Lost` "when the lock was already gone (expired or taken over): nothing was deleted"):
/// a release of a guard that held its key a moment before is never reported `Lost`, and
/// exclusion holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_resent_after_a_killed_connection_are_not_reported_lost() {
    watch_panics();
    let seed = seed("ATTACK8_SEED", 0xa8_0006);
    let server = Arc::new(RedisServer::start());
    let timeout = Duration::from_secs(1);
    let a = client_with_timeout(server.url(), timeout).await;
    let b = client_with_timeout(server.url(), timeout).await;
    let ledger = StormLedger::new(8);
    let stop = Arc::new(AtomicBool::new(false));
    let (releases, lost) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let faults = fault_thread(
        server.clone(),
        None,
        stop.clone(),
        seed,
        (1, 6),
        vec![(Fault::Kill, 1)],
    );
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    run_tasks(16, &stop, |task, stop| {
        let client = if task % 2 == 0 { a.clone() } else { b.clone() };
        let (ledger, releases, lost) = (ledger.clone(), releases.clone(), lost.clone());
        async move {
            let k = task / 2;
            let key = format!("pingpong:{k}");
            while !stop.load(Ordering::SeqCst) {
                let Ok(g) = client
                    .lock(key.as_str())
                    .ttl(Duration::from_secs(20))
                    .wait(Duration::from_secs(2))
                    .await
                else {
                    continue;
                };
                ledger.enter(k, &format!("task {task}"), g.fencing_token());
                tokio::task::yield_now().await;
                ledger.leave(k);
                let remaining = g.remaining();
                let fence = g.fencing_token();
                match g.release().await {
                    Err(e @ LockError::Lost { .. }) if remaining > Duration::from_secs(15) => {
                        lost.lock().unwrap().push(format!(
                            "task {task}: release of {key} (fence {fence}, {remaining:?} left) \
                             reported {e}"
                        ));
                    }
                    _ => {}
                }
                releases.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    stopper.await.unwrap();
    let kills = faults.join().unwrap();
    let lost = lost.lock().unwrap().clone();
    println!(
        "releases {}, kills {kills:?}, reported lost {}",
        releases.load(Ordering::Relaxed),
        lost.len()
    );
    let violations = ledger.violations();
    assert!(
        lost.is_empty() && violations.is_empty() && panics().is_empty(),
        "seed {seed}\n{} of {} releases reported Lost: {:#?}\nviolations: {violations:#?}\npanics: {:#?}",
        lost.len(),
        releases.load(Ordering::Relaxed),
        &lost[..lost.len().min(10)],
        panics()
    );
}
