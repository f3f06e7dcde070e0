//! One fuzz run: start a deployment, start the workers, let the nemesis loose, wait for the
//! workers, check for leaked locks, check the merged history.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checker::{self, CheckConfig, Report, Violation};
use super::deploy::{Deployment, Kind, Monitor};
use super::history::{Event, Sink, now_us, read_history};
use super::history::{Fault, Seen};
use super::nemesis::{self, Nemesis, Pauser};
use super::store::FencedStore;
use super::worker::{self, MAX_LEASE, Target, WorkerSpec};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The deployment.
    pub kind: Kind,
    /// The seed: operations and faults are drawn from it.
    pub seed: u64,
    /// How long workers start operations.
    pub run: Duration,
    /// Worker processes (threads in process).
    pub workers: usize,
    /// Tasks per worker.
    pub tasks: u32,
    /// The keys.
    pub keys: Vec<String>,
    /// The clients' command timeout.
    pub command_timeout: Duration,
    /// The `fuzz-worker` binary.
    pub worker_bin: PathBuf,
}

impl RunConfig {
    /// The usual shape: 3 workers of 3 tasks on 3 keys, 400 ms command timeout.
    pub fn new(kind: Kind, seed: u64, run: Duration, worker_bin: PathBuf) -> Self {
        Self {
            kind,
            seed,
            run,
            workers: 3,
            tasks: 3,
            keys: ["fz-a", "fz-b", "fz-c"].map(String::from).to_vec(),
            command_timeout: Duration::from_millis(400),
            worker_bin,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct RunResult {
    /// The checker's report (with leaks added).
    pub report: Report,
    /// The merged history.
    pub events: Vec<Event>,
    /// When the run started (µs).
    pub origin: u64,
    /// How long it took, setup to check.
    pub wall: Duration,
    /// Faults skipped (target busy).
    pub skipped: usize,
}

impl RunResult {
    /// Whether the checker found nothing.
    pub fn passed(&self) -> bool {
        self.report.violations.is_empty()
    }

    /// The report as printed: summary, then each violation (at most `per_kind` of each kind)
    /// with the events of its key around it for the first of each kind.
    pub fn describe(&self, config: &RunConfig, per_kind: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fuzz {} seed {} ({} s of operations, {:.1} s in all, {} faults skipped):\n{}",
            config.kind.name(),
            config.seed,
            config.run.as_secs(),
            self.wall.as_secs_f64(),
            self.skipped,
            self.report.summary()
        );
        for (kind, (n, examples)) in &self.report.warnings {
            let _ = writeln!(out, "warning {kind}: {n}, e.g. {}", examples.join("; "));
        }
        let mut shown: std::collections::HashMap<&str, usize> = Default::default();
        for v in &self.report.violations {
            let count = shown.entry(v.kind).or_default();
            *count += 1;
            if *count > per_kind {
                continue;
            }
            let _ = writeln!(out, "VIOLATION {}: {}", v.kind, v.message);
            if *count == 1 {
                let _ = writeln!(
                    out,
                    "  history of `{}` around it (seconds from the start):\n{}",
                    v.key.as_deref().unwrap_or("*"),
                    checker::excerpt(
                        &self.events,
                        v.key.as_deref(),
                        v.from,
                        v.to,
                        self.origin,
                        30
                    )
                );
            }
        }
        if !self.passed() {
            let _ = writeln!(
                out,
                "replay: FUZZ_DEPLOYMENT={} FUZZ_SEED={} FUZZ_SECONDS={} cargo test -p distlock-tests --test fuzz",
                config.kind.name(),
                config.seed,
                config.run.as_secs()
            );
        }
        out
    }
}

/// Kills worker processes left behind if the run panics.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs one seed.
///
/// # Panics
///
/// When the deployment does not start, or a worker cannot be started.
pub fn run_one(config: &RunConfig) -> RunResult {
    let started = Instant::now();
    let mut deployment = Deployment::start(config.kind, config.workers);
    let dir = tempfile::Builder::new()
        .prefix("distlock-fuzz-")
        .tempdir()
        .expect("a directory for the histories");
    let schedule = nemesis::plan(config.seed, config.kind, config.run, config.workers);
    let memory_events = Arc::new(Mutex::new(Vec::new()));
    let spec = |w: usize| WorkerSpec {
        id: w as u32,
        seed: config.seed,
        run: config.run,
        keys: config.keys.clone(),
        tasks: config.tasks,
        uses_default_client: w == 0,
    };

    let origin = now_us();
    let run_start = Instant::now();
    let mut threads = Vec::new();
    let mut children = Children(Vec::new());
    let pauser = if config.kind == Kind::Memory {
        let fences = FencedStore::memory();
        let mut freezers = Vec::new();
        for w in 0..config.workers {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
            freezers.push(tx);
            let (spec, target, fences) = (spec(w), deployment.target(w), fences.clone());
            let sink = Sink::Memory(memory_events.clone());
            let timeout = config.command_timeout;
            threads.push(std::thread::spawn(move || {
                if spec.uses_default_client {
                    distlock::set_default_client(worker::client_made_on_another_runtime(
                        &target, timeout,
                    ));
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a worker runtime");
                runtime.block_on(async move {
                    // The nemesis freezes this "process" by blocking its only thread.
                    tokio::spawn(async move {
                        while let Some(span) = rx.recv().await {
                            std::thread::sleep(span);
                        }
                    });
                    let client = target.client(timeout).await;
                    worker::run_worker(spec, client, fences, sink).await;
                });
            }));
        }
        Pauser::Freezers(freezers)
    } else {
        let store = deployment.store_url().expect("a store server");
        for w in 0..config.workers {
            let spec = spec(w);
            let out = dir.path().join(format!("worker{w}.history"));
            let err = std::fs::File::create(dir.path().join(format!("worker{w}.stderr")))
                .expect("a stderr file");
            let mut args = vec![
                format!("id={}", spec.id),
                format!("seed={}", spec.seed),
                format!("run_ms={}", spec.run.as_millis()),
                format!("keys={}", spec.keys.join(",")),
                format!("tasks={}", spec.tasks),
                format!("default={}", u8::from(spec.uses_default_client)),
                format!("timeout_ms={}", config.command_timeout.as_millis()),
                format!("store={store}"),
                format!("out={}", out.display()),
            ];
            args.extend(deployment.target(w).to_args());
            let child = Command::new(&config.worker_bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("start a fuzz worker");
            children.0.push(child);
        }
        Pauser::Pids(children.0.iter().map(Child::id).collect())
    };

    // Topology changes nobody injected (automatic failovers, split brain) go into the
    // history too.
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let monitor = deployment.monitor();
        let stop = stop_watching.clone();
        let kind = config.kind;
        std::thread::spawn(move || watch(&monitor, kind, &stop))
    };

    // Who the deployment names as holder, every 50 ms (orphan locks show up here).
    let observer = {
        let target = deployment.direct_target();
        let keys = config.keys.clone();
        let stop = stop_watching.clone();
        std::thread::spawn(move || observe(&target, &keys, &stop))
    };

    let (nemesis_events, skipped) = {
        let mut nemesis = Nemesis::new(&mut deployment, &pauser, &config.keys);
        nemesis.run(&schedule, run_start, run_start + config.run);
        let skipped = nemesis.skipped;
        (nemesis.into_events(), skipped)
    };

    // Wait for the workers (they stop starting operations at `run`, and give up on stuck
    // tasks 10 s later).
    let give_up = run_start + config.run + Duration::from_secs(15);
    for handle in threads {
        while !handle.is_finished() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(20));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
    for child in &mut children.0 {
        while Instant::now() < give_up {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let finished = now_us();
    drop(children);
    stop_watching.store(true, std::sync::atomic::Ordering::Relaxed);
    let watched = watcher.join().unwrap_or_default();
    let observed = observer.join().unwrap_or_default();

    // Every lease a worker could have left behind has run out by now.
    std::thread::sleep(MAX_LEASE + Duration::from_millis(500));
    let leaks = leaked(&deployment, config);

    let mut events = nemesis_events;
    events.extend(watched);
    events.extend(observed);
    events.extend(
        memory_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..),
    );
    for w in 0..config.workers {
        let path = dir.path().join(format!("worker{w}.history"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            events.extend(read_history(&text));
        }
        let stderr = std::fs::read_to_string(dir.path().join(format!("worker{w}.stderr")))
            .unwrap_or_default();
        if stderr.contains("panicked") {
            eprintln!("--- fuzz worker {w} stderr ---\n{stderr}");
        }
    }
    events.sort_by_key(Event::at);
    let check = CheckConfig {
        command_timeout: config.command_timeout,
        redlock_nodes: (config.kind == Kind::Redlock).then_some(deployment.node_count()),
        settle: config.kind.settle(),
        origin,
        finished,
    };
    let mut report = checker::check(&events, &check);
    for (key, holder) in leaks {
        report.add(Violation {
            kind: "leak",
            key: Some(key.clone()),
            from: finished,
            to: now_us(),
            message: format!(
                "`{key}` is still held {:.1} s after the last worker exited: {holder}",
                (now_us() - finished) as f64 / 1e6
            ),
        });
    }
    RunResult {
        report,
        events,
        origin,
        wall: started.elapsed(),
        skipped,
    }
}

/// The keys still held (with who holds them), asked through a fresh client.
fn leaked(deployment: &Deployment, config: &RunConfig) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the leak check");
    let target = deployment.direct_target();
    runtime.block_on(async {
        let client = target.client(Duration::from_secs(2)).await;
        let mut leaks = Vec::new();
        for key in &config.keys {
            for attempt in 0..5 {
                match client.inspect(key).await {
                    Ok(Some(info)) => {
                        leaks.push((key.clone(), format!("{info:?}")));
                        break;
                    }
                    Ok(None) => break,
                    Err(err) if attempt == 4 => {
                        eprintln!("leak check of `{key}` failed: {err}");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
        leaks
    })
}

/// Polls the topology every 100 ms until `stop`: a change of primary becomes a
/// `primary-switch` event (Sentinel: locks may be lost, asynchronous replication), several
/// nodes claiming to be primary a `split-brain` one.
fn watch(monitor: &Monitor, kind: Kind, stop: &std::sync::atomic::AtomicBool) -> Vec<Event> {
    let mut events = Vec::new();
    let mut last: Option<Vec<usize>> = None;
    let mut split_since: Option<u64> = None;
    let mut id = 1_000_000;
    let mut fault = |kind: &str, target: String, start: u64, data_loss: bool| {
        id += 1;
        Event::Fault(Fault {
            id,
            kind: kind.into(),
            target,
            start,
            end: now_us(),
            data_loss,
            node: None,
            worker: None,
            keys: Vec::new(),
        })
    };
    if !matches!(kind, Kind::Sentinel | Kind::Cluster) {
        return events;
    }
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(now) = monitor.look() {
            if let Some(before) = &last
                && *before != now.primaries
            {
                let target = format!("{before:?}->{:?}", now.primaries);
                events.push(fault(
                    "primary-switch",
                    target,
                    now_us(),
                    kind == Kind::Sentinel,
                ));
            }
            last = Some(now.primaries);
            match (now.claiming.len() > 1, split_since) {
                (true, None) => split_since = Some(now_us()),
                (false, Some(since)) => {
                    events.push(fault("split-brain", "primaries".into(), since, true));
                    split_since = None;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(since) = split_since {
        events.push(fault("split-brain", "primaries".into(), since, true));
    }
    events
}

/// Asks the deployment who holds each key every 50 ms until `stop`; one event per holder
/// change, and one each time the holder's lease is seen to reach further (a renewal, an
/// extension), with the lease left.
fn observe(target: &Target, keys: &[String], stop: &std::sync::atomic::AtomicBool) -> Vec<Event> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the observer");
    runtime.block_on(async {
        let client = target.client(Duration::from_millis(200)).await;
        let mut events = Vec::new();
        // Per key: the holder last seen, and the furthest its lease was seen to reach.
        let mut last: Vec<Option<(u64, u64)>> = vec![None; keys.len()];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, key) in keys.iter().enumerate() {
                let at = now_us();
                let Ok(info) = client.inspect(key).await else {
                    continue;
                };
                let Some(info) = info else {
                    last[i] = None;
                    continue;
                };
                let fence = info.fencing_token;
                let ttl_ms = info
                    .ttl
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX / 4_000));
                // Asked at `at`, answered later: the key was held until `at + ttl` at least.
                let reach = at + ttl_ms.unwrap_or(0) * 1000;
                let further = match last[i] {
                    Some((f, seen)) if f == fence => reach > seen + 20_000,
                    _ => true,
                };
                if further {
                    events.push(Event::Seen(Seen {
                        key: key.clone(),
                        fence,
                        at,
                        ttl_ms,
                    }));
                }
                let seen = last[i].filter(|(f, _)| *f == fence).map_or(0, |(_, s)| s);
                last[i] = Some((fence, reach.max(seen)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        events
    })
}
