//! The nemesis: a schedule of faults drawn from the seed, and the executor that injects them
//! into a [`Deployment`] and records each as a history event.
//!
//! The schedule alternates active phases (a fault every 150..900 ms, several at once) with
//! quiet ones (2.5..4 s without faults), so that losses with no fault around them can be told
//! apart. Targets are drawn as numbers and resolved when the fault fires (the Sentinel
//! primary, the Cluster node that owns a key's slot now); a fault whose target is busy (a
//! paused or stopped node) is skipped.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::deploy::{Deployment, Kind, admin};
use super::history::{Event, Fault as FaultEvent, now_us};
use super::rng::Rng;

/// One fault, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGSTOP a node, SIGCONT it after a while.
    PauseNode {
        /// Which node (resolved when it fires).
        pick: u64,
        /// For how long.
        span: Duration,
    },
    /// Kill a node and start it again at once, empty.
    RestartNode {
        /// Which node.
        pick: u64,
    },
    /// Kill a node, start it again empty after a while.
    KillNode {
        /// Which node.
        pick: u64,
        /// How long it stays down.
        span: Duration,
    },
    /// `FLUSHALL` on a node.
    FlushAll {
        /// Which node.
        pick: u64,
    },
    /// `SCRIPT FLUSH` on a node.
    ScriptFlush {
        /// Which node.
        pick: u64,
    },
    /// Latency on a worker's connections to a node (Cluster: everyone's).
    Latency {
        /// Which worker (the number of workers: all of them).
        worker: usize,
        /// Which node.
        pick: u64,
        /// How much, each way.
        latency: Duration,
        /// For how long.
        span: Duration,
    },
    /// One connection stops passing anything, then resumes.
    Blackhole {
        /// Which worker.
        worker: usize,
        /// Which node.
        pick: u64,
        /// Which of its connections.
        conn: u64,
        /// For how long.
        span: Duration,
    },
    /// One connection is closed.
    Cut {
        /// Which worker.
        worker: usize,
        /// Which node.
        pick: u64,
        /// Which of its connections.
        conn: u64,
    },
    /// One connection's replies are held back, then it is closed (the client replays).
    ReplyLossCut {
        /// Which worker.
        worker: usize,
        /// Which node.
        pick: u64,
        /// Which of its connections.
        conn: u64,
        /// How long replies are held before the cut.
        hold: Duration,
    },
    /// SIGSTOP a worker (in process: block its runtime's thread), then let it go.
    PauseWorker {
        /// Which worker.
        worker: usize,
        /// For how long.
        span: Duration,
    },
    /// Sentinel: `SENTINEL FAILOVER`; Cluster: `CLUSTER FAILOVER [FORCE]` on the replica of a
    /// key's primary.
    Failover {
        /// Which key's primary (Cluster).
        pick: u64,
        /// Without the primary's agreement (Cluster).
        force: bool,
    },
    /// Cluster: move a key's slot to another primary.
    Migrate {
        /// Which key.
        pick: u64,
        /// Which other primary.
        to: u64,
    },
    /// In process: `MemoryStore::clear()` (every lock forgotten, as `FLUSHALL`).
    ClearStore,
}

/// A fault and when it fires, from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// Draws the schedule of faults for a run of `run` on `kind` with `workers` workers.
pub fn plan(seed: u64, kind: Kind, run: Duration, workers: usize) -> Vec<Scheduled> {
    let mut rng = Rng::derive(seed, &[2, kind as u64]);
    let mut schedule = Vec::new();
    let end = run.saturating_sub(Duration::from_millis(1500));
    let mut t = Duration::from_millis(rng.range(500, 1500));
    while t < end {
        let phase_end = (t + rng.millis(2500, 4500)).min(end);
        while t < phase_end {
            schedule.push(Scheduled {
                at: t,
                fault: draw(&mut rng, kind, workers),
            });
            t += rng.millis(150, 900);
        }
        t = phase_end + rng.millis(2500, 4000);
    }
    schedule
}

fn draw(rng: &mut Rng, kind: Kind, workers: usize) -> Fault {
    // Draw every parameter whatever the kind, so that the stream stays aligned.
    let pick = rng.next_u64();
    let conn = rng.next_u64();
    let worker = rng.below(workers.max(1));
    // Latency hits one worker's connections, or (one draw in four) everyone's.
    let slowed = if rng.chance(25) { workers } else { worker };
    let long_pause = rng.millis(100, 2500);
    let short_pause = rng.millis(50, 1500);
    let span = rng.millis(300, 2500);
    let latency = rng.millis(10, 250);
    let hold = rng.millis(50, 800);
    let worker_pause = rng.millis(100, 2500);
    let force = rng.chance(50);
    let to = rng.next_u64();
    // PauseNode, RestartNode, KillNode, FlushAll, ScriptFlush, Latency, Blackhole, Cut,
    // ReplyLossCut, PauseWorker, Failover, Migrate, ClearStore.
    let weights: [u32; 13] = match kind {
        Kind::Memory => [0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 40],
        Kind::Redis => [12, 5, 3, 4, 5, 20, 12, 8, 12, 10, 0, 0, 0],
        Kind::Sentinel => [20, 8, 0, 5, 5, 0, 0, 0, 0, 15, 12, 0, 0],
        Kind::Redlock => [20, 14, 6, 6, 4, 10, 10, 6, 10, 10, 0, 0, 0],
        Kind::Cluster => [10, 5, 0, 4, 4, 12, 10, 8, 14, 8, 10, 14, 0],
    };
    let pause = match kind {
        Kind::Redlock => long_pause,
        // Below the Cluster's node timeout (2 s): no automatic failover.
        _ => short_pause,
    };
    match rng.weighted(&weights) {
        0 => Fault::PauseNode { pick, span: pause },
        1 => Fault::RestartNode { pick },
        2 => Fault::KillNode {
            pick,
            span: short_pause,
        },
        3 => Fault::FlushAll { pick },
        4 => Fault::ScriptFlush { pick },
        5 => Fault::Latency {
            worker: slowed,
            pick,
            latency,
            span,
        },
        6 => Fault::Blackhole {
            worker,
            pick,
            conn,
            span,
        },
        7 => Fault::Cut { worker, pick, conn },
        8 => Fault::ReplyLossCut {
            worker,
            pick,
            conn,
            hold,
        },
        9 => Fault::PauseWorker {
            worker,
            span: worker_pause,
        },
        10 => Fault::Failover { pick, force },
        11 => Fault::Migrate { pick, to },
        _ => Fault::ClearStore,
    }
}

/// How the nemesis pauses workers.
#[derive(Debug)]
pub enum Pauser {
    /// Worker processes, by pid (SIGSTOP / SIGCONT).
    Pids(Vec<u32>),
    /// In-process workers: a message makes the worker's runtime thread sleep that long.
    Freezers(Vec<tokio::sync::mpsc::UnboundedSender<Duration>>),
}

enum Heal {
    ResumeNode(usize),
    StartNode(usize),
    Latency(Vec<usize>, usize),
    Unblackhole(usize, usize, u64),
    Cut(usize, usize, u64),
    ResumeWorker(usize),
    Nothing,
}

/// Injects a schedule into a deployment.
pub struct Nemesis<'a> {
    deployment: &'a mut Deployment,
    pauser: &'a Pauser,
    keys: &'a [String],
    events: Vec<Event>,
    pending: Vec<(Instant, Heal, FaultEvent)>,
    paused: HashSet<usize>,
    down: HashSet<usize>,
    paused_workers: HashSet<usize>,
    /// Faults skipped because their target was busy or the deployment refused.
    pub skipped: usize,
}

impl std::fmt::Debug for Nemesis<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nemesis")
            .field("events", &self.events.len())
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Pauser {
    /// How many workers.
    pub fn len(&self) -> usize {
        match self {
            Pauser::Pids(pids) => pids.len(),
            Pauser::Freezers(freezers) => freezers.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Nemesis<'a> {
    /// A nemesis for `deployment`, whose workers `pauser` can pause, locking `keys`.
    pub fn new(deployment: &'a mut Deployment, pauser: &'a Pauser, keys: &'a [String]) -> Self {
        Self {
            deployment,
            pauser,
            keys,
            events: Vec::new(),
            pending: Vec::new(),
            paused: HashSet::new(),
            down: HashSet::new(),
            paused_workers: HashSet::new(),
            skipped: 0,
        }
    }

    /// Runs `schedule` from `start`; everything is healed by `until`.
    pub fn run(&mut self, schedule: &[Scheduled], start: Instant, until: Instant) {
        for (id, item) in schedule.iter().enumerate() {
            let at = start + item.at;
            if at >= until {
                break;
            }
            self.heal_until(at);
            self.apply(id as u64, &item.fault);
        }
        self.heal_until(until);
        self.heal_all();
    }

    /// The faults injected, as history events.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    fn heal_until(&mut self, at: Instant) {
        loop {
            self.pending.sort_by_key(|(t, _, _)| *t);
            let next = self.pending.first().map(|(t, _, _)| *t);
            match next {
                Some(t) if t <= at => {
                    let now = Instant::now();
                    if t > now {
                        std::thread::sleep(t - now);
                    }
                    let (_, heal, event) = self.pending.remove(0);
                    self.heal(heal, event);
                }
                _ => break,
            }
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
    }

    /// Heals every pending fault now.
    pub fn heal_all(&mut self) {
        self.pending.sort_by_key(|(t, _, _)| *t);
        for (_, heal, event) in std::mem::take(&mut self.pending) {
            self.heal(heal, event);
        }
        for proxy in self.deployment.all_proxies() {
            proxy.heal();
        }
    }

    fn heal(&mut self, heal: Heal, mut event: FaultEvent) {
        match heal {
            Heal::ResumeNode(i) => {
                self.deployment.resume(i);
                self.paused.remove(&i);
            }
            Heal::StartNode(i) => {
                self.deployment.restart(i);
                self.down.remove(&i);
            }
            Heal::Latency(workers, n) => {
                for w in workers {
                    if let Some(p) = self.deployment.proxy(w, n) {
                        p.set_latency(Duration::ZERO);
                    }
                }
            }
            Heal::Unblackhole(w, n, c) => {
                if let Some(p) = self.deployment.proxy(w, n) {
                    p.blackhole(c, false);
                }
            }
            Heal::Cut(w, n, c) => {
                if let Some(p) = self.deployment.proxy(w, n) {
                    p.cut(c);
                }
            }
            Heal::ResumeWorker(w) => {
                if let Pauser::Pids(pids) = self.pauser {
                    signal(pids[w], "-CONT");
                }
                self.paused_workers.remove(&w);
            }
            Heal::Nothing => {}
        }
        event.end = now_us();
        self.events.push(Event::Fault(event));
    }

    fn node_busy(&self, i: usize) -> bool {
        self.paused.contains(&i) || self.down.contains(&i)
    }

    /// Resolves a node pick: the server; a Redlock node; the Sentinel primary; the Cluster
    /// node owning a key's slot.
    fn node(&self, pick: u64) -> Option<usize> {
        let d = &self.deployment;
        match d.kind {
            Kind::Memory => None,
            Kind::Redis => Some(0),
            Kind::Redlock => Some((pick % d.node_count() as u64) as usize),
            Kind::Sentinel => d.sentinel_primary(),
            Kind::Cluster => {
                if !self.paused.is_empty() || !self.down.is_empty() {
                    // Cluster admin commands would wait on the stopped node.
                    return None;
                }
                d.owner_of(&self.keys[(pick % self.keys.len() as u64) as usize])
            }
        }
    }

    /// The keys whose locks live on node `i` now (empty: all).
    fn keys_on(&self, i: usize) -> Vec<String> {
        if self.deployment.kind != Kind::Cluster {
            return Vec::new();
        }
        let owned: Vec<String> = self
            .keys
            .iter()
            .filter(|k| self.deployment.owner_of(k) == Some(i))
            .cloned()
            .collect();
        if owned.is_empty() {
            // Keep "none" distinct from "all".
            vec!["-".into()]
        } else {
            owned
        }
    }

    fn apply(&mut self, id: u64, fault: &Fault) {
        let now = Instant::now();
        let mut event = FaultEvent {
            id,
            kind: String::new(),
            target: String::new(),
            start: now_us(),
            end: 0,
            data_loss: false,
            node: None,
            worker: None,
            keys: Vec::new(),
        };
        let kind = self.deployment.kind;
        let heal = match fault {
            Fault::PauseNode { pick, span } => {
                let Some(i) = self.node(*pick).filter(|&i| !self.node_busy(i)) else {
                    self.skipped += 1;
                    return;
                };
                event.kind = "pause-node".into();
                event.node = Some(i);
                event.target = format!("node{i}");
                // A Sentinel primary frozen past down-after (500 ms) may be failed over.
                event.data_loss = kind == Kind::Sentinel && *span > Duration::from_millis(450);
                if event.data_loss {
                    event.keys = self.keys_on(i);
                }
                self.deployment.pause(i);
                self.paused.insert(i);
                Some((now + *span, Heal::ResumeNode(i)))
            }
            Fault::RestartNode { pick } | Fault::KillNode { pick, .. } => {
                let Some(i) = self.node(*pick).filter(|&i| !self.node_busy(i)) else {
                    self.skipped += 1;
                    return;
                };
                let span = match fault {
                    Fault::KillNode { span, .. } => *span,
                    _ => Duration::ZERO,
                };
                event.kind = if span.is_zero() { "restart" } else { "kill" }.into();
                event.node = Some(i);
                event.target = format!("node{i}");
                event.data_loss = true;
                event.keys = self.keys_on(i);
                self.deployment.kill(i);
                self.down.insert(i);
                Some((now + span, Heal::StartNode(i)))
            }
            Fault::FlushAll { pick } | Fault::ScriptFlush { pick } => {
                let Some(i) = self.node(*pick).filter(|&i| !self.node_busy(i)) else {
                    self.skipped += 1;
                    return;
                };
                let flush = matches!(fault, Fault::FlushAll { .. });
                event.kind = if flush { "flushall" } else { "script-flush" }.into();
                event.node = Some(i);
                event.target = format!("node{i}");
                event.data_loss = flush;
                if flush {
                    event.keys = self.keys_on(i);
                }
                let args: &[&str] = if flush {
                    &["FLUSHALL"]
                } else {
                    &["SCRIPT", "FLUSH"]
                };
                if let Err(err) = admin::<()>(self.deployment.port(i), args) {
                    eprintln!("nemesis: {err}");
                    self.skipped += 1;
                    return;
                }
                Some((now, Heal::Nothing))
            }
            Fault::Latency {
                worker,
                pick,
                latency,
                span,
            } => {
                let Some(i) = self.node(*pick) else {
                    self.skipped += 1;
                    return;
                };
                let everyone = *worker >= self.pauser.len();
                let slowed: Vec<usize> = if everyone {
                    (0..self.pauser.len()).collect()
                } else {
                    vec![*worker]
                };
                for &w in &slowed {
                    if let Some(proxy) = self.deployment.proxy(w, i) {
                        proxy.set_latency(*latency);
                    }
                }
                event.kind = "latency".into();
                event.node = Some(i);
                let who = if everyone {
                    "all".to_owned()
                } else {
                    format!("w{worker}")
                };
                event.target = format!("{who}/node{i}/{}ms", latency.as_millis());
                Some((now + *span, Heal::Latency(slowed, i)))
            }
            Fault::Blackhole {
                worker,
                pick,
                conn,
                span,
            }
            | Fault::ReplyLossCut {
                worker,
                pick,
                conn,
                hold: span,
            } => {
                let Some(i) = self.node(*pick) else {
                    self.skipped += 1;
                    return;
                };
                let Some(proxy) = self.deployment.proxy(*worker, i) else {
                    self.skipped += 1;
                    return;
                };
                let conns = proxy.connections();
                if conns.is_empty() {
                    self.skipped += 1;
                    return;
                }
                let c = conns[(conn % conns.len() as u64) as usize];
                event.node = Some(i);
                event.target = format!("w{worker}/node{i}/conn{c}");
                if matches!(fault, Fault::Blackhole { .. }) {
                    event.kind = "blackhole".into();
                    proxy.blackhole(c, true);
                    Some((now + *span, Heal::Unblackhole(*worker, i, c)))
                } else {
                    event.kind = "reply-loss-cut".into();
                    proxy.hold_replies(c, true);
                    Some((now + *span, Heal::Cut(*worker, i, c)))
                }
            }
            Fault::Cut { worker, pick, conn } => {
                let Some(i) = self.node(*pick) else {
                    self.skipped += 1;
                    return;
                };
                let Some(proxy) = self.deployment.proxy(*worker, i) else {
                    self.skipped += 1;
                    return;
                };
                let conns = proxy.connections();
                if conns.is_empty() {
                    self.skipped += 1;
                    return;
                }
                let c = conns[(conn % conns.len() as u64) as usize];
                proxy.cut(c);
                event.kind = "cut".into();
                event.node = Some(i);
                event.target = format!("w{worker}/node{i}/conn{c}");
                Some((now, Heal::Nothing))
            }
            Fault::PauseWorker { worker, span } => {
                if self.paused_workers.contains(worker) {
                    self.skipped += 1;
                    return;
                }
                event.kind = "pause-worker".into();
                event.worker = Some(*worker as u32);
                event.target = format!("worker{worker}");
                match self.pauser {
                    Pauser::Pids(pids) => {
                        signal(pids[*worker], "-STOP");
                        self.paused_workers.insert(*worker);
                        Some((now + *span, Heal::ResumeWorker(*worker)))
                    }
                    Pauser::Freezers(freezers) => {
                        let _ = freezers[*worker].send(*span);
                        self.paused_workers.insert(*worker);
                        Some((now + *span, Heal::ResumeWorker(*worker)))
                    }
                }
            }
            Fault::Failover { pick, force } => match kind {
                Kind::Sentinel => {
                    let primary = self.deployment.sentinel_primary();
                    if let Err(err) = self.deployment.sentinel_failover() {
                        eprintln!("nemesis: sentinel failover: {err}");
                        self.skipped += 1;
                        return;
                    }
                    event.kind = "failover".into();
                    event.target = format!("node{}", primary.map_or(9, |p| p));
                    event.node = primary;
                    event.data_loss = true;
                    Some((now, Heal::Nothing))
                }
                Kind::Cluster => {
                    let Some(i) = self.node(*pick) else {
                        self.skipped += 1;
                        return;
                    };
                    let keys = self.keys_on(i);
                    match self.deployment.cluster_failover(i, *force) {
                        Ok(replica) => {
                            event.kind = if *force { "failover-force" } else { "failover" }.into();
                            event.target = format!("node{i}->node{replica}");
                            event.node = Some(i);
                            event.data_loss = *force;
                            if *force {
                                event.keys = keys;
                            }
                            Some((now, Heal::Nothing))
                        }
                        Err(err) => {
                            eprintln!("nemesis: cluster failover: {err}");
                            self.skipped += 1;
                            return;
                        }
                    }
                }
                _ => None,
            },
            Fault::Migrate { pick, to } => {
                if kind != Kind::Cluster || !self.paused.is_empty() || !self.down.is_empty() {
                    self.skipped += 1;
                    return;
                }
                let key = self.keys[(pick % self.keys.len() as u64) as usize].clone();
                let Some(roles) = self.deployment.cluster_roles() else {
                    self.skipped += 1;
                    return;
                };
                let owner = self.deployment.owner_of(&key);
                let others: Vec<usize> = roles
                    .iter()
                    .enumerate()
                    .filter(|(i, (master, _, _))| *master && Some(*i) != owner)
                    .map(|(i, _)| i)
                    .collect();
                if others.is_empty() {
                    self.skipped += 1;
                    return;
                }
                let dest = others[(to % others.len() as u64) as usize];
                match self.deployment.migrate(&key, dest) {
                    Ok((from, to)) => {
                        event.kind = "migrate".into();
                        event.target = format!("{key}:node{from}->node{to}");
                        event.node = Some(from);
                        Some((now, Heal::Nothing))
                    }
                    Err(err) => {
                        eprintln!("nemesis: migrate {key}: {err}");
                        self.skipped += 1;
                        return;
                    }
                }
            }
            Fault::ClearStore => {
                self.deployment.memory.clear();
                event.kind = "clear-store".into();
                event.target = "store".into();
                event.data_loss = true;
                Some((now, Heal::Nothing))
            }
        };
        match heal {
            Some((at, heal)) if at <= now => self.heal(heal, event),
            Some((at, heal)) => self.pending.push((at, heal, event)),
            None => self.skipped += 1,
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
