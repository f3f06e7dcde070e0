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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::time::Instant;

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
    /// Taken by whoever sends a command that sets the lease (see the module docs).
    commands: Arc<tokio::sync::Mutex<()>>,
    /// This process's turn at the key's local gate: handed on when the lease ends.
    pass: Mutex<Option<GatePass>>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The lease the watchdog renews with.
    ttl: Duration,
    deadline: Instant,
}

/// The right to send one command that sets a lease; see [`Lease::command`].
#[derive(Debug)]
pub(crate) struct CommandPermit {
    _turn: OwnedMutexGuard<()>,
}

impl Lease {
    /// A lease granted by an acquire sent at `sent` for `ttl`.
    pub(crate) fn granted(
        key: String,
        full_key: String,
        token: Token,
        fence: u64,
        ttl: Duration,
        sent: Instant,
    ) -> Self {
        Self {
            key,
            full_key,
            token,
            fence,
            held: AtomicBool::new(true),
            changed: Notify::new(),
            timing: Mutex::new(Timing {
                ttl,
                deadline: valid_until(sent, ttl),
            }),
            commands: Arc::default(),
            pass: Mutex::new(None),
        }
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
            match outcome {
                Outcome::Granted => {
                    timing.ttl = ttl;
                    timing.deadline = valid_until(sent, ttl);
                }
                Outcome::Unknown => {
                    timing.deadline = timing.deadline.min(valid_until(sent, ttl));
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

    /// Ends the lease here: it is no longer believed held. Idempotent.
    pub(crate) fn mark_lost(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            tracing::warn!(key = %self.key, "lock lost");
        }
        // Whoever waits in this process may try now.
        drop(self.take_pass());
        self.changed.notify_waiters();
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
        Lease::granted("k".into(), "p:k".into(), token, 1, ttl, sent)
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
}
