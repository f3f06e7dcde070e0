//! Leases and the watchdog: one task per client renews every held lock, batched.
//!
//! Each held lock is a [`Lease`] in the watchdog's table. The task sleeps until the earliest
//! renewal or deadline, sends one renew call for every lease due (spawned, so a slow server
//! never delays deadline checks), and marks a lease lost when the server says another token
//! holds the key or when its local deadline passes without a successful renewal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::Renewal;
use crate::client::Inner;
use crate::token::Token;
use crate::waiter::GatePass;

/// The margin kept below the lease for clock drift between this process and the server.
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// How long a lease granted by a request sent at `sent` is trusted locally.
pub(crate) fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.saturating_sub(drift(ttl))
}

/// One held lock, shared by its guard and the watchdog.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) key: String,
    pub(crate) full_key: String,
    pub(crate) token: Token,
    pub(crate) fence: u64,
    held: AtomicBool,
    lost: Notify,
    timing: Mutex<Timing>,
    /// This process's turn at the key's local gate: handed on when the lease ends.
    pass: Mutex<Option<GatePass>>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    ttl: Duration,
    deadline: Instant,
}

impl Lease {
    pub(crate) fn new(
        key: String,
        full_key: String,
        token: Token,
        fence: u64,
        ttl: Duration,
        deadline: Instant,
    ) -> Self {
        Self {
            key,
            full_key,
            token,
            fence,
            held: AtomicBool::new(true),
            lost: Notify::new(),
            timing: Mutex::new(Timing { ttl, deadline }),
            pass: Mutex::new(None),
        }
    }

    pub(crate) fn hold_pass(&self, pass: GatePass) {
        *self.pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(pass);
    }

    /// The local gate turn, taken out to be handed on (once).
    pub(crate) fn take_pass(&self) -> Option<GatePass> {
        self.pass.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.timing().ttl
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.timing().deadline
    }

    /// Record a successful renewal (or extension) sent at `sent` for `ttl`.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) {
        let mut t = self.timing();
        t.ttl = ttl;
        t.deadline = t.deadline.max(valid_until(sent, ttl));
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire) && Instant::now() < self.deadline()
    }

    pub(crate) fn mark_lost(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            tracing::warn!(key = %self.key, "lock lost");
        }
        // Whoever waits in this process may try now.
        drop(self.take_pass());
        self.lost.notify_waiters();
    }

    /// Resolves once the lease is lost (or its deadline passed).
    pub(crate) async fn lost(&self) {
        loop {
            let notified = self.lost.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.held.load(Ordering::Acquire) {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.deadline() {
                        self.mark_lost();
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    table: Mutex<Table>,
    wake: Arc<Notify>,
    running: AtomicBool,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    /// When the task plans to look at the table next; a new lease due earlier wakes it.
    next_wake: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    lease: Arc<Lease>,
    renew: bool,
    next_renew: Instant,
    in_flight: bool,
}

impl Watchdog {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of leases tracked (held locks of this client).
    pub(crate) fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// Track `lease` until [`forget`](Self::forget); renewed every ttl/3 when `renew`.
    pub(crate) fn track(
        &self,
        inner: &Arc<Inner>,
        lease: Arc<Lease>,
        renew: bool,
        sent: Instant,
    ) -> u64 {
        let next_renew = sent + lease.ttl() / 3;
        let due = if renew { next_renew } else { lease.deadline() };
        let wake = {
            let mut table = self.table();
            let id = table.next_id;
            table.next_id += 1;
            table.entries.insert(
                id,
                Entry {
                    lease,
                    renew,
                    next_renew,
                    in_flight: false,
                },
            );
            let wake = table.next_wake.is_none_or(|w| due < w);
            if wake {
                table.next_wake = Some(due);
            }
            (id, wake)
        };
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::downgrade(inner), self.wake.clone()));
        } else if wake.1 {
            self.wake.notify_one();
        }
        wake.0
    }

    /// Stop tracking a lease (released or dropped). No renewal is sent for it afterwards.
    pub(crate) fn forget(&self, id: u64) {
        self.table().entries.remove(&id);
    }

    /// After an explicit extension: the next renewal is a third of the new lease away.
    pub(crate) fn rescheduled(&self, id: u64, sent: Instant, ttl: Duration) {
        if let Some(e) = self.table().entries.get_mut(&id) {
            e.next_renew = sent + ttl / 3;
        }
    }

    /// One pass over the table: expire what passed its deadline, collect what is due.
    fn sweep(&self, now: Instant) -> (Vec<(u64, Arc<Lease>)>, Option<Instant>) {
        let mut table = self.table();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        table.entries.retain(|&id, e| {
            let deadline = e.lease.deadline();
            if now >= deadline || !e.lease.held.load(Ordering::Acquire) {
                e.lease.mark_lost();
                return false;
            }
            earliest(deadline);
            if e.renew && !e.in_flight {
                // Renew slightly early so that leases due close together share one call.
                let slack = e.lease.ttl() / 12;
                if e.next_renew <= now + slack {
                    e.in_flight = true;
                    due.push((id, e.lease.clone()));
                } else {
                    earliest(e.next_renew);
                }
            }
            true
        });
        table.next_wake = next;
        (due, next)
    }

    fn renewal_done(&self, results: Vec<(u64, Option<bool>)>, sent: Instant) {
        let mut table = self.table();
        for (id, outcome) in results {
            let Some(e) = table.entries.get_mut(&id) else {
                continue;
            };
            e.in_flight = false;
            let ttl = e.lease.ttl();
            match outcome {
                Some(true) => {
                    e.lease.renewed(sent, ttl);
                    e.next_renew = sent + ttl / 3;
                }
                Some(false) => {
                    e.lease.mark_lost();
                    table.entries.remove(&id);
                }
                // An error: try again soon, until the deadline says otherwise.
                None => {
                    e.next_renew = Instant::now() + (ttl / 10).max(Duration::from_millis(20));
                }
            }
        }
        table.next_wake = None;
    }
}

async fn run(inner: Weak<Inner>, wake_up: Arc<Notify>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let wake = wake_up.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (due, next) = strong.watchdog.sweep(Instant::now());
        if !due.is_empty() {
            tokio::spawn(renew(strong.clone(), due));
        }
        drop(strong);
        // With nothing held the task idles (an hour at a time) until a lease wakes it, and
        // exits once the client is gone.
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = wake => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

async fn renew(inner: Arc<Inner>, due: Vec<(u64, Arc<Lease>)>) {
    let sent = Instant::now();
    let batch: Vec<Renewal<'_>> = due
        .iter()
        .map(|(_, lease)| Renewal {
            key: &lease.full_key,
            token: &lease.token,
            ttl: lease.ttl(),
        })
        .collect();
    let results = match inner.backend.renew(&batch).await {
        Ok(renewed) => due
            .iter()
            .zip(renewed)
            .map(|((id, _), outcome)| (*id, outcome))
            .collect(),
        Err(err) => {
            tracing::debug!(%err, locks = due.len(), "renewal failed; retrying until the lease deadline");
            due.iter().map(|(id, _)| (*id, None)).collect()
        }
    };
    inner.watchdog.renewal_done(results, sent);
    inner.watchdog.wake.notify_one();
}
