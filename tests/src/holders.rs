//! Support for the Redlock attack tests (`attack11`, `attack12`): nodes and clients, raw
//! reads of what each node stores, and holders that take, extend and let go of random keys
//! while a [`HolderLedger`] checks that no two of them believe they hold one key at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockGuard};

use crate::RedisServer;
use crate::fuzz::rng::Rng;

/// `n` redis-servers whose boot markers say they kept their data for an hour (so they vote
/// at once).
#[must_use]
pub fn redlock_nodes(n: usize) -> Vec<RedisServer> {
    (0..n)
        .map(|_| {
            let s = RedisServer::start();
            s.kept_data_for_an_hour();
            s
        })
        .collect()
}

/// A Redlock client over `urls`, its leases at most `quarantine` long.
///
/// # Panics
///
/// When the client cannot be built.
pub async fn redlock_client(
    urls: Vec<String>,
    quarantine: Duration,
    timeout: Duration,
) -> LockClient {
    LockClient::builder()
        .redlock(urls)
        .redlock_quarantine(quarantine)
        .default_ttl(quarantine)
        .command_timeout(timeout)
        .build()
        .await
        .expect("a Redlock client")
}

/// The raw value of `key` on `server` (`None` when missing or unreachable).
#[must_use]
pub fn raw(server: &RedisServer, key: &str) -> Option<String> {
    let mut conn = server.conn();
    redis::cmd("GET").arg(key).query(&mut conn).ok().flatten()
}

/// `PTTL key` on `server`.
#[must_use]
pub fn pttl(server: &RedisServer, key: &str) -> i64 {
    server.cmd(&["PTTL", key])
}

/// The token part of a stored lock value (state byte + 32 hex).
///
/// # Panics
///
/// When `value` is shorter than 33 bytes.
#[must_use]
pub fn token_of(value: &str) -> &str {
    &value[1..33]
}

/// Whether `value` is a lock held (or waited on) by `token`.
#[must_use]
pub fn holds(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| {
        v.len() > 49 && (v.starts_with('H') || v.starts_with('W')) && token_of(v) == token
    })
}

/// Who believes it holds each key, the largest fence handed out per key, and what broke.
#[derive(Default, Debug)]
pub struct HolderLedger {
    inside: HashMap<String, Vec<(usize, Arc<LockGuard>)>>,
    fences: HashMap<String, u64>,
    violations: Vec<String>,
}

impl HolderLedger {
    /// What broke: two holders believing at once, a fence not above the last one, an
    /// extension answered Ok after its lease was over.
    #[must_use]
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Holder `who` took `key` with `guard`: nobody else may still believe it holds it, and
    /// the fence must be above every earlier one.
    pub fn enter(&mut self, key: &str, who: usize, guard: Arc<LockGuard>, t0: Instant) {
        let fence = guard.fencing_token();
        let now = t0.elapsed();
        let others: Vec<String> = self
            .inside
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, g)| g.is_held())
            .map(|(w, g)| format!("worker {w} (fence {})", g.fencing_token()))
            .collect();
        if !others.is_empty() {
            self.violations.push(format!(
                "{now:?}: worker {who} took {key} (fence {fence}) while {others:?} still believe they hold it"
            ));
        }
        let last = self.fences.get(key).copied().unwrap_or(0);
        if fence <= last {
            self.violations.push(format!(
                "{now:?}: worker {who} took {key} with fence {fence}, not above {last}"
            ));
        }
        self.fences.insert(key.to_owned(), fence.max(last));
        self.inside
            .entry(key.to_owned())
            .or_default()
            .push((who, guard));
    }

    /// `guard` lets go of `key`.
    pub fn leave(&mut self, key: &str, guard: &Arc<LockGuard>) {
        if let Some(v) = self.inside.get_mut(key) {
            v.retain(|(_, g)| !Arc::ptr_eq(g, guard));
        }
    }
}

/// How a [`holder`] behaves, in milliseconds and percent chances.
#[derive(Clone, Copy, Debug)]
pub struct HolderTerms {
    /// The lease of each take.
    pub ttl: (u64, u64),
    /// The chance that the watchdog renews it.
    pub watchdog: u64,
    /// The chance, every 10–120 ms of a hold, of an extension.
    pub extend: u64,
    /// The extension's lease.
    pub extend_ttl: (u64, u64),
    /// The chance that an extension is given up after 0–20 ms.
    pub cut: u64,
}

/// When a [`holder`] runs and how it draws: its seed, the storm's start and length, its
/// terms.
#[derive(Clone, Copy, Debug)]
pub struct HolderPlan {
    /// The storm's seed (each holder derives its own from it).
    pub seed: u64,
    /// When the storm started.
    pub t0: Instant,
    /// How long after `t0` holders keep taking keys.
    pub run: Duration,
    /// How they behave.
    pub terms: HolderTerms,
}

/// Holder `who`: until `run` after `t0`, takes a random key of `keys` (waiting 0–800 ms),
/// holds it 20–1500 ms with extensions, and lets go (`release()` seven times in ten, else a
/// drop), recording each take in `ledger`. What hung (beyond the wait plus 3–4 s) is
/// returned; an extension answered Ok after its lease was over goes in the ledger.
///
/// # Panics
///
/// When the ledger's lock is poisoned.
pub async fn holder(
    who: usize,
    client: Arc<LockClient>,
    keys: Vec<String>,
    ledger: Arc<Mutex<HolderLedger>>,
    plan: HolderPlan,
) -> Vec<String> {
    let HolderPlan {
        seed,
        t0,
        run,
        terms,
    } = plan;
    let mut rng = Rng::derive(seed, &[who as u64]);
    let mut problems = Vec::new();
    while t0.elapsed() < run {
        let key = keys[rng.below(keys.len())].clone();
        let wait = rng.millis(0, 800);
        let attempt = tokio::time::timeout(
            wait + Duration::from_secs(3),
            client
                .lock(key.as_str())
                .ttl(rng.millis(terms.ttl.0, terms.ttl.1))
                .watchdog(rng.chance(terms.watchdog))
                .wait(wait),
        )
        .await;
        let guard = match attempt {
            Err(_) => {
                problems.push(format!(
                    "{:?}: worker {who}: lock({key}) with wait {wait:?} hung",
                    t0.elapsed()
                ));
                continue;
            }
            Ok(Err(_)) => {
                tokio::time::sleep(rng.millis(5, 50)).await;
                continue;
            }
            Ok(Ok(g)) => Arc::new(g),
        };
        ledger.lock().unwrap().enter(&key, who, guard.clone(), t0);
        let until = Instant::now() + rng.millis(20, 1500);
        while Instant::now() < until && guard.is_held() {
            if rng.chance(terms.extend) {
                let to = rng.millis(terms.extend_ttl.0, terms.extend_ttl.1);
                let sent = Instant::now();
                let ext = guard.extend(to);
                if rng.chance(terms.cut) {
                    let _ = tokio::time::timeout(rng.millis(0, 20), ext).await;
                } else {
                    match tokio::time::timeout(Duration::from_secs(4), ext).await {
                        Ok(Ok(())) if sent.elapsed() >= to => {
                            ledger.lock().unwrap().violations.push(format!(
                                "{:?}: worker {who}: extend({key}, {to:?}) Ok after {:?}",
                                t0.elapsed(),
                                sent.elapsed()
                            ));
                        }
                        Ok(_) => {}
                        Err(_) => problems.push(format!(
                            "{:?}: worker {who}: extend({key}) hung",
                            t0.elapsed()
                        )),
                    }
                }
            }
            tokio::time::sleep(rng.millis(10, 120)).await;
        }
        ledger.lock().unwrap().leave(&key, &guard);
        let Ok(guard) = Arc::try_unwrap(guard) else {
            continue;
        };
        if rng.chance(70) {
            if tokio::time::timeout(Duration::from_secs(4), guard.release())
                .await
                .is_err()
            {
                problems.push(format!(
                    "{:?}: worker {who}: release({key}) hung",
                    t0.elapsed()
                ));
            }
        } else {
            drop(guard);
        }
        tokio::time::sleep(rng.millis(0, 30)).await;
    }
    problems
}

/// Holders `whos` (each a [`holder`]) on `client`, together; what hung, once all ended.
///
/// # Panics
///
/// When a holder panicked.
pub async fn holders(
    whos: std::ops::Range<usize>,
    client: Arc<LockClient>,
    keys: Vec<String>,
    ledger: Arc<Mutex<HolderLedger>>,
    plan: HolderPlan,
) -> Vec<String> {
    let running = whos.map(|who| {
        tokio::spawn(holder(
            who,
            client.clone(),
            keys.clone(),
            ledger.clone(),
            plan,
        ))
    });
    let mut problems = Vec::new();
    for done in futures_util::future::join_all(running).await {
        problems.extend(done.expect("a holder panicked"));
    }
    problems
}

/// [`holders`] on a Redlock client of their own (`urls`, leases up to `quarantine`, a
/// 400 ms command timeout), on a thread of its own with a current-thread runtime: a second
/// process, as far as the library can tell.
///
/// # Panics
///
/// The thread panics (`join` returns it) when the runtime cannot be built or a holder
/// panicked.
#[must_use]
pub fn holders_on_their_own_runtime(
    whos: std::ops::Range<usize>,
    urls: Vec<String>,
    quarantine: Duration,
    keys: Vec<String>,
    ledger: Arc<Mutex<HolderLedger>>,
    plan: HolderPlan,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let client = redlock_client(urls, quarantine, Duration::from_millis(400)).await;
            holders(whos, Arc::new(client), keys, ledger, plan).await
        })
    })
}
