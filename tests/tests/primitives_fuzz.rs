//! A seeded, randomized test of the primitives made of several locks (semaphores, read/write
//! locks, `lock_all`) with a checker, on every deployment.
//!
//! Tasks on two clients (each through its own fault proxies) draw operations from the seed:
//! one or several permits of a 3-permit semaphore, a read or a write hold of one read/write
//! lock, `lock_all` over a random subset of five keys, and plain `lock`s on those keys; with
//! random leases, waits, watchdog on or off, cancellation mid-acquire, `extend`, release or
//! drop. A nemesis drawn from the same seed pauses servers (`SIGSTOP`), slows and cuts
//! connections. Every hold records the interval its holder believed it held (from the
//! acquire's answer to the last moment `is_held()` said so, all on this process's clock).
//!
//! The checker then asserts, at every instant:
//! - the semaphore's holders together hold at most 3 permits;
//! - a writer holds alone (no reader, no other writer);
//! - each of the five keys has at most one holder (sets and plain locks);
//! - no acquire outlived its wait by more than one command timeout plus a margin;
//! - once everything is released and the longest lease has run out, nothing is left held.
//!
//! Environment: `PRIMITIVES_FUZZ_SEED=<n>` replays one seed (the schedule comes from it;
//! timing varies), `PRIMITIVES_FUZZ_SEEDS=<n>` runs `n` fresh seeds (printed),
//! `PRIMITIVES_FUZZ_SECONDS=<n>` sets the seconds of operations per seed (default 6),
//! `FUZZ_DEPLOYMENT=<name>` runs only that deployment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{LockClient, LockError, LockSetGuard};
use distlock_tests::fuzz::deploy::{Deployment, Kind, QUARANTINE};
use distlock_tests::fuzz::rng::{Rng, seeds_from_env};
use tokio::time::Instant;

const PERMITS: usize = 3;
const KEYS: usize = 5;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const TASKS_PER_CLIENT: u64 = 4;

/// What a hold was of.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    Permits(usize),
    Read,
    Write,
    /// Key indices.
    Keys(Vec<usize>),
}

/// A believed-held interval, in ms since the run began.
#[derive(Debug, Clone)]
struct Interval {
    what: Held,
    task: u64,
    op: u64,
    from: f64,
    to: f64,
}

#[derive(Default)]
struct Ledger {
    holds: Vec<Interval>,
    /// Acquires that returned later than their wait allowed: (task, op, wait, took).
    late: Vec<(u64, u64, Duration, Duration)>,
    errors: Vec<String>,
    ops: u64,
}

struct Run {
    t0: Instant,
    end: Instant,
    seed: u64,
    ledger: Mutex<Ledger>,
}

impl Run {
    fn ms(&self, at: Instant) -> f64 {
        at.duration_since(self.t0).as_secs_f64() * 1000.0
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn key(i: usize) -> String {
    format!("pf:{i}")
}

async fn task(run: Arc<Run>, client: LockClient, id: u64, max_ttl: Duration) {
    let mut rng = Rng::derive(run.seed, &[1, id]);
    let mut op = 0;
    while Instant::now() < run.end {
        op += 1;
        let what = match rng.weighted(&[3, 2, 4, 1, 3, 2]) {
            0 => Held::Permits(1),
            1 => Held::Permits(rng.range(2, PERMITS as u64) as usize),
            2 => Held::Read,
            3 => Held::Write,
            4 => {
                let mut keys: Vec<usize> = (0..KEYS).filter(|_| rng.chance(40)).collect();
                if keys.is_empty() {
                    keys.push(rng.below(KEYS));
                }
                Held::Keys(keys)
            }
            _ => Held::Keys(vec![rng.below(KEYS)]),
        };
        let plain = matches!(&what, Held::Keys(k) if k.len() == 1) && rng.chance(50);
        let ttl = Duration::from_millis(*[300u64, 700, 1500, 3000].get(rng.below(4)).unwrap())
            .min(max_ttl);
        let wait = *[0u64, 0, 50, 400, 1500]
            .get(rng.below(5))
            .map(|ms| Duration::from_millis(*ms))
            .as_ref()
            .unwrap();
        let watchdog = rng.chance(80);
        let cancel_after = rng.chance(10).then(|| rng.millis(0, 300));
        let hold_for = rng.millis(0, 250);
        let extend = rng.chance(15).then(|| rng.millis(300, 1500).min(max_ttl));
        let drop_it = rng.chance(30);

        let sent = Instant::now();
        let acquire = acquire(&client, &what, plain, ttl, wait, watchdog);
        let acquired = match cancel_after {
            Some(after) => match tokio::time::timeout(after, acquire).await {
                Ok(answer) => answer,
                Err(_) => continue, // cancelled mid-acquire
            },
            None => acquire.await,
        };
        let took = sent.elapsed();
        let answered = Instant::now();
        {
            let mut ledger = run.ledger.lock().unwrap();
            ledger.ops += 1;
            if took > wait + COMMAND_TIMEOUT * 3 + Duration::from_secs(1) {
                ledger.late.push((id, op, wait, took));
            }
            if let Err(err) = &acquired
                && !err.is_busy()
                && !matches!(err, LockError::Backend { .. })
            {
                ledger
                    .errors
                    .push(format!("task {id} op {op} {what:?}: {err}"));
            }
        }
        let Ok(guard) = acquired else { continue };
        if !guard.is_held() {
            continue;
        }
        let mut last_held = answered;
        let until = Instant::now() + hold_for;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20).min(hold_for)).await;
            if !guard.is_held() {
                break;
            }
            last_held = Instant::now();
        }
        if let Some(longer) = extend {
            let _ = guard.extend(longer).await;
        }
        if guard.is_held() {
            last_held = Instant::now();
        }
        run.ledger.lock().unwrap().holds.push(Interval {
            what,
            task: id,
            op,
            from: run.ms(answered),
            to: run.ms(last_held),
        });
        if drop_it {
            drop(guard);
        } else {
            let _ = guard.release().await;
        }
    }
}

/// One plain `lock` stands in for a one-key set, so that sets and plain locks meet.
enum Guard {
    Set(LockSetGuard),
    One(distlock::LockGuard),
}

impl Guard {
    fn is_held(&self) -> bool {
        match self {
            Guard::Set(g) => g.is_held(),
            Guard::One(g) => g.is_held(),
        }
    }

    async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        match self {
            Guard::Set(g) => g.extend(ttl).await,
            Guard::One(g) => g.extend(ttl).await,
        }
    }

    async fn release(self) -> Result<(), LockError> {
        match self {
            Guard::Set(g) => g.release().await,
            Guard::One(g) => g.release().await,
        }
    }
}

async fn acquire(
    client: &LockClient,
    what: &Held,
    plain: bool,
    ttl: Duration,
    wait: Duration,
    watchdog: bool,
) -> Result<Guard, LockError> {
    let request = match what {
        Held::Permits(n) => client.semaphore("pf-sem", PERMITS).acquire_many(*n),
        Held::Read => client.rw_lock("pf-rw").read(),
        Held::Write => client.rw_lock("pf-rw").write(),
        Held::Keys(keys) if plain => {
            return client
                .lock(key(keys[0]))
                .ttl(ttl)
                .wait(wait)
                .watchdog(watchdog)
                .await
                .map(Guard::One);
        }
        Held::Keys(keys) => client.lock_all(keys.iter().map(|&k| key(k))),
    };
    request
        .ttl(ttl)
        .wait(wait)
        .watchdog(watchdog)
        .await
        .map(Guard::Set)
}

/// The nemesis: faults drawn from the seed until the end, each healed before the next.
async fn nemesis(run: Arc<Run>, deployment: Arc<Deployment>) {
    if deployment.kind == Kind::Memory {
        return;
    }
    let mut rng = Rng::derive(run.seed, &[2]);
    // Long pauses of a Sentinel primary or a Cluster node start failovers, which may forget
    // locks (see the guarantees): those stay short here.
    let longest = match deployment.kind {
        Kind::Sentinel | Kind::Cluster => 400,
        _ => 1500,
    };
    while Instant::now() < run.end {
        tokio::time::sleep(rng.millis(200, 1200)).await;
        let node = rng.below(deployment.node_count().min(3));
        let worker = rng.below(2);
        match rng.weighted(&[3, 2, 2]) {
            0 => {
                let pause = rng.millis(50, longest);
                deployment.pause(node);
                tokio::time::sleep(pause).await;
                deployment.resume(node);
            }
            1 => {
                if let Some(proxy) = deployment.proxy(worker, node) {
                    proxy.set_latency(rng.millis(1, 40));
                    tokio::time::sleep(rng.millis(100, 800)).await;
                    proxy.set_latency(Duration::ZERO);
                }
            }
            _ => {
                if let Some(proxy) = deployment.proxy(worker, node) {
                    proxy.cut_all();
                }
            }
        }
    }
}

fn who(now: &[&Interval]) -> String {
    now.iter()
        .map(|o| {
            format!(
                "task {} op {} {:?} {:.1}..{:.1} ms",
                o.task, o.op, o.what, o.from, o.to
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every overlap the rules forbid, as messages.
fn violations(holds: &[Interval]) -> Vec<String> {
    let mut found = Vec::new();
    // Sweep the instants where a hold begins: what holds then is what overlaps there.
    for h in holds {
        let at = h.from;
        let now: Vec<&Interval> = holds
            .iter()
            .filter(|o| o.from <= at && at <= o.to)
            .collect();
        let permits: usize = now
            .iter()
            .map(|o| match o.what {
                Held::Permits(n) => n,
                _ => 0,
            })
            .sum();
        if permits > PERMITS {
            found.push(format!(
                "{permits} permits held at {at:.1} ms: {}",
                who(&now)
            ));
        }
        let readers = now.iter().filter(|o| o.what == Held::Read).count();
        let writers = now.iter().filter(|o| o.what == Held::Write).count();
        if writers > 1 || (writers == 1 && readers > 0) {
            found.push(format!(
                "{writers} writers and {readers} readers at {at:.1} ms: {now:?}"
            ));
        }
        for k in 0..KEYS {
            let holders = now
                .iter()
                .filter(|o| matches!(&o.what, Held::Keys(ks) if ks.contains(&k)))
                .count();
            if holders > 1 {
                found.push(format!(
                    "{holders} holders of key {k} at {at:.1} ms: {now:?}"
                ));
            }
        }
    }
    found
}

async fn run_seed(kind: Kind, seed: u64, seconds: Duration) {
    let deployment = Arc::new(tokio::task::block_in_place(|| Deployment::start(kind, 2)));
    let a = deployment.target(0).client(COMMAND_TIMEOUT).await;
    let b = deployment.target(1).client(COMMAND_TIMEOUT).await;
    let max_ttl = if kind == Kind::Redlock {
        // Nodes vote once they kept their data for the quarantine, counted from the boot
        // marker the first acquire leaves; no lease may outlast it.
        let _ = a.lock("warm-up").await;
        tokio::time::sleep(QUARANTINE + Duration::from_millis(200)).await;
        QUARANTINE
    } else {
        Duration::from_secs(3)
    };
    let t0 = Instant::now();
    let run = Arc::new(Run {
        t0,
        end: t0 + seconds,
        seed,
        ledger: Mutex::default(),
    });
    let mut tasks = Vec::new();
    for (c, client) in [a.clone(), b.clone()].into_iter().enumerate() {
        for t in 0..TASKS_PER_CLIENT {
            tasks.push(tokio::spawn(task(
                run.clone(),
                client.clone(),
                c as u64 * 100 + t,
                max_ttl,
            )));
        }
    }
    let faults = tokio::spawn(nemesis(run.clone(), deployment.clone()));
    let stuck_after = seconds + Duration::from_secs(20);
    for t in tasks {
        tokio::time::timeout(stuck_after, t)
            .await
            .unwrap_or_else(|_| panic!("seed {seed} on {}: a task hung", kind.name()))
            .expect("task");
    }
    faults.await.expect("nemesis");
    for proxy in deployment.all_proxies() {
        proxy.heal();
    }

    // Everything was released or dropped: once the longest lease ran out, nothing is held.
    let settle = Instant::now() + max_ttl + Duration::from_secs(3);
    let mut internal: Vec<String> = (0..KEYS).map(key).collect();
    internal.extend((0..PERMITS).map(|i| format!("semaphore:pf-sem:{i}")));
    internal.push("semaphore:pf-sem:gate".into());
    internal.push("rwlock:pf-rw:write".into());
    internal.extend((0..distlock::MAX_READERS).map(|i| format!("rwlock:pf-rw:read:{i}")));
    let mut left = internal.clone();
    while !left.is_empty() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut still = Vec::new();
        for k in &left {
            if !matches!(a.inspect(k).await, Ok(None)) {
                still.push(k.clone());
            }
        }
        left = still;
    }

    let ledger = run.ledger.lock().unwrap();
    let found = violations(&ledger.holds);
    println!(
        "primitives fuzz {} seed {seed}: {} acquires, {} holds, {} violations, {} late, {} errors",
        kind.name(),
        ledger.ops,
        ledger.holds.len(),
        found.len(),
        ledger.late.len(),
        ledger.errors.len()
    );
    let replay = format!(
        "replay: PRIMITIVES_FUZZ_SEED={seed} FUZZ_DEPLOYMENT={}",
        kind.name()
    );
    assert!(
        found.is_empty(),
        "seed {seed}: {:#?}\n{replay}",
        &found[..found.len().min(5)]
    );
    assert!(
        ledger.late.is_empty(),
        "seed {seed}: acquires outlived their wait: {:?}\n{replay}",
        ledger.late
    );
    assert!(
        ledger.errors.is_empty(),
        "seed {seed}: unexpected errors: {:?}\n{replay}",
        ledger.errors
    );
    assert!(
        left.is_empty(),
        "seed {seed}: still held after every holder let go: {left:?}\n{replay}"
    );
    assert!(
        ledger.holds.len() > 10,
        "seed {seed}: too few holds to check anything ({})\n{replay}",
        ledger.holds.len()
    );
}

fn fuzz(kind: Kind, ci_seeds: &[u64]) {
    if let Ok(only) = std::env::var("FUZZ_DEPLOYMENT")
        && only != kind.name()
    {
        eprintln!(
            "primitives fuzz {}: skipped (FUZZ_DEPLOYMENT={only})",
            kind.name()
        );
        return;
    }
    let seeds = seeds_from_env("PRIMITIVES_FUZZ_SEED", "PRIMITIVES_FUZZ_SEEDS", ci_seeds);
    let seconds = Duration::from_secs(env_u64("PRIMITIVES_FUZZ_SECONDS").unwrap_or(6));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    for seed in seeds {
        println!("primitives fuzz {} seed {seed}", kind.name());
        runtime.block_on(run_seed(kind, seed, seconds));
    }
}

#[test]
fn memory() {
    fuzz(Kind::Memory, &[11]);
}

#[test]
fn redis() {
    fuzz(Kind::Redis, &[12]);
}

#[test]
fn sentinel() {
    fuzz(Kind::Sentinel, &[13]);
}

#[test]
fn redlock() {
    fuzz(Kind::Redlock, &[14]);
}

#[test]
fn cluster() {
    fuzz(Kind::Cluster, &[15]);
}
