//! Adversarial tests, round 12: Redlock's put-back of lost copies, second version (over
//! another token's tombstone, `SET … PXAT <source end>`, awaited by the renewal). Real
//! redis-server processes, public API only; each test asserts a promise of the public
//! contract.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock_tests::attack::{not_free, panics, seed, watch_panics};
use distlock_tests::fuzz::rng::Rng;
use distlock_tests::holders::{
    HolderLedger, HolderPlan, HolderTerms, holders, holders_on_their_own_runtime, holds, pttl, raw,
    redlock_client, redlock_nodes, token_of,
};
use distlock_tests::{RedisServer, TcpProxy};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// 1. extend answers Ok after the lease ran out on every node: the put-back's two extra
//    round trips (each up to the 50 ms floor) outlast a 100 ms lease
// ---------------------------------------------------------------------------------------

/// Three nodes; nodes 0 and 1 are reached through proxies adding 21 ms each way (a renewal
/// answers in ~42 ms, inside the 50 ms per-node floor); node 2 is direct and lost its copy
/// (`DEL`). `extend(100 ms)` (the least lease there is): nodes 0 and 1 renew, node 2 says
/// "not held" at once and is then frozen (SIGSTOP, 10 ms after the extend was sent, long
/// after it answered). The put-back reads the value from node 0 (~42 ms more), then waits
/// the per-node 50 ms for node 2. Only then does `extend` answer.
///
/// Found: `extend` answered Ok ~142 ms after it was sent, when no node held the token any
/// more. Now the put-back gets a tenth of the lease in all, and a grant answered after its
/// lease ran out is `Lost`, never Ok.
///
/// Property (3): an `extend` that answers Ok answers while a majority of nodes hold the
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_answers_ok_while_a_majority_holds_the_token() {
    watch_panics();
    let servers = Arc::new(redlock_nodes(3));
    let p0 = TcpProxy::start(servers[0].port());
    let p1 = TcpProxy::start(servers[1].port());
    let urls = vec![p0.url(), p1.url(), servers[2].url()];
    let q = Duration::from_secs(2);
    let a = redlock_client(urls, q, Duration::from_secs(1)).await;
    a.lock("warm").await.unwrap().release().await.unwrap();
    let mut failures = Vec::new();
    for round in 0..4 {
        let key = format!("k{round}");
        let full = format!("distlock:{key}");
        let held = a.lock(key.as_str()).ttl(q).watchdog(false).await.unwrap();
        let token = token_of(&raw(&servers[1], &full).expect("held on node 1")).to_owned();
        let _: i64 = servers[2].cmd(&["DEL", &full]);
        p0.set_latency(21 * MS);
        p1.set_latency(21 * MS);
        let freezer = {
            let servers = servers.clone();
            std::thread::spawn(move || {
                std::thread::sleep(10 * MS);
                servers[2].pause();
                std::thread::sleep(300 * MS);
                servers[2].resume();
            })
        };
        let ttl = Duration::from_millis(100);
        let sent = Instant::now();
        let extended = held.extend(ttl).await;
        let answered = sent.elapsed();
        // Nodes 0 and 1 read directly (not through the proxies), at once.
        let on: Vec<(bool, i64)> = (0..2)
            .map(|i| {
                (
                    holds(raw(&servers[i], &full).as_deref(), &token),
                    pttl(&servers[i], &full),
                )
            })
            .collect();
        let majority = on.iter().filter(|(h, _)| *h).count() >= 2;
        println!(
            "round {round}: extend({ttl:?}) -> {extended:?} after {answered:?}; nodes 0, 1 hold: {on:?}; guard is_held {}",
            held.is_held()
        );
        freezer.join().unwrap();
        p0.set_latency(Duration::ZERO);
        p1.set_latency(Duration::ZERO);
        tokio::time::sleep(100 * MS).await;
        let late = raw(&servers[2], &full);
        if extended.is_ok() && !majority {
            failures.push(format!(
                "round {round}: extend({ttl:?}) answered Ok {answered:?} after it was sent; \
                 then nodes 0 and 1 held the token: {on:?} (held, pttl); node 2 after waking: {late:?}"
            ));
        }
        if holds(late.as_deref(), &token) {
            failures.push(format!(
                "round {round}: node 2 holds a copy after the lease ran out: {late:?} pttl {}",
                pttl(&servers[2], &full)
            ));
        }
        drop(held);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 2. Randomized: five nodes, several faults at once (two nodes of five), foreign
//    tombstones with high fences, copies deleted on two nodes, freezes; holders on two
//    clients (one on a runtime of its own) with watchdogs, extends (short ones too) and
//    releases racing renewals and put-backs; a ledger of who believes it holds
// ---------------------------------------------------------------------------------------

/// How the storm's holders behave.
const TERMS: HolderTerms = HolderTerms {
    ttl: (400, 1200),
    watchdog: 85,
    extend: 20,
    extend_ttl: (100, 1200),
    cut: 25,
};

/// A tombstone of a random other token with `fence` (16 digits).
fn tombstone(rng: &mut Rng, fence: u64) -> String {
    let token: String = (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
        .collect();
    format!("T{fence:016}{token}")
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Five nodes (two behind proxies with random latency), quarantine 1.5 s; five workers (two
/// on a client on a runtime of its own) over three keys, ~14 s. Faults hit two nodes at a
/// time (a minority of five), spaced by more than any lease: DEL, foreign tombstones (with
/// a fence of now, so the copy's is raised above it), FLUSHALL, a freeze, a short freeze,
/// a delete then freeze (the put-back's write queued on a frozen node), latency spikes.
///
/// Property: no two guards believe they hold a key at once; fences increase per key; no
/// acquire, extend or release outlives its bound; no panic; every key free at the end.
#[test]
fn five_nodes_put_back_storm_keeps_holders_apart() {
    watch_panics();
    let seed = seed("ATTACK12_SEED", 12_001);
    let run = Duration::from_secs(14);
    let keys: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    let servers: Vec<Arc<RedisServer>> = redlock_nodes(5).into_iter().map(Arc::new).collect();
    let proxies: Vec<TcpProxy> = (0..2).map(|i| TcpProxy::start(servers[i].port())).collect();
    let mut urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    urls.extend(servers[2..].iter().map(|s| s.url()));
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
        let mut rng = Rng::derive(seed, &[99]);
        tokio::time::sleep(Duration::from_millis(700)).await;
        while t0.elapsed() + Duration::from_secs(3) < run {
            let first = rng.below(5);
            let second = (first + 1 + rng.below(4)) % 5;
            let key = format!("distlock:{}", keys[rng.below(keys.len())]);
            let mut frozen = Vec::new();
            for n in [first, second] {
                let what = rng.below(7);
                println!("{:?}: fault {what} on node {n} ({key})", t0.elapsed());
                match what {
                    0 => {
                        let _: i64 = servers[n].cmd(&["DEL", &key]);
                    }
                    1 => {
                        let t = tombstone(&mut rng, now_micros());
                        let _: Option<String> = servers[n].cmd(&["SET", &key, &t, "PX", "3000"]);
                    }
                    2 => servers[n].cmd::<()>(&["FLUSHALL"]),
                    3 => {
                        servers[n].pause();
                        frozen.push(n);
                    }
                    4 => {
                        // A short freeze (the node's renewal answers time out, no loss).
                        servers[n].pause();
                        tokio::time::sleep(rng.millis(30, 150)).await;
                        servers[n].resume();
                    }
                    5 => {
                        let _: i64 = servers[n].cmd(&["DEL", &key]);
                        tokio::time::sleep(rng.millis(0, 40)).await;
                        servers[n].pause();
                        frozen.push(n);
                    }
                    _ => {
                        if n < 2 {
                            proxies[n].set_latency(rng.millis(5, 30));
                        }
                    }
                }
            }
            tokio::time::sleep(rng.millis(200, 1200)).await;
            for n in frozen {
                servers[n].resume();
            }
            for p in &proxies {
                p.set_latency(Duration::ZERO);
            }
            tokio::time::sleep(rng.millis(1300, 1800)).await;
        }
        let mut problems = workers.await.unwrap();
        problems.extend(other.join().unwrap());
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let leftover = not_free(&c, &keys, Duration::from_secs(2)).await;
        (problems, leftover)
    });
    let l = ledger.lock().unwrap();
    assert!(
        l.violations().is_empty(),
        "seed {seed}: {:#?}",
        l.violations()
    );
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    assert!(leftover.is_empty(), "seed {seed}: {leftover:#?}");
    assert!(panics().is_empty(), "{:?}", panics());
}

// ---------------------------------------------------------------------------------------
// 3. A copy put back over a contender's tombstone carries a raised fence (per-node fences
//    now differ): inspect, force_release by the guard's own fence, the next holder's fence
// ---------------------------------------------------------------------------------------

/// Three nodes; the holder's watchdog renews a 900 ms lease. Node 2 loses its copy; a
/// contender's failed attempt leaves its tombstone there (fence above the holder's); the
/// next renewal copies the lease over it with a raised fence. An operator force-releases
/// the lock by the fence `inspect` reports.
///
/// Found: `force_release` with the guard's own fence released nothing once the node that
/// gave that fence had lost its copy (older than the put-back: a bare `DEL` does it too).
/// Redlock's fences are per node, so `force_release` documents that the fence to pass is the
/// one `inspect` reports.
///
/// Property: the copy is back on node 2; `force_release` with inspect's fence releases it
/// (everywhere, so one more node fault cannot keep the key); the holder learns it; the next
/// holder's fence is above every fence the key had (the raised copy's included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_with_a_raised_fence_is_force_released_by_the_fence_inspect_reports() {
    watch_panics();
    let mut servers = redlock_nodes(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let q = Duration::from_millis(900);
    let a = redlock_client(urls.clone(), q, Duration::from_millis(400)).await;
    let b = redlock_client(urls, q, Duration::from_millis(400)).await;
    b.lock("warm").await.unwrap().release().await.unwrap();
    let held = a.lock("k").await.unwrap();
    tokio::time::sleep(20 * MS).await;
    let values: Vec<String> = servers
        .iter()
        .map(|s| raw(s, "distlock:k").unwrap())
        .collect();
    let token = token_of(&values[0]).to_owned();
    // The node whose fence the guard reports loses its copy.
    let n = values
        .iter()
        .position(|v| v[33..49].parse::<u64>().unwrap() == held.fencing_token())
        .expect("a node stores the guard's fence");
    let _: i64 = servers[n].cmd(&["DEL", "distlock:k"]);
    assert!(b.lock("k").wait(Duration::ZERO).await.is_err());
    let tomb = raw(&servers[n], "distlock:k").expect("the contender's tombstone");
    let tomb_fence: u64 = tomb[1..17].parse().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let copy = raw(&servers[n], "distlock:k").expect("a copy put back");
    assert!(holds(Some(&copy), &token), "node {n}: {copy:?}");
    let copy_fence: u64 = copy[33..49].parse().unwrap();
    assert!(
        copy_fence > tomb_fence && tomb_fence > held.fencing_token(),
        "{copy} over {tomb}"
    );
    let info = b.inspect("k").await.unwrap().expect("held");
    println!(
        "node {n}; guard fence {}, inspect {}, copy {copy_fence}; values at acquire {values:#?}",
        held.fencing_token(),
        info.fencing_token
    );
    let forced = b.force_release("k", info.fencing_token).await;
    let left: Vec<_> = servers.iter().map(|s| raw(s, "distlock:k")).collect();
    assert!(
        matches!(forced, Ok(true)) && left.iter().all(|v| !holds(v.as_deref(), &token)),
        "force_release(\"k\", {}) (inspect's fence, held on a majority) -> {forced:?}; nodes now {left:#?}",
        info.fencing_token
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!held.is_held(), "the forced-out holder still believes");
    servers[(n + 1) % 3].kill();
    let next = b
        .lock("k")
        .wait(Duration::from_secs(2))
        .await
        .expect("free on two nodes");
    assert!(
        next.fencing_token() > copy_fence.max(info.fencing_token),
        "next fence {} not above {copy_fence}",
        next.fencing_token()
    );
    next.release().await.unwrap();
    assert!(panics().is_empty(), "{:?}", panics());
}
