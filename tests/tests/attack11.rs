//! Adversarial tests, round 11: Redlock's renewal that puts a lost copy back (`put_back`).
//! Real redis-server processes, public API only; each test asserts a promise of the public
//! contract.
//!
//! Found in the first version (a background `GET` then `SET NX PX <lease>`), both fixed:
//! - A. `SET NX` never landed over a contender's give-back tombstone (10 s, `release.lua`):
//!   one failed attempt by anyone on the node that lost its copy kept the put-back off it,
//!   so the lock lived on a bare majority; a second single-node loss then let the
//!   contender in while the holder still held (two holders), or a second minority fault
//!   took the lock (`two_single_key_losses_with_a_contender_in_between_do_not_make_two_holders`,
//!   `a_contenders_give_back_does_not_keep_the_lost_copy_from_being_put_back`,
//!   `five_nodes_faults_one_after_another_with_put_backs`). Now `put_back.lua` writes over
//!   another token's tombstone (with a fence above it).
//! - B. The copy got a whole fresh lease from when it landed, and it could land after the
//!   release (on a node where the release found nothing), after a later shortening extend,
//!   or seconds later on a node that was frozen with the `SET` queued: a released (or
//!   run-out) lock stayed on one node past the lease the holder had, and with one other node
//!   down the key was busy that long
//!   (`a_put_back_queued_on_a_frozen_node_does_not_resurrect_a_released_lock`,
//!   `a_released_key_is_free_with_one_node_down_even_when_a_put_back_raced_the_release`,
//!   `a_shortened_lease_is_not_lengthened_by_an_earlier_put_back`). Now the copy runs out
//!   when the copied one does (`PEXPIRETIME`, `SET … PXAT`), and the renewal awaits it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockGuard};
use distlock_tests::attack::{panics, seed, watch_panics};
use distlock_tests::fuzz::rng::Rng;
use distlock_tests::holders::{
    HolderLedger, HolderPlan, HolderTerms, holders, holders_on_their_own_runtime, pttl, raw,
    redlock_client, redlock_nodes, token_of,
};
use distlock_tests::{RedisServer, TcpProxy};

const MS: Duration = Duration::from_millis(1);

/// Three nodes, node 0 behind a proxy adding `latency` each way; client A holds `k` (a
/// lease of `q` = 3 s, no watchdog) and node 2 has lost its copy (`DEL`); client B is
/// another process.
struct LostCopy {
    servers: Vec<RedisServer>,
    _proxy: TcpProxy,
    b: LockClient,
    held: LockGuard,
    q: Duration,
}

impl LostCopy {
    async fn start(latency: Duration) -> Self {
        let servers = redlock_nodes(3);
        let proxy = TcpProxy::start(servers[0].port());
        let urls = vec![proxy.url(), servers[1].url(), servers[2].url()];
        let q = Duration::from_secs(3);
        let a = redlock_client(urls.clone(), q, Duration::from_secs(1)).await;
        let b = redlock_client(urls, q, Duration::from_secs(1)).await;
        a.lock("warm").await.unwrap().release().await.unwrap();
        proxy.set_latency(latency);
        let held = a.lock("k").ttl(q).watchdog(false).await.unwrap();
        let _: i64 = servers[2].cmd(&["DEL", "distlock:k"]);
        Self {
            servers,
            _proxy: proxy,
            b,
            held,
            q,
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. A put-back that lands after the release, on a node frozen in between: the released
//    lock comes back on that node, for a whole lease from when the node wakes up
// ---------------------------------------------------------------------------------------

/// Three nodes; node 0 (the first to renew, so the put-back's source) is reached through a
/// proxy adding 60 ms each way (well inside the per-node answer time of a 3 s lease). Node 2
/// lost its copy (`DEL`). `extend` is granted by nodes 0 and 1 and spawns the put-back: its
/// `GET` on node 0 answers 120 ms later. The holder releases at once: node 2 answers "not
/// held" at once, nodes 0 and 1 release (node 0 after the `GET`). Node 2 is then frozen
/// (SIGSTOP) before the put-back's `SET NX` reaches it, and stays frozen for 4 s — longer
/// than the whole lease. When it wakes, the queued `SET NX PX 3000` lands on an empty key.
///
/// Property: a released lock leaves no copy that outlives the lease it had when released
/// (plus a margin); with one node down after that, the key is free to another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_back_queued_on_a_frozen_node_does_not_resurrect_a_released_lock() {
    watch_panics();
    let LostCopy {
        mut servers,
        _proxy,
        b,
        held,
        q,
    } = LostCopy::start(40 * MS).await;
    let value = raw(&servers[1], "distlock:k").expect("held on node 1");
    let token = token_of(&value).to_owned();

    let extended_at = Instant::now();
    held.extend(q).await.expect("renewed by nodes 0 and 1");
    // The put-back's GET is on its way to node 0 (60 ms each way). Release now: node 2 says
    // "not held" at once.
    let release = tokio::spawn(async move { held.release().await });
    tokio::time::sleep(25 * MS).await;
    servers[2].pause();
    release.await.unwrap().expect("released by nodes 0 and 1");
    let released_at = Instant::now();
    // Frozen for longer than the lease the lock had.
    tokio::time::sleep(Duration::from_secs(4)).await;
    servers[2].resume();
    tokio::time::sleep(200 * MS).await;
    let after = raw(&servers[2], "distlock:k");
    let ttl = pttl(&servers[2], "distlock:k");
    let lease_end = extended_at + q;
    println!(
        "node 2 after waking ({:?} after the release, {:?} after the lease ended): {after:?}, pttl {ttl} ms",
        released_at.elapsed(),
        Instant::now().saturating_duration_since(lease_end)
    );
    let stale = after
        .as_deref()
        .is_some_and(|v| v.len() > 33 && token_of(v) == token);
    // The effect: node 1 goes down (a minority fault); nodes 0 and 2 are up, and the key
    // was released seconds ago, its lease over.
    servers[1].kill();
    let taken = b.lock("k").wait(Duration::ZERO).await;
    assert!(
        !stale,
        "the released lock is back on node 2 {:?} after its lease ended, for {ttl} ms more; \
         with node 1 down another client gets {:?}",
        Instant::now().saturating_duration_since(lease_end),
        taken.as_ref().map(|g| g.fencing_token())
    );
    assert!(taken.is_ok(), "key unavailable: {:?}", taken.err());
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 2. A put-back racing an immediate release (no freeze): what is left on the node
// ---------------------------------------------------------------------------------------

/// As above without the freeze: `extend` (node 2 lost its copy), then `release` at once.
/// The release reaches node 2 before the put-back's `SET NX` (which waits for its `GET` on
/// node 0 through the 60 ms proxy), so node 2 gets a copy of the released lock with a whole
/// fresh lease. Then node 1 dies.
///
/// Property: once released, the key is free to another client as long as a majority of
/// nodes is up (the lock was released, so nothing should make a majority refuse it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_key_is_free_with_one_node_down_even_when_a_put_back_raced_the_release() {
    watch_panics();
    let LostCopy {
        mut servers,
        _proxy,
        b,
        held,
        q,
    } = LostCopy::start(30 * MS).await;
    held.extend(q).await.expect("renewed by nodes 0 and 1");
    held.release().await.expect("released");
    let released_at = Instant::now();
    tokio::time::sleep(150 * MS).await;
    let left = raw(&servers[2], "distlock:k");
    let ttl = pttl(&servers[2], "distlock:k");
    println!("node 2 after the release: {left:?} pttl {ttl} ms");
    servers[1].kill();
    let taken = b.lock("k").wait(Duration::from_millis(500)).await;
    assert!(
        taken.is_ok(),
        "released {:?} ago, nodes 0 and 2 up, yet: {:?}; node 2 holds {left:?} (pttl {ttl} ms)",
        released_at.elapsed(),
        taken.err()
    );
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 3. extend: shorter then longer, with a lost copy; a put-back never outlives a shortening
//    the guard saw when the guard then lets go by running out (not released)
// ---------------------------------------------------------------------------------------

/// Node 2 lost its copy. `extend(3 s)` (put-back on its way, GET delayed 30 ms by the
/// proxy) then at once `extend(1 s)`: the guard now believes 300 ms. It is then forgotten
/// (`mem::forget`: no release, as a crashed holder). The old put-back lands after the short
/// renewal, on node 2, with 3 s.
///
/// Property: the key is free to another client once the guard's (short) lease is over, even
/// with one node down — measured against the *last* lease the holder set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_lease_is_not_lengthened_by_an_earlier_put_back() {
    watch_panics();
    let LostCopy {
        mut servers,
        _proxy,
        b,
        held,
        q,
    } = LostCopy::start(15 * MS).await;
    held.extend(q).await.expect("renewed by nodes 0 and 1");
    let short = Duration::from_millis(1000);
    let shortened_at = Instant::now();
    held.extend(short).await.expect("shortened");
    std::mem::forget(held);
    tokio::time::sleep(short + 300 * MS).await;
    let left = raw(&servers[2], "distlock:k");
    let ttl = pttl(&servers[2], "distlock:k");
    servers[1].kill();
    let taken = b.lock("k").wait(Duration::from_millis(300)).await;
    println!("node 2: {left:?} pttl {ttl}");
    assert!(
        taken.is_ok(),
        "{:?} after a lease shortened to {short:?}, with node 1 down: {:?}; node 2 holds {left:?} for {ttl} ms",
        shortened_at.elapsed(),
        taken.err()
    );
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 4. Randomized: holders on two clients (one on a runtime of its own), watchdogs and
//    extends, one fault at a time (DEL, FLUSHALL, foreign value, tombstone, freeze, restart
//    empty), releases racing renewals; a ledger of who believes it holds
// ---------------------------------------------------------------------------------------

/// How the storm's holders behave.
const TERMS: HolderTerms = HolderTerms {
    ttl: (300, 1200),
    watchdog: 80,
    extend: 15,
    extend_ttl: (150, 1200),
    cut: 30,
};

/// Three nodes, quarantine 1.5 s; five workers (two on a client on a runtime of its own)
/// over four keys, 12 s. One fault at a time, spaced by more than any lease so a renewal
/// runs in between (the row's promise: "survives one minority fault after another as long
/// as a renewal ran in between"): DEL of a key on one node, FLUSHALL, a foreign value, a
/// tombstone, a freeze of 0.3–1.5 s, a restart (empty, quarantined).
///
/// Property: no two guards believe they hold a key at once; fences increase per key; no
/// acquire, extend or release outlives its bound; no panic; every key free at the end.
#[test]
fn redlock_put_back_storm_keeps_holders_apart() {
    watch_panics();
    let seed = seed("ATTACK11_SEED", 11_004);
    let run = Duration::from_secs(12);
    let keys: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    let mut servers = redlock_nodes(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let q = Duration::from_millis(1500);
    let ledger = Arc::new(Mutex::new(HolderLedger::default()));
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = Instant::now();
    let plan = HolderPlan {
        seed,
        t0,
        run,
        terms: TERMS,
    };
    // A second client on a runtime of its own.
    let other =
        holders_on_their_own_runtime(3..5, urls.clone(), q, keys.clone(), ledger.clone(), plan);
    let (problems, leftover) = main_rt.block_on(async {
        let c = Arc::new(redlock_client(urls.clone(), q, Duration::from_millis(400)).await);
        let workers = tokio::spawn(holders(0..3, c.clone(), keys.clone(), ledger.clone(), plan));
        // Faults, one at a time.
        let mut rng = Rng::derive(seed, &[99]);
        tokio::time::sleep(Duration::from_millis(800)).await;
        while t0.elapsed() + Duration::from_secs(3) < run {
            let n = rng.below(3);
            let key = format!("distlock:{}", keys[rng.below(keys.len())]);
            let what = rng.below(6);
            println!("{:?}: fault {what} on node {n} ({key})", t0.elapsed());
            match what {
                0 => {
                    let _: i64 = servers[n].cmd(&["DEL", &key]);
                }
                1 => servers[n].cmd::<()>(&["FLUSHALL"]),
                2 => {
                    // A tombstone (a released lock's remains) with an old fence.
                    let _: Option<String> = servers[n].cmd(&[
                        "SET",
                        &key,
                        "T00000000000000010123456789abcdef0123456789abcdef",
                        "PX",
                        "500",
                    ]);
                }
                3 => {
                    let ms = rng.range(300, 1500);
                    servers[n].pause();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    servers[n].resume();
                }
                4 => servers[n].restart(),
                _ => {
                    let _: i64 = servers[n].cmd(&["DEL", &key]);
                    tokio::time::sleep(rng.millis(0, 40)).await;
                    servers[n].pause();
                    tokio::time::sleep(rng.millis(100, 600)).await;
                    servers[n].resume();
                }
            }
            // Longer than any lease (1.2 s) plus a renewal: copies are back everywhere.
            tokio::time::sleep(rng.millis(1600, 2200)).await;
        }
        let mut problems = workers.await.unwrap();
        problems.extend(other.join().unwrap());
        // Every key free at the end (after the longest lease and the quarantine).
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let leftover = distlock_tests::attack::not_free(&c, &keys, Duration::from_secs(2)).await;
        (problems, leftover)
    });
    let violations = ledger.lock().unwrap().violations().to_vec();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    assert!(leftover.is_empty(), "seed {seed}: {leftover:#?}");
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 5. force_release while a put-back is in flight: the holder is told, the next holder's
//    fence is larger, and nothing keeps the key busy
// ---------------------------------------------------------------------------------------

/// Node 2 lost its copy; `extend` spawns a put-back (GET delayed by the proxy on node 0);
/// an operator force-releases the lock at once (nodes 0 and 1). The put-back lands on
/// node 2 after the force release.
///
/// Property: the forced-out holder's next extend fails (Lost) and its guard stops holding;
/// another client then takes the key with a larger fence, and while it holds it the old
/// holder never believes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_racing_a_put_back() {
    watch_panics();
    let servers = redlock_nodes(3);
    let proxy = TcpProxy::start(servers[0].port());
    let urls = vec![proxy.url(), servers[1].url(), servers[2].url()];
    let q = Duration::from_secs(3);
    let a = redlock_client(urls.clone(), q, Duration::from_secs(1)).await;
    let b = redlock_client(urls, q, Duration::from_secs(1)).await;
    a.lock("warm").await.unwrap().release().await.unwrap();
    proxy.set_latency(30 * MS);
    let held = a.lock("k").ttl(q).await.unwrap();
    let old_fence = held.fencing_token();
    let _: i64 = servers[2].cmd(&["DEL", "distlock:k"]);
    held.extend(q).await.expect("renewed by nodes 0 and 1");
    let info = b.inspect("k").await.unwrap().expect("held by a majority");
    assert!(b.force_release("k", info.fencing_token).await.unwrap());
    tokio::time::sleep(200 * MS).await;
    let err = held.extend(q).await;
    assert!(err.is_err(), "extend after a force release: {err:?}");
    assert!(!held.is_held());
    let next = b
        .lock("k")
        .wait(Duration::from_secs(4))
        .await
        .expect("free");
    assert!(next.fencing_token() > old_fence);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        assert!(!held.is_held() || !next.is_held(), "both hold");
        tokio::time::sleep(50 * MS).await;
    }
    assert!(next.is_held());
    next.release().await.unwrap();
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 6. Five nodes, two of them lose their copies one after the other (a renewal in between),
//    then a third fault: the holder keeps its lock and nobody else gets it
// ---------------------------------------------------------------------------------------

/// Five nodes; the holder's watchdog renews a 900 ms lease. Node 3 restarts empty, then
/// (after a renewal) node 4 is flushed, then node 0 is frozen for 1.2 s. A second client
/// keeps trying all along.
///
/// Property: the second client never gets the key while the holder believes it holds it;
/// the holder keeps it throughout (one minority fault after another, renewals between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_faults_one_after_another_with_put_backs() {
    watch_panics();
    let mut servers = redlock_nodes(5);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let q = Duration::from_millis(900);
    let a = Arc::new(redlock_client(urls.clone(), q, Duration::from_millis(400)).await);
    let b = Arc::new(redlock_client(urls, q, Duration::from_millis(400)).await);
    let held = Arc::new(a.lock("k").ttl(q).await.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let contender = {
        let (b, held, stop) = (b.clone(), held.clone(), stop.clone());
        tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(g) = b.lock("k").wait(Duration::ZERO).await {
                    if held.is_held() {
                        bad.push(format!(
                            "granted fence {} while the holder holds",
                            g.fencing_token()
                        ));
                    }
                    let _ = g.release().await;
                }
                tokio::time::sleep(20 * MS).await;
            }
            bad
        })
    };
    let t0 = Instant::now();
    let watch = {
        let held = held.clone();
        tokio::spawn(async move {
            held.lost().await;
            t0.elapsed()
        })
    };
    servers[3].restart();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    println!("{:?}: held {}", t0.elapsed(), held.is_held());
    servers[4].cmd::<()>(&["FLUSHALL"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    println!("{:?}: held {}", t0.elapsed(), held.is_held());
    for (i, s) in servers.iter().enumerate() {
        println!(
            "node {i}: {:?}",
            raw(s, "distlock:k").map(|v| v[..33].to_owned())
        );
    }
    servers[0].pause();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    servers[0].resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    if watch.is_finished() {
        println!("lost at {:?}", watch.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let bad = contender.await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        held.is_held(),
        "the holder lost its lock to one minority fault after another"
    );
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 7. A contender's single failed attempt on the node that lost its copy leaves a tombstone
//    there (10 s), and the put-back never lands over it
// ---------------------------------------------------------------------------------------

/// Three nodes; the holder's watchdog renews a 900 ms lease. Node 2 loses its copy (`DEL`,
/// as after a freeze past the lease). Another client tries the key once: node 2 grants it,
/// nodes 0 and 1 refuse, the attempt is given back — which on node 2 leaves a tombstone of
/// the contender's token for 10 s. The holder's renewals then run for 1.5 s (five of them,
/// each granted by nodes 0 and 1 and answered "not held" by node 2). Then node 1 dies.
///
/// Property (the Redlock row of `guarantees.rs`: "a held lock survives one minority fault
/// after another as long as a renewal ran in between"): the holder keeps its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contenders_give_back_does_not_keep_the_lost_copy_from_being_put_back() {
    watch_panics();
    let mut servers = redlock_nodes(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let q = Duration::from_millis(900);
    let a = redlock_client(urls.clone(), q, Duration::from_millis(400)).await;
    let b = redlock_client(urls, q, Duration::from_millis(400)).await;
    let held = a.lock("k").await.unwrap();
    let _: i64 = servers[2].cmd(&["DEL", "distlock:k"]);
    let err = b
        .lock("k")
        .wait(Duration::ZERO)
        .await
        .map(|g| g.fencing_token());
    assert!(err.is_err(), "the contender got a held key: {err:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_2 = raw(&servers[2], "distlock:k");
    println!("node 2 after 1.5 s of renewals: {on_2:?}");
    assert!(held.is_held());
    servers[1].kill();
    let t = Instant::now();
    let lost = distlock_tests::attack::lost_before(&held, t, Duration::from_secs(2)).await;
    assert!(
        lost.is_none(),
        "the holder lost its lock {lost:?} after node 1 died, though five renewals ran after \
         node 2 lost its copy; node 2 held {on_2:?} (the contender's tombstone) all along"
    );
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 8. The runtime that called extend (and so spawned the put-back) shuts down at once
// ---------------------------------------------------------------------------------------

/// A guard is extended from a short-lived current-thread runtime while node 2 lost its
/// copy (so the renewal spawns a put-back on that runtime, its `GET` delayed by a proxy),
/// and that runtime is dropped right after `extend` returns. The holder then releases from
/// the test's runtime.
///
/// Property: no panic anywhere (the library's background thread included); the release
/// answers and another client takes the key.
#[test]
fn a_put_back_spawned_on_a_runtime_that_shuts_down() {
    watch_panics();
    let servers = redlock_nodes(3);
    let proxy = TcpProxy::start(servers[0].port());
    let urls = vec![proxy.url(), servers[1].url(), servers[2].url()];
    let q = Duration::from_secs(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(async {
        let a = redlock_client(urls.clone(), q, Duration::from_millis(500)).await;
        let b = redlock_client(urls, q, Duration::from_millis(500)).await;
        a.lock("warm").await.unwrap().release().await.unwrap();
        (a, b)
    });
    proxy.set_latency(20 * MS);
    for round in 0..5 {
        let held = rt.block_on(async { a.lock("k").ttl(q).await }).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // held on all three nodes
        let _: i64 = servers[2].cmd(&["DEL", "distlock:k"]);
        let short = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let extended = short.block_on(held.extend(q));
        drop(short);
        assert!(extended.is_ok(), "round {round}: {extended:?}");
        let before: Vec<_> = servers.iter().map(|s| raw(s, "distlock:k")).collect();
        let released = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(3), held.release()).await });
        let after: Vec<_> = servers.iter().map(|s| raw(s, "distlock:k")).collect();
        assert!(
            matches!(released, Ok(Ok(()))),
            "round {round}: {released:?}; before the release {before:#?}, after {after:#?}"
        );
        let next = rt.block_on(async { b.lock("k").wait(Duration::from_secs(3)).await });
        assert!(next.is_ok(), "round {round}: {:?}", next.err());
        rt.block_on(next.unwrap().release()).unwrap();
        // Let the slow node's release land before the next round's acquire.
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(panics().is_empty(), "{:#?}", panics());
}

// ---------------------------------------------------------------------------------------
// 9. The same tombstone, escalated: two single-key losses on different nodes, renewals in
//    between, and a contender holds the key while the holder still believes it does
// ---------------------------------------------------------------------------------------

/// Three nodes; the holder's watchdog renews a 3 s lease every second. Node 2 loses the
/// key (`DEL`, as an eviction or an operator would; its boot marker stays, so it votes).
/// When `contend_first`, a contender tries the key once then (refused by nodes 0 and 1; its
/// grant on node 2 is given back, leaving its tombstone there). 2.5 s of renewals later
/// (two or three renewals a majority granted, each of which should put the copy back on
/// node 2), node 1 loses the key too. The contender tries again.
///
/// Property (the Redlock row: a renewal puts the lease back on the nodes that lost their
/// copy, "so a held lock survives one minority fault after another as long as a renewal ran
/// in between"): the contender is refused while the holder believes it holds the key.
async fn two_single_key_losses_with_renewals_between(contend_first: bool) {
    watch_panics();
    let servers = redlock_nodes(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let q = Duration::from_secs(3);
    let a = redlock_client(urls.clone(), q, Duration::from_millis(500)).await;
    let b = redlock_client(urls, q, Duration::from_millis(500)).await;
    b.lock("warm").await.unwrap().release().await.unwrap();
    let held = a.lock("k").ttl(q).await.unwrap();
    let _: i64 = servers[2].cmd(&["DEL", "distlock:k"]);
    if contend_first {
        let first = b
            .lock("k")
            .wait(Duration::ZERO)
            .await
            .map(|g| g.fencing_token());
        assert!(
            first.is_err(),
            "the contender got a held key at once: {first:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let on_2 = raw(&servers[2], "distlock:k");
    assert!(held.is_held(), "lost before the second fault");
    let _: i64 = servers[1].cmd(&["DEL", "distlock:k"]);
    let second = b.lock("k").wait(Duration::ZERO).await;
    let both = second.is_ok() && held.is_held();
    assert!(
        !both,
        "two holders: the contender took the key (fence {:?}) while the holder's guard (fence {}) \
         still says it holds it; node 2 held {on_2:?} before the second fault",
        second.as_ref().map(|g| g.fencing_token()).ok(),
        held.fencing_token()
    );
    assert!(panics().is_empty(), "{:?}", panics());
}

/// Control: without the contender's first attempt the put-back restores node 2's copy and
/// the second loss is survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_single_key_losses_with_renewals_between_are_survived() {
    two_single_key_losses_with_renewals_between(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_single_key_losses_with_a_contender_in_between_do_not_make_two_holders() {
    two_single_key_losses_with_renewals_between(true).await;
}
