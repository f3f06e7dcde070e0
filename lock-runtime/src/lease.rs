//! The held lease: what this process may believe about a lock it holds, and when it must stop.
//!
//! # The deadline rule
//!
//! A lease is trusted locally until its *deadline*. Every command that changes the server's
//! TTL (the acquire, a watchdog renewal, an [`extend`](crate::LockGuard::extend)) is recorded
//! here through [`Lease::settle`], and nowhere else:
//!
//! - commands on one lease never race: each holds the lease's [`CommandPermit`] from before it
//!   is sent until its outcome is settled, so the server applies them in the order they were
//!   sent and the last answered command is the one the server has;
//! - an answered command sent at `sent` with lease `ttl` sets the deadline to
//!   `sent + ttl - drift(ttl)`, longer *or shorter* than before: the server set its TTL after
//!   `sent`, so it runs out no earlier than that;
//! - a command whose outcome is unknown (an error, a timeout, a dropped future) may still have
//!   landed, so the deadline becomes the *minimum* of the old one and what that command would
//!   have set; it never grows;
//! - a command that found another token (or none) ends the lease: it is lost, at once.
//!
//! So the deadline never exceeds what the server can have granted. [`Lease::is_held`] is true
//! only before the deadline, and [`Lease::lost`] resolves at the latest when it passes.
//!
//! # The cap (`max_hold`)
//!
//! A lease may carry a *cap*: an instant it never outlives, renewals or not. Every command is
//! sent with [`Lease::command_ttl`], which shortens its lease so the server's TTL ends by the
//! cap, and [`Lease::settle`] computes the deadline from that same shortened lease, so the
//! deadline stays below the cap too. Once the server's TTL reaches the cap there is nothing
//! left to renew ([`Lease::renewable`]); the lease ends at its deadline like any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::time::Instant;

use crate::telemetry::{Ending, HoldTrace};
use crate::token::Token;
use crate::waiter::{GatePass, Held};

/// The margin kept below the lease for clock drift between this process and the server:
/// 1 % of the lease plus 2 ms.
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// How long a lease granted by a command sent at `sent` for `ttl` is trusted locally.
pub(crate) fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.saturating_sub(drift(ttl))
}

/// What the server answered to a command that sets the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The server set the lease.
    Granted,
    /// Another token, or none, holds the key.
    NotHeld,
    /// No answer that can be trusted either way: the command may or may not have landed.
    Unknown,
}

/// One held lock, shared by its guard, the watchdog and the local gate.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    full_key: String,
    token: Token,
    fence: u64,
    held: AtomicBool,
    /// Woken when the lease is lost or its deadline moved earlier.
    changed: Notify,
    timing: Mutex<Timing>,
    /// The instant the lease never outlives (`max_hold` after the acquire was sent).
    cap: Option<Instant>,
    /// The instant before which letting go keeps the key (`min_hold` after the acquire was
    /// answered, plus the drift margin).
    keep_until: Option<Instant>,
    /// Taken by whoever sends a command that sets the lease (see the module docs).
    commands: Arc<tokio::sync::Mutex<()>>,
    /// This process's turn at the key's local gate: handed on when the lease ends.
    pass: Mutex<Option<GatePass>>,
    /// The hold's span and metrics: ended (the span closed) when the lease ends.
    hold: Mutex<HoldTrace>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The lease the watchdog renews with (before the cap shortens it).
    ttl: Duration,
    deadline: Instant,
    /// Set once the holder let go (released, or handed the key to its minimum hold): the
    /// lease is no longer believed held, and that is no loss.
    ended: bool,
}

/// The right to send one command that sets a lease; see [`Lease::command`].
#[derive(Debug)]
pub(crate) struct CommandPermit {
    _turn: OwnedMutexGuard<()>,
}

impl Lease {
    /// A lease granted by an acquire sent at `sent` for `ttl` (which the caller shortened
    /// with [`command_ttl`](Self::command_ttl) if there is a `cap`).
    pub(crate) fn granted(
        key: String,
        full_key: String,
        token: Token,
        fence: u64,
        grant: Grant,
        holds: Holds,
    ) -> Self {
        let Grant { ttl, sent, lease } = grant;
        let Holds { cap, keep_until } = holds;
        Self {
            key,
            full_key,
            token,
            fence,
            held: AtomicBool::new(true),
            changed: Notify::new(),
            timing: Mutex::new(Timing {
                ttl,
                deadline: valid_until(sent, capped(cap, sent, lease)),
                ended: false,
            }),
            cap,
            keep_until,
            commands: Arc::default(),
            pass: Mutex::new(None),
            hold: Mutex::default(),
        }
    }

    /// Sets the hold's span and metrics, before the lease is handed to anyone.
    pub(crate) fn set_hold(&self, hold: HoldTrace) {
        *self.hold() = hold;
    }

    fn hold(&self) -> MutexGuard<'_, HoldTrace> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `span` (a renewal's) follow from the hold's span.
    pub(crate) fn followed_by(&self, span: &tracing::Span) {
        span.follows_from(self.hold().span());
    }

    /// A renewal of this lease got no usable answer.
    pub(crate) fn renewal_failed(&self) {
        self.hold().renewal_failed();
    }

    /// The key as the caller named it.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The key with the client's prefix.
    pub(crate) fn full_key(&self) -> &str {
        &self.full_key
    }

    pub(crate) fn token(&self) -> &Token {
        &self.token
    }

    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease renewals are sent with.
    pub(crate) fn ttl(&self) -> Duration {
        self.timing().ttl
    }

    /// Until when the lease is trusted locally.
    pub(crate) fn deadline(&self) -> Instant {
        self.timing().deadline
    }

    /// The lease a command sent at `sent` asking for `ttl` may set: `ttl`, shortened so
    /// that it ends by the cap. `None` once the cap is (nearly) reached: nothing to send.
    pub(crate) fn command_ttl(&self, sent: Instant, ttl: Duration) -> Option<Duration> {
        let ttl = self.shaped(sent, ttl);
        (ttl >= MIN_COMMAND_TTL).then_some(ttl)
    }

    /// The lease a command sent at `sent` asking for `ttl` sets: raised to last through the
    /// minimum hold, then shortened to end by the cap (the cap wins).
    fn shaped(&self, sent: Instant, ttl: Duration) -> Duration {
        let ttl = self
            .keep_until
            .map_or(ttl, |keep| ttl.max(keep.saturating_duration_since(sent)));
        capped(self.cap, sent, ttl)
    }

    /// Whether the lease has a minimum hold (letting go may keep the key).
    pub(crate) fn has_minimum(&self) -> bool {
        self.keep_until.is_some()
    }

    /// What letting go of the lease at `now` leaves on the server: `None`, delete the key;
    /// `Some(ttl)`, keep it for `ttl` more, what remains of the minimum hold (never past the
    /// cap).
    pub(crate) fn kept_for(&self, now: Instant) -> Option<Duration> {
        let remains = capped(self.cap, now, self.keep_until?.checked_duration_since(now)?);
        // Whole milliseconds on the server: rounded up, so the key is not freed early.
        let millis = remains.as_nanos().div_ceil(1_000_000);
        (millis > 0).then(|| Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)))
    }

    /// Whether a renewal can still lengthen the lease: false once the server's TTL already
    /// reaches the cap.
    pub(crate) fn renewable(&self) -> bool {
        let Some(cap) = self.cap else {
            return true;
        };
        let timing = self.timing();
        timing.deadline + drift(timing.ttl) < cap
    }

    /// Waits for the right to send a command that sets the lease (an extend waits for a
    /// renewal in flight to be answered).
    pub(crate) async fn command(&self) -> CommandPermit {
        CommandPermit {
            _turn: self.commands.clone().lock_owned().await,
        }
    }

    /// The right to send a command, if no other command is in flight (the watchdog skips a
    /// lease that is being extended).
    pub(crate) fn try_command(&self) -> Option<CommandPermit> {
        let turn = self.commands.clone().try_lock_owned().ok()?;
        Some(CommandPermit { _turn: turn })
    }

    /// Records the outcome of a command sent at `sent` for `ttl`, under `permit`: the one
    /// place the deadline changes (see the module docs).
    pub(crate) fn settle(
        &self,
        _permit: &CommandPermit,
        sent: Instant,
        ttl: Duration,
        outcome: Outcome,
    ) {
        let earlier = {
            let mut timing = self.timing();
            let before = timing.deadline;
            let until = valid_until(sent, self.shaped(sent, ttl));
            match outcome {
                Outcome::Granted => {
                    timing.ttl = ttl;
                    timing.deadline = until;
                }
                Outcome::Unknown => {
                    timing.deadline = timing.deadline.min(until);
                }
                Outcome::NotHeld => {}
            }
            timing.deadline < before
        };
        if outcome == Outcome::NotHeld {
            self.mark_lost();
        } else if earlier {
            self.changed.notify_waiters();
        }
    }

    /// True while not reported lost and before the deadline.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire) && Instant::now() < self.deadline()
    }

    /// How long the lease is still trusted: zero once it is not held.
    pub(crate) fn remaining(&self) -> Duration {
        if !self.held.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// The holder let go: the lease is no longer believed held (no warning: nothing was
    /// lost). Whoever watches [`lost`](Self::lost) is woken.
    pub(crate) fn end(&self) {
        self.timing().ended = true;
        self.stop();
        self.changed.notify_waiters();
    }

    /// Ends the lease here: it is no longer believed held. Idempotent. The hold ends once:
    /// released if the holder let go ([`end`](Self::end)), lost otherwise.
    pub(crate) fn mark_lost(&self) {
        // Whoever waits in this process may try now: the turn is handed on before anyone
        // watching `lost()` can see the loss, so that a retry it prompts finds the turn free
        // (the server decides who holds the key, not this turn).
        drop(self.take_pass());
        self.stop();
        self.changed.notify_waiters();
    }

    /// No longer believed held: the hold ends (once). Waking the watchers and the gate turn
    /// are left to the caller.
    fn stop(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            let ending = if self.timing().ended {
                Ending::Released
            } else if self
                .cap
                .is_some_and(|cap| Instant::now() + drift(self.ttl()) >= cap)
            {
                Ending::MaxHold
            } else {
                Ending::Lost
            };
            let hold = std::mem::take(&mut *self.hold());
            hold.end(&self.key, self.fence, ending);
        }
    }

    /// Resolves once the lease is lost or its deadline passed.
    pub(crate) async fn lost(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.held.load(Ordering::Acquire) {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.deadline() {
                        self.mark_lost();
                    }
                }
            }
        }
    }

    pub(crate) fn hold_pass(&self, pass: GatePass) {
        *self.pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(pass);
    }

    /// The local gate turn, taken out to be handed on (once).
    pub(crate) fn take_pass(&self) -> Option<GatePass> {
        self.pass.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What an acquire asked for: the lease renewals keep (`ttl`), when it was sent, and the lease
/// it set on the server (`lease`: `ttl` raised to cover the minimum hold, shortened to the
/// cap; see [`acquire_ttl`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    pub(crate) ttl: Duration,
    pub(crate) sent: Instant,
    pub(crate) lease: Duration,
}

/// The lease an acquire asks for: `ttl`, raised to last through `min_hold` (plus the drift
/// margin) from when the server sets it, shortened to `max_hold`.
pub(crate) fn acquire_ttl(
    ttl: Duration,
    min_hold: Option<Duration>,
    max_hold: Option<Duration>,
) -> Duration {
    let ttl = min_hold.map_or(ttl, |m| ttl.max(m + drift(m)));
    max_hold.map_or(ttl, |m| ttl.min(m))
}

/// How long a lease is held at least and at most; see [`LockRequest::min_hold`] and
/// [`LockRequest::max_hold`](crate::LockRequest::max_hold).
///
/// [`LockRequest::min_hold`]: crate::LockRequest::min_hold
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Holds {
    /// The instant the lease never outlives.
    pub(crate) cap: Option<Instant>,
    /// Letting go before this instant keeps the key until it.
    pub(crate) keep_until: Option<Instant>,
}

impl Holds {
    /// The holds of a lease whose acquire was sent at `sent`.
    pub(crate) fn new(
        sent: Instant,
        min_hold: Option<Duration>,
        max_hold: Option<Duration>,
    ) -> Self {
        Self {
            cap: max_hold.map(|m| sent + m),
            // Measured from when the acquire was sent, like the cap: the acquire's own lease
            // (from when it reached the server, later) covers it, and so does every later
            // command's; the drift margin on top keeps it `min_hold` on the server's clock.
            keep_until: min_hold.map(|m| sent + m + drift(m)),
        }
    }
}

/// The shortest lease a command is sent with (shorter ones are not worth a round trip).
const MIN_COMMAND_TTL: Duration = Duration::from_millis(5);

/// `ttl`, shortened so that a lease set at `sent` ends by `cap`.
fn capped(cap: Option<Instant>, sent: Instant, ttl: Duration) -> Duration {
    cap.map_or(ttl, |cap| ttl.min(cap.saturating_duration_since(sent)))
}

impl Held for Lease {
    fn deadline(&self) -> Instant {
        Lease::deadline(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ttl: Duration, sent: Instant) -> Lease {
        let token = Token::generate().unwrap();
        Lease::granted(
            "k".into(),
            "p:k".into(),
            token,
            1,
            Grant {
                ttl,
                sent,
                lease: ttl,
            },
            Holds::default(),
        )
    }

    #[tokio::test]
    async fn an_answered_command_sets_the_deadline_shorter_or_longer() {
        let t0 = Instant::now();
        let lease = lease(Duration::from_secs(30), t0);
        let permit = lease.command().await;
        lease.settle(&permit, t0, Duration::from_millis(300), Outcome::Granted);
        assert_eq!(
            lease.deadline(),
            valid_until(t0, Duration::from_millis(300))
        );
        assert_eq!(lease.ttl(), Duration::from_millis(300));
        lease.settle(&permit, t0, Duration::from_secs(60), Outcome::Granted);
        assert_eq!(lease.deadline(), valid_until(t0, Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn an_unknown_outcome_never_lengthens_and_may_shorten() {
        let t0 = Instant::now();
        let lease = lease(Duration::from_secs(30), t0);
        let permit = lease.command().await;
        let before = lease.deadline();
        lease.settle(&permit, t0, Duration::from_secs(90), Outcome::Unknown);
        assert_eq!(lease.deadline(), before);
        assert_eq!(lease.ttl(), Duration::from_secs(30));
        lease.settle(&permit, t0, Duration::from_millis(200), Outcome::Unknown);
        assert_eq!(
            lease.deadline(),
            valid_until(t0, Duration::from_millis(200))
        );
        assert!(lease.held.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn not_held_ends_the_lease_and_commands_do_not_overlap() {
        let t0 = Instant::now();
        let lease = lease(Duration::from_secs(30), t0);
        let permit = lease.command().await;
        assert!(lease.try_command().is_none());
        lease.settle(&permit, t0, Duration::from_secs(30), Outcome::NotHeld);
        assert!(!lease.is_held());
        drop(permit);
        assert!(lease.try_command().is_some());
        lease.lost().await;
    }

    #[tokio::test]
    async fn lost_wakes_when_the_deadline_moves_earlier() {
        let t0 = Instant::now();
        let lease = Arc::new(lease(Duration::from_secs(3600), t0));
        let watcher = tokio::spawn({
            let lease = lease.clone();
            async move { lease.lost().await }
        });
        tokio::task::yield_now().await;
        let permit = lease.command().await;
        lease.settle(
            &permit,
            Instant::now(),
            Duration::from_millis(100),
            Outcome::Granted,
        );
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("lost() fired by the new deadline")
            .unwrap();
        assert!(!lease.is_held());
    }

    #[tokio::test]
    async fn the_cap_shortens_every_command_and_ends_renewal() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let cap = t0 + Duration::from_secs(5);
        let holds = Holds {
            cap: Some(cap),
            keep_until: None,
        };
        let lease = Lease::granted(
            "k".into(),
            "p:k".into(),
            Token::generate().unwrap(),
            1,
            Grant {
                ttl,
                sent: t0,
                lease: ttl,
            },
            holds,
        );
        assert!(lease.renewable());
        let later = t0 + Duration::from_secs(4);
        assert_eq!(lease.command_ttl(later, ttl), Some(Duration::from_secs(1)));
        assert_eq!(lease.command_ttl(cap, ttl), None);
        let permit = lease.command().await;
        lease.settle(&permit, later, ttl, Outcome::Granted);
        assert!(lease.deadline() < cap, "the deadline passed the cap");
        assert!(!lease.renewable(), "nothing is left to renew at the cap");
        assert_eq!(lease.ttl(), ttl, "renewals keep the requested lease");
    }

    #[test]
    fn the_minimum_keeps_what_remains_of_it_never_past_the_cap() {
        let t0 = Instant::now();
        let holds = Holds::new(
            t0,
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(8)),
        );
        let lease = Lease::granted(
            "k".into(),
            "p:k".into(),
            Token::generate().unwrap(),
            1,
            Grant {
                ttl: Duration::from_secs(3),
                sent: t0,
                lease: Duration::from_secs(3),
            },
            holds,
        );
        let kept = lease.kept_for(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(kept, Duration::from_secs(7), "capped at max_hold");
        let lease = lease_with_minimum(t0, Duration::from_secs(2));
        let kept = lease.kept_for(t0 + Duration::from_secs(1)).unwrap();
        assert!(
            kept > Duration::from_secs(1),
            "the drift margin is kept on top"
        );
        assert_eq!(lease.kept_for(t0 + Duration::from_secs(3)), None);
    }

    fn lease_with_minimum(t0: Instant, min: Duration) -> Lease {
        Lease::granted(
            "k".into(),
            "p:k".into(),
            Token::generate().unwrap(),
            1,
            Grant {
                ttl: Duration::from_secs(3),
                sent: t0,
                lease: Duration::from_secs(3),
            },
            Holds::new(t0, Some(min), None),
        )
    }
}
