//! A fuzz worker: one lock client (as one process of an application would have) running a few
//! tasks that each draw random operations from the whole public API and record what they did
//! and believed in the history.
//!
//! Operations: `client.lock(k)` with a random lease (100 ms..2 s), wait (none, or up to
//! 1.5 s) and watchdog on or off, sometimes a minimum hold (`min_hold`, up to
//! [`MAX_MIN_HOLD`]) and a maximum one (`max_hold`), sometimes inside a
//! `tokio::time::timeout` that drops it mid-flight; while held, sleeps, fenced writes and
//! extensions shorter and longer than the lease, through the guard or its `HeldLock`; then
//! `release()`, `release_now()`, a dropped guard (keeping the minimum hold or, after
//! `keep_minimum_on_drop(false)`, not), or holding on until the lease runs out; a holder
//! that saw its lease end may keep the guard a while longer before letting go (a hung job,
//! what `max_hold` is for: the lock must be free meanwhile).
//! `#[distributed_lock]` calls with bodies that tick, write and extend through
//! `distlock::current()`, nested (re-entrant on the same key, and on another key), joined
//! siblings on one key, and calls through the default client (made on another runtime). A
//! poller looks at `is_held()` and `remaining()` every [`POLL`] and `lost()` is watched, so a
//! worker stops believing the moment it could know.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use distlock::{LockClient, LockError, LockGuard, MemoryStore};
use tokio::time::Instant;

use super::history::{
    Answer, Attempt, Begin, End, Event, Exit, Extend, Hold, Outcome, Sink, Through, Via, Write,
    now_us,
};
use super::rng::Rng;
use super::store::FencedStore;

/// How often a holder looks at `is_held()`.
pub const POLL: Duration = Duration::from_millis(5);

/// The longest lease a worker ever asks for (TTL or extension).
pub const MAX_LEASE: Duration = Duration::from_millis(2500);

/// The longest minimum hold a worker asks for: within [`MAX_LEASE`], so that the leak check
/// (which waits `MAX_LEASE` after the last worker) finds every kept lock gone, and below the
/// Redlock quarantine like every lease (a minimum hold becomes one).
pub const MAX_MIN_HOLD: Duration = Duration::from_millis(1500);

/// How much longer than its minimum hold (or 100 ms) a maximum hold is drawn, at most.
pub const MAX_HOLD_ABOVE: Duration = Duration::from_millis(2500);

const _: () = assert!(MAX_MIN_HOLD.as_millis() <= MAX_LEASE.as_millis());

/// Where the locks live, as a worker connects to them.
#[derive(Debug, Clone)]
pub enum Target {
    /// An in-process store shared by the workers of the test process.
    Memory(MemoryStore),
    /// One Redis server.
    Redis(String),
    /// A primary named `master` found through sentinels.
    Sentinel {
        /// The master's name.
        master: String,
        /// The sentinels' URLs.
        sentinels: Vec<String>,
    },
    /// Redlock over independent primaries.
    Redlock {
        /// The nodes' URLs.
        urls: Vec<String>,
        /// How long a node that lost its data is not counted.
        quarantine: Duration,
    },
    /// Redis Cluster.
    Cluster(Vec<String>),
}

impl Target {
    /// A new client (its own watchdog and connections), retried for a few seconds while the
    /// deployment is busy with a fault.
    ///
    /// # Panics
    ///
    /// When no client can be built within 10 s.
    pub async fn client(&self, command_timeout: Duration) -> LockClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let builder = LockClient::builder().command_timeout(command_timeout);
            let builder = match self {
                Target::Memory(store) => builder.memory(store.clone()),
                Target::Redis(url) => builder.url(url.clone()),
                Target::Sentinel { master, sentinels } => {
                    builder.sentinel(master.clone(), sentinels.clone())
                }
                Target::Redlock { urls, quarantine } => builder
                    .redlock(urls.clone())
                    .redlock_quarantine(*quarantine)
                    .default_ttl(*quarantine), // no lease may outlast the quarantine
                Target::Cluster(urls) => builder.cluster(urls.clone()),
            };
            match builder.build().await {
                Ok(client) => return client,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("fuzz worker: no client yet ({err}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("no lock client: {err}"),
            }
        }
    }

    /// The command-line form (see [`Target::from_args`]).
    ///
    /// # Panics
    ///
    /// For the in-process target, which has none.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Target::Memory(_) => panic!("an in-process target cannot be passed to a process"),
            Target::Redis(url) => vec!["target=redis".into(), format!("urls={url}")],
            Target::Sentinel { master, sentinels } => vec![
                "target=sentinel".into(),
                format!("master={master}"),
                format!("urls={}", sentinels.join(",")),
            ],
            Target::Redlock { urls, quarantine } => vec![
                "target=redlock".into(),
                format!("urls={}", urls.join(",")),
                format!("quarantine_ms={}", quarantine.as_millis()),
            ],
            Target::Cluster(urls) => {
                vec!["target=cluster".into(), format!("urls={}", urls.join(","))]
            }
        }
    }

    /// Reads [`Target::to_args`] back from `name=value` arguments.
    pub fn from_args(args: &std::collections::HashMap<String, String>) -> Option<Self> {
        let urls = || -> Vec<String> {
            args.get("urls")
                .map(|u| u.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        Some(match args.get("target")?.as_str() {
            "redis" => Target::Redis(urls().into_iter().next()?),
            "sentinel" => Target::Sentinel {
                master: args.get("master")?.clone(),
                sentinels: urls(),
            },
            "redlock" => Target::Redlock {
                urls: urls(),
                quarantine: Duration::from_millis(args.get("quarantine_ms")?.parse().ok()?),
            },
            "cluster" => Target::Cluster(urls()),
            _ => return None,
        })
    }
}

/// Makes a client the way an application that sets up on one runtime and serves on another
/// does: built on a short-lived runtime of its own, checked there by taking and releasing a
/// lock (`fuzz-startup`), and handed on once that runtime is gone. The worker then installs it
/// with `distlock::set_default_client` and uses it through `#[distributed_lock]`; its watchdog
/// has to keep renewing.
///
/// # Panics
///
/// When the thread or runtime cannot be started.
pub fn client_made_on_another_runtime(target: &Target, command_timeout: Duration) -> LockClient {
    let target = target.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a setup runtime");
        runtime.block_on(async {
            let client = target.client(command_timeout).await;
            if let Ok(guard) = client
                .lock("fuzz-startup")
                .ttl(Duration::from_secs(1))
                .await
            {
                let _ = guard.release().await;
            }
            client
        })
    })
    .join()
    .expect("the setup thread")
}

/// What one worker does.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Its number.
    pub id: u32,
    /// The run's seed (each task draws from its own stream of it).
    pub seed: u64,
    /// How long it starts new operations.
    pub run: Duration,
    /// The keys it locks (without prefix).
    pub keys: Vec<String>,
    /// How many concurrent tasks share its client.
    pub tasks: u32,
    /// Whether it also uses the default client (installed by whoever runs it).
    pub uses_default_client: bool,
}

/// One of the fixed `#[distributed_lock]` shapes (their arguments are compile-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `ttl = "250ms"`, no wait.
    Short,
    /// `ttl = "1s", wait = "800ms"`.
    Wait,
    /// `ttl = "400ms", wait = "1500ms"`.
    Long,
    /// Through the default client: `ttl = "300ms", wait = "500ms"`.
    Default,
}

impl Variant {
    fn ttl_ms(self) -> u64 {
        match self {
            Variant::Short => 250,
            Variant::Wait => 1000,
            Variant::Long => 400,
            Variant::Default => 300,
        }
    }

    fn wait_ms(self) -> u64 {
        match self {
            Variant::Short => 0,
            Variant::Wait => 800,
            Variant::Long => 1500,
            Variant::Default => 500,
        }
    }
}

/// How an operation asks for its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `client.lock(..)`.
    Lock,
    /// `client.lock(..)` inside a timeout that drops it.
    Timeout(Duration),
    /// One guarded call.
    Guarded(Variant),
    /// A guarded call whose body re-enters the same key and then locks another key.
    Nested,
    /// Two guarded calls on one key joined in one task.
    Joined(Variant),
    /// A guarded call through the default client.
    Default,
}

/// One step while holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Do nothing for a while.
    Sleep(Duration),
    /// A fenced write.
    Write,
    /// An extension to `d`, through the guard or its `HeldLock` (guarded bodies, which have
    /// no guard, always go through `distlock::current()`).
    Extend(Duration, Through),
}

/// How a plain hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `guard.release().await` (keeps a minimum hold).
    Release,
    /// `guard.release_now().await`.
    ReleaseNow,
    /// `drop(guard)` (keeps a minimum hold).
    Drop,
    /// `guard.keep_minimum_on_drop(false); drop(guard)`.
    DropNow,
    /// Wait for `lost()` (the lease runs out without the watchdog; with it, give up after a
    /// while and release).
    Expire,
}

/// One operation, drawn in full before it runs, so that the schedule depends on the seed alone
/// and not on what earlier operations returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpPlan {
    /// Index of the key.
    pub key: usize,
    /// Index of the key a nested call takes.
    pub other_key: usize,
    /// The lease.
    pub ttl: Duration,
    /// The wait.
    pub wait: Duration,
    /// Watchdog on or off.
    pub watchdog: bool,
    /// The minimum hold (`client.lock` only; zero is passed on and means none).
    pub min_hold: Option<Duration>,
    /// The maximum hold (`client.lock` only).
    pub max_hold: Option<Duration>,
    /// How the lock is asked for.
    pub style: Style,
    /// What happens while it is held.
    pub steps: Vec<Step>,
    /// How a plain hold ends.
    pub finish: Finish,
    /// How long a holder that saw its lease end keeps the guard before letting go.
    pub linger: Duration,
    /// A pause before the next operation.
    pub think: Duration,
}

impl OpPlan {
    /// Draws one operation over `keys` keys.
    pub fn draw(rng: &mut Rng, keys: usize, uses_default_client: bool) -> Self {
        let key = rng.below(keys);
        let other_key = rng.below(keys);
        let ttl = rng.millis(100, 2000);
        let wait = if rng.chance(35) {
            Duration::ZERO
        } else {
            rng.millis(0, 1500)
        };
        let watchdog = rng.chance(70);
        // Every value is drawn whether used or not, so the stream stays aligned.
        let min = rng.millis(0, ms(MAX_MIN_HOLD));
        let above = rng.millis(0, ms(MAX_HOLD_ABOVE));
        let (with_min, with_max, tight_max) = (rng.chance(30), rng.chance(35), rng.chance(20));
        let min_hold = with_min.then_some(min);
        // Never shorter than the minimum nor than 100 ms; sometimes exactly that.
        let floor = min_hold.unwrap_or_default().max(Duration::from_millis(100));
        let max_hold = with_max.then_some(if tight_max { floor } else { floor + above });
        let variants = [Variant::Short, Variant::Wait, Variant::Long];
        let variant = variants[rng.below(variants.len())];
        let timeout = rng.millis(1, 400);
        let style = match rng.weighted(&[45, 15, 15, 8, 7, 10]) {
            0 => Style::Lock,
            1 => Style::Timeout(timeout),
            2 => Style::Guarded(variant),
            3 => Style::Nested,
            4 => Style::Joined(if variant == Variant::Short {
                Variant::Wait
            } else {
                variant
            }),
            _ if uses_default_client => Style::Default,
            _ => Style::Guarded(variant),
        };
        let longest_sleep = (ttl.as_millis() as u64 * 3 / 2).clamp(20, 3000);
        let steps = (0..rng.range(1, 5))
            .map(|_| {
                let sleep = rng.millis(5, longest_sleep);
                let extend = rng.millis(100, MAX_LEASE.as_millis() as u64);
                let through = if rng.chance(50) {
                    Through::Guard
                } else {
                    Through::Held
                };
                match rng.weighted(&[45, 30, 25]) {
                    0 => Step::Sleep(sleep),
                    1 => Step::Write,
                    _ => Step::Extend(extend, through),
                }
            })
            .collect();
        let finish = match rng.weighted(&[42, 13, 22, 8, 15]) {
            0 => Finish::Release,
            1 => Finish::ReleaseNow,
            2 => Finish::Drop,
            3 => Finish::DropNow,
            _ => Finish::Expire,
        };
        let linger = rng.millis(50, 2000);
        let linger = if rng.chance(35) {
            linger
        } else {
            Duration::ZERO
        };
        let think = rng.millis(0, 50);
        Self {
            key,
            other_key,
            ttl,
            wait,
            watchdog,
            min_hold,
            max_hold,
            style,
            steps,
            finish,
            linger,
            think,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4)
}

fn outcome_of(err: &LockError) -> Outcome {
    if err.is_busy() {
        Outcome::Busy
    } else if err.is_lost() {
        Outcome::Lost
    } else if err.is_backend() {
        Outcome::Backend
    } else {
        Outcome::Other
    }
}

fn answer_of(result: &Result<(), LockError>) -> Answer {
    match result {
        Ok(()) => Answer::Ok,
        Err(err) if err.is_lost() => Answer::Lost,
        Err(_) => Answer::Error,
    }
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    spec: WorkerSpec,
    client: LockClient,
    store: FencedStore,
    sink: Sink,
    next_id: AtomicU64,
    until: Instant,
}

/// Runs a worker until its time is up and its tasks are done (or 10 s past that, when a task
/// hangs: the worker then records how many were stuck).
pub async fn run_worker(spec: WorkerSpec, client: LockClient, store: FencedStore, sink: Sink) {
    let until = Instant::now() + spec.run;
    let tasks = spec.tasks;
    let worker = Arc::new(Worker {
        spec,
        client,
        store,
        sink,
        next_id: AtomicU64::new(1),
        until,
    });
    let handles: Vec<_> = (0..tasks)
        .map(|task| tokio::spawn(worker.clone().task(task)))
        .collect();
    let give_up = until + Duration::from_secs(10);
    let mut stuck = 0;
    for handle in handles {
        match tokio::time::timeout_at(give_up, handle).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("a worker task failed: {err}"),
            Err(_) => stuck += 1,
        }
    }
    worker.sink.record(Event::Exit(Exit {
        worker: worker.spec.id,
        at: now_us(),
        stuck,
    }));
}

impl Worker {
    async fn task(self: Arc<Self>, task: u32) {
        let mut rng = Rng::derive(
            self.spec.seed,
            &[1, u64::from(self.spec.id), u64::from(task)],
        );
        while Instant::now() < self.until {
            let plan = OpPlan::draw(
                &mut rng,
                self.spec.keys.len(),
                self.spec.uses_default_client,
            );
            self.execute(&plan).await;
            tokio::time::sleep(plan.think).await;
        }
    }

    async fn execute(&self, plan: &OpPlan) {
        match plan.style {
            Style::Lock => self.plain(plan, None).await,
            Style::Timeout(limit) => self.plain(plan, Some(limit)).await,
            Style::Guarded(variant) => self.guarded(plan, variant, Via::Macro, false).await,
            Style::Default => {
                self.guarded(plan, Variant::Default, Via::Default, false)
                    .await
            }
            Style::Nested => self.guarded(plan, Variant::Wait, Via::Macro, true).await,
            Style::Joined(variant) => self.joined(plan, variant).await,
        }
    }

    fn begin(&self, key: &str, via: Via, wait_ms: u64) -> (u64, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let start = now_us();
        self.sink.record(Event::Begin(Begin {
            worker: self.spec.id,
            id,
            key: key.to_owned(),
            via,
            wait_ms,
            start,
        }));
        (id, start)
    }

    async fn write(&self, id: u64, key: &str, fence: u64) {
        let start = now_us();
        let (accepted, seq) = self.store.write(key, fence).await;
        self.sink.record(Event::Write(Write {
            worker: self.spec.id,
            id,
            key: key.to_owned(),
            fence,
            start,
            end: now_us(),
            accepted,
            seq,
        }));
    }

    /// `client.lock(..)`, optionally dropped by a timeout, then a hold.
    async fn plain(&self, plan: &OpPlan, limit: Option<Duration>) {
        let key = self.spec.keys[plan.key].as_str();
        let via = if limit.is_some() {
            Via::Timeout
        } else {
            Via::Lock
        };
        let bound = limit.unwrap_or(plan.wait);
        let (id, start) = self.begin(key, via, ms(bound));
        let mut request = self
            .client
            .lock(key)
            .ttl(plan.ttl)
            .wait(plan.wait)
            .watchdog(plan.watchdog);
        if let Some(min) = plan.min_hold {
            request = request.min_hold(min);
        }
        if let Some(max) = plan.max_hold {
            request = request.max_hold(max);
        }
        let result = match limit {
            Some(limit) => tokio::time::timeout(limit, request).await.ok(),
            None => Some(request.await),
        };
        let end = now_us();
        let (outcome, guard) = match result {
            None => (Outcome::Dropped, None),
            Some(Ok(guard)) => (Outcome::Ok, Some(guard)),
            Some(Err(err)) => (outcome_of(&err), None),
        };
        self.sink.record(Event::Attempt(Attempt {
            worker: self.spec.id,
            id,
            key: key.to_owned(),
            via,
            ttl_ms: ms(plan.ttl),
            wait_ms: ms(bound),
            watchdog: plan.watchdog,
            min_hold_ms: plan.min_hold.map_or(0, ms),
            max_hold_ms: plan.max_hold.map_or(0, ms),
            start,
            end,
            outcome,
            fence: guard.as_ref().map_or(0, LockGuard::fencing_token),
        }));
        if let Some(guard) = guard {
            self.hold(plan, id, via, guard, start, end).await;
        }
    }

    /// Holds a guard through the plan's steps while watching `is_held()`, `remaining()` and
    /// `lost()`.
    async fn hold(
        &self,
        plan: &OpPlan,
        id: u64,
        via: Via,
        mut guard: LockGuard,
        sent: u64,
        acquired: u64,
    ) {
        let key = guard.key().to_owned();
        let fence = guard.fencing_token();
        let held = guard.held_lock();
        let last = AtomicU64::new(acquired);
        // The latest instant `remaining()` pointed at: asked after `t`, so `t + remaining`
        // is never later than the deadline it read.
        let until = AtomicU64::new(0);
        let promised = |t: u64, remaining: Duration| {
            until.fetch_max(t + micros(remaining), Ordering::Relaxed);
        };
        let longest = AtomicU64::new(ms(plan.ttl));
        let lost = {
            let watch = async {
                let poll = async {
                    loop {
                        let t = now_us();
                        if !guard.is_held() {
                            return (End::NotHeld, t);
                        }
                        last.fetch_max(t, Ordering::Relaxed);
                        promised(t, held.remaining());
                        tokio::time::sleep(POLL).await;
                    }
                };
                let lost = async {
                    guard.lost().await;
                    (End::Lost, now_us())
                };
                tokio::select! {
                    r = poll => r,
                    r = lost => r,
                }
            };
            let work = async {
                for step in &plan.steps {
                    match *step {
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                        Step::Write => {
                            let t = now_us();
                            if guard.is_held() {
                                last.fetch_max(t, Ordering::Relaxed);
                                promised(t, guard.remaining());
                                self.write(id, &key, fence).await;
                            }
                        }
                        Step::Extend(d, by) => {
                            longest.fetch_max(ms(d), Ordering::Relaxed);
                            let start = now_us();
                            let extended = match by {
                                Through::Guard => guard.extend(d).await,
                                Through::Held | Through::Current => held.extend(d).await,
                            };
                            self.sink.record(Event::Extend(Extend {
                                worker: self.spec.id,
                                id,
                                key: key.clone(),
                                fence,
                                ttl_ms: ms(d),
                                by,
                                start,
                                end: now_us(),
                                answer: answer_of(&extended),
                            }));
                        }
                    }
                }
                if plan.finish == Finish::Expire {
                    let _ = tokio::time::timeout(
                        plan.ttl * 2 + Duration::from_millis(500),
                        guard.lost(),
                    )
                    .await;
                }
            };
            tokio::select! {
                biased;
                r = watch => Some(r),
                () = work => None,
            }
        };
        let (reason, end) = match lost {
            Some(seen) => {
                // Stopped believing, but the guard lives on for a while (a hung job).
                tokio::time::sleep(plan.linger).await;
                seen
            }
            None => {
                let t = now_us();
                if guard.is_held() {
                    last.fetch_max(t, Ordering::Relaxed);
                }
                let reason = match plan.finish {
                    Finish::Release | Finish::Expire => End::Release,
                    Finish::ReleaseNow => End::ReleaseNow,
                    Finish::Drop => End::Drop,
                    Finish::DropNow => End::DropNow,
                };
                (reason, t)
            }
        };
        let keep = matches!(plan.finish, Finish::Release | Finish::Drop | Finish::Expire);
        let release = match plan.finish {
            Finish::Release | Finish::Expire => answer_of(&guard.release().await),
            Finish::ReleaseNow => answer_of(&guard.release_now().await),
            Finish::Drop | Finish::DropNow => {
                guard.keep_minimum_on_drop(keep);
                drop(guard);
                Answer::None
            }
        };
        self.sink.record(Event::Hold(Hold {
            worker: self.spec.id,
            id,
            key,
            fence,
            via,
            ttl_ms: longest.load(Ordering::Relaxed),
            watchdog: plan.watchdog,
            min_hold_ms: plan.min_hold.map_or(0, ms),
            max_hold_ms: plan.max_hold.map_or(0, ms),
            keep,
            sent,
            acquired,
            last_held: last.load(Ordering::Relaxed),
            until: until.load(Ordering::Relaxed),
            end,
            reason,
            release,
            released: now_us(),
        }));
    }

    async fn call(&self, variant: Variant, key: &str, body: &Body<'_>) -> Result<(), LockError> {
        let client = &self.client;
        match variant {
            Variant::Short => guarded_short(client, key, body).await,
            Variant::Wait => guarded_wait(client, key, body).await,
            Variant::Long => guarded_long(client, key, body).await,
            Variant::Default => guarded_default(key, body).await,
        }
    }

    async fn call_and_finish(&self, variant: Variant, body: &Body<'_>) {
        let result = self.call(variant, body.key, body).await;
        body.finish(Some(result));
    }

    fn body<'a>(
        &'a self,
        key: &'a str,
        via: Via,
        variant: Variant,
        steps: &'a [Step],
        then: Then,
    ) -> Body<'a> {
        let (id, start) = self.begin(key, via, variant.wait_ms());
        Body {
            worker: self,
            id,
            key,
            via,
            variant,
            start,
            steps,
            then,
            entered: AtomicU64::new(0),
            fence: AtomicU64::new(0),
            last: AtomicU64::new(0),
            longest: AtomicU64::new(variant.ttl_ms()),
            done: AtomicBool::new(false),
        }
    }

    /// One guarded call (optionally with nested calls in its body).
    async fn guarded(&self, plan: &OpPlan, variant: Variant, via: Via, nested: bool) {
        let key = self.spec.keys[plan.key].as_str();
        let then = if nested {
            Then::Nest(plan.other_key)
        } else {
            Then::Nothing
        };
        let body = self.body(key, via, variant, &plan.steps, then);
        let result = self.call(variant, key, &body).await;
        body.finish(Some(result));
    }

    /// Two guarded calls on one key joined in one task: siblings, not nested.
    async fn joined(&self, plan: &OpPlan, variant: Variant) {
        let key = self.spec.keys[plan.key].as_str();
        let a = self.body(key, Via::Joined, variant, &plan.steps, Then::Nothing);
        let b = self.body(key, Via::Joined, variant, &plan.steps, Then::Nothing);
        // Each is recorded the moment it returns, not when both have.
        tokio::join!(
            self.call_and_finish(variant, &a),
            self.call_and_finish(variant, &b)
        );
    }

    /// Inside a guarded body holding `key` with `fence`: a re-entrant call on the same key
    /// (must run at once with the same fence), then a nested call on `other` (a lock of its
    /// own). Boxed: bodies and calls are mutually recursive.
    fn nest<'a>(
        &'a self,
        key: &'a str,
        fence: u64,
        other: usize,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let steps = [Step::Sleep(Duration::from_millis(10)), Step::Write];
            let inner = self.body(
                key,
                Via::Reenter,
                Variant::Short,
                &steps,
                Then::Reenter(fence),
            );
            let result = guarded_short(&self.client, key, &inner).await;
            inner.finish(Some(result));
            let other = self.spec.keys[other].as_str();
            if other != key {
                let body = self.body(other, Via::Nested, Variant::Wait, &steps, Then::Nothing);
                let result = guarded_wait(&self.client, other, &body).await;
                body.finish(Some(result));
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Then {
    Nothing,
    /// After the steps, nest calls (re-entrant, then on the key with this index).
    Nest(usize),
    /// This body is a re-entrant call inside a body holding this fence.
    Reenter(u64),
}

/// The body of a guarded call, and the call's record: when it started, when the body started
/// and with which fence, and the last moment the body ran (it ticks every [`POLL`] while it
/// sleeps), so that a body dropped on loss shows when it stopped. A call dropped from outside
/// (its enclosing body was cancelled) is recorded when the body is dropped.
#[derive(Debug)]
struct Body<'a> {
    worker: &'a Worker,
    id: u64,
    key: &'a str,
    via: Via,
    variant: Variant,
    start: u64,
    steps: &'a [Step],
    then: Then,
    entered: AtomicU64,
    fence: AtomicU64,
    last: AtomicU64,
    /// The longest lease asked for (the macro's TTL and every extension).
    longest: AtomicU64,
    done: AtomicBool,
}

impl Body<'_> {
    fn alive(&self) {
        self.last.fetch_max(now_us(), Ordering::Relaxed);
    }

    async fn run(&self) -> Result<(), LockError> {
        let fence = distlock::current().map_or(0, |held| held.fencing_token());
        self.fence.store(fence, Ordering::Relaxed);
        self.entered.store(now_us(), Ordering::Relaxed);
        self.alive();
        for step in self.steps {
            match *step {
                Step::Sleep(d) => {
                    let until = Instant::now() + d;
                    while Instant::now() < until {
                        self.alive();
                        tokio::time::sleep(POLL.min(until - Instant::now())).await;
                    }
                    self.alive();
                }
                Step::Write => {
                    self.alive();
                    self.worker.write(self.id, self.key, fence).await;
                }
                Step::Extend(d, _) => {
                    // The body's own handle on its lock (a guarded fn has no guard).
                    let Some(held) = distlock::current() else {
                        continue;
                    };
                    self.longest.fetch_max(ms(d), Ordering::Relaxed);
                    let start = now_us();
                    let answer = answer_of(&held.extend(d).await);
                    if answer == Answer::Ok {
                        // Still held: the body runs on (after an error it stops believing).
                        self.alive();
                    }
                    self.worker.sink.record(Event::Extend(Extend {
                        worker: self.worker.spec.id,
                        id: self.id,
                        key: self.key.to_owned(),
                        fence,
                        ttl_ms: ms(d),
                        by: Through::Current,
                        start,
                        end: now_us(),
                        answer,
                    }));
                }
            }
        }
        if let Then::Nest(other) = self.then {
            self.worker.nest(self.key, fence, other).await;
            self.alive();
        }
        Ok(())
    }

    /// Records the call: `None` when it was dropped unfinished.
    fn finish(&self, result: Option<Result<(), LockError>>) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        let end = now_us();
        let entered = self.entered.load(Ordering::Relaxed);
        let fence = self.fence.load(Ordering::Relaxed);
        let outcome = match (&result, self.then) {
            (None, _) if entered == 0 => Outcome::Dropped,
            (Some(Err(err)), _) if entered == 0 => outcome_of(err),
            (Some(Ok(())), _) if entered == 0 => Outcome::Other,
            // A re-entrant call must see the outer fence.
            (Some(Ok(())), Then::Reenter(outer)) if fence != outer => Outcome::Other,
            _ => Outcome::Ok,
        };
        let reenter = matches!(self.then, Then::Reenter(_));
        let worker = self.worker.spec.id;
        self.worker.sink.record(Event::Attempt(Attempt {
            worker,
            id: self.id,
            key: self.key.to_owned(),
            via: self.via,
            ttl_ms: self.variant.ttl_ms(),
            wait_ms: self.variant.wait_ms(),
            watchdog: true,
            min_hold_ms: 0,
            max_hold_ms: 0,
            start: self.start,
            end: if entered != 0 && !reenter {
                entered
            } else {
                end
            },
            outcome,
            fence,
        }));
        if entered == 0 || reenter {
            return;
        }
        let reason = match &result {
            None => End::Drop,
            Some(Ok(())) => End::BodyDone,
            Some(Err(err)) if err.is_lost() => End::BodyLost,
            Some(Err(_)) => End::BodyError,
        };
        self.worker.sink.record(Event::Hold(Hold {
            worker,
            id: self.id,
            key: self.key.to_owned(),
            fence,
            via: self.via,
            ttl_ms: self.longest.load(Ordering::Relaxed),
            watchdog: true,
            min_hold_ms: 0,
            max_hold_ms: 0,
            keep: false,
            sent: self.start,
            acquired: entered,
            last_held: self.last.load(Ordering::Relaxed),
            until: 0,
            end,
            reason,
            release: Answer::None,
            released: end,
        }));
    }
}

impl Drop for Body<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[distlock::distributed_lock(key = "{key}", ttl = "250ms", client = client)]
async fn guarded_short(client: &LockClient, key: &str, body: &Body<'_>) -> Result<(), LockError> {
    body.run().await
}

#[distlock::distributed_lock(key = "{key}", ttl = "1s", wait = "800ms", client = client)]
async fn guarded_wait(client: &LockClient, key: &str, body: &Body<'_>) -> Result<(), LockError> {
    body.run().await
}

#[distlock::distributed_lock(key = "{key}", ttl = "400ms", wait = "1500ms", client = client)]
async fn guarded_long(client: &LockClient, key: &str, body: &Body<'_>) -> Result<(), LockError> {
    body.run().await
}

#[distlock::distributed_lock(key = "{key}", ttl = "300ms", wait = "500ms")]
async fn guarded_default(key: &str, body: &Body<'_>) -> Result<(), LockError> {
    body.run().await
}
