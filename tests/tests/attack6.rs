//! Attack 6: semaphores, read/write locks and `lock_all`, attacked through the public API
//! with real `redis-server` processes, pauses (SIGSTOP), cut connections, latency, two
//! runtimes, odd inputs and secrets in URLs.
//!
//! Each test asserts a property; a failing test is a finding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, LockSetGuard, LockSetRequest};
use distlock_tests::RedisServer;
use distlock_tests::fuzz::deploy::{Deployment, Kind, QUARANTINE};
use distlock_tests::fuzz::rng::Rng;
use distlock_tests::fuzz::worker::Target;

const CMD_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// The ledger: every guard a worker holds, checked against every other one still held.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Ledger {
    next: AtomicU64,
    held: Mutex<HashMap<u64, (String, Arc<LockSetGuard>)>>,
    violations: Mutex<Vec<String>>,
    /// `(what, permits)` per semaphore name.
    permits: HashMap<String, usize>,
}

impl Ledger {
    fn with_permits(permits: &[(&str, usize)]) -> Arc<Self> {
        Arc::new(Self {
            permits: permits.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
            ..Self::default()
        })
    }

    fn violation(&self, v: String) {
        eprintln!("VIOLATION: {v}");
        self.violations.lock().unwrap().push(v);
    }

    /// Registers `guard` if it is still held; checks that no other held guard shares a key
    /// with it and that no semaphore has more permits out than it has.
    fn enter(&self, what: &str, guard: LockSetGuard) -> (u64, Arc<LockSetGuard>) {
        let guard = Arc::new(guard);
        let mut held = self.held.lock().unwrap();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if !guard.is_held() {
            return (id, guard);
        }
        let mine: Vec<String> = guard.fencing_tokens().map(|(k, _)| k.to_owned()).collect();
        for (other_what, other) in held.values() {
            if !other.is_held() {
                continue;
            }
            for (k, fence) in other.fencing_tokens() {
                if mine.iter().any(|m| m == k) {
                    let mine_fence = guard
                        .fencing_tokens()
                        .find(|(m, _)| *m == k)
                        .map(|(_, f)| f);
                    self.violation(format!(
                        "key {k} held twice: {what} (fence {mine_fence:?}, remaining {:?}) and \
                         {other_what} (fence {fence}, remaining {:?})",
                        guard.remaining(),
                        other.remaining()
                    ));
                }
            }
        }
        if let Some(&permits) = self.permits.get(guard.name()) {
            let out: usize = held
                .values()
                .filter(|(_, g)| g.name() == guard.name() && g.is_held())
                .map(|(_, g)| g.fencing_tokens().count())
                .sum::<usize>()
                + mine.len();
            if out > permits {
                self.violation(format!(
                    "semaphore {} has {out} permits out of {permits}",
                    guard.name()
                ));
            }
        }
        held.insert(id, (what.to_owned(), guard.clone()));
        (id, guard)
    }

    fn leave(&self, id: u64) {
        self.held.lock().unwrap().remove(&id);
    }
}

/// What a worker does, drawn per round.
#[derive(Clone, Copy, Debug)]
enum Op {
    Permit(usize),
    Read,
    Write,
    All,
}

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    busy: u64,
    errors: u64,
    hangs: Vec<String>,
    odd_errors: Vec<String>,
}

const WAIT: Duration = Duration::from_millis(1500);
const TTL: Duration = Duration::from_millis(600);
/// A request may finish an attempt already in flight when its wait ends (one command timeout),
/// and give back what it took (one more): beyond that plus 2 s it hangs.
const SLACK: Duration = Duration::from_secs(4);

fn request(client: &LockClient, op: Op, rng: &mut Rng) -> (String, LockSetRequest) {
    let (what, req) = match op {
        Op::Permit(n) => (
            format!("permit x{n}"),
            client.semaphore("led-sem", 3).acquire_many(n),
        ),
        Op::Read => ("read".to_owned(), client.rw_lock("led-rw").read()),
        Op::Write => ("write".to_owned(), client.rw_lock("led-rw").write()),
        Op::All => {
            let n = 1 + rng.below(3);
            let keys: Vec<String> = (0..n)
                .map(|_| format!("led-all:{}", rng.below(5)))
                .collect();
            (format!("lock_all {keys:?}"), client.lock_all(keys))
        }
    };
    (what, req.ttl(TTL).wait(WAIT))
}

async fn worker(
    client: LockClient,
    seed: u64,
    ops: Vec<Op>,
    ledger: Arc<Ledger>,
    until: Instant,
) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    while Instant::now() < until {
        let op = ops[rng.below(ops.len())];
        let (what, req) = request(&client, op, &mut rng);
        let t0 = Instant::now();
        match tokio::time::timeout(WAIT + SLACK, req).await {
            Err(_) => tally
                .hangs
                .push(format!("{what} still waiting {:?} after its wait", SLACK)),
            Ok(Ok(guard)) => {
                tally.ok += 1;
                let (id, guard) = ledger.enter(&what, guard);
                let hold = rng.millis(1, 40);
                tokio::select! {
                    () = tokio::time::sleep(hold) => {}
                    () = guard.lost() => {}
                }
                ledger.leave(id);
                match Arc::try_unwrap(guard) {
                    Ok(g) => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), g.release()).await;
                    }
                    Err(_) => tally.odd_errors.push("guard still shared".into()),
                }
            }
            Ok(Err(err)) => {
                if err.is_busy() {
                    tally.busy += 1;
                } else if matches!(
                    err,
                    LockError::InvalidCount { .. }
                        | LockError::InvalidKey { .. }
                        | LockError::InvalidDuration { .. }
                        | LockError::KeyConflict { .. }
                ) {
                    tally.odd_errors.push(format!("{what}: {err}"));
                } else {
                    tally.errors += 1;
                }
                let _ = t0;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tally
}

const ALL_OPS: [Op; 6] = [
    Op::Permit(1),
    Op::Permit(2),
    Op::Permit(3),
    Op::Read,
    Op::Write,
    Op::All,
];

/// Runs workers on the test runtime (client `a`) and on a second runtime in its own thread
/// (client `b`, built there), while `faults` runs; checks the ledger and that nothing is left
/// held afterwards.
async fn ledger_run(
    deployment: &Deployment,
    run_for: Duration,
    faults: impl std::future::Future<Output = ()>,
) {
    let ledger = Ledger::with_permits(&[("led-sem", 3)]);
    let until = Instant::now() + run_for;
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let target_b: Target = deployment.target(1);
    let ledger_b = ledger.clone();
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let b = target_b.client(CMD_TIMEOUT).await;
            let tasks: Vec<_> = (0..3)
                .map(|i| {
                    tokio::spawn(worker(
                        b.clone(),
                        100 + i,
                        ALL_OPS.to_vec(),
                        ledger_b.clone(),
                        until,
                    ))
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    });
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(worker(
                a.clone(),
                i,
                ALL_OPS.to_vec(),
                ledger.clone(),
                until,
            ))
        })
        .collect();
    faults.await;
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }
    tallies.extend(
        tokio::task::spawn_blocking(move || other.join().unwrap())
            .await
            .unwrap(),
    );
    eprintln!("{tallies:#?}");
    let violations = ledger.violations.lock().unwrap().clone();
    let hangs: Vec<_> = tallies.iter().flat_map(|t| t.hangs.clone()).collect();
    let odd: Vec<_> = tallies.iter().flat_map(|t| t.odd_errors.clone()).collect();
    assert!(
        tallies.iter().map(|t| t.ok).sum::<u64>() > 10,
        "hardly anything was granted"
    );
    // Nothing left taken once the releases landed (watchdogs of leaked guards would keep
    // renewing).
    let mut left = Vec::new();
    let deadline = Instant::now() + TTL + Duration::from_secs(2);
    loop {
        left.clear();
        for h in a
            .semaphore("led-sem", 3)
            .holders()
            .await
            .unwrap_or_default()
        {
            left.push(h.key);
        }
        let mut keys: Vec<String> = (0..distlock::MAX_READERS)
            .map(|i| format!("rwlock:led-rw:read:{i}"))
            .collect();
        keys.push("rwlock:led-rw:write".into());
        keys.push("semaphore:led-sem:gate".into());
        keys.extend((0..5).map(|i| format!("led-all:{i}")));
        for k in keys {
            if let Ok(Some(info)) = a.inspect(&k).await {
                left.push(info.key);
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        violations.is_empty(),
        "mutual exclusion broken: {violations:#?}"
    );
    assert!(
        hangs.is_empty(),
        "requests hung past their wait: {hangs:#?}"
    );
    assert!(odd.is_empty(), "odd errors: {odd:#?}");
    assert!(
        left.is_empty(),
        "left held after every worker stopped: {left:?}"
    );
}

async fn pause_for(deployment: &Deployment, nodes: &[usize], at: Duration, len: Duration) {
    tokio::time::sleep(at).await;
    for &n in nodes {
        deployment.pause(n);
    }
    tokio::time::sleep(len).await;
    for &n in nodes {
        deployment.resume(n);
    }
}

/// Category 1 on one Redis: pauses shorter and longer than the lease while sets are held and
/// gathered, two runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_redis_with_pauses() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let d = &deployment;
    ledger_run(d, Duration::from_secs(9), async move {
        pause_for(d, &[0], Duration::from_secs(2), Duration::from_millis(300)).await;
        pause_for(d, &[0], Duration::from_secs(1), Duration::from_millis(1500)).await;
        pause_for(
            d,
            &[0],
            Duration::from_millis(800),
            Duration::from_millis(700),
        )
        .await;
    })
    .await;
}

/// Category 1 on one Redis: connections cut under the workers' feet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_redis_with_cut_connections() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let d = &deployment;
    ledger_run(d, Duration::from_secs(7), async move {
        for round in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let w = round % 2;
            if let Some(p) = d.proxy(w, 0) {
                p.cut_all();
            }
        }
    })
    .await;
}

/// Category 1 on Redlock: two of three nodes paused past the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_redlock_with_pauses() {
    let deployment = Deployment::start(Kind::Redlock, 2);
    {
        let a = deployment.target(0).client(CMD_TIMEOUT).await;
        let _ = a.lock("warm-up").await;
        tokio::time::sleep(QUARANTINE + Duration::from_millis(200)).await;
    }
    let d = &deployment;
    ledger_run(d, Duration::from_secs(9), async move {
        pause_for(d, &[0], Duration::from_secs(2), Duration::from_millis(1500)).await;
        pause_for(
            d,
            &[1, 2],
            Duration::from_millis(800),
            Duration::from_millis(1200),
        )
        .await;
    })
    .await;
}

/// Category 1 in one process (memory store), two runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_memory_two_runtimes() {
    let deployment = Deployment::start(Kind::Memory, 2);
    ledger_run(&deployment, Duration::from_secs(4), async {}).await;
}

// ---------------------------------------------------------------------------------------
// Category 2: deadlines, deadlocks, leftovers.
// ---------------------------------------------------------------------------------------

/// A lock_all of MAX_KEYS keys, one of them (the last in order) held elsewhere, through a
/// link with 2 ms of latency each way: the set's one wait must bound the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_all_many_keys_keeps_its_deadline_over_a_slow_link() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let b = deployment.target(1).client(CMD_TIMEOUT).await;
    let keys: Vec<String> = (0..distlock::MAX_KEYS)
        .map(|i| format!("many:{i:05}"))
        .collect();
    let last = keys.last().unwrap().clone();
    let held = b
        .lock(last.clone())
        .ttl(Duration::from_secs(20))
        .await
        .unwrap();
    deployment
        .proxy(0, 0)
        .unwrap()
        .set_latency(Duration::from_millis(2));
    let wait = Duration::from_secs(1);
    let t0 = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        a.lock_all(keys.clone())
            .ttl(Duration::from_secs(20))
            .wait(wait),
    )
    .await;
    let took = t0.elapsed();
    deployment.proxy(0, 0).unwrap().set_latency(Duration::ZERO);
    eprintln!(
        "lock_all of {} keys, wait {wait:?}: {:?} after {took:?}",
        keys.len(),
        out.as_ref()
            .map(|r| r.as_ref().map(|_| ()).map_err(ToString::to_string))
    );
    drop(held);
    assert!(
        took < wait + Duration::from_secs(2),
        "lock_all with a {wait:?} wait returned after {took:?}"
    );
}

/// A one-permit acquire on a full 1024-permit semaphore over a link with 2 ms of latency
/// each way: with a 500 ms wait, and with none (one try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_on_a_wide_full_semaphore_keeps_its_deadline_over_a_slow_link() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let b = deployment.target(1).client(CMD_TIMEOUT).await;
    let permits = distlock::MAX_PERMITS;
    let all = b
        .semaphore("wide", permits)
        .acquire_many(permits)
        .ttl(Duration::from_secs(30))
        .await
        .expect("every permit");
    deployment
        .proxy(0, 0)
        .unwrap()
        .set_latency(Duration::from_millis(2));
    let mut report = Vec::new();
    for wait in [Duration::from_millis(500), Duration::ZERO] {
        let t0 = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(15),
            a.semaphore("wide", permits).acquire().wait(wait),
        )
        .await;
        let took = t0.elapsed();
        eprintln!(
            "acquire wait {wait:?}: {:?} after {took:?}",
            out.as_ref()
                .map(|r| r.as_ref().map(|_| ()).map_err(ToString::to_string))
        );
        if took > wait + Duration::from_secs(2) {
            report.push(format!("wait {wait:?} returned after {took:?}"));
        }
    }
    deployment.proxy(0, 0).unwrap().set_latency(Duration::ZERO);
    drop(all);
    assert!(report.is_empty(), "{report:?}");
}

async fn drain_until_free(client: &LockClient, keys: &[String], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let mut taken = Vec::new();
        for k in keys {
            if let Ok(Some(info)) = client.inspect(k).await {
                taken.push(format!("{} (label {:?})", info.key, info.label));
            }
        }
        if taken.is_empty() || Instant::now() > deadline {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `lock_all` on a semaphore's permit locks against `acquire_many` of that semaphore, both
/// with long waits: the documented rule says sets of locks do not deadlock.
/// Found by this attack: `lock_all` over a semaphore's permits (or a read/write lock's read
/// slots) in sorted order and a gatherer of those permits behind the gate each held one and
/// waited for the other, until the set's wait ran out. The primitives' own locks are now
/// refused by `lock_all`, so every caller waiting while holding some of them is behind their
/// gate; a plain `lock` of one (a holder that waits holding nothing) is still allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_all_refuses_the_primitives_own_locks() {
    let client = LockClient::memory();
    for keys in [
        vec!["semaphore:dl:0", "semaphore:dl:1"],
        vec!["a", "rwlock:dw:read:0"],
        vec!["rwlock:dw:write"],
    ] {
        let err = client.lock_all(keys.clone()).await.expect_err("reserved");
        assert!(
            matches!(err, LockError::InvalidKey { .. }),
            "{keys:?}: {err:?}"
        );
    }
    // Anywhere in the key: under another client's prefix, `x:semaphore:s:0` is a permit
    // (attack7 found that alias). Keys that merely look alike are ordinary.
    for key in ["jobs:semaphore:1", "x:rwlock:2"] {
        let err = client
            .lock_all([key])
            .await
            .expect_err("an alias of a permit or slot");
        assert!(
            matches!(err, LockError::InvalidKey { .. }),
            "{key}: {err:?}"
        );
    }
    let set = client
        .lock_all(["semaphores", "rwlock-7"])
        .await
        .expect("ordinary keys");
    set.release().await.expect("release");
    let one = client
        .lock("semaphore:dl:0")
        .await
        .expect("a plain lock of a permit");
    assert!(
        client
            .semaphore("dl", 1)
            .acquire()
            .await
            .expect_err("taken")
            .is_busy()
    );
    one.release().await.expect("release");
}

/// Overlapping `lock_all`, `acquire_many` and writers hammering together with waits: every
/// request is granted within its (generous) wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_gatherers_never_time_out() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let b = deployment.target(1).client(CMD_TIMEOUT).await;
    let until = Instant::now() + Duration::from_secs(5);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let client = if i % 2 == 0 { a.clone() } else { b.clone() };
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(i);
            while Instant::now() < until {
                let req = match i % 4 {
                    0 => client.semaphore("ov-sem", 3).acquire_many(1 + rng.below(3)),
                    1 => client.rw_lock("ov-rw").write(),
                    2 => client.rw_lock("ov-rw").read(),
                    _ => {
                        let mut keys = vec!["ov:a", "ov:b", "ov:c", "ov:d"];
                        keys.retain(|_| rng.chance(60));
                        if keys.is_empty() {
                            keys.push("ov:c");
                        }
                        client.lock_all(keys)
                    }
                };
                match tokio::time::timeout(
                    Duration::from_secs(12),
                    req.ttl(Duration::from_secs(2)).wait(Duration::from_secs(8)),
                )
                .await
                {
                    Ok(Ok(g)) => {
                        tokio::time::sleep(rng.millis(0, 10)).await;
                        let _ = g.release().await;
                    }
                    Ok(Err(e)) => failures.lock().unwrap().push(format!("task {i}: {e}")),
                    Err(_) => failures.lock().unwrap().push(format!("task {i}: hung")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `b` holds part of what `a`'s request of kind `kind` (0: `acquire_many(3)` of 4 permits,
/// 1: a write beside a reader, 2: `lock_all` of four keys, one held, else: one of 2 permits,
/// both held) needs, with names under `tag`; also every key the request may take.
async fn blocked_request(
    a: &LockClient,
    b: &LockClient,
    tag: &str,
    kind: usize,
) -> (LockSetGuard, LockSetRequest, Vec<String>) {
    let hold = Duration::from_secs(20);
    let (sem, rw, one) = (
        format!("{tag}-sem"),
        format!("{tag}-rw"),
        format!("{tag}-one"),
    );
    let permits = |name: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("semaphore:{name}:{i}"))
            .chain([format!("semaphore:{name}:gate")])
            .collect()
    };
    match kind {
        0 => (
            b.semaphore(&sem, 4)
                .acquire_many(2)
                .ttl(hold)
                .await
                .unwrap(),
            a.semaphore(&sem, 4).acquire_many(3),
            permits(&sem, 4),
        ),
        1 => (
            b.rw_lock(&rw).read().ttl(hold).await.unwrap(),
            a.rw_lock(&rw).write(),
            (0..distlock::MAX_READERS)
                .map(|i| format!("rwlock:{rw}:read:{i}"))
                .chain([format!("rwlock:{rw}:write")])
                .collect(),
        ),
        2 => {
            let keys: Vec<String> = (1..=4).map(|i| format!("{tag}:{i}")).collect();
            (
                b.lock_all([keys[2].clone()]).ttl(hold).await.unwrap(),
                a.lock_all(keys.clone()),
                keys,
            )
        }
        _ => (
            b.semaphore(&one, 2)
                .acquire_many(2)
                .ttl(hold)
                .await
                .unwrap(),
            a.semaphore(&one, 2).acquire(),
            permits(&one, 2),
        ),
    }
}

/// Requests dropped mid-wait (at random moments) leave nothing taken once their background
/// give-backs land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_leave_nothing_taken() {
    for kind in [Kind::Memory, Kind::Redis] {
        let deployment = Deployment::start(kind, 2);
        let a = deployment.target(0).client(CMD_TIMEOUT).await;
        let b = deployment.target(1).client(CMD_TIMEOUT).await;
        let mut rng = Rng::new(7);
        let mut leftovers = Vec::new();
        for round in 0..24 {
            // b holds some, a asks for more than is free and is cancelled mid-wait; b then
            // lets go at a random moment around the cancel.
            let (blocker, req, keys) = blocked_request(&a, &b, "cx", round % 4).await;
            let cancel_at = rng.millis(1, 60);
            let release_at = rng.millis(0, 80);
            let req = req
                .ttl(Duration::from_secs(20))
                .wait(Duration::from_secs(5));
            let releaser = tokio::spawn(async move {
                tokio::time::sleep(release_at).await;
                blocker.release().await
            });
            let got = tokio::time::timeout(cancel_at, req).await;
            let _ = releaser.await;
            if let Ok(Ok(g)) = got {
                g.release().await.unwrap();
            }
            let left = drain_until_free(&a, &keys, Duration::from_secs(2)).await;
            if !left.is_empty() {
                leftovers.push(format!("{kind:?} round {round} (cancel {cancel_at:?}, release {release_at:?}): {left:?}"));
            }
        }
        assert!(leftovers.is_empty(), "{leftovers:#?}");
    }
}

/// A set refused because the node stopped answering mid-gather leaves nothing of the
/// requester's taken once the node answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_leave_nothing_taken() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let b = deployment.target(1).client(CMD_TIMEOUT).await;
    let mut leftovers = Vec::new();
    for round in 0..3 {
        let (blocker, req, keys) = blocked_request(&a, &b, "fx", round).await;
        let mine: Vec<String> = keys
            .iter()
            .filter(|k| !blocker.fencing_tokens().any(|(bk, _)| bk == k.as_str()))
            .cloned()
            .collect();
        let req = req
            .ttl(Duration::from_secs(20))
            .wait(Duration::from_secs(6))
            .label("requester");
        let task = tokio::spawn(async move { req.await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        deployment.pause(0);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        deployment.resume(0);
        let out = tokio::time::timeout(Duration::from_secs(10), task).await;
        let out = match out {
            Ok(Ok(r)) => r.map(|_| "granted").map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("task panicked: {e}")),
            Err(_) => Err("hung".into()),
        };
        eprintln!("round {round}: {out:?}");
        if out.is_ok() {
            continue; // granted after the pause: not what this checks
        }
        let left = drain_until_free(&a, &mine, Duration::from_secs(2)).await;
        if !left.is_empty() {
            leftovers.push(format!("round {round} ({out:?}): {left:?}"));
        }
        drop(blocker);
    }
    assert!(leftovers.is_empty(), "{leftovers:#?}");
}

/// Waiting across a pause longer than the wait: returns within wait + a command timeout + 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_across_a_pause_keep_their_deadline() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let a = deployment.target(0).client(CMD_TIMEOUT).await;
    let b = deployment.target(1).client(CMD_TIMEOUT).await;
    let _s = b
        .semaphore("pw-sem", 3)
        .acquire_many(3)
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let _r = b
        .rw_lock("pw-rw")
        .read()
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let _k = b.lock("pw:2").ttl(Duration::from_secs(30)).await.unwrap();
    let wait = Duration::from_secs(1);
    let reqs: Vec<(&str, LockSetRequest)> = vec![
        ("acquire", a.semaphore("pw-sem", 3).acquire()),
        ("acquire_many", a.semaphore("pw-sem", 3).acquire_many(2)),
        ("read", a.rw_lock("pw-rw2").read()),
        ("write", a.rw_lock("pw-rw").write()),
        ("lock_all", a.lock_all(["pw:1", "pw:2", "pw:3"])),
    ];
    let mut tasks = Vec::new();
    for (what, req) in reqs {
        let req = req.wait(wait);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(15), req).await;
            (
                what,
                t0.elapsed(),
                out.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    deployment.pause(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    deployment.resume(0);
    let mut late = Vec::new();
    for t in tasks {
        let (what, took, out) = t.await.unwrap();
        eprintln!("{what}: {out:?} after {took:?}");
        if took > wait + CMD_TIMEOUT + Duration::from_secs(2) {
            late.push(format!("{what}: {out:?} after {took:?}"));
        }
    }
    assert!(late.is_empty(), "{late:#?}");
}

/// A stall (node paused) while a set waits: the set must give up within its wait plus one
/// command timeout (what one lock needs: the attempt in flight) plus 1 s; its give-backs
/// must not each add another command timeout in the foreground. Default command timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_backs_during_a_stall_do_not_stretch_the_wait() {
    let deployment = Deployment::start(Kind::Redis, 2);
    let cmd = distlock::DEFAULT_COMMAND_TIMEOUT;
    let a = deployment.target(0).client(cmd).await;
    let b = deployment.target(1).client(cmd).await;
    let _s = b
        .semaphore("gs-sem", 3)
        .acquire()
        .ttl(Duration::from_secs(60))
        .await
        .unwrap();
    let _s2 = b
        .semaphore("gs-sem2", 3)
        .acquire_many(2)
        .ttl(Duration::from_secs(60))
        .await
        .unwrap();
    let _r = b
        .rw_lock("gs-rw")
        .read()
        .ttl(Duration::from_secs(60))
        .await
        .unwrap();
    let _k = b.lock("gs:3").ttl(Duration::from_secs(60)).await.unwrap();
    let _p = b
        .lock("gs:plain")
        .ttl(Duration::from_secs(60))
        .await
        .unwrap();
    let wait = Duration::from_secs(1);
    let reqs: Vec<(&str, LockSetRequest)> = vec![
        (
            "acquire_many(3) of 3, one held",
            a.semaphore("gs-sem", 3).acquire_many(3),
        ),
        (
            "acquire_many(2) of 3, two held",
            a.semaphore("gs-sem2", 3).acquire_many(2),
        ),
        ("write, one reader in", a.rw_lock("gs-rw").write()),
        (
            "lock_all, last key held",
            a.lock_all(["gs:1", "gs:2", "gs:3"]),
        ),
    ];
    let mut tasks = Vec::new();
    for (what, req) in reqs {
        let req = req.ttl(Duration::from_secs(60)).wait(wait);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(15), req).await;
            (
                what,
                t0.elapsed(),
                out.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            )
        }));
    }
    let plain = tokio::spawn({
        let a = a.clone();
        async move {
            let t0 = Instant::now();
            let out = a
                .lock("gs:plain")
                .ttl(Duration::from_secs(60))
                .wait(wait)
                .await;
            (
                "plain lock",
                t0.elapsed(),
                out.map(|_| ()).map_err(|e| e.to_string()),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    deployment.pause(0);
    tokio::time::sleep(Duration::from_secs(9)).await;
    deployment.resume(0);
    let (what, took, out) = plain.await.unwrap();
    eprintln!("{what}: {out:?} after {took:?}");
    let mut late = Vec::new();
    for t in tasks {
        let (what, took, out) = t.await.unwrap();
        eprintln!("{what}: {out:?} after {took:?}");
        if took > wait + cmd + Duration::from_secs(1) {
            late.push(format!(
                "{what}: {out:?} after {took:?} (wait {wait:?}, command timeout {cmd:?})"
            ));
        }
    }
    assert!(late.is_empty(), "{late:#?}");
}

// ---------------------------------------------------------------------------------------
// Category 3: odd inputs and secrets.
// ---------------------------------------------------------------------------------------

async fn odd_inputs_on(client: &LockClient) -> Vec<String> {
    let mut bad = Vec::new();
    let mut expect_invalid = |what: &str, r: Result<LockSetGuard, LockError>| match r {
        Err(
            LockError::InvalidCount { .. }
            | LockError::InvalidKey { .. }
            | LockError::InvalidDuration { .. },
        ) => {}
        other => bad.push(format!("{what}: {:?}", other.map(|g| format!("{g:?}")))),
    };
    expect_invalid(
        "permits usize::MAX",
        client.semaphore("o", usize::MAX).acquire().await,
    );
    expect_invalid(
        "acquire_many(0)",
        client.semaphore("o", 3).acquire_many(0).await,
    );
    expect_invalid(
        "acquire_many(MAX)",
        client.semaphore("o", 3).acquire_many(usize::MAX).await,
    );
    expect_invalid("zero permits", client.semaphore("o", 0).acquire().await);
    expect_invalid(
        "empty iterator",
        client.lock_all(std::iter::empty::<String>()).await,
    );
    expect_invalid(
        "1025 keys",
        client
            .lock_all((0..=distlock::MAX_KEYS).map(|i| format!("o:{i}")))
            .await,
    );
    expect_invalid(
        "ttl zero",
        client.lock_all(["o:z"]).ttl(Duration::ZERO).await,
    );
    expect_invalid(
        "ttl MAX",
        client.semaphore("o", 2).acquire().ttl(Duration::MAX).await,
    );
    expect_invalid(
        "write ttl MAX",
        client.rw_lock("o").write().ttl(Duration::MAX).await,
    );
    let long = "x".repeat(distlock::MAX_KEY_LEN);
    expect_invalid(
        "semaphore at MAX_KEY_LEN",
        client.semaphore(long.clone(), 2).acquire_many(2).await,
    );
    expect_invalid(
        "rw_lock at MAX_KEY_LEN read",
        client.rw_lock(long.clone()).read().await,
    );
    expect_invalid(
        "rw_lock at MAX_KEY_LEN write",
        client.rw_lock(long.clone()).write().await,
    );
    if let Ok(h) = client.semaphore(long.clone(), 2).holders().await {
        bad.push(format!("holders of an over-long semaphore: {h:?}"));
    }
    // Fine inputs that must work.
    let mut expect_ok = |what: &str, r: Result<LockSetGuard, LockError>| -> Option<LockSetGuard> {
        match r {
            Ok(g) => Some(g),
            Err(e) => {
                bad.push(format!("{what}: {e:?}"));
                None
            }
        }
    };
    let guards = vec![
        expect_ok(
            "1025 duplicates of one key",
            client.lock_all(std::iter::repeat_n("o:dup", 1025)).await,
        ),
        expect_ok(
            "unicode semaphore",
            client.semaphore("σημαφόρος:🚦", 2).acquire().await,
        ),
        expect_ok("unicode rwlock", client.rw_lock("読み:書き").write().await),
        expect_ok("colon names", client.rw_lock("a:read:1").write().await),
        expect_ok(
            "rwlock named like a write key",
            client.rw_lock("a:write").write().await,
        ),
        expect_ok(
            "semaphore named like a gate",
            client.semaphore("g:gate", 2).acquire_many(2).await,
        ),
        expect_ok(
            "wait MAX on free",
            client
                .semaphore("o-free", 2)
                .acquire_many(2)
                .wait(Duration::MAX)
                .await,
        ),
        expect_ok(
            "wait 1ns",
            client
                .lock_all(["o:n1", "o:n2"])
                .wait(Duration::from_nanos(1))
                .await,
        ),
        expect_ok(
            "1024 keys",
            client
                .lock_all((0..distlock::MAX_KEYS).map(|i| format!("o:k{i}")))
                .ttl(Duration::from_secs(10))
                .await,
        ),
        expect_ok(
            "1024 permits at once",
            client
                .semaphore("o-wide", distlock::MAX_PERMITS)
                .acquire_many(distlock::MAX_PERMITS)
                .ttl(Duration::from_secs(10))
                .await,
        ),
    ];
    // The rw lock "a" is unaffected by rw locks "a:read:1" and "a:write".
    match client.rw_lock("a").write().await {
        Ok(g) => drop(g),
        Err(e) => bad.push(format!(
            "rw_lock a blocked by rw_lock a:read:1 / a:write: {e}"
        )),
    }
    match client.semaphore("g", 1).acquire().await {
        Ok(g) => drop(g),
        Err(e) => bad.push(format!("semaphore g blocked by semaphore g:gate: {e}")),
    }
    for g in guards.into_iter().flatten() {
        let _ = g.extend(Duration::ZERO).await;
        let _ = g.extend(Duration::MAX).await;
        let _ = g.remaining();
        let _ = format!("{g:?}");
        if let Err(e) = g.release().await {
            bad.push(format!("release: {e}"));
        }
    }
    // A huge wait on a busy set, cancelled.
    let held = client.semaphore("o-busy", 1).acquire().await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        client.semaphore("o-busy", 1).acquire().wait(Duration::MAX),
    )
    .await;
    if r.is_ok() {
        bad.push(format!("wait MAX on a busy permit returned: {r:?}"));
    }
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        client
            .semaphore("o-busy", 1)
            .acquire()
            .wait(Duration::from_secs(u64::MAX / 4)),
    )
    .await;
    if r.is_ok() {
        bad.push(format!("huge wait on a busy permit returned: {r:?}"));
    }
    held.release().await.unwrap();
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_inputs_neither_panic_nor_misbehave() {
    let mut bad = Vec::new();
    for kind in [Kind::Memory, Kind::Redis] {
        let deployment = Deployment::start(kind, 1);
        let client = deployment.target(0).client(Duration::from_secs(2)).await;
        for b in odd_inputs_on(&client).await {
            bad.push(format!("{kind:?}: {b}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_in_errors_or_debug() {
    const SECRET: &str = "hunter2";
    let mut server = RedisServer::start_with(&["--requirepass", SECRET]);
    let port = server.port();
    let mut shown = Vec::new();
    let mut check = |what: &str, text: String| {
        if text.contains(SECRET) {
            shown.push(format!("{what}: {text}"));
        }
    };
    // Wrong user/password and nobody listening, at build time.
    for url in [
        format!("redis://:{SECRET}x@127.0.0.1:{port}"),
        format!(
            "redis://default:{SECRET}@127.0.0.1:{}",
            distlock_tests::free_port()
        ),
        format!("redis://:{SECRET}@127.0.0.1:{port}/99999"),
        format!("redis://:{SECRET}@[::1:{port}"),
    ] {
        match LockClient::builder()
            .url(url.clone())
            .command_timeout(Duration::from_millis(500))
            .build()
            .await
        {
            Err(e) => {
                check("build error Display", e.to_string());
                check("build error Debug", format!("{e:?}"));
            }
            Ok(c) => {
                check("client Debug", format!("{c:?}"));
                if let Err(e) = c.lock_all(["s:a", "s:b"]).await {
                    check("lock_all Display", e.to_string());
                    check("lock_all Debug", format!("{e:?}"));
                }
            }
        }
    }
    let url = format!("redis://:{SECRET}@127.0.0.1:{port}");
    let client = LockClient::builder()
        .url(url)
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("the right password");
    check("client Debug", format!("{client:?}"));
    check("semaphore Debug", format!("{:?}", client.semaphore("s", 2)));
    check("rw_lock Debug", format!("{:?}", client.rw_lock("r")));
    check(
        "request Debug",
        format!("{:?}", client.lock_all(["a"]).wait(Duration::from_secs(1))),
    );
    let g = client.semaphore("s", 2).acquire().await.unwrap();
    check("guard Debug", format!("{g:?}"));
    server.kill();
    let reqs: Vec<LockSetRequest> = vec![
        client.semaphore("s", 2).acquire(),
        client
            .semaphore("s", 2)
            .acquire_many(2)
            .wait(Duration::from_millis(500)),
        client.rw_lock("r").read().wait(Duration::from_millis(500)),
        client.rw_lock("r").write(),
        client
            .lock_all(["a", "b", "c"])
            .wait(Duration::from_millis(500)),
    ];
    for req in reqs {
        if let Err(e) = req.await {
            check("request error Display", e.to_string());
            check("request error Debug", format!("{e:?}"));
        }
    }
    if let Err(e) = client.semaphore("s", 2).holders().await {
        check("holders error", format!("{e} {e:?}"));
    }
    if let Err(e) = g.extend(Duration::from_secs(5)).await {
        check("extend error", format!("{e} {e:?}"));
    }
    if let Err(e) = g.release().await {
        check("release error", format!("{e} {e:?}"));
    }
    assert!(shown.is_empty(), "{shown:#?}");
}
