//! Adversarial tests, round 4: attacks on coalescing (acquires and releases of one connection
//! sent together as one call of `batch.lua`, at most two calls out), the connection's retry
//! rule, the scripts' `EVALSHA` → `EVAL` fallback, and the watchdog's renewal in chunks. Each
//! test asserts a promise of the public contract against real redis-server processes.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, LockGuard};
use distlock_tests::attack::not_free;
use distlock_tests::{RedisServer, StormLedger, TcpProxy, flush_and_kill_storm};
use futures_util::future::join_all;

const MS: Duration = Duration::from_millis(1);

async fn client(url: String) -> LockClient {
    client_with(url, Duration::from_secs(2)).await
}

use distlock_tests::client_with_timeout as client_with;

/// How many `EVALSHA` calls the server refused or failed (`NOSCRIPT` among them).
fn evalsha_refusals(server: &RedisServer) -> u64 {
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    let Some(line) = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")) else {
        return 0;
    };
    line.split(',')
        .filter(|f| f.starts_with("rejected_calls=") || f.starts_with("failed_calls="))
        .filter_map(|f| f.split('=').nth(1))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

/// A small deterministic generator (no dependency needed for a few random delays).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

// ---------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------

/// The release sent for an acquire whose caller went away must reach the server after that
/// acquire (coalesce.rs: "it can never reach the server first and leave the lock behind").
/// Two calls may be out at once, and each falls back from `EVALSHA` to `EVAL` on its own: A's
/// acquire is refused with `NOSCRIPT` after a `SCRIPT FLUSH`; another distlock client loads
/// the script again (as every client does after a flush, restart or failover); A's give-back,
/// sent in the second call, then runs by `EVALSHA` before the acquire's `EVAL`, finds nothing,
/// and the acquire lands after it. Nobody holds the lock, yet it stays for its whole lease.
/// What must hold: the key is free again well within its 30 s lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_given_up_in_flight_leaves_no_lock_when_scripts_are_reloaded_meanwhile() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let a = client(proxy.url()).await;
    let b = client(server.url()).await;
    a.lock("warm").await.unwrap().release().await.unwrap();
    b.lock("warm").await.unwrap().release().await.unwrap();

    server.cmd::<()>(&["SCRIPT", "FLUSH"]);
    let refused = evalsha_refusals(&server);
    proxy.set_latency(100 * MS);
    // A's acquire goes out at once; A gives up while it is in flight.
    let given_up = tokio::time::timeout(
        30 * MS,
        a.lock("orphan").ttl(Duration::from_secs(30)).into_future(),
    )
    .await;
    assert!(
        given_up.is_err(),
        "the acquire answered through 100 ms of latency"
    );
    // The server refuses A's EVALSHA (NOSCRIPT)...
    let deadline = Instant::now() + Duration::from_secs(3);
    while evalsha_refusals(&server) == refused {
        assert!(
            Instant::now() < deadline,
            "A's acquire never reached the server"
        );
        tokio::time::sleep(2 * MS).await;
    }
    // ...and another client loads the scripts again before A's give-back arrives.
    b.lock("reload").await.unwrap().release().await.unwrap();
    // A round trip through A's queue, sent after the give-back and the acquire's `EVAL`:
    // once it answers, both have run.
    proxy.set_latency(Duration::ZERO);
    a.lock("sync").await.unwrap().release().await.unwrap();

    let left = not_free(&b, &["orphan".to_owned()], Duration::from_secs(3)).await;
    assert!(
        left.is_empty(),
        "the acquire A gave up landed after its give-back and left the lock behind: {left:?}"
    );
}

/// One operation's failure must stay its own (coalesce.rs: "each operation keeps the outcome
/// it has alone"; tests/coalesce.rs checks it for a list and a plain string). A value shaped
/// like a tombstone but not written by distlock (`T` and 16 letters) makes `acquire.lua` raise
/// a Lua error (`tonumber` of the letters is nil) instead of answering `{-1}`. Inside
/// `batch.lua` that error aborts the whole script: the acquires and releases sent in the same
/// call fail with it, those before it having been applied anyway, those after not at all.
/// What must hold: every unrelated acquire succeeds, every unrelated release succeeds and
/// frees its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_tombstone_shaped_value_fails_only_its_own_operation() {
    let server = RedisServer::start();
    server.cmd::<()>(&["SET", "distlock:poison", "Tzzzzzzzzzzzzzzzz"]);
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let mut failures = Vec::new();
    let mut poison = Vec::new();
    let mut released = Vec::new();
    for round in 0..4 {
        let mut guards: Vec<(String, LockGuard)> = Vec::new();
        for i in 0..16 {
            let key = format!("rel:{round}:{i}");
            let g = a
                .lock(key.as_str())
                .ttl(Duration::from_secs(30))
                .await
                .unwrap();
            guards.push((key, g));
        }
        type Op<'a> =
            std::pin::Pin<Box<dyn Future<Output = (String, Result<(), LockError>)> + Send + 'a>>;
        let mut ops: Vec<Op<'_>> = Vec::new();
        for (i, (key, guard)) in guards.into_iter().enumerate() {
            let acquire_key = format!("acq:{round}:{i}");
            let a = &a;
            ops.push(Box::pin(async move {
                let r = a.lock(acquire_key.as_str()).await.map(drop);
                (acquire_key, r)
            }));
            if i == 8 {
                ops.push(Box::pin(async move {
                    let r = a.lock("poison").await.map(drop);
                    ("poison".to_owned(), r)
                }));
            }
            released.push(key.clone());
            ops.push(Box::pin(async move { (key, guard.release().await) }));
        }
        for (key, r) in join_all(ops).await {
            match (key.as_str(), r) {
                ("poison", r) => poison.push(format!("{r:?}")),
                (_, Ok(())) => {}
                (_, Err(e)) => failures.push(format!("round {round}: {key}: {e}")),
            }
        }
    }
    let left = not_free(&b, &released, 500 * MS).await;
    assert!(
        failures.is_empty() && left.is_empty(),
        "the poisoned key's own outcomes: {poison:?}\n\
         unrelated operations that failed with it: {failures:#?}\n\
         keys whose release failed with it and stay held: {left:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Attacks that held (regression tests)
// ---------------------------------------------------------------------------------------

/// A frozen server (SIGSTOP) with both calls out and a queue behind them: every acquire
/// (waiting 300 ms) and every release answers within its bound (wait + command timeout, plus
/// slack), and once the server is back every acquire that landed after its caller gave up is
/// given back (no 30 s lease left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_bounds_every_call_and_leaves_no_lock() {
    let server = RedisServer::start();
    let timeout = 400 * MS;
    let a = client_with(server.url(), timeout).await;
    let b = client(server.url()).await;
    let guards: Vec<LockGuard> = join_all((0..20).map(|i| {
        a.lock(format!("held:{i}"))
            .ttl(Duration::from_secs(30))
            .into_future()
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    server.pause();
    let wait = 300 * MS;
    let bound = wait + timeout + 600 * MS;
    let acquires = (0..150).map(|i| {
        let a = a.clone();
        async move {
            let t0 = Instant::now();
            let r = a
                .lock(format!("frozen:{i}"))
                .ttl(Duration::from_secs(30))
                .wait(wait)
                .await;
            (t0.elapsed(), r.map(drop))
        }
    });
    let releases = guards.into_iter().map(|g| async move {
        let t0 = Instant::now();
        let r = g.release().await;
        (t0.elapsed(), r)
    });
    let (acquired, released) = tokio::join!(join_all(acquires), join_all(releases));
    server.resume();
    let slow: Vec<String> = acquired
        .iter()
        .chain(released.iter())
        .filter(|(took, _)| *took > bound)
        .map(|(took, r)| format!("{took:?}: {r:?}"))
        .collect();
    assert!(slow.is_empty(), "calls past {bound:?}: {slow:#?}");
    assert!(
        acquired.iter().all(|(_, r)| r.is_err()),
        "an acquire succeeded against a frozen server"
    );
    let keys: Vec<String> = (0..150).map(|i| format!("frozen:{i}")).collect();
    let left = not_free(&b, &keys, Duration::from_secs(3)).await;
    assert!(
        left.is_empty(),
        "acquires given up left locks behind: {left:#?}"
    );
    // And the client works again at once.
    let t0 = Instant::now();
    a.lock("after").await.unwrap().release().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// FINDING (the same cause as the first test, found at random: it fails in about three runs
/// of four, also without the `CLIENT KILL`s). A storm of `SCRIPT FLUSH` and `CLIENT KILL`
/// while two clients (one behind 2 ms of latency)
/// churn eight keys with acquires that are often abandoned mid-flight: never two inside one
/// key at once, every fence accepted by a fencing store only when larger, and at the end no
/// key is left held (leases are 20 s, so a left-over lock shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_and_client_kill_storms_keep_exclusion_and_leave_no_lock() {
    let server = Arc::new(RedisServer::start());
    let proxy = TcpProxy::start(server.port());
    proxy.set_latency(2 * MS);
    let clients = [
        client_with(proxy.url(), Duration::from_secs(1)).await,
        client_with(server.url(), Duration::from_secs(1)).await,
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let storm = flush_and_kill_storm(server.clone(), stop.clone());
    let ledger = StormLedger::new(8);
    let until = Instant::now() + Duration::from_millis(2500);
    let tasks: Vec<_> = (0..24)
        .map(|t| {
            let client = clients[t % 2].clone();
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let mut rng = Lcg(t as u64 + 1);
                while Instant::now() < until {
                    let k = rng.next(8) as usize;
                    // A third of the attempts are abandoned after 0..10 ms.
                    let abandon = (rng.next(3) == 0).then(|| Duration::from_millis(rng.next(10)));
                    let release = rng.next(2) == 0;
                    ledger.round(&client, k, abandon, release).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let storms = storm.join().unwrap();
    assert!(storms > 100, "the storm barely ran ({storms} flushes)");
    let violations = ledger.violations();
    assert!(violations.is_empty(), "{violations:#?}");
    let observer = client(server.url()).await;
    let keys: Vec<String> = (0..8).map(|k| format!("storm:{k}")).collect();
    let left = not_free(&observer, &keys, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "locks left behind by nobody: {left:#?}");
}

/// 5000 locks with 600 ms leases, behind 2 ms of latency each way, while the server stalls
/// for 150 ms (`DEBUG SLEEP`) every 400 ms: renewal in chunks of 256 sent together keeps
/// every lease; none is reported lost, and the server holds all 5000 under their fences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_keeps_5000_short_leases_through_latency_and_stalls() {
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let proxy = TcpProxy::start(server.port());
    let a = client_with(proxy.url(), Duration::from_secs(2)).await;
    let mut guards: Vec<LockGuard> = Vec::with_capacity(5000);
    // (A proxy delay is per 16 KiB read, so it also caps bandwidth: 20 ms there lets 800 KB/s
    // through, less than 5000 renewals need every 200 ms, with or without chunks. 2 ms.)
    let (n, ttl, lat, stall): (u64, u64, u64, u64) = (5000, 600, 2, 150);
    for chunk in 0..n / 500 {
        let batch = join_all((0..500).map(|i| {
            a.lock(format!("wd:{}", chunk * 500 + i))
                .ttl(Duration::from_millis(ttl))
                .into_future()
        }))
        .await;
        guards.extend(batch.into_iter().map(Result::unwrap));
    }
    proxy.set_latency(Duration::from_millis(lat));
    let stop = Arc::new(AtomicBool::new(false));
    let staller = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut conn = server.conn();
            let mut stalls = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(400 * MS);
                let _: () = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg(format!("{}", stall as f64 / 1000.0))
                    .query(&mut conn)
                    .unwrap();
                stalls += 1;
            }
            stalls
        })
    };
    // Time is the subject: the leases are held through 2.5 s of latency and stalls.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let stalls = staller.join().unwrap();
    assert!(stalls >= 4, "only {stalls} stalls");
    assert_eq!(a.held_locks(), n as usize, "the watchdog dropped leases");
    let lost: Vec<&str> = guards
        .iter()
        .filter(|g| !g.is_held())
        .map(LockGuard::key)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of 5000 leases lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    proxy.set_latency(Duration::ZERO);
    let observer = client(server.url()).await;
    use futures_util::TryStreamExt;
    let held: Vec<distlock::LockInfo> = observer.list("wd:").try_collect().await.unwrap();
    let on_server: std::collections::HashMap<String, u64> =
        held.into_iter().map(|i| (i.key, i.fencing_token)).collect();
    let wrong: Vec<String> = guards
        .iter()
        .filter(|g| on_server.get(g.key()) != Some(&g.fencing_token()))
        .map(|g| format!("{}: {:?} on the server", g.key(), on_server.get(g.key())))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "leases the server no longer keeps: {wrong:?}"
    );
}

/// Records every event's and span's fields, at every level.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        let mut log = self.0.lock().unwrap();
        log.push_str(&line);
        log.push('\n');
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = String::new();
        attrs.record(&mut Fields(&mut line));
        let mut log = self.0.lock().unwrap();
        log.push_str(&line);
        log.push('\n');
    }
}

/// The coalescer's own errors (no answer within the timeout, with the server's URL), the
/// copies of a call's error handed to every operation in it, reconnects after `CLIENT KILL`
/// and a refused password: no password in any error's `Display` or `Debug`, nor in any
/// event or span the library emits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_coalesced_errors_and_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .unwrap();
    let password = "Hunter2-Sekr1t";
    let server = RedisServer::start_with(&["--requirepass", password]);
    let mut admin = server.conn();
    let a = client_with(server.url(), 300 * MS).await;
    let mut seen = Vec::new();
    let mut record = |r: Result<(), LockError>| {
        if let Err(e) = r {
            seen.push(format!("{e} / {e:?}"));
        }
    };
    let guards: Vec<LockGuard> = join_all((0..8).map(|i| a.lock(format!("pw:{i}")).into_future()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Timeouts: in flight and queued.
    server.pause();
    let acquires = join_all((0..40).map(|i| a.lock(format!("pw-frozen:{i}")).into_future()));
    let releases = join_all(guards.into_iter().map(LockGuard::release));
    let (acquired, released) = tokio::join!(acquires, releases);
    server.resume();
    acquired.into_iter().for_each(|r| record(r.map(drop)));
    released.into_iter().for_each(&mut record);
    // A killed connection, then a password the server no longer takes.
    distlock_tests::kill_clients(&mut admin).unwrap();
    record(a.lock("pw-after-kill").await.map(drop));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("another-one")
        .query(&mut admin)
        .unwrap();
    distlock_tests::kill_clients(&mut admin).unwrap();
    for i in 0..5 {
        record(a.lock(format!("pw-refused:{i}")).await.map(drop));
    }
    seen.push(format!("{a:?}"));
    assert!(
        seen.iter().any(|s| s.contains("127.0.0.1")),
        "no error named the server: {seen:#?}"
    );
    let leaked: Vec<&String> = seen.iter().filter(|s| s.contains(password)).collect();
    assert!(leaked.is_empty(), "the password shows: {leaked:#?}");
    let log = recorder.0.lock().unwrap().clone();
    assert!(
        !log.contains(password),
        "the password shows in the log:\n{log}"
    );
}

/// Redlock: the acquire goes to each node by `EVALSHA` of the acquire script, the give-back
/// through the node's coalescer (the batch script). After a `SCRIPT FLUSH` on every node,
/// acquires abandoned at every point of their flight (0..120 ms, nodes 30 ms away) while
/// another client reloads the scripts leave no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_acquires_abandoned_after_a_script_flush_leave_no_lock() {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            let s = RedisServer::start();
            s.kept_data_for_an_hour();
            s
        })
        .collect();
    let proxies: Vec<TcpProxy> = nodes.iter().map(|n| TcpProxy::start(n.port())).collect();
    let build = |urls: Vec<String>| async move {
        LockClient::builder()
            .redlock(urls)
            .redlock_quarantine(Duration::from_secs(60))
            .command_timeout(Duration::from_secs(1))
            .build()
            .await
            .unwrap()
    };
    let a = build(proxies.iter().map(TcpProxy::url).collect()).await;
    let b = build(nodes.iter().map(RedisServer::url).collect()).await;
    a.lock("warm").await.unwrap().release().await.unwrap();
    for n in &nodes {
        n.cmd::<()>(&["SCRIPT", "FLUSH"]);
    }
    for p in &proxies {
        p.set_latency(30 * MS);
    }
    let keys: Vec<String> = (0..24).map(|i| format!("rl-abandoned:{i}")).collect();
    let abandon = keys.iter().enumerate().map(|(i, k)| {
        let a = a.clone();
        async move {
            let cut = Duration::from_millis(5 * i as u64);
            let _ = tokio::time::timeout(
                cut,
                a.lock(k.as_str())
                    .ttl(Duration::from_secs(20))
                    .into_future(),
            )
            .await;
        }
    });
    let reload = async {
        for i in 0..12 {
            tokio::time::sleep(10 * MS).await;
            let _ = b.lock(format!("rl-reload:{i}")).await;
        }
    };
    tokio::join!(join_all(abandon), reload);
    for p in &proxies {
        p.set_latency(Duration::ZERO);
    }
    // The per-node tasks finish in the background and nothing public tells when: give the
    // late acquires and their give-backs (30 ms away, each within the 1 s command timeout)
    // time to land, so that a left-over lock is there to be found.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let left = not_free(&b, &keys, Duration::from_secs(3)).await;
    assert!(
        left.is_empty(),
        "abandoned Redlock acquires left locks: {left:#?}"
    );
}
