//! The checker: reads the merged histories of a run and reports what broke.
//!
//! Violations (a run with any fails):
//!
//! - **overlap**: two holders of one key believed they held it at once, by more than the
//!   crate's drift rule for the earlier lease (`ttl/100 + 2 ms`) plus [`SCHEDULING_SLACK`]
//!   plus the polling interval ([`POLL`]). A holder believes from the moment acquire returned
//!   to the last moment it saw the lock held (`is_held()` true, or its guarded body running).
//!   An overlap is excused when a fault that may forget locks (a restart without persistence,
//!   `FLUSHALL`, a failover, Sentinel's split brain; plus [`CheckConfig::settle`] after it)
//!   hit the key between the first holder's acquire and the second's;
//!   under Redlock only when every node lost its data in between (quarantine must cover the
//!   rest), and when the first holder was frozen by the nemesis (SIGSTOP) from before the
//!   second came in and stopped within [`PAUSE_GRACE`] of thawing (counted as a warning: no
//!   lease prevents it, fencing does).
//! - **stale-write**: the fenced store accepted a write whose fence is lower than one it had
//!   accepted before for that key.
//! - **fence-order**: an acquisition that started after another had returned got a fence not
//!   larger than that one's.
//! - **wait-bound**: an acquire outlived its wait by more than twice the command timeout plus
//!   [`WAIT_SLACK`] (the last try may start just before the deadline and take a command
//!   timeout, and the client library may reconnect and resend it once; plus any time its
//!   worker was paused by the nemesis); an acquire inside a timeout outlived the timeout by
//!   more than `WAIT_SLACK`; an acquire never returned. Beyond one command timeout (but within
//!   two) is a warning (`wait-overrun`).
//! - **leak**: a key still held once every worker exited and the longest lease passed.
//! - **phantom**: an acquire was refused as busy while nobody could have held the key: no other
//!   attempt on it had started and not yet ended plus its longest lease (+100 ms), counting an
//!   attempt caught in a fault as ending when the fault was healed (under Redlock, refused
//!   attempts count too: a partial grant whose undo failed lingers). Within a
//!   failover or split brain (+ settle) a stale copy can answer: a warning (`busy-in-failover`);
//!   so is a refusal while another task of the same worker was mid-attempt (the local turn).
//! - **quiet-loss**: a watchdog-renewed lease of 300 ms or more was lost (or its release found it
//!   gone) while no fault had been injected since [`QUIET_AFTER_FAULT`] before it was taken.
//! - **reentry**: a guarded call nested in a guarded body on the same key did not run at once
//!   with the outer fence, while the outer lock was not lost (a lost lock is not lent).
//! - **orphan** (not under Redlock): the deployment named a holder (`inspect`, polled every
//!   50 ms) whose fence no acquire returned, set (a fence is the server clock in µs when it was
//!   set) while the only attempts in flight on the key, counting those caught in a fault until
//!   it healed, had been answered "busy": an acquire that took the lock and reported busy (a
//!   replayed command).
//! - **min-hold**: a holder with `min_hold = d` that let go keeping the minimum (`release()`
//!   answered Ok, or a guard dropped without `keep_minimum_on_drop(false)`) whose acquire was
//!   sent at `a`: another acquisition of the key was answered after it let go and before
//!   `a + d` (never past its `max_hold` cap) minus [`MIN_HOLD_SLACK`]. Excused
//!   (warning `min-hold-after-data-loss`) when a fault that may forget locks hit the key in
//!   between (as for overlaps), and for a dropped guard, whose keeping runs in the background,
//!   when any fault came in between (warning `min-hold-after-fault`). A release that failed
//!   promises nothing.
//! - **max-hold**: a holder with `max_hold = m` saw `is_held()` true, or read a `remaining()`
//!   reaching, later than `sent + m` (+ [`POLL`] + [`SCHEDULING_SLACK`]); `sent` is bounded
//!   by the worker's reading of the answer. No fault excuses it: the cap is the client's own
//!   reckoning.
//! - **max-hold-server**: the deployment named a holder with a `max_hold` (polled, with the
//!   lease left) whose lease reached past `sent + max_hold` + drift margin +
//!   [`SERVER_SLACK`]. A warning (`server-past-max-hold-after-fault`) when a fault that could
//!   delay one of its commands came between its acquire and the sighting (any but a pause of
//!   another worker): a command that lands late sets its lease from then.
//! - **max-hold-refusal**: an acquire was refused as busy (the answer taken to come from up to
//!   [`REFUSAL_SLACK`] earlier) while the only attempts that could have held the key were
//!   holders past their cap + drift margin + [`SCHEDULING_SLACK`]. A warning
//!   (`busy-past-max-hold-after-fault`) when a fault between such a holder's acquire and the
//!   refusal may have delayed one of its commands (a command that lands late sets its lease
//!   from then), or when another task of the refused worker was mid-attempt.
//!
//! The holding windows behind **phantom** (and the tight reckoning behind `busy-while-free`)
//! reach to the end of a minimum hold kept on letting go; **quiet-loss** does not count a
//! lease that ended at its `max_hold`.
//!
//! Warnings (counted, not failing): a busy answer while nobody held the key by the tight
//! reckoning (releases that were answered end the holding at once), releases that found the
//! lock gone although the holder still believed it held it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use super::history::{Answer, Attempt, Begin, End, Event, Fault, Hold, Outcome, Via};
use super::worker::POLL;

/// Scheduling noise allowed on top of the drift rule when comparing two holders (timestamps
/// are taken around calls on a loaded machine).
pub const SCHEDULING_SLACK: Duration = Duration::from_millis(5);

/// How much longer than `wait + command timeout` an acquire may take (scheduling, the last
/// round trip, a release of a late answer).
pub const WAIT_SLACK: Duration = Duration::from_millis(250);

/// How long a holder frozen by the nemesis may run after it thaws before it notices its lease
/// ran out (its runtime works off what piled up first).
pub const PAUSE_GRACE: Duration = Duration::from_millis(100);

/// How long after a fault the deployment counts as recovered for the quiet-loss check.
pub const QUIET_AFTER_FAULT: Duration = Duration::from_millis(1000);

/// How much earlier than `acquired + min_hold` another acquisition may be answered: the
/// runtime measures the minimum from its own reading of the clock on the answer, which the
/// worker's reading follows by a moment of scheduling (the runtime keeps its drift margin,
/// 1 % + 2 ms, on top as well).
pub const MIN_HOLD_SLACK: Duration = Duration::from_millis(10);

/// How long before a busy answer reached the worker the server may have decided it, when no
/// fault delays the answer (its way back and the scheduling of the waiting task).
pub const REFUSAL_SLACK: Duration = Duration::from_millis(50);

/// How much later than its cap a lease may reach on the server when no fault delays a
/// command: the command's way there, and the scheduling between the client reading its clock
/// and writing the command.
pub const SERVER_SLACK: Duration = Duration::from_millis(25);

/// What the checker needs to know about the run.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The clients' command timeout.
    pub command_timeout: Duration,
    /// Redlock: the number of nodes (an overlap is excused only when all lost their data).
    pub redlock_nodes: Option<usize>,
    /// How long after a fault that may lose locks the deployment may still be split (clients
    /// following a failover): such a fault excuses overlaps this long after it.
    pub settle: Duration,
    /// When the run started (µs), for relative times in reports.
    pub origin: u64,
    /// When the harness stopped waiting for workers (µs): attempts still open then hung.
    pub finished: u64,
}

/// One broken rule.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which rule (`overlap`, `wait-bound`, ...).
    pub kind: &'static str,
    /// The key, if one.
    pub key: Option<String>,
    /// The span of history it concerns (µs).
    pub from: u64,
    /// The end of that span.
    pub to: u64,
    /// What happened.
    pub message: String,
}

/// What the checker found, and the run's figures.
#[derive(Debug, Default)]
pub struct Report {
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Counted oddities, by kind, with a few examples.
    pub warnings: BTreeMap<&'static str, (usize, Vec<String>)>,
    /// Acquire attempts by how they were made and what they returned.
    pub attempts: BTreeMap<(String, String), usize>,
    /// Holds by how they ended.
    pub holds: BTreeMap<String, usize>,
    /// Fenced writes accepted and refused.
    pub writes: (usize, usize),
    /// Extensions by answer.
    pub extends: BTreeMap<String, usize>,
    /// Faults by kind.
    pub faults: BTreeMap<String, usize>,
    /// How often the hold rules had something to check: holds let go keeping a minimum,
    /// acquires of others turned away within one, holds with a cap, and leases that ended at
    /// their cap.
    pub coverage: BTreeMap<&'static str, usize>,
}

impl Report {
    fn violation(&mut self, kind: &'static str, key: &str, from: u64, to: u64, message: String) {
        self.violations.push(Violation {
            kind,
            key: Some(key.to_owned()),
            from,
            to,
            message,
        });
    }

    fn warn(&mut self, kind: &'static str, example: String) {
        let entry = self.warnings.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < 3 {
            entry.1.push(example);
        }
    }

    /// Adds a violation found outside the history (a leaked lock).
    pub fn add(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    /// Operations in all (acquire attempts).
    pub fn operations(&self) -> usize {
        self.attempts.values().sum()
    }

    /// The one-paragraph summary of a run.
    pub fn summary(&self) -> String {
        let mut by_via: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
        for ((via, outcome), n) in &self.attempts {
            *by_via.entry(via).or_default() += n;
            *by_outcome.entry(outcome).or_default() += n;
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *kinds.entry(v.kind).or_default() += 1;
        }
        let warnings: BTreeMap<&str, usize> =
            self.warnings.iter().map(|(k, (n, _))| (*k, *n)).collect();
        format!(
            "operations {} {by_via:?}, outcomes {by_outcome:?}\n\
             holds ended {:?}; writes accepted {} refused {}; extends {:?}\n\
             faults {:?}\n\
             losses reported {}; holds {:?}; warnings {warnings:?}\n\
             violations {} {kinds:?}",
            self.operations(),
            self.holds,
            self.writes.0,
            self.writes.1,
            self.extends,
            self.faults,
            ["lost", "notheld", "bodylost"]
                .iter()
                .map(|k| self.holds.get(*k).copied().unwrap_or(0))
                .sum::<usize>(),
            self.coverage,
            self.violations.len(),
        )
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The crate's drift rule: the margin a lease of `ttl_ms` keeps for clock drift.
pub fn drift_us(ttl_ms: u64) -> u64 {
    ttl_ms * 1000 / 100 + 2000
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Per key, the spans during which someone could have held it: from the start of every
/// attempt that may have set the key to the end of its holding plus its longest lease (+100
/// ms), or to the end of a minimum hold kept on letting go. A command caught in a fault (a
/// frozen node, a blackholed or slowed connection, a frozen worker) may only run when the
/// fault is healed: then the span reaches that far plus the lease (or the minimum). `tight`: a
/// release that was answered ends the holding at once, a dropped guard 100 ms later.
/// `busy_may_hold`: under Redlock a refused attempt may leave its grant on a node whose undo
/// did not get through. `capped`: no span of an attempt with a `max_hold` reaches past its cap
/// plus drift margin and [`SCHEDULING_SLACK`], as when no fault delays a command.
fn holding_windows(
    attempts: &[&Attempt],
    holds: &HashMap<(u32, u64), &Hold>,
    open: &[&Begin],
    faults: &[&Fault],
    (tight, busy_may_hold, capped): (bool, bool, bool),
) -> Vec<(u64, u64, (u32, u64))> {
    let mut windows = Vec::new();
    for a in attempts {
        if (a.outcome == Outcome::Busy && !busy_may_hold) || a.via == Via::Reenter {
            continue;
        }
        let id = (a.worker, a.id);
        let (end, ttl_ms) = match (a.outcome, holds.get(&id)) {
            (Outcome::Ok, Some(h)) => (h.end.max(h.released), h.ttl_ms),
            (Outcome::Ok, None) => (u64::MAX / 2, a.ttl_ms),
            _ => (a.end, a.ttl_ms),
        };
        let stuck_until = faults
            .iter()
            .filter(|f| f.end > f.start && overlaps((f.start, f.end), (a.start, end)))
            .map(|f| f.end)
            .max()
            .unwrap_or(0);
        let linger = match holds.get(&id) {
            Some(h) if tight && h.release == Answer::Ok => 20_000,
            Some(h) if tight && matches!(h.reason, End::Drop | End::DropNow) => 100_000,
            Some(h) if tight && h.reason == End::BodyDone => 20_000,
            _ => ttl_ms * 1000 + 100_000,
        };
        let end = if tight { end } else { end.max(stuck_until) };
        let mut until = end.saturating_add(linger);
        // Let go keeping a minimum hold: the key stays until the minimum is over (a keeping
        // command delayed by a fault sets what remained of it from when it lands).
        if let Some(h) = holds.get(&id)
            && h.keep
            && a.min_hold_ms > 0
        {
            let from = if tight {
                h.acquired
            } else {
                h.acquired.max(stuck_until)
            };
            let kept = from + a.min_hold_ms * 1000 + drift_us(a.min_hold_ms);
            until = until.max(kept + linger.min(100_000));
        }
        if capped && a.max_hold_ms > 0 {
            // The cap is measured from before the acquire was sent: not after its answer.
            let answered = holds.get(&id).map_or(a.end, |h| h.acquired);
            let cap = answered + a.max_hold_ms * 1000;
            until = until.min(cap + drift_us(a.max_hold_ms) + us(SCHEDULING_SLACK));
        }
        windows.push((a.start, until, id));
    }
    for b in open {
        windows.push((b.start, u64::MAX / 2, (b.worker, b.id)));
    }
    windows
}

/// Checks a merged history.
pub fn check(events: &[Event], config: &CheckConfig) -> Report {
    let mut report = Report::default();
    let mut attempts: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    let mut holds_by_key: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    let mut holds: HashMap<(u32, u64), &Hold> = HashMap::new();
    let mut begins: HashMap<(u32, u64), &Begin> = HashMap::new();
    let mut ended: HashMap<(u32, u64), ()> = HashMap::new();
    let mut writes: BTreeMap<&str, Vec<&super::history::Write>> = BTreeMap::new();
    let mut faults: Vec<&Fault> = Vec::new();
    let mut exits: HashMap<u32, u64> = HashMap::new();
    let mut extends_min: HashMap<(u32, u64), u64> = HashMap::new();
    let mut extends: Vec<&super::history::Extend> = Vec::new();
    let mut seen: Vec<&super::history::Seen> = Vec::new();
    for event in events {
        match event {
            Event::Begin(b) => {
                begins.insert((b.worker, b.id), b);
            }
            Event::Attempt(a) => {
                ended.insert((a.worker, a.id), ());
                attempts.entry(&a.key).or_default().push(a);
                *report
                    .attempts
                    .entry((a.via.to_string(), a.outcome.to_string()))
                    .or_default() += 1;
            }
            Event::Hold(h) => {
                holds.insert((h.worker, h.id), h);
                holds_by_key.entry(&h.key).or_default().push(h);
                *report.holds.entry(h.reason.to_string()).or_default() += 1;
            }
            Event::Write(w) => {
                writes.entry(&w.key).or_default().push(w);
                if w.accepted {
                    report.writes.0 += 1;
                } else {
                    report.writes.1 += 1;
                }
            }
            Event::Extend(x) => {
                extends.push(x);
                *report.extends.entry(x.answer.to_string()).or_default() += 1;
                let min = extends_min.entry((x.worker, x.id)).or_insert(u64::MAX);
                *min = (*min).min(x.ttl_ms);
            }
            Event::Fault(f) => {
                faults.push(f);
                *report.faults.entry(f.kind.clone()).or_default() += 1;
            }
            Event::Exit(e) => {
                exits.insert(e.worker, e.at);
            }
            Event::Seen(e) => seen.push(e),
        }
    }
    let open: Vec<&Begin> = begins
        .iter()
        .filter(|(id, _)| !ended.contains_key(*id))
        .map(|(_, b)| *b)
        .collect();

    // Data loss that may have forgotten `key`'s lock in (from, to]; under Redlock, on which
    // nodes.
    let lost_between = |key: &str, from: u64, to: u64| -> bool {
        let relevant = faults.iter().filter(|f| {
            f.data_loss
                && overlaps((f.start, f.end + us(config.settle)), (from, to))
                && (f.keys.is_empty() || f.keys.iter().any(|k| k == key))
        });
        match config.redlock_nodes {
            None => relevant.count() > 0,
            Some(n) => {
                let mut nodes: Vec<usize> = relevant.filter_map(|f| f.node).collect();
                nodes.sort_unstable();
                nodes.dedup();
                nodes.len() >= n
            }
        }
    };
    let paused = |worker: u32, from: u64, to: u64| -> u64 {
        faults
            .iter()
            .filter(|f| f.worker == Some(worker) && overlaps((f.start, f.end), (from, to)))
            .map(|f| f.end.min(to).saturating_sub(f.start.max(from)))
            .sum()
    };
    let rel = |t: u64| -> String {
        if t >= u64::MAX / 4 {
            return "never".into();
        }
        format!("{:.3}s", t.saturating_sub(config.origin) as f64 / 1e6)
    };

    // (a) overlapping holders.
    for (key, list) in &mut holds_by_key {
        list.sort_by_key(|h| h.acquired);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.acquired >= a.last_held {
                    break;
                }
                if a.fence == b.fence && a.worker == b.worker {
                    continue;
                }
                let overlap = a.last_held.min(b.last_held).saturating_sub(b.acquired);
                let bound = drift_us(a.ttl_ms) + us(SCHEDULING_SLACK) + us(POLL);
                if overlap <= bound || lost_between(key, a.sent, b.acquired) {
                    continue;
                }
                // A holder frozen past its lease runs a moment after it thaws before it can
                // notice (no lease can prevent that; fencing does): excused when the pause
                // began before the other holder came in and the holder stopped right after it.
                let woke_stale = faults.iter().any(|f| {
                    f.worker == Some(a.worker)
                        && f.start <= b.acquired + bound
                        && f.end >= b.acquired
                        && a.last_held <= f.end + us(PAUSE_GRACE)
                });
                if woke_stale {
                    report.warn(
                        "paused-holder-overlap",
                        format!(
                            "`{key}` worker {} attempt {} ({}) ran until {} after a pause; worker {} \
                             attempt {} held it from {}",
                            a.worker,
                            a.id,
                            a.via,
                            rel(a.last_held),
                            b.worker,
                            b.id,
                            rel(b.acquired)
                        ),
                    );
                    continue;
                }
                let extended: Vec<String> = extends
                    .iter()
                    .filter(|x| {
                        x.worker == a.worker
                            && x.id == a.id
                            && x.key == *key
                            && x.start < b.acquired
                    })
                    .map(|x| format!("{} ms at {} ({})", x.ttl_ms, rel(x.start), x.answer))
                    .collect();
                let extended = if extended.is_empty() {
                    String::new()
                } else {
                    format!("; the first had extended to {}", extended.join(", "))
                };
                report.violation(
                    "overlap",
                    key,
                    a.acquired,
                    a.last_held.max(b.last_held),
                    format!(
                        "`{key}`: worker {} (attempt {}, {}, fence {}, ttl {} ms, watchdog {}) saw it held \
                         until {}, but worker {} (attempt {}, {}, fence {}) acquired it at {}: {:.1} ms \
                         together (allowed {:.1} ms){extended}",
                        a.worker,
                        a.id,
                        a.via,
                        a.fence,
                        a.ttl_ms,
                        a.watchdog,
                        rel(a.last_held),
                        b.worker,
                        b.id,
                        b.via,
                        b.fence,
                        rel(b.acquired),
                        overlap as f64 / 1000.0,
                        bound as f64 / 1000.0
                    ),
                );
            }
        }
    }

    // (b) the fenced store's view, and fence order.
    for (key, list) in &mut writes {
        list.sort_by_key(|w| w.seq);
        let mut largest: Option<&super::history::Write> = None;
        for w in list.iter() {
            if !w.accepted {
                continue;
            }
            if let Some(top) = largest
                && w.fence < top.fence
            {
                report.violation(
                    "stale-write",
                    key,
                    top.start,
                    w.end,
                    format!(
                        "`{key}`: the store accepted fence {} from worker {} at {} after fence {} \
                             from worker {}",
                        w.fence,
                        w.worker,
                        rel(w.start),
                        top.fence,
                        top.worker
                    ),
                );
            }
            if largest.is_none_or(|top| w.fence >= top.fence) {
                largest = Some(w);
            }
        }
    }
    for (key, list) in &attempts {
        let mut granted: Vec<&&Attempt> = list
            .iter()
            .filter(|a| a.outcome == Outcome::Ok && a.via != Via::Reenter)
            .collect();
        granted.sort_by_key(|a| a.end);
        // Prefix maximum of fences by return time.
        let mut best: Vec<(u64, &Attempt)> = Vec::with_capacity(granted.len());
        for a in &granted {
            let prev = best.last().map(|(_, b)| *b);
            let top = match prev {
                Some(b) if b.fence >= a.fence => b,
                _ => **a,
            };
            best.push((a.end, top));
        }
        for b in &granted {
            let before = best.partition_point(|(end, _)| *end < b.start);
            if before == 0 {
                continue;
            }
            let earlier = best[before - 1].1;
            if b.fence <= earlier.fence {
                report.violation(
                    "fence-order",
                    key,
                    earlier.start,
                    b.end,
                    format!(
                        "`{key}`: worker {} (attempt {}) got fence {} at {}, not larger than fence {} \
                         that worker {} (attempt {}) got at {}, before it started",
                        b.worker,
                        b.id,
                        b.fence,
                        rel(b.end),
                        earlier.fence,
                        earlier.worker,
                        earlier.id,
                        rel(earlier.end)
                    ),
                );
            }
        }
    }

    // (c) wait bounds, and acquires that never returned.
    let timeout = us(config.command_timeout);
    for list in attempts.values() {
        for a in list {
            // The last try may start just before the deadline and take a command timeout;
            // the connection under it may be re-established once more (the client library
            // reconnects and resends): beyond one timeout is a warning, beyond two a violation.
            let (tolerated, allowed) = match a.via {
                Via::Reenter => continue,
                Via::Timeout => (0, a.wait_ms * 1000 + us(WAIT_SLACK)),
                _ => (
                    a.wait_ms * 1000 + timeout + us(WAIT_SLACK),
                    a.wait_ms * 1000 + 2 * timeout + us(WAIT_SLACK),
                ),
            };
            let took = a.end.saturating_sub(a.start);
            let pause = paused(a.worker, a.start, a.end);
            let (tolerated, allowed) = (tolerated + pause, allowed + pause);
            if took > tolerated && took <= allowed && a.via != Via::Timeout {
                report.warn(
                    "wait-overrun",
                    format!(
                        "`{}` worker {} attempt {} ({}, wait {} ms) took {:.0} ms",
                        a.key,
                        a.worker,
                        a.id,
                        a.via,
                        a.wait_ms,
                        took as f64 / 1000.0
                    ),
                );
            }
            if took > allowed {
                report.violation(
                    "wait-bound",
                    &a.key,
                    a.start,
                    a.end,
                    format!(
                        "`{}`: worker {} attempt {} ({}, wait {} ms) took {:.0} ms and returned {} \
                         (allowed {:.0} ms)",
                        a.key,
                        a.worker,
                        a.id,
                        a.via,
                        a.wait_ms,
                        took as f64 / 1000.0,
                        a.outcome,
                        allowed as f64 / 1000.0
                    ),
                );
            }
        }
    }
    for b in &open {
        let gave_up = exits.get(&b.worker).copied().unwrap_or(config.finished);
        report.violation(
            "wait-bound",
            &b.key,
            b.start,
            gave_up,
            format!(
                "`{}`: worker {} attempt {} ({}, wait {} ms) started at {} never returned (still \
                 waiting at {})",
                b.key,
                b.worker,
                b.id,
                b.via,
                b.wait_ms,
                rel(b.start),
                rel(gave_up)
            ),
        );
    }

    // (e) phantom holders, and (warning) busy on a free key.
    for (key, list) in &attempts {
        let open_here: Vec<&Begin> = open.iter().filter(|b| b.key == *key).copied().collect();
        let redlock = config.redlock_nodes.is_some();
        let lenient = holding_windows(list, &holds, &open_here, &faults, (false, redlock, false));
        let capped = holding_windows(list, &holds, &open_here, &faults, (false, redlock, true));
        let tight = holding_windows(list, &holds, &open_here, &faults, (true, false, false));
        let by_id: HashMap<(u32, u64), &Attempt> =
            list.iter().map(|a| ((a.worker, a.id), *a)).collect();
        for a in list {
            if a.outcome != Outcome::Busy {
                continue;
            }
            let me = (a.worker, a.id);
            let probe = (a.end.saturating_sub(300_000).max(a.start), a.end);
            let covered = |windows: &[(u64, u64, (u32, u64))], probe: (u64, u64)| {
                windows
                    .iter()
                    .any(|(s, e, id)| *id != me && overlaps((*s, *e), probe))
            };
            let failing_over = faults.iter().any(|f| {
                matches!(
                    f.kind.as_str(),
                    "split-brain" | "primary-switch" | "failover" | "failover-force"
                ) && overlaps((f.start, f.end + us(config.settle)), probe)
            });
            // Another task of the same client mid-attempt holds the local turn: a one-try
            // acquire is turned away by it without asking the server.
            let local_turn = list
                .iter()
                .any(|o| o.worker == a.worker && o.id != a.id && overlaps((o.start, o.end), probe));
            if !covered(&lenient, probe) && local_turn {
                report.warn(
                    "busy-behind-local-attempt",
                    format!(
                        "`{key}` worker {} attempt {} busy at {} while another task of it was \
                         acquiring",
                        a.worker,
                        a.id,
                        rel(a.end)
                    ),
                );
            } else if !covered(&lenient, probe) && failing_over {
                report.warn(
                    "busy-in-failover",
                    format!(
                        "`{key}` worker {} attempt {} busy at {} with nobody holding it",
                        a.worker,
                        a.id,
                        rel(a.end)
                    ),
                );
            } else if !covered(&lenient, probe) {
                report.violation(
                    "phantom",
                    key,
                    a.start,
                    a.end,
                    format!(
                        "`{key}`: worker {} attempt {} ({}, wait {} ms) was refused as busy at {} \
                         though nobody could have held the key then",
                        a.worker,
                        a.id,
                        a.via,
                        a.wait_ms,
                        rel(a.end)
                    ),
                );
            } else if let Some(past_cap) = {
                // The answer as late as the server may have given it without a fault.
                let refused = (a.end.saturating_sub(us(REFUSAL_SLACK)).max(a.start), a.end);
                (!covered(&capped, refused) && covered(&lenient, refused)).then_some(refused)
            } {
                // Only holders past their cap (`max_hold`) could have turned it away.
                let holders: Vec<&Attempt> = lenient
                    .iter()
                    .filter(|(s, e, id)| *id != me && overlaps((*s, *e), past_cap))
                    .filter_map(|(_, _, id)| by_id.get(id).copied())
                    .collect();
                let delayed = |h: &Attempt| {
                    faults
                        .iter()
                        .any(|f| overlaps((f.start, f.end), (h.start, a.end)))
                };
                let behind_local = list.iter().any(|o| {
                    o.worker == a.worker && o.id != a.id && overlaps((o.start, o.end), past_cap)
                });
                let named: Vec<String> = holders
                    .iter()
                    .map(|h| {
                        let answered = holds.get(&(h.worker, h.id)).map_or(h.end, |x| x.acquired);
                        format!(
                            "worker {} attempt {} ({}, max_hold {} ms, answered at {})",
                            h.worker,
                            h.id,
                            h.outcome,
                            h.max_hold_ms,
                            rel(answered)
                        )
                    })
                    .collect();
                if behind_local || failing_over || holders.iter().all(|h| delayed(h)) {
                    report.warn(
                        "busy-past-max-hold-after-fault",
                        format!(
                            "`{key}` worker {} attempt {} busy at {}; could hold it: {}",
                            a.worker,
                            a.id,
                            rel(a.end),
                            named.join(", ")
                        ),
                    );
                } else {
                    report.violation(
                        "max-hold-refusal",
                        key,
                        holders.iter().map(|h| h.start).min().unwrap_or(a.start),
                        a.end,
                        format!(
                            "`{key}`: worker {} attempt {} ({}, wait {} ms) was refused as busy at \
                             {} though the only attempts that could have held the key were past \
                             their max_hold: {}",
                            a.worker,
                            a.id,
                            a.via,
                            a.wait_ms,
                            rel(a.end),
                            named.join(", ")
                        ),
                    );
                }
            } else if !covered(&tight, (a.end.saturating_sub(50_000).max(a.start), a.end)) {
                report.warn(
                    "busy-while-free",
                    format!(
                        "`{key}` worker {} attempt {} ({}, wait {} ms) busy at {}",
                        a.worker,
                        a.id,
                        a.via,
                        a.wait_ms,
                        rel(a.end)
                    ),
                );
            }
        }
    }

    // (h) orphan locks: the deployment named a holder whose fence no acquisition returned,
    // set (its fence is the server clock when it was set) while the only attempts in flight
    // on the key had been told "busy".
    if config.redlock_nodes.is_none() {
        let granted: std::collections::HashSet<(&str, u64)> = attempts
            .values()
            .flatten()
            .filter(|a| a.outcome == Outcome::Ok)
            .map(|a| (a.key.as_str(), a.fence))
            .collect();
        let mut reported = std::collections::HashSet::new();
        for s in &seen {
            if granted.contains(&(s.key.as_str(), s.fence)) || !reported.insert((&s.key, s.fence)) {
                continue;
            }
            let set_at = (s.fence.saturating_sub(2_000), s.fence + 2_000);
            let list = attempts.get(s.key.as_str()).map_or(&[][..], Vec::as_slice);
            let may_have = |a: &&Attempt| {
                let stuck_until = faults
                    .iter()
                    .filter(|f| f.end > f.start && overlaps((f.start, f.end), (a.start, a.end)))
                    .map(|f| f.end)
                    .max()
                    .unwrap_or(0);
                overlaps((a.start, a.end.max(stuck_until)), set_at)
            };
            // A re-entering call may acquire too: under an outer lock that was lost it takes
            // the key for itself (a lost lock is not lent).
            let explained = list
                .iter()
                .any(|a| a.outcome != Outcome::Busy && may_have(a))
                || open.iter().any(|b| b.key == s.key && b.start <= set_at.1)
                || faults.iter().any(|f| {
                    matches!(f.kind.as_str(), "split-brain" | "primary-switch")
                        && overlaps((f.start, f.end + us(config.settle)), set_at)
                });
            let refused: Vec<String> = list
                .iter()
                .filter(|a| a.outcome == Outcome::Busy && may_have(a))
                .map(|a| format!("worker {} attempt {} ({})", a.worker, a.id, a.via))
                .collect();
            if explained || refused.is_empty() {
                continue;
            }
            let last_seen = seen
                .iter()
                .filter(|o| o.key == s.key && o.fence == s.fence)
                .map(|o| o.at)
                .max()
                .unwrap_or(s.at);
            report.violation(
                "orphan",
                &s.key,
                s.fence,
                last_seen,
                format!(
                    "`{}`: a lock with fence {} was set at {} and still held at {} though no \
                     acquire got it: the attempts in flight then were told busy ({})",
                    s.key,
                    s.fence,
                    rel(s.fence),
                    rel(last_seen),
                    refused.join(", ")
                ),
            );
        }
    }

    // (f) losses with no fault around.
    let quiet = |from: u64, to: u64| {
        !faults
            .iter()
            .any(|f| overlaps((f.start, f.end + us(QUIET_AFTER_FAULT)), (from, to)))
    };
    for h in holds.values() {
        let released = matches!(h.reason, End::Release | End::ReleaseNow);
        let lost = matches!(h.reason, End::Lost | End::NotHeld | End::BodyLost)
            || (released && h.release == Answer::Lost);
        if released && h.release == Answer::Lost {
            report.warn(
                "release-found-it-gone",
                format!(
                    "`{}` worker {} attempt {} fence {} (watchdog {}) at {}",
                    h.key,
                    h.worker,
                    h.id,
                    h.fence,
                    h.watchdog,
                    rel(h.end)
                ),
            );
        }
        let shortest = extends_min
            .get(&(h.worker, h.id))
            .copied()
            .unwrap_or(u64::MAX);
        let initial = attempts
            .get(h.key.as_str())
            .and_then(|l| l.iter().find(|a| a.worker == h.worker && a.id == h.id))
            .map_or(h.ttl_ms, |a| a.ttl_ms);
        // A lease that ran to its cap ends there by design: from the last renewal before the
        // cap the deadline is at most a drift margin short of it.
        let at_cap = h.max_hold_ms > 0
            && h.end.max(h.released) + drift_us(h.ttl_ms) + us(SCHEDULING_SLACK)
                >= h.sent + h.max_hold_ms * 1000;
        if lost && at_cap {
            *report.coverage.entry("max-reached").or_default() += 1;
        }
        if !lost || !h.watchdog || initial.min(shortest) < 300 || at_cap {
            continue;
        }
        if quiet(
            h.sent.saturating_sub(us(QUIET_AFTER_FAULT)),
            h.end.max(h.released),
        ) {
            report.violation(
                "quiet-loss",
                &h.key,
                h.acquired,
                h.end,
                format!(
                    "`{}`: worker {} attempt {} ({}, fence {}, ttl {} ms, watchdog on) lost its lease \
                     ({}, release {}) at {}, {:.0} ms after taking it, with no fault injected",
                    h.key,
                    h.worker,
                    h.id,
                    h.via,
                    h.fence,
                    initial,
                    h.reason,
                    h.release,
                    rel(h.end),
                    h.end.saturating_sub(h.acquired) as f64 / 1000.0
                ),
            );
        }
    }

    // (i) minimum holds: letting go within the minimum kept the key until it was over.
    for (key, list) in &holds_by_key {
        let granted: Vec<&Attempt> = attempts.get(key).map_or(Vec::new(), |l| {
            l.iter()
                .filter(|a| a.outcome == Outcome::Ok && a.via != Via::Reenter)
                .copied()
                .collect()
        });
        for h in list {
            let kept = h.min_hold_ms > 0
                && h.keep
                && match h.reason {
                    // A release that failed promises nothing (the lock runs out with its lease).
                    End::Release => h.release == Answer::Ok,
                    End::Drop => true,
                    _ => false,
                };
            if !kept {
                continue;
            }
            *report.coverage.entry("min-kept").or_default() += 1;
            // The minimum is measured from when the acquire was sent (the worker's reading
            // just before it, which can only be earlier).
            let mut until = h.sent + h.min_hold_ms * 1000;
            if h.max_hold_ms > 0 {
                // Never kept past the cap, which `sent` (the worker's start) bounds from below.
                until = until.min(h.sent + h.max_hold_ms * 1000);
            }
            let until = until.saturating_sub(us(MIN_HOLD_SLACK));
            let turned_away = attempts.get(key).map_or(0, |l| {
                l.iter()
                    .filter(|b| b.outcome == Outcome::Busy && b.end > h.end && b.end < until)
                    .count()
            });
            *report.coverage.entry("min-turned-away").or_default() += turned_away;
            for b in &granted {
                if (b.worker, b.id) == (h.worker, h.id) || b.end <= h.end || b.end >= until {
                    continue;
                }
                let example = format!(
                    "`{key}` worker {} attempt {} (fence {}, min_hold {} ms, acquired at {}, {} at \
                     {}): worker {} attempt {} ({}, fence {}) acquired it at {}, {:.1} ms into \
                     the minimum",
                    h.worker,
                    h.id,
                    h.fence,
                    h.min_hold_ms,
                    rel(h.acquired),
                    h.reason,
                    rel(h.end),
                    b.worker,
                    b.id,
                    b.via,
                    b.fence,
                    rel(b.end),
                    b.end.saturating_sub(h.sent) as f64 / 1000.0
                );
                if lost_between(key, h.sent, b.end) {
                    report.warn("min-hold-after-data-loss", example);
                } else if h.reason == End::Drop
                    && faults
                        .iter()
                        .any(|f| overlaps((f.start, f.end), (h.end, b.end)))
                {
                    // A dropped guard keeps the minimum in the background: a fault may have
                    // kept that command from landing.
                    report.warn("min-hold-after-fault", example);
                } else {
                    report.violation(
                        "min-hold",
                        key,
                        h.acquired,
                        b.end,
                        format!("{example} (allowed from {})", rel(until)),
                    );
                }
            }
        }
    }

    // (j) maximum holds: nobody believes past the cap.
    for h in holds.values() {
        if h.max_hold_ms == 0 {
            continue;
        }
        *report.coverage.entry("max").or_default() += 1;
        // The acquire was sent before its answer was seen: the cap is no later than this.
        let cap = h.acquired + h.max_hold_ms * 1000;
        let allowed = cap + us(POLL) + us(SCHEDULING_SLACK);
        for (what, at) in [
            ("saw it held", h.last_held),
            ("was told it held until", h.until),
        ] {
            if at <= allowed {
                continue;
            }
            report.violation(
                "max-hold",
                &h.key,
                h.acquired,
                at,
                format!(
                    "`{}`: worker {} attempt {} (fence {}, ttl {} ms, watchdog {}, max_hold {} ms, \
                     acquired at {}) {what} {}, {:.1} ms past its cap (allowed {:.1} ms)",
                    h.key,
                    h.worker,
                    h.id,
                    h.fence,
                    h.ttl_ms,
                    h.watchdog,
                    h.max_hold_ms,
                    rel(h.acquired),
                    rel(at),
                    at.saturating_sub(cap) as f64 / 1000.0,
                    allowed.saturating_sub(cap) as f64 / 1000.0
                ),
            );
        }
    }

    // (k) the server's view of maximum holds: no lease of a capped holder reaches past its cap.
    let capped_holders: HashMap<(&str, u64), &Attempt> = attempts
        .values()
        .flatten()
        .filter(|a| a.outcome == Outcome::Ok && a.via != Via::Reenter && a.max_hold_ms > 0)
        .map(|a| ((a.key.as_str(), a.fence), *a))
        .collect();
    let mut reported = std::collections::HashSet::new();
    for s in &seen {
        let (Some(a), Some(ttl_ms)) = (capped_holders.get(&(s.key.as_str(), s.fence)), s.ttl_ms)
        else {
            continue;
        };
        let answered = holds.get(&(a.worker, a.id)).map_or(a.end, |h| h.acquired);
        let cap = answered + a.max_hold_ms * 1000;
        let allowed = cap + drift_us(a.max_hold_ms) + us(SERVER_SLACK);
        let reach = s.at + ttl_ms * 1000;
        if reach <= allowed || !reported.insert((a.worker, a.id)) {
            continue;
        }
        let message = format!(
            "`{}`: worker {} attempt {} (fence {}, ttl {} ms, watchdog {}, max_hold {} ms, \
             acquired at {}) was seen at {} with {} ms left: held until {} at least, {:.1} ms \
             past its cap",
            s.key,
            a.worker,
            a.id,
            a.fence,
            a.ttl_ms,
            a.watchdog,
            a.max_hold_ms,
            rel(answered),
            rel(s.at),
            ttl_ms,
            rel(reach),
            reach.saturating_sub(cap) as f64 / 1000.0
        );
        let delayed = faults.iter().any(|f| {
            f.worker.is_none_or(|w| w == a.worker) && overlaps((f.start, f.end), (a.start, s.at))
        });
        if delayed {
            report.warn("server-past-max-hold-after-fault", message);
        } else {
            report.violation("max-hold-server", &s.key, a.start, reach, message);
        }
    }

    // (g) re-entrant calls. A call nested under a body whose lock was lost re-enters nothing
    // (the lock is not lent once it is gone): it may be refused or cancelled with its body.
    let outer_lost = |a: &Attempt| {
        holds_by_key.get(a.key.as_str()).is_some_and(|list| {
            list.iter().any(|h| {
                h.worker == a.worker
                    && h.acquired <= a.start
                    && h.end <= a.end + 5_000
                    && matches!(h.reason, End::Lost | End::NotHeld | End::BodyLost)
            })
        })
    };
    for list in attempts.values() {
        for a in list {
            if a.via == Via::Reenter
                && !matches!(a.outcome, Outcome::Ok | Outcome::Lost)
                && !outer_lost(a)
            {
                report.violation(
                    "reentry",
                    &a.key,
                    a.start,
                    a.end,
                    format!(
                        "`{}`: worker {} attempt {}: a guarded call inside a guarded body on the same \
                         key returned {} (fence {})",
                        a.key, a.worker, a.id, a.outcome, a.fence
                    ),
                );
            }
        }
    }
    report
        .violations
        .sort_by_key(|v| (v.kind, v.from, v.key.clone()));
    report
}

/// The events of `key` (and the faults) around `[from, to]`, as lines with times relative to
/// `origin`, at most `limit` of them, closest to the violation first kept.
pub fn excerpt(
    events: &[Event],
    key: Option<&str>,
    from: u64,
    to: u64,
    origin: u64,
    limit: usize,
) -> String {
    let margin = 1_000_000;
    let span = (from.saturating_sub(margin), to.saturating_add(margin));
    let mut lines: Vec<(u64, String)> = events
        .iter()
        .filter(|e| match (e.key(), key) {
            (Some(k), Some(want)) => k == want,
            (None, _) => matches!(e, Event::Fault(_)),
            (Some(_), None) => true,
        })
        .filter(|e| overlaps((e.at(), e.until()), span))
        .map(|e| (e.at(), e.to_line()))
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    if lines.len() > limit {
        // Keep the ones nearest the violation's start (and those inside it).
        lines.sort_by_key(|(t, _)| {
            if (from..=to).contains(t) {
                t - from
            } else {
                t.abs_diff(from)
            }
        });
        lines.truncate(limit);
        lines.sort_by_key(|(t, _)| *t);
    }
    let mut out = String::new();
    for (t, line) in lines {
        let _ = writeln!(
            out,
            "  {:>9.3}s  {line}",
            t.saturating_sub(origin) as f64 / 1e6
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::history::Begin;

    const MS: u64 = 1000;
    const T0: u64 = 1_000_000_000;

    fn config() -> CheckConfig {
        CheckConfig {
            command_timeout: Duration::from_millis(400),
            redlock_nodes: None,
            settle: Duration::ZERO,
            origin: T0,
            finished: T0 + 60_000 * MS,
        }
    }

    /// One plain `client.lock` on `k` by `worker`, started at `start` ms and answered 1 ms
    /// later with `outcome`.
    fn attempt(worker: u32, start: u64, outcome: Outcome, (min, max): (u64, u64)) -> Attempt {
        Attempt {
            worker,
            id: 1,
            key: "k".into(),
            via: Via::Lock,
            ttl_ms: 1000,
            wait_ms: 0,
            watchdog: true,
            min_hold_ms: min,
            max_hold_ms: max,
            start: T0 + start * MS,
            end: T0 + (start + 1) * MS,
            outcome,
            fence: if outcome == Outcome::Ok {
                u64::from(worker) + 1
            } else {
                0
            },
        }
    }

    /// The hold of `a`, believed until `last` ms, let go at `end` ms for `reason`.
    fn hold(a: &Attempt, last: u64, end: u64, reason: End, release: Answer) -> Hold {
        Hold {
            worker: a.worker,
            id: a.id,
            key: a.key.clone(),
            fence: a.fence,
            via: a.via,
            ttl_ms: a.ttl_ms,
            watchdog: a.watchdog,
            min_hold_ms: a.min_hold_ms,
            max_hold_ms: a.max_hold_ms,
            keep: matches!(reason, End::Release | End::Drop),
            sent: a.start,
            acquired: a.end,
            last_held: T0 + last * MS,
            until: T0 + last * MS,
            end: T0 + end * MS,
            reason,
            release,
            released: T0 + end * MS + 500,
        }
    }

    fn history(parts: Vec<Event>) -> Vec<Event> {
        let mut events: Vec<Event> = parts
            .iter()
            .filter_map(|e| match e {
                Event::Attempt(a) => Some(Event::Begin(Begin {
                    worker: a.worker,
                    id: a.id,
                    key: a.key.clone(),
                    via: a.via,
                    wait_ms: a.wait_ms,
                    start: a.start,
                })),
                _ => None,
            })
            .collect();
        events.extend(parts);
        events.sort_by_key(Event::at);
        events
    }

    fn kinds(report: &Report) -> Vec<&'static str> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    fn fault(kind: &str, start: u64, end: u64, data_loss: bool) -> Event {
        Event::Fault(Fault {
            id: 1,
            kind: kind.into(),
            target: "node0".into(),
            start: T0 + start * MS,
            end: T0 + end * MS,
            data_loss,
            node: Some(0),
            worker: None,
            keys: Vec::new(),
        })
    }

    /// A kept minimum of 500 ms, released after 50: a second holder at 200 ms broke it.
    fn taken_within_the_minimum(reason: End, release: Answer) -> Vec<Event> {
        let a = attempt(0, 0, Outcome::Ok, (500, 0));
        let h = hold(&a, 50, 50, reason, release);
        let b = attempt(1, 199, Outcome::Ok, (0, 0));
        let hb = hold(&b, 250, 250, End::Release, Answer::Ok);
        vec![
            Event::Attempt(a),
            Event::Hold(h),
            Event::Attempt(b),
            Event::Hold(hb),
        ]
    }

    #[test]
    fn an_acquisition_within_a_kept_minimum_is_a_violation() {
        let events = history(taken_within_the_minimum(End::Release, Answer::Ok));
        assert_eq!(kinds(&check(&events, &config())), ["min-hold"]);
        let events = history(taken_within_the_minimum(End::Drop, Answer::None));
        assert_eq!(kinds(&check(&events, &config())), ["min-hold"]);
    }

    #[test]
    fn a_minimum_let_go_at_once_or_lost_to_a_fault_is_no_violation() {
        for (reason, release) in [
            (End::ReleaseNow, Answer::Ok),
            (End::DropNow, Answer::None),
            // The release failed: the lock ran out with its lease.
            (End::Release, Answer::Error),
        ] {
            let events = history(taken_within_the_minimum(reason, release));
            assert_eq!(
                kinds(&check(&events, &config())),
                [] as [&str; 0],
                "{reason}"
            );
        }
        let mut parts = taken_within_the_minimum(End::Release, Answer::Ok);
        parts.push(fault("flushall", 100, 100, true));
        let report = check(&history(parts), &config());
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert_eq!(report.warnings["min-hold-after-data-loss"].0, 1);
        // A dropped guard keeps the minimum in the background: any fault may explain it.
        let mut parts = taken_within_the_minimum(End::Drop, Answer::None);
        parts.push(fault("latency", 60, 150, false));
        let report = check(&history(parts), &config());
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert_eq!(report.warnings["min-hold-after-fault"].0, 1);
    }

    #[test]
    fn a_busy_answer_within_a_kept_minimum_is_no_phantom() {
        let a = attempt(0, 0, Outcome::Ok, (1800, 0));
        let h = hold(&a, 10, 10, End::Release, Answer::Ok);
        // Past the lease's own reach (end + ttl + 100 ms), within the minimum.
        let busy = attempt(1, 1500, Outcome::Busy, (0, 0));
        let report = check(
            &history(vec![
                Event::Attempt(a),
                Event::Hold(h),
                Event::Attempt(busy),
            ]),
            &config(),
        );
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.coverage["min-turned-away"], 1);
    }

    #[test]
    fn believing_past_the_cap_is_a_violation() {
        let a = attempt(0, 0, Outcome::Ok, (0, 300));
        let mut h = hold(&a, 290, 295, End::NotHeld, Answer::Lost);
        let report = check(
            &history(vec![Event::Attempt(a.clone()), Event::Hold(h.clone())]),
            &config(),
        );
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert_eq!(
            report.coverage["max-reached"], 1,
            "a loss at the cap is no quiet loss"
        );
        h.last_held = T0 + 340 * MS;
        let report = check(
            &history(vec![Event::Attempt(a.clone()), Event::Hold(h.clone())]),
            &config(),
        );
        assert_eq!(kinds(&report), ["max-hold"]);
        h.last_held = T0 + 290 * MS;
        h.until = T0 + 900 * MS; // remaining() pointed past the cap
        let report = check(&history(vec![Event::Attempt(a), Event::Hold(h)]), &config());
        assert_eq!(kinds(&report), ["max-hold"]);
    }

    #[test]
    fn a_lease_seen_reaching_past_the_cap_is_a_violation_unless_a_fault_delayed_it() {
        let a = attempt(0, 0, Outcome::Ok, (0, 300));
        let h = hold(&a, 290, 295, End::NotHeld, Answer::Ok);
        let seen = |at: u64, ttl: u64| {
            Event::Seen(super::super::history::Seen {
                key: "k".into(),
                fence: a.fence,
                at: T0 + at * MS,
                ttl_ms: Some(ttl),
            })
        };
        let within = vec![
            Event::Attempt(a.clone()),
            Event::Hold(h.clone()),
            seen(100, 200),
        ];
        assert!(check(&history(within), &config()).violations.is_empty());
        let past = vec![Event::Attempt(a.clone()), Event::Hold(h), seen(250, 1000)];
        assert_eq!(
            kinds(&check(&history(past.clone()), &config())),
            ["max-hold-server"]
        );
        let mut delayed = past;
        delayed.push(fault("pause-node", 150, 240, false));
        let report = check(&history(delayed), &config());
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert_eq!(report.warnings["server-past-max-hold-after-fault"].0, 1);
    }

    #[test]
    fn a_refusal_long_past_the_cap_is_a_violation_unless_a_fault_delayed_it() {
        let a = attempt(0, 0, Outcome::Ok, (0, 300));
        let h = hold(&a, 290, 295, End::NotHeld, Answer::Lost);
        let busy = attempt(1, 600, Outcome::Busy, (0, 0));
        let parts = vec![Event::Attempt(a), Event::Hold(h), Event::Attempt(busy)];
        let report = check(&history(parts.clone()), &config());
        assert_eq!(kinds(&report), ["max-hold-refusal"]);
        let mut parts = parts;
        parts.push(fault("latency", 100, 400, false));
        let report = check(&history(parts), &config());
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        assert_eq!(report.warnings["busy-past-max-hold-after-fault"].0, 1);
    }
}
