//! [`LockGuard`]: a held lock.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Backend, Release, Renewal};
use crate::key::validate_lease;
use crate::lease::{CommandPermit, Lease, Outcome};
use crate::state::ClientState;
use crate::token::Token;
use crate::waiter::{GatePass, Held};
use crate::{BackendErrorKind, LockError};

/// A held lock. Renewed by the client's watchdog while it lives (unless the request turned
/// the watchdog off); released by [`release`](Self::release), or in the background when
/// dropped.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let guard = client.lock("ledger").await?;
/// assert!(guard.is_held());
/// let fence = guard.fencing_token(); // pass it to the store you write to
/// tokio::select! {
///     () = guard.lost() => { /* stop writing: someone else may hold it now */ }
///     () = async { /* the critical section */ } => {}
/// }
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a lock is released as soon as its guard is dropped"]
pub struct LockGuard {
    client: Arc<ClientState>,
    lease: Arc<Lease>,
    id: u64,
    released: bool,
}

impl LockGuard {
    pub(crate) fn new(
        client: Arc<ClientState>,
        lease: Arc<Lease>,
        renew: bool,
        sent: Instant,
        pass: GatePass,
    ) -> Self {
        pass.set_holder(Arc::downgrade(&lease) as Weak<dyn Held>);
        lease.hold_pass(pass);
        let id = client
            .watchdog()
            .track(client.backend(), lease.clone(), renew, sent);
        Self {
            client,
            lease,
            id,
            released: false,
        }
    }

    /// The key as requested (without the client's prefix).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("job:7").await?;
    /// assert_eq!(guard.key(), "job:7");
    /// # Ok(())
    /// # }
    /// ```
    pub fn key(&self) -> &str {
        self.lease.key()
    }

    /// The fencing token of this acquisition: larger than that of every earlier holder of the
    /// same key. Stores that remember the largest token they have seen can reject writes from
    /// a holder whose lease ran out.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let first = client.lock("k").await?;
    /// let a = first.fencing_token();
    /// first.release().await?;
    /// let second = client.lock("k").await?;
    /// assert!(second.fencing_token() > a);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.lease.fence()
    }

    /// True while the lease is believed held: not reported lost and within its local deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("k").await?;
    /// assert!(guard.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_held(&self) -> bool {
        self.lease.is_held()
    }

    /// Resolves when the lease is lost: a renewal found another holder (or none), or the local
    /// deadline passed without a successful renewal. Never resolves while the lock is held.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory()
    ///     .lock("k")
    ///     .ttl(Duration::from_millis(200))
    ///     .watchdog(false)
    ///     .await?;
    /// guard.lost().await; // the lease runs out after ~200ms
    /// assert!(!guard.is_held());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        self.lease.lost()
    }

    /// Like [`lost`](Self::lost), but owning what it watches, so it can outlive a borrow of
    /// the guard (to be moved into a spawned task or a `'static` future next to the guard).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory()
    ///     .lock("k")
    ///     .ttl(Duration::from_millis(200))
    ///     .watchdog(false)
    ///     .await?;
    /// let watcher = tokio::spawn(guard.lost_owned());
    /// watcher.await.unwrap(); // resolves once the lease ran out
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let lease = self.lease.clone();
        async move { lease.lost().await }
    }

    /// Sets the lease to `ttl` from now, shorter or longer; the watchdog keeps renewing with
    /// the new value. The guard's own deadline follows the server's: after a shorter
    /// extension [`is_held`](Self::is_held) and [`lost`](Self::lost) go by the shorter lease.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory().lock("k").await?;
    /// guard.extend(Duration::from_secs(120)).await?;
    /// guard.extend(Duration::from_millis(500)).await?; // shorter works too
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] when the lock is no longer ours (the guard then reports lost),
    /// [`LockError::InvalidDuration`] for a lease outside 100 ms ..= 30 days, backend
    /// failures (the lease may or may not have been changed: the guard then trusts the
    /// shorter of the two).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call whose command may have landed counts as a failed one (the
    /// guard trusts the shorter of the old and the new lease).
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        validate_lease(ttl, self.client.backend().max_ttl())?;
        // Wait for a renewal in flight: commands on one lease never race.
        let permit = self.lease.command().await;
        if !self.lease.is_held() {
            return Err(self.lost_error());
        }
        let sent = Instant::now();
        let mut pending = Unsettled {
            lease: &self.lease,
            permit: Some(permit),
            sent,
            ttl,
        };
        let renewed = self
            .client
            .backend()
            .renew(&[Renewal {
                key: self.lease.full_key(),
                token: self.lease.token(),
                ttl,
            }])
            .await;
        let outcome = match &renewed {
            Ok(answers) => match answers.first() {
                Some(Some(true)) => Outcome::Granted,
                Some(Some(false)) => Outcome::NotHeld,
                _ => Outcome::Unknown,
            },
            Err(_) => Outcome::Unknown,
        };
        pending.settle(outcome);
        self.client.watchdog().rescheduled(self.id, sent, ttl);
        match (outcome, renewed) {
            (Outcome::Granted, _) => Ok(()),
            (Outcome::NotHeld, _) => Err(self.lost_error()),
            (Outcome::Unknown, Err(err)) => Err(err),
            (Outcome::Unknown, Ok(_)) => Err(LockError::backend(
                BackendErrorKind::Connection,
                "too few Redlock nodes answered to extend the lease",
            )),
        }
    }

    /// Releases the lock (compare-and-delete by token: never someone else's).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let guard = client.lock("k").await?;
    /// guard.release().await?;
    /// let again = client.lock("k").await?; // free at once
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] when the lock was already gone (expired or taken over): nothing was
    /// deleted. Backend failures: the lock then runs out with its lease.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the release finishes in the background.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.client.watchdog().forget(self.id);
        // If this future is dropped before the answer, `self` is dropped unreleased and its
        // `Drop` sends the release again in the background (releasing twice is harmless).
        let released = self
            .client
            .backend()
            .release(self.lease.full_key(), self.lease.token())
            .await;
        self.released = true;
        // Hand this process's turn on only once the release has landed.
        drop(self.lease.take_pass());
        match released {
            Ok(Release::Released | Release::Notified) => Ok(()),
            Ok(Release::NotHeld) => {
                self.lease.mark_lost();
                Err(self.lost_error())
            }
            Err(err) => Err(err),
        }
    }

    fn lost_error(&self) -> LockError {
        LockError::Lost {
            key: self.lease.key().to_owned(),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.client.watchdog().forget(self.id);
        release_in_background(
            self.client.backend(),
            self.lease.full_key().to_owned(),
            self.lease.token().clone(),
            self.lease.take_pass(),
        );
    }
}

/// A command on the lease whose outcome is not settled yet: if dropped unsettled (the
/// caller went away), it counts as unknown.
struct Unsettled<'a> {
    lease: &'a Lease,
    permit: Option<CommandPermit>,
    sent: Instant,
    ttl: Duration,
}

impl Unsettled<'_> {
    fn settle(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            self.lease.settle(&permit, self.sent, self.ttl, outcome);
        }
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.settle(Outcome::Unknown);
    }
}

/// Releases `key` by `token` without waiting: at once when the backend needs no I/O, else on
/// the library's background runtime. The gate turn (if any) is handed on after the release.
pub(crate) fn release_in_background(
    backend: &Arc<Backend>,
    key: String,
    token: Token,
    pass: Option<GatePass>,
) {
    if backend.release_without_io(&key, &token).is_some() {
        return;
    }
    if let Some(pass) = &pass {
        pass.set_releasing(true);
    }
    let backend = backend.clone();
    crate::background::spawn(async move {
        if let Err(err) = backend.release(&key, &token).await {
            tracing::debug!(%err, "background release failed; the lease will run out");
        }
        drop(pass);
    });
}
