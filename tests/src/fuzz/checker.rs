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
//!   with the outer fence.
//! - **orphan** (not under Redlock): the deployment named a holder (`inspect`, polled every
//!   50 ms) whose fence no acquire returned, set (a fence is the server clock in µs when it was
//!   set) while the only attempts in flight on the key, counting those caught in a fault until
//!   it healed, had been answered "busy": an acquire that took the lock and reported busy (a
//!   replayed command).
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
             losses reported {}; warnings {warnings:?}\n\
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
/// ms). A command caught in a fault (a frozen node, a blackholed or slowed connection, a
/// frozen worker) may only run when the fault is healed: then the span reaches that far plus
/// the lease. `tight`: a release that was answered ends the holding at once, a dropped guard
/// 100 ms later. `busy_may_hold`: under Redlock a refused attempt may leave its grant on a node
/// whose undo did not get through.
fn holding_windows(
    attempts: &[&Attempt],
    holds: &HashMap<(u32, u64), &Hold>,
    open: &[&Begin],
    faults: &[&Fault],
    tight: bool,
    busy_may_hold: bool,
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
            Some(h) if tight && h.reason == End::Drop => 100_000,
            Some(h) if tight && h.reason == End::BodyDone => 20_000,
            _ => ttl_ms * 1000 + 100_000,
        };
        let end = if tight { end } else { end.max(stuck_until) };
        windows.push((a.start, end.saturating_add(linger), id));
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
        let lenient = holding_windows(list, &holds, &open_here, &faults, false, redlock);
        let tight = holding_windows(list, &holds, &open_here, &faults, true, false);
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
            let explained = list
                .iter()
                .any(|a| a.outcome != Outcome::Busy && a.via != Via::Reenter && may_have(a))
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
        let lost = matches!(h.reason, End::Lost | End::NotHeld | End::BodyLost)
            || (h.reason == End::Release && h.release == Answer::Lost);
        if h.reason == End::Release && h.release == Answer::Lost {
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
        if !lost || !h.watchdog || initial.min(shortest) < 300 {
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

    // (g) re-entrant calls.
    for list in attempts.values() {
        for a in list {
            if a.via == Via::Reenter && !matches!(a.outcome, Outcome::Ok | Outcome::Lost) {
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
