//! The watchdog: one task per client renews every held lease, batched, and ends the leases
//! whose deadline passed.
//!
//! Each held lock is a [`Lease`] in the watchdog's table. The task sleeps until the earliest
//! renewal or deadline, renews every lease due in one round of calls (chunks of
//! [`RENEW_CHUNK`] sent together, spawned, so a slow server never delays deadline checks) and hands each answer to [`Lease::settle`], which owns the
//! deadline rule. The task runs on the library's [background](crate::background) runtime, so
//! it keeps renewing whichever runtime the lock was taken on, and exits once its client is
//! gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{Backend, Deployment, Renewal};
use crate::lease::{CommandPermit, Lease, Outcome};
use crate::telemetry::renew_span;

/// The leases of one client and the task renewing them.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Table>,
    wake: Arc<Notify>,
    running: AtomicBool,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    /// When the task plans to look at the table next; a lease due earlier wakes it.
    next_wake: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    lease: Arc<Lease>,
    renew: bool,
    next_renew: Instant,
}

/// A lease whose renewal is being sent, with what it is sent with.
struct Due {
    id: u64,
    lease: Arc<Lease>,
    ttl: Duration,
    permit: CommandPermit,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Watchdog {
    /// Number of leases tracked (held locks of this client).
    pub(crate) fn len(&self) -> usize {
        self.shared.table().entries.len()
    }

    /// Tracks `lease`, granted by a command sent at `sent`, until [`forget`](Self::forget):
    /// renewed every ttl/3 through `backend` when `renew`, ended at its deadline either way.
    pub(crate) fn track(
        &self,
        backend: &Arc<Backend>,
        lease: Arc<Lease>,
        renew: bool,
        sent: Instant,
    ) -> u64 {
        let next_renew = sent + lease.ttl() / 3;
        let id = {
            let mut table = self.shared.table();
            let id = table.next_id;
            table.next_id += 1;
            table.entries.insert(
                id,
                Entry {
                    lease,
                    renew,
                    next_renew,
                },
            );
            id
        };
        self.woken(next_renew);
        if !self.shared.running.swap(true, Ordering::AcqRel) {
            let running = Running(Arc::downgrade(&self.shared));
            let (shared, backend) = (Arc::downgrade(&self.shared), Arc::downgrade(backend));
            crate::background::spawn(async move {
                let _running = running;
                run(shared, backend).await;
            });
        }
        id
    }

    /// Stops tracking a lease (released or dropped). No renewal is sent for it afterwards.
    pub(crate) fn forget(&self, id: u64) {
        self.shared.table().entries.remove(&id);
    }

    /// After an explicit extension sent at `sent` for `ttl`: the next renewal is a third of
    /// the new lease away, and the task looks again (the deadline may have moved earlier).
    pub(crate) fn rescheduled(&self, id: u64, sent: Instant, ttl: Duration) {
        let next_renew = sent + ttl / 3;
        if let Some(e) = self.shared.table().entries.get_mut(&id) {
            e.next_renew = next_renew;
        }
        self.woken(next_renew);
    }

    /// Wakes the task if it sleeps past `due`.
    fn woken(&self, due: Instant) {
        let wake = {
            let mut table = self.shared.table();
            let wake = table.next_wake.is_none_or(|w| due < w);
            if wake {
                table.next_wake = Some(due);
            }
            wake
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// Clears `running` when the task ends, however it ends, so the next lease starts a new one.
struct Running(Weak<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.running.store(false, Ordering::Release);
        }
    }
}

impl Shared {
    /// One pass over the table: end what passed its deadline, collect what is due.
    fn sweep(&self, now: Instant) -> (Vec<Due>, Option<Instant>) {
        let mut table = self.table();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        table.entries.retain(|&id, e| {
            if !e.lease.is_held() {
                e.lease.mark_lost();
                return false;
            }
            earliest(e.lease.deadline());
            if !e.renew {
                return true;
            }
            // Renew slightly early so that leases due close together share one call.
            let ttl = e.lease.ttl();
            if e.next_renew > now + ttl / 12 {
                earliest(e.next_renew);
            } else if !e.lease.renewable() {
                // The lease already reaches its cap (`max_hold`): it ends at its deadline.
            } else if let Some(permit) = e.lease.try_command() {
                // Taken after the permit: an extension that just finished has set it.
                let ttl = e.lease.ttl();
                due.push(Due {
                    id,
                    lease: e.lease.clone(),
                    ttl,
                    permit,
                });
            }
            // Otherwise a command is in flight (an extension): it reschedules when done.
            true
        });
        table.next_wake = next;
        (due, next)
    }

    /// Settles a batch's answers (`None`: unknown) and schedules what comes next.
    fn renewed(&self, due: Vec<Due>, answers: Vec<Option<bool>>, sent: Instant) {
        let mut table = self.table();
        // A short answer leaves the rest unknown.
        let answers = answers.into_iter().chain(std::iter::repeat(None));
        for (d, answer) in due.into_iter().zip(answers) {
            let outcome = match answer {
                Some(true) => Outcome::Granted,
                Some(false) => Outcome::NotHeld,
                None => Outcome::Unknown,
            };
            d.lease.settle(&d.permit, sent, d.ttl, outcome);
            let Some(e) = table.entries.get_mut(&d.id) else {
                continue;
            };
            match outcome {
                Outcome::Granted => e.next_renew = sent + d.ttl / 3,
                Outcome::NotHeld => {
                    table.entries.remove(&d.id);
                }
                // Try again soon, until the deadline says otherwise.
                Outcome::Unknown => {
                    d.lease.renewal_failed();
                    e.next_renew = Instant::now() + (d.ttl / 10).max(Duration::from_millis(20));
                }
            }
        }
        table.next_wake = None;
    }
}

async fn run(shared: Weak<Shared>, backend: Weak<Backend>) {
    let Some(wake_up) = shared.upgrade().map(|s| s.wake.clone()) else {
        return;
    };
    loop {
        let (Some(strong), Some(backend)) = (shared.upgrade(), backend.upgrade()) else {
            return;
        };
        let wake = wake_up.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (due, next) = strong.sweep(Instant::now());
        if !due.is_empty() {
            tokio::spawn(renew(strong.clone(), backend, due));
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

/// The most leases one renew call carries: a few microseconds of server time each, so a call
/// stays well under a millisecond when the server is not loaded.
const RENEW_CHUNK: usize = 128;

async fn renew(shared: Arc<Shared>, backend: Arc<Backend>, due: Vec<Due>) {
    let span = renew_span(due.len());
    if !span.is_disabled() {
        for d in &due {
            d.lease.followed_by(&span);
        }
    }
    let sent = Instant::now();
    let batch: Vec<Renewal<'_>> = due
        .iter()
        .map(|d| Renewal {
            key: d.lease.full_key(),
            token: d.lease.token(),
            // Never past the lease's cap; at the cap, a lease that runs out at once.
            ttl: d
                .lease
                .command_ttl(sent, d.ttl)
                .unwrap_or(Duration::from_millis(1)),
        })
        .collect();
    // In chunks, so that no single script call keeps the server from other clients for
    // long; sent together, so the whole batch still waits about one round trip.
    let chunks = batch.chunks(RENEW_CHUNK).map(|chunk| {
        let span = span.clone();
        let backend = &backend;
        async move {
            match backend.renew(chunk).instrument(span.clone()).await {
                Ok(mut answers) => {
                    // A short answer leaves the rest unknown.
                    answers.resize(chunk.len(), None);
                    answers
                }
                Err(err) => {
                    tracing::debug!(parent: &span, %err, locks = chunk.len(), "renewal failed; retrying until the lease deadline");
                    vec![None; chunk.len()]
                }
            }
        }
    });
    let answers: Vec<Option<bool>> = futures_util::future::join_all(chunks)
        .await
        .into_iter()
        .flatten()
        .collect();
    drop(batch);
    let outcome = if answers.len() < due.len() || answers.contains(&None) {
        "failed"
    } else if answers.contains(&Some(false)) {
        "lost"
    } else {
        "renewed"
    };
    span.record("outcome", outcome);
    // Losses are reported inside their hold spans, which follow from this one.
    shared.renewed(due, answers, sent);
    shared.wake.notify_one();
}
