//! Adversarial tests: each asserts a safety or liveness property of the public contract
//! against real redis-server processes, under faults meant to break it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, LockGuard};
use distlock_tests::{RedisServer, TcpProxy};

const MS: Duration = Duration::from_millis(1);

use distlock_tests::client_with_timeout as client;

/// Cheap deterministic pseudo-random numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Acquires `key` on `b` (polling with short waits) and, the moment it is granted, asserts
/// that `a` no longer believes it holds. Returns B's guard.
async fn take_over_checking(
    a: &LockGuard,
    b: &LockClient,
    key: &str,
    within: Duration,
) -> LockGuard {
    let started = Instant::now();
    loop {
        match b.lock(key).ttl(Duration::from_secs(5)).await {
            Ok(g) => {
                assert!(
                    !a.is_held(),
                    "two holders: B acquired `{key}` {:?} in while A still reports is_held()",
                    started.elapsed()
                );
                return g;
            }
            Err(e) => assert!(e.is_busy() || e.is_backend(), "{e}"),
        }
        assert!(started.elapsed() < within, "B never acquired `{key}`");
        tokio::time::sleep(2 * MS).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Two holders / fences
// ---------------------------------------------------------------------------------------

/// An extend(short) whose future is dropped after the command reached the server but before
/// the answer came back must leave the guard trusting the short lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_short_extend_never_overstates_the_lease() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a_client = client(proxy.url(), Duration::from_secs(3)).await;
    let b_client = client(server.url(), Duration::from_secs(1)).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..6 {
        proxy.set_latency(Duration::ZERO);
        let key = format!("dse{round}");
        let a = a_client
            .lock(key.as_str())
            .ttl(Duration::from_secs(4))
            .watchdog(round % 2 == 0)
            .await
            .unwrap();
        proxy.set_latency(Duration::from_millis(80));
        let cutoff = Duration::from_millis(60 + rng.next(120));
        let _ = tokio::time::timeout(cutoff, a.extend(Duration::from_millis(300))).await;
        let b = take_over_checking(&a, &b_client, &key, Duration::from_secs(8)).await;
        drop(b);
        drop(a);
    }
}

/// Alternating shorter and longer extends while the watchdog renews a 300 ms lease across a
/// slow link; a second client keeps trying to take the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_storm_under_latency_never_overlaps() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a_client = client(proxy.url(), Duration::from_millis(500)).await;
    let b_client = client(server.url(), Duration::from_secs(1)).await;
    proxy.set_latency(Duration::from_millis(15));
    let a = Arc::new(
        a_client
            .lock("storm")
            .ttl(Duration::from_millis(300))
            .await
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let extender = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng(77);
            while !stop.load(Ordering::Relaxed) {
                let ttl = Duration::from_millis(if rng.next(2) == 0 { 100 } else { 400 });
                let cut = Duration::from_millis(5 + rng.next(60));
                let _ = tokio::time::timeout(cut, a.extend(ttl)).await;
                if !a.is_held() {
                    break;
                }
            }
        })
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        if let Ok(g) = b_client.lock("storm").ttl(Duration::from_secs(5)).await {
            assert!(!a.is_held(), "B acquired while A reports is_held()");
            drop(g);
            break;
        }
        tokio::time::sleep(MS).await;
    }
    stop.store(true, Ordering::Relaxed);
    extender.await.unwrap();
}

/// 100 ms leases renewed by the watchdog over a link with 30 ms each way: either renewals
/// keep the lock or the holder reports lost before anybody else gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_ttl_with_watchdog_over_a_slow_link() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a_client = client(proxy.url(), Duration::from_millis(400)).await;
    let b_client = client(server.url(), Duration::from_secs(1)).await;
    for (i, latency) in [10u64, 30, 45, 60].into_iter().enumerate() {
        proxy.set_latency(Duration::ZERO);
        let key = format!("tiny{i}");
        let a = match a_client
            .lock(key.as_str())
            .ttl(Duration::from_millis(100))
            .await
        {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        proxy.set_latency(Duration::from_millis(latency));
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            if let Ok(g) = b_client
                .lock(key.as_str())
                .ttl(Duration::from_secs(5))
                .await
            {
                assert!(
                    !a.is_held(),
                    "latency {latency}ms: B acquired while A reports is_held()"
                );
                drop(g);
                break;
            }
            tokio::time::sleep(MS).await;
        }
        drop(a);
    }
}

/// DEBUG SLEEP freezes the server past a 300 ms lease; whoever acquires next must not find
/// the old holder still believing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_past_the_lease() {
    let server = RedisServer::start();
    let a_client = client(server.url(), Duration::from_millis(300)).await;
    let b_client = client(server.url(), Duration::from_secs(2)).await;
    let a = a_client
        .lock("sleepy")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    let url = server.url();
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("0.8").query(&mut c);
    });
    tokio::time::sleep(50 * MS).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if let Ok(g) = b_client.lock("sleepy").ttl(Duration::from_secs(5)).await {
            assert!(!a.is_held(), "B acquired while A reports is_held()");
            drop(g);
            return;
        }
        tokio::time::sleep(2 * MS).await;
    }
    // Nobody took it over: A must then still truly hold it.
    let info = b_client.inspect("sleepy").await.unwrap();
    eprintln!("A is_held={} info={info:?}", a.is_held());
    assert!(
        a.is_held() && info.is_some(),
        "the key is held by nobody's live guard? is_held={} info={info:?}",
        a.is_held()
    );
}

/// Fences for one key strictly increase through release, expiry, FLUSHALL, SCRIPT FLUSH,
/// CLIENT KILL and a restart with data loss, across two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_strictly_increase_through_everything() {
    let mut server = RedisServer::start();
    let c1 = client(server.url(), Duration::from_millis(500)).await;
    let c2 = client(server.url(), Duration::from_millis(500)).await;
    let mut fences = Vec::new();
    let take = |f: u64, what: &str, fences: &mut Vec<u64>| {
        if let Some(&last) = fences.last() {
            assert!(
                f > last,
                "fence {f} after {what} is not above {last}: {fences:?}"
            );
        }
        fences.push(f);
    };
    for round in 0..40 {
        let c = if round % 2 == 0 { &c1 } else { &c2 };
        let g = loop {
            match c
                .lock("fence")
                .ttl(Duration::from_millis(150))
                .watchdog(false)
                .wait(Duration::from_secs(2))
                .await
            {
                Ok(g) => break g,
                Err(e) => {
                    assert!(e.is_backend() || e.is_busy(), "{e}");
                    tokio::time::sleep(20 * MS).await;
                }
            }
        };
        let f = g.fencing_token();
        take(f, &format!("round {round}"), &mut fences);
        match round % 8 {
            0 => drop(g),
            1 => {
                let _ = g.release().await;
            }
            2 => {
                g.lost().await; // expiry
            }
            3 => {
                server.cmd::<()>(&["FLUSHALL"]);
                drop(g);
            }
            4 => {
                server.cmd::<()>(&["SCRIPT", "FLUSH"]);
                let _ = g.release().await;
            }
            5 => {
                let _: redis::Value = server.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
                drop(g);
            }
            6 => {
                server.restart();
                drop(g);
            }
            _ => {
                let _ = g.extend(Duration::from_millis(100)).await;
                drop(g);
            }
        }
    }
}

/// Redlock with a lease longer than the quarantine (the default quarantine is the default
/// TTL, a request may ask for more): two nodes restart empty and, once the quarantine has
/// passed, a second client is granted the key while the first still believes it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_lease_longer_than_the_quarantine() {
    let mut nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for server in &nodes {
        server.kept_data_for_an_hour();
    }
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let mk = || {
        LockClient::builder()
            .redlock(urls.clone())
            .default_ttl(Duration::from_secs(1)) // quarantine defaults to this
            .command_timeout(Duration::from_millis(300))
            .build()
    };
    let x = mk().await.unwrap();
    let y = mk().await.unwrap();
    // A lease of 12 s although the quarantine is 1 s: accepted without complaint?
    let held = match x.lock("rq").ttl(Duration::from_secs(12)).await {
        Ok(g) => g,
        Err(e) => {
            // Refusing a lease longer than the quarantine is a fine answer.
            eprintln!("refused: {e}");
            return;
        }
    };
    nodes[1].restart();
    nodes[2].restart();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(3) {
        if let Ok(g) = y.lock("rq").ttl(Duration::from_secs(2)).await {
            assert!(
                !held.is_held(),
                "Redlock: y granted {:?} after two nodes restarted empty while x (12 s lease, quarantine 1 s) still reports is_held()",
                restarted.elapsed()
            );
            drop(g);
            return;
        }
        tokio::time::sleep(20 * MS).await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Bounded waits
// ---------------------------------------------------------------------------------------

async fn assert_bounded(
    what: &str,
    wait: Duration,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<LockGuard, LockError>>,
) {
    let bound = wait + timeout + Duration::from_millis(250);
    let started = Instant::now();
    let res = tokio::time::timeout(bound * 4 + Duration::from_secs(5), fut).await;
    let took = started.elapsed();
    assert!(
        took <= bound,
        "{what}: wait({wait:?}) with command timeout {timeout:?} returned after {took:?} (bound {bound:?}); result {:?}",
        res.as_ref()
            .map(|r| r.as_ref().map(|_| "guard").map_err(ToString::to_string))
    );
}

async fn bounded_setup() -> (RedisServer, TcpProxy, LockClient, LockClient, LockGuard) {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let holder = client(server.url(), WAIT_TIMEOUT).await;
    let waiter = client(proxy.url(), WAIT_TIMEOUT).await;
    let held = holder
        .lock("bw")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    // Warm up: the waiter's subscriber exists.
    assert!(
        waiter
            .lock("bw")
            .wait(100 * MS)
            .await
            .unwrap_err()
            .is_busy()
    );
    (server, proxy, holder, waiter, held)
}

const WAIT_TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_wait_everything_blackholed() {
    let (_server, proxy, _holder, waiter, _held) = bounded_setup().await;
    proxy.blackhole(true);
    assert_bounded(
        "blackhole",
        500 * MS,
        WAIT_TIMEOUT,
        waiter.lock("bw").wait(500 * MS).into_future(),
    )
    .await;
    assert_bounded(
        "blackhole, one try",
        Duration::ZERO,
        WAIT_TIMEOUT,
        waiter.lock("bw").into_future(),
    )
    .await;
}

/// Connections cut and reconnects never answered (a host that went away mid-conversation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_wait_after_cut_with_dead_reconnects() {
    let (_server, proxy, _holder, waiter, _held) = bounded_setup().await;
    proxy.blackhole_new_connections(true);
    proxy.cut();
    assert_bounded(
        "cut + new blackholed",
        400 * MS,
        WAIT_TIMEOUT,
        waiter.lock("bw").wait(400 * MS).into_future(),
    )
    .await;
    assert_bounded(
        "cut + new blackholed, again",
        400 * MS,
        WAIT_TIMEOUT,
        waiter.lock("bw").wait(400 * MS).into_future(),
    )
    .await;
}

/// As above with a one-try acquire (wait zero) and with inspect-free extend on a held guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_one_try_after_cut_with_dead_reconnects() {
    let (_server, proxy, _holder, waiter, _held) = bounded_setup().await;
    proxy.blackhole_new_connections(true);
    proxy.cut();
    assert_bounded(
        "cut + new blackholed, one try",
        Duration::ZERO,
        WAIT_TIMEOUT,
        waiter.lock("other").into_future(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_wait_blackhole_mid_wait() {
    let (_server, proxy, _holder, waiter, _held) = bounded_setup().await;
    let p = &proxy;
    let fut = waiter.lock("bw").wait(800 * MS).into_future();
    let started = Instant::now();
    let (res, ()) = tokio::join!(fut, async {
        tokio::time::sleep(300 * MS).await;
        p.blackhole(true);
    });
    let took = started.elapsed();
    assert!(
        took <= 800 * MS + WAIT_TIMEOUT + 250 * MS,
        "blackhole mid-wait: {took:?} ({:?})",
        res.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_wait_server_frozen() {
    let (server, _proxy, holder, waiter, _held) = bounded_setup().await;
    server.pause();
    assert_bounded(
        "server frozen",
        300 * MS,
        WAIT_TIMEOUT,
        waiter.lock("bw").wait(300 * MS).into_future(),
    )
    .await;
    assert_bounded(
        "server frozen (holder client)",
        300 * MS,
        WAIT_TIMEOUT,
        holder.lock("bw2").wait(300 * MS).into_future(),
    )
    .await;
    server.resume();
}

/// The first client creation (connect) against a blackholed address is bounded too, and the
/// subscriber of a client whose first wait happens on a blackholed link does not stall later
/// waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_wait_on_a_dead_link_then_recovery() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let timeout = Duration::from_millis(300);
    let holder = client(server.url(), timeout).await;
    let waiter = client(proxy.url(), timeout).await;
    let held = holder
        .lock("fw")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    proxy.blackhole_new_connections(true);
    // The first wait creates the subscriber on a link that never answers.
    assert_bounded(
        "subscriber on a dead link",
        500 * MS,
        timeout,
        waiter.lock("fw").wait(500 * MS).into_future(),
    )
    .await;
    proxy.blackhole_new_connections(false);
    // Released while the next wait runs: it must be granted well within its wait.
    let started = Instant::now();
    let (res, ()) = tokio::join!(
        waiter.lock("fw").wait(Duration::from_secs(4)).into_future(),
        async {
            tokio::time::sleep(200 * MS).await;
            held.release().await.unwrap();
        }
    );
    let g = res.unwrap_or_else(|e| {
        panic!(
            "locked out of a free key after {:?}: {e}",
            started.elapsed()
        )
    });
    assert!(g.is_held());
}

// ---------------------------------------------------------------------------------------
// 4. Leaks, lock-outs, panics
// ---------------------------------------------------------------------------------------

/// Acquire, extend and release futures dropped at random points over a slow link, many tasks
/// on one client: afterwards the key is free at once (not after the 30 s lease), and every
/// granted fence increased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_at_random_points_leak_nothing() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client(proxy.url(), Duration::from_secs(2)).await;
    let check = client(server.url(), Duration::from_secs(2)).await;
    proxy.set_latency(Duration::from_millis(10));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(1234 + t * 7919);
            for _ in 0..15 {
                let cut = Duration::from_micros(rng.next(60_000));
                let key = format!("drop{}", rng.next(3));
                match rng.next(3) {
                    0 => {
                        let _ = tokio::time::timeout(
                            cut,
                            a.lock(key.as_str())
                                .ttl(Duration::from_secs(30))
                                .wait(Duration::from_millis(100))
                                .into_future(),
                        )
                        .await;
                    }
                    1 => {
                        if let Ok(Ok(g)) = tokio::time::timeout(
                            Duration::from_millis(200),
                            a.lock(key.as_str())
                                .ttl(Duration::from_secs(30))
                                .wait(Duration::from_millis(100))
                                .into_future(),
                        )
                        .await
                        {
                            let _ =
                                tokio::time::timeout(cut, g.extend(Duration::from_secs(60))).await;
                            drop(g);
                        }
                    }
                    _ => {
                        if let Ok(Ok(g)) = tokio::time::timeout(
                            Duration::from_millis(200),
                            a.lock(key.as_str())
                                .ttl(Duration::from_secs(30))
                                .wait(Duration::from_millis(100))
                                .into_future(),
                        )
                        .await
                        {
                            let _ = tokio::time::timeout(cut, g.release()).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    proxy.set_latency(Duration::ZERO);
    for i in 0..3 {
        let key = format!("drop{i}");
        let g = check
            .lock(key.as_str())
            .wait(Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| {
                panic!("`{key}` still held 3 s after every guard is gone (30 s lease leaked): {e}")
            });
        drop(g);
    }
    // The client itself is not locked out of its keys either.
    tokio::time::sleep(100 * MS).await;
    for i in 0..3 {
        let key = format!("drop{i}");
        let _g = a
            .lock(key.as_str())
            .wait(Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("the dropping client is locked out of `{key}`: {e}"));
    }
    assert_eq!(a.held_locks(), 0);
}

/// A client made on one runtime whose first waits ran there (so its subscriber lives there),
/// then that runtime is dropped: a waiter on a second runtime is still woken and granted.
#[test]
fn a_client_outlives_the_runtime_that_made_it() {
    let server = RedisServer::start();
    let url = server.url();
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt1.block_on(async {
        let a = client(url.clone(), Duration::from_millis(500)).await;
        let b = client(url.clone(), Duration::from_millis(500)).await;
        let g = a.lock("xrt").ttl(Duration::from_secs(10)).await.unwrap();
        assert!(b.lock("xrt").wait(150 * MS).await.unwrap_err().is_busy());
        drop(g);
        tokio::time::sleep(50 * MS).await;
        (a, b)
    });
    drop(rt1);
    let rt2 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt2.block_on(async {
        let started = Instant::now();
        let g = tokio::time::timeout(
            Duration::from_secs(5),
            a.lock("xrt")
                .ttl(Duration::from_millis(300))
                .wait(Duration::from_secs(2))
                .into_future(),
        )
        .await
        .expect("acquire on the second runtime hangs")
        .unwrap_or_else(|e| panic!("locked out after {:?}: {e}", started.elapsed()));
        // The watchdog must keep a 300 ms lease alive (or report it lost).
        tokio::time::sleep(Duration::from_millis(900)).await;
        let on_server = b.inspect("xrt").await.unwrap().is_some();
        assert!(
            on_server || !g.is_held(),
            "the lease ran out on the server while the guard still reports is_held()"
        );
        if !on_server {
            tokio::time::timeout(Duration::from_secs(1), g.lost())
                .await
                .expect("lost() never fired");
        }
        // A waiter on the second runtime is woken by a release.
        let started = Instant::now();
        let (res, ()) = tokio::join!(
            b.lock("xrt").wait(Duration::from_secs(3)).into_future(),
            async {
                tokio::time::sleep(200 * MS).await;
                drop(g);
            }
        );
        let g2 = res.unwrap_or_else(|e| {
            panic!(
                "waiter on runtime 2 not granted after {:?}: {e}",
                started.elapsed()
            )
        });
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "woken only after {:?}",
            started.elapsed()
        );
        drop(g2);
    });
}

/// A waiter whose subscriber connection was killed (CLIENT KILL TYPE pubsub) or silenced still
/// gets a key that is released, well within its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_survives_a_killed_or_silent_subscriber() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let holder = client(server.url(), Duration::from_millis(500)).await;
    let before = proxy.connections();
    let waiter = client(proxy.url(), Duration::from_millis(500)).await;
    for round in 0..3 {
        let key = format!("sub{round}");
        let held = holder
            .lock(key.as_str())
            .ttl(Duration::from_secs(20))
            .await
            .unwrap();
        let w = waiter
            .lock(key.as_str())
            .wait(Duration::from_secs(6))
            .into_future();
        let started = Instant::now();
        let (res, ()) = tokio::join!(w, async {
            tokio::time::sleep(300 * MS).await;
            match round {
                0 => {
                    let _: redis::Value = server.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                }
                1 => {
                    // Silence every connection the waiter opened except the first (commands).
                    for c in before + 1..proxy.connections() {
                        proxy.silence(c);
                    }
                }
                _ => proxy.cut(),
            }
            tokio::time::sleep(100 * MS).await;
            held.release().await.unwrap();
        });
        let g = res.unwrap_or_else(|e| {
            panic!(
                "round {round}: locked out of a released key after {:?}: {e}",
                started.elapsed()
            )
        });
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "round {round}: granted only {:?} after the release",
            started.elapsed()
        );
        drop(g);
    }
}

/// Odd keys: unicode, the longest allowed (multi-byte at the boundary), braces, glob and
/// Lua-pattern characters. Exclusion holds for each, nothing panics, over-long keys are a
/// typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weird_keys() {
    let server = RedisServer::start();
    let a = client(server.url(), Duration::from_secs(1)).await;
    let b = client(server.url(), Duration::from_secs(1)).await;
    let mut keys: Vec<String> = vec![
        "ключ🔑".into(),
        "{}".into(),
        "{a}{b}".into(),
        "*".into(),
        "?[a-z]%".into(),
        "a:b:".into(),
        "%s%d%%".into(),
        "\u{200b}".into(),
        "e\u{301}".into(),
        "é".into(),
        " ".into(),
        "x".repeat(512),
        format!("{}é", "x".repeat(510)),
        "🔑".repeat(128),
    ];
    keys.push("__boot".into());
    for key in &keys {
        let g = a
            .lock(key.as_str())
            .ttl(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert!(
            b.lock(key.as_str()).await.unwrap_err().is_busy(),
            "{key:?}: not exclusive"
        );
        let info = b.inspect(key).await.unwrap().expect("inspect sees it");
        let _ = format!("{info:?}");
        assert_eq!(g.key(), key);
        g.release().await.unwrap();
        assert!(
            b.inspect(key).await.unwrap().is_none(),
            "{key:?} still there"
        );
    }
    // "é" (precomposed) and "e\u{301}" must be distinct keys or the same, but never panic;
    // over-long keys are a typed error.
    for key in [
        format!("{}é", "x".repeat(511)),
        "🔑".repeat(129),
        "a\u{0}b".into(),
        "a\nb".into(),
        String::new(),
    ] {
        let e = a.lock(key.as_str()).await.unwrap_err();
        assert!(matches!(e, LockError::InvalidKey { .. }), "{key:?}: {e}");
        let _ = format!("{e} {e:?}");
    }
}

/// Extend to the extremes: MAX_TTL, MIN_TTL, just outside. A guard extended to 30 days and then
/// dropped frees the key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_to_the_extremes() {
    let server = RedisServer::start();
    let a = client(server.url(), Duration::from_secs(1)).await;
    let b = client(server.url(), Duration::from_secs(1)).await;
    let g = a.lock("ext").ttl(distlock::MIN_TTL).await.unwrap();
    g.extend(distlock::MAX_TTL).await.unwrap();
    let pttl: i64 = server.cmd(&["PTTL", "distlock:ext"]);
    assert!(pttl > 29 * 24 * 3600 * 1000, "pttl {pttl}");
    assert!(g.extend(distlock::MAX_TTL + MS).await.is_err());
    assert!(g.extend(distlock::MIN_TTL - MS).await.is_err());
    assert!(g.extend(Duration::ZERO).await.is_err());
    assert!(g.extend(Duration::MAX).await.is_err());
    assert!(g.is_held());
    g.extend(distlock::MIN_TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(g.is_held(), "the watchdog keeps a MIN_TTL lease");
    g.extend(distlock::MAX_TTL).await.unwrap();
    drop(g);
    let g2 = b
        .lock("ext")
        .wait(Duration::from_secs(2))
        .await
        .expect("a dropped 30-day guard left its key behind");
    // Requests at the extremes.
    assert!(b.lock("ext2").ttl(Duration::MAX).await.is_err());
    assert!(
        b.lock("ext2")
            .wait(Duration::MAX)
            .ttl(distlock::MAX_TTL)
            .await
            .is_ok()
    );
    // A huge wait on a busy key must still honour the one-try of a released key; just make
    // sure Duration::MAX as a wait doesn't panic when the key is busy for a moment.
    let (res, ()) = tokio::join!(a.lock("ext").wait(Duration::MAX).into_future(), async {
        tokio::time::sleep(100 * MS).await;
        drop(g2);
    });
    let _g = res.expect("wait(Duration::MAX) on a key released after 100 ms");
}

// ---------------------------------------------------------------------------------------
// 3. Secrets
// ---------------------------------------------------------------------------------------

fn assert_no_secret(secret: &str, what: &str, text: &str) {
    assert!(!text.contains(secret), "{what} shows the password: {text}");
}

/// A password that works at first and is later changed on the server: the runtime errors
/// (reauth failures after a reconnect) and every Debug must not show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_runtime_errors_after_the_password_changes() {
    let pw = "Hunter2-Sekr1t";
    let server = RedisServer::start_with(&["--requirepass", pw]);
    let c = client(server.url(), Duration::from_millis(500)).await;
    let g = c.lock("pw").ttl(Duration::from_secs(5)).await.unwrap();
    assert_no_secret(pw, "client Debug", &format!("{c:?}"));
    assert_no_secret(pw, "guard Debug", &format!("{g:?}"));
    let info = c.inspect("pw").await.unwrap();
    assert_no_secret(pw, "inspect Debug", &format!("{info:?}"));
    let mut conn = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("other-pass")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut conn)
        .unwrap_or(redis::Value::Nil);
    for _ in 0..3 {
        if let Err(e) = c.lock("pw2").wait(200 * MS).await {
            assert_no_secret(pw, "lock error", &format!("{e} {e:?}"));
        }
        if let Err(e) = g.extend(Duration::from_secs(5)).await {
            assert_no_secret(pw, "extend error", &format!("{e} {e:?}"));
        }
        if let Err(e) = c.inspect("pw").await {
            assert_no_secret(pw, "inspect error", &format!("{e} {e:?}"));
        }
        tokio::time::sleep(100 * MS).await;
    }
    assert_no_secret(pw, "guard Debug", &format!("{g:?}"));
    if let Err(e) = g.release().await {
        assert_no_secret(pw, "release error", &format!("{e} {e:?}"));
    }
    // Redlock and Sentinel builders/errors with the password.
    let redlock = LockClient::builder().redlock([
        format!("redis://:{pw}@127.0.0.1:{}", server.port()),
        format!("redis://u:{pw}@127.0.0.1:1"),
        format!("redis://:{pw}@[::1]:1"),
    ]);
    assert_no_secret(pw, "redlock builder Debug", &format!("{redlock:?}"));
    match redlock.command_timeout(300 * MS).build().await {
        Ok(c) => assert_no_secret(pw, "redlock client Debug", &format!("{c:?}")),
        Err(e) => assert_no_secret(pw, "redlock error", &format!("{e} {e:?}")),
    }
    let sentinel = LockClient::builder()
        .sentinel(
            "mymaster",
            [format!("redis://:{pw}@127.0.0.1:{}", server.port())],
        )
        .sentinel_primary_auth(Some("bob"), pw)
        .command_timeout(300 * MS);
    assert_no_secret(pw, "sentinel builder Debug", &format!("{sentinel:?}"));
    match sentinel.build().await {
        Ok(c) => assert_no_secret(pw, "sentinel client Debug", &format!("{c:?}")),
        Err(e) => assert_no_secret(pw, "sentinel error", &format!("{e} {e:?}")),
    }
    // IPv6 host and a password holding '@' and ']' .
    let weird = "p@ss]w:rd";
    for url in [
        format!("redis://:{weird}@[::1]:{}", server.port()),
        format!("redis://user:{weird}@localhost:{}/0", server.port()),
        format!("redis://:{pw}@127.0.0.1:{}/0?protocol=resp3", server.port()),
        format!("redis://:{pw}@127.0.0.1:{}/notadb", server.port()),
        format!("redis://:{pw}@127.0.0.1:{}/99999", server.port()),
    ] {
        match LockClient::builder()
            .url(url.clone())
            .command_timeout(300 * MS)
            .build()
            .await
        {
            Ok(c) => {
                assert_no_secret(pw, "client Debug", &format!("{c:?}"));
                assert_no_secret("ss]w:rd", "client Debug", &format!("{c:?}"));
                if let Err(e) = c.lock("k").await {
                    assert_no_secret(pw, "lock error", &format!("{e} {e:?}"));
                    assert_no_secret("ss]w:rd", "lock error", &format!("{e} {e:?}"));
                }
            }
            Err(e) => {
                assert_no_secret(pw, &format!("error for {url}"), &format!("{e} {e:?}"));
                assert_no_secret("ss]w:rd", "error", &format!("{e} {e:?}"));
            }
        }
    }
}

/// A reconnect begun on a runtime that is then shut down (the connection was cut and new
/// connections hang) must not panic the library's background thread nor stop the watchdog
/// of a lock taken afterwards on another runtime.
#[test]
fn reconnect_started_on_a_dead_runtime() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let checker_url = server.url();
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = rt1.block_on(async {
        let a = client(proxy.url(), Duration::from_millis(300)).await;
        drop(a.lock("warm").await.unwrap());
        proxy.blackhole_new_connections(true);
        proxy.cut();
        let _ = a.lock("rc").wait(200 * MS).await;
        a
    });
    drop(rt1);
    proxy.blackhole_new_connections(false);
    let rt2 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt2.block_on(async {
        let checker = client(checker_url, Duration::from_secs(1)).await;
        let started = Instant::now();
        let g = loop {
            match a.lock("rc").ttl(Duration::from_millis(300)).await {
                Ok(g) => break g,
                Err(e) => assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "client never usable again on the second runtime: {e}"
                ),
            }
            tokio::time::sleep(50 * MS).await;
        };
        for _ in 0..10 {
            tokio::time::sleep(150 * MS).await;
            let on_server = checker.inspect("rc").await.unwrap().is_some();
            assert!(on_server || !g.is_held(), "lease ran out on the server while the guard reports is_held()");
            if !on_server {
                tokio::time::timeout(Duration::from_secs(1), g.lost()).await.expect("lost() never fired");
                panic!("the watchdog stopped renewing a healthy 300 ms lease (the guard did report lost)");
            }
        }
    });
}
