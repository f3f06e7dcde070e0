//! The watchdog: one task per client renews every held lease, batched, and ends the leases
//! whose deadline passed.
//!
//! Each held lock is a [`Lease`] in the watchdog's table. The task sleeps until the earliest
//! renewal or deadline, renews every lease due in one round of calls (chunks of
//! [`RENEW_CHUNK`], [`RENEW_IN_FLIGHT`] out at a time, spawned, so a slow server never delays
//! deadline checks) and hands each answer to [`Lease::settle`], which owns the deadline rule.
//! The task runs on the library's [background](crate::background) runtime, so it keeps
//! renewing whichever runtime the lock was taken on, and exits once its client is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
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

impl Table {
    /// Whether the task must be woken to look at the table by `due`: true when it planned to
    /// look later (or not at all), and `due` is then its next look.
    fn look_by(&mut self, due: Instant) -> bool {
        let wake = self.next_wake.is_none_or(|w| due < w);
        if wake {
            self.next_wake = Some(due);
        }
        wake
    }
}

#[derive(Debug)]
struct Entry {
    lease: Arc<Lease>,
    renew: bool,
    next_renew: Instant,
    /// In a round of renewals that has not answered for it yet: later sweeps leave it out.
    in_round: bool,
}

/// When a lease is renewed next after a renewal or an extension sent at `sent` for `ttl`
/// ended with `outcome`: a third of the new lease on when granted; soon when the outcome is
/// unknown (retried until the deadline says otherwise) or the lease is gone.
fn next_renew(outcome: Outcome, sent: Instant, ttl: Duration) -> Instant {
    match outcome {
        Outcome::Granted => sent + ttl / 3,
        Outcome::Unknown | Outcome::NotHeld => Instant::now() + retry_pause(ttl),
    }
}

/// How soon a lease of `ttl` is renewed again after a renewal (or extension) whose outcome is
/// unknown.
fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(20))
}

/// A lease due for renewal, in a round.
struct Due {
    id: u64,
    lease: Arc<Lease>,
}

/// A lease whose renewal is being sent, with what it is sent with: its command permit is
/// taken only when its chunk is sent and given back when that chunk answers, so an
/// extension waits for one chunk, never for the rest of the round.
struct Sending {
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
                    in_round: false,
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

    /// After an explicit extension sent at `sent` for `ttl` ended with `outcome`: granted,
    /// the next renewal is a third of the new lease away; unknown (failed, or given up by its
    /// caller), the lease is renewed again soon, as after a failed renewal, since the
    /// extension may have shortened it and held up the renewal that was due. The task looks
    /// again either way (the deadline may have moved earlier).
    pub(crate) fn rescheduled(&self, id: u64, sent: Instant, ttl: Duration, outcome: Outcome) {
        let next_renew = {
            let mut table = self.shared.table();
            let Some(e) = table.entries.get_mut(&id) else {
                return;
            };
            let ttl = match outcome {
                Outcome::Granted => ttl,
                // It may still be on the lease before the extension.
                Outcome::Unknown | Outcome::NotHeld => e.lease.ttl(),
            };
            e.next_renew = next_renew(outcome, sent, ttl);
            e.next_renew
        };
        self.woken(next_renew);
    }

    /// Wakes the task if it sleeps past `due`.
    fn woken(&self, due: Instant) {
        let wake = self.shared.table().look_by(due);
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
            if !e.renew || e.in_round {
                return true;
            }
            // Renew slightly early so that leases due close together share one call.
            let ttl = e.lease.ttl();
            if e.next_renew > now + ttl / 12 {
                earliest(e.next_renew);
            } else if !e.lease.renewable() {
                // The lease already reaches its cap (`max_hold`): it ends at its deadline.
            } else {
                e.in_round = true;
                due.push(Due {
                    id,
                    lease: e.lease.clone(),
                });
            }
            true
        });
        table.next_wake = next;
        (due, next)
    }

    /// Settles a chunk's answers (`None`: unknown) and schedules what comes next.
    fn renewed(&self, sent_for: Vec<Sending>, answers: Vec<Option<bool>>, sent: Instant) {
        let mut table = self.table();
        let mut earliest: Option<Instant> = None;
        // A short answer leaves the rest unknown.
        let answers = answers.into_iter().chain(std::iter::repeat(None));
        for (d, answer) in sent_for.into_iter().zip(answers) {
            let outcome = match answer {
                Some(true) => Outcome::Granted,
                Some(false) => Outcome::NotHeld,
                None => Outcome::Unknown,
            };
            d.lease.settle(&d.permit, sent, d.ttl, outcome);
            let Some(e) = table.entries.get_mut(&d.id) else {
                continue;
            };
            e.in_round = false;
            match outcome {
                Outcome::Granted => {}
                Outcome::NotHeld => {
                    table.entries.remove(&d.id);
                    continue;
                }
                Outcome::Unknown => d.lease.renewal_failed(),
            }
            e.next_renew = next_renew(outcome, sent, d.ttl);
            earliest = Some(earliest.map_or(e.next_renew, |t| t.min(e.next_renew)));
        }
        // Wake the task only if one of these is due before it planned to look again: once a
        // round, not once a chunk (a sweep reads the whole table).
        if let Some(due) = earliest
            && table.look_by(due)
        {
            self.wake.notify_one();
        }
    }

    /// Leases of a round that were not sent (no longer held or renewable, which their deadline
    /// settles, or an extension in flight, which reschedules when done) or whose round ended
    /// early: later sweeps consider them again.
    fn left_out(&self, ids: impl IntoIterator<Item = u64>) {
        let mut table = self.table();
        let mut earliest: Option<Instant> = None;
        for id in ids {
            if let Some(e) = table.entries.get_mut(&id) {
                e.in_round = false;
                // An extension that ended meanwhile woke a sweep that skipped this lease (it
                // was in the round): look again by its renewal. One still in flight (its
                // permit taken) wakes the task itself when it ends.
                if e.lease.try_command().is_some() {
                    earliest = Some(earliest.map_or(e.next_renew, |t| t.min(e.next_renew)));
                }
            }
        }
        if let Some(due) = earliest
            && table.look_by(due)
        {
            self.wake.notify_one();
        }
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
const RENEW_CHUNK: usize = 64;

/// How many renew calls are out at once: two, so the server always has the next chunk while
/// the answer to the last travels back, and another client's command waits behind at most
/// two chunks, not behind every due lease of a client holding 100 000 locks (whose chunks,
/// all sent at once, would sit in the server's input buffer ahead of it).
const RENEW_IN_FLIGHT: usize = 2;

/// How many once a round falls behind (it has run for a sixth of its shortest lease): with a
/// slow link two chunks at a time may not renew thousands of short leases before they run
/// out, and keeping leases comes before sparing other clients a few milliseconds.
const RENEW_IN_FLIGHT_BEHIND: usize = 8;

/// How a chunk went, for the round's span: how many answers were unknown, how many not held.
#[derive(Default)]
struct Tally {
    unknown: usize,
    lost: usize,
}

/// Sends one chunk of a round and settles its answers: takes each lease's command permit
/// now (leaving out a lease no longer held or with an extension in flight), shapes each
/// renewal from this moment, and gives the permits back as soon as the chunk answered.
async fn renew_chunk(
    shared: &Shared,
    backend: &Backend,
    chunk: &[Due],
    span: &tracing::Span,
) -> Tally {
    let sent = Instant::now();
    let mut sending = Vec::with_capacity(chunk.len());
    let mut left_out = Vec::new();
    for d in chunk {
        match d.lease.try_command() {
            Some(permit) if d.lease.is_held() && d.lease.renewable() => {
                // Read after the permit: an extension that just finished has set it.
                let ttl = d.lease.ttl();
                sending.push(Sending {
                    id: d.id,
                    lease: d.lease.clone(),
                    ttl,
                    permit,
                });
            }
            _ => left_out.push(d.id),
        }
    }
    shared.left_out(left_out);
    if sending.is_empty() {
        return Tally::default();
    }
    let batch: Vec<Renewal<'_>> = sending
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
    let answers = match backend.renew(&batch).instrument(span.clone()).await {
        Ok(mut answers) => {
            // A short answer leaves the rest unknown.
            answers.resize(batch.len(), None);
            answers
        }
        Err(err) => {
            tracing::debug!(parent: span, %err, locks = batch.len(), "renewal failed; retrying until the lease deadline");
            vec![None; batch.len()]
        }
    };
    drop(batch);
    let tally = Tally {
        unknown: answers.iter().filter(|a| a.is_none()).count(),
        lost: answers.iter().filter(|a| **a == Some(false)).count(),
    };
    // Losses are reported inside their hold spans, which follow from the round's.
    shared.renewed(sending, answers, sent);
    tally
}

async fn renew(shared: Arc<Shared>, backend: Arc<Backend>, due: Vec<Due>) {
    let span = renew_span(due.len());
    if !span.is_disabled() {
        for d in &due {
            d.lease.followed_by(&span);
        }
    }
    // Whatever this round does not get to (its task dropped with the runtime) is left to
    // later sweeps.
    let round = RoundEnd {
        shared: &shared,
        ids: due.iter().map(|d| d.id).collect(),
    };
    // In chunks, so that no single script call keeps the server from other clients for
    // long, and a few at a time (see [`RENEW_IN_FLIGHT`], [`RENEW_IN_FLIGHT_BEHIND`]).
    let mut total = Tally::default();
    let started = Instant::now();
    let behind_after = due.iter().map(|d| d.lease.ttl()).min().unwrap_or_default() / 6;
    {
        let mut chunks = due.chunks(RENEW_CHUNK);
        let mut out = futures_util::stream::FuturesUnordered::new();
        loop {
            let in_flight = if started.elapsed() < behind_after {
                RENEW_IN_FLIGHT
            } else {
                RENEW_IN_FLIGHT_BEHIND
            };
            while out.len() < in_flight {
                let Some(chunk) = chunks.next() else { break };
                out.push(renew_chunk(&shared, &backend, chunk, &span));
            }
            let Some(tally) = out.next().await else {
                break;
            };
            total.unknown += tally.unknown;
            total.lost += tally.lost;
        }
    }
    round.completed();
    let outcome = if total.unknown > 0 {
        "failed"
    } else if total.lost > 0 {
        "lost"
    } else {
        "renewed"
    };
    span.record("outcome", outcome);
}

/// Clears the round mark of a round's leases when a round is dropped part-way (its task
/// dropped with the runtime). A round that ran to its end settled every lease chunk by
/// chunk, and some may be in a newer round by then, whose marks must stay.
struct RoundEnd<'a> {
    shared: &'a Shared,
    ids: Vec<u64>,
}

impl RoundEnd<'_> {
    /// Every chunk was sent and settled.
    fn completed(mut self) {
        self.ids.clear();
    }
}

impl Drop for RoundEnd<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            self.shared.left_out(std::mem::take(&mut self.ids));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Grant, Holds};
    use crate::token::Token;

    /// A table with one lease in a round, due now, and the task planning to look in an hour.
    fn in_a_round() -> (Shared, Arc<Lease>) {
        let ttl = Duration::from_secs(30);
        let lease = Arc::new(Lease::granted(
            "k".into(),
            "p:k".into(),
            Token::generate().unwrap(),
            1,
            Grant {
                ttl,
                sent: Instant::now(),
                lease: ttl,
            },
            Holds::default(),
        ));
        let shared = Shared::default();
        {
            let mut table = shared.table();
            table.entries.insert(
                7,
                Entry {
                    lease: lease.clone(),
                    renew: true,
                    next_renew: Instant::now(),
                    in_round: true,
                },
            );
            table.next_wake = Some(Instant::now() + Duration::from_secs(3600));
        }
        (shared, lease)
    }

    async fn woken(shared: &Shared) -> bool {
        tokio::time::timeout(Duration::from_millis(50), shared.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_lease_left_out_of_a_round_after_its_extension_ended_wakes_the_task() {
        // The extension that held its permit ended (and its wake found the lease in the
        // round): nothing else would look at it before its deadline.
        let (shared, _lease) = in_a_round();
        shared.left_out([7]);
        assert!(!shared.table().entries[&7].in_round);
        assert!(woken(&shared).await, "the task looks again");
        assert!(shared.table().next_wake <= Some(Instant::now()));
    }

    #[tokio::test]
    async fn a_completed_round_leaves_the_marks_of_a_newer_round_alone() {
        // Lease 7 was settled by its round and is in a newer one by the time the first ends.
        let (shared, _lease) = in_a_round();
        RoundEnd {
            shared: &shared,
            ids: vec![7],
        }
        .completed();
        assert!(
            shared.table().entries[&7].in_round,
            "still in the newer round"
        );
        assert!(!woken(&shared).await);
        // A round dropped part-way clears what it did not settle.
        drop(RoundEnd {
            shared: &shared,
            ids: vec![7],
        });
        assert!(!shared.table().entries[&7].in_round);
    }

    #[tokio::test]
    async fn a_lease_left_out_while_its_extension_is_in_flight_waits_for_it() {
        // The extension wakes the task when it ends; waking now would only find it due again.
        let (shared, lease) = in_a_round();
        let _extension = lease.command().await;
        shared.left_out([7]);
        assert!(!shared.table().entries[&7].in_round);
        assert!(!woken(&shared).await, "no wake while the extension is out");
    }
}
