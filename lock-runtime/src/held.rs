//! [`HeldLock`]: a handle on a held lock for the code running under it (a guarded fn's body,
//! a handler behind the tower layer), and [`Holding`], what it shares with the guard.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Deployment, Renewal};
use crate::key::validate_lease;
use crate::lease::{CommandPermit, Lease, Outcome};
use crate::state::ClientState;
use crate::{BackendErrorKind, LockError};

/// One held lease and the client it was taken on: shared by its [`LockGuard`] and the
/// [`HeldLock`]s handed out for it.
///
/// [`LockGuard`]: crate::LockGuard
#[derive(Debug)]
pub(crate) struct Holding {
    client: Arc<ClientState>,
    lease: Arc<Lease>,
    /// The lease's entry in the client's watchdog.
    id: u64,
}

impl Holding {
    pub(crate) fn new(client: Arc<ClientState>, lease: Arc<Lease>, id: u64) -> Self {
        Self { client, lease, id }
    }

    pub(crate) fn client(&self) -> &Arc<ClientState> {
        &self.client
    }

    pub(crate) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn lost_error(&self) -> LockError {
        LockError::Lost {
            key: self.lease.key().to_owned(),
        }
    }

    /// Sets the lease to `ttl` from now (never past the lease's cap); see
    /// [`LockGuard::extend`](crate::LockGuard::extend).
    pub(crate) async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        validate_lease(ttl, self.client.backend().max_ttl())?;
        // Wait for a renewal in flight: commands on one lease never race.
        let permit = self.lease.command().await;
        if !self.lease.is_held() {
            return Err(self.lost_error());
        }
        let sent = Instant::now();
        let Some(sent_ttl) = self.lease.command_ttl(sent, ttl) else {
            // At the cap already: the lease cannot be made any longer.
            return Ok(());
        };
        // However this ends (answered, failed, or dropped with its caller), the watchdog plans
        // the next renewal from it: an extension whose outcome is unknown may have pulled the
        // deadline in, and the renewal it held up must not wait for the old schedule.
        let mut reschedule = Reschedule {
            holding: self,
            sent,
            ttl,
            outcome: Outcome::Unknown,
        };
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
                ttl: sent_ttl,
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
        reschedule.outcome = outcome;
        match (outcome, renewed) {
            // Granted, but answered too late to trust: its deadline (from when it was sent)
            // has passed, and the lease with it.
            (Outcome::Granted, _) if !self.lease.is_held() => Err(self.lost_error()),
            (Outcome::Granted, _) => Ok(()),
            (Outcome::NotHeld, _) => Err(self.lost_error()),
            (Outcome::Unknown, Err(err)) => Err(err),
            (Outcome::Unknown, Ok(_)) => Err(LockError::backend(
                BackendErrorKind::Connection,
                "too few Redlock nodes answered to extend the lease",
            )),
        }
    }
}

/// Tells the watchdog, when dropped, that an extension sent at `sent` for `ttl` ended.
struct Reschedule<'a> {
    holding: &'a Holding,
    sent: Instant,
    ttl: Duration,
    /// Unknown unless the extension was answered.
    outcome: Outcome,
}

impl Drop for Reschedule<'_> {
    fn drop(&mut self) {
        let Reschedule {
            holding,
            sent,
            ttl,
            outcome,
        } = self;
        holding
            .client
            .watchdog()
            .rescheduled(holding.id, *sent, *ttl, *outcome);
    }
}

/// A command on the lease whose outcome is not settled yet: if dropped unsettled (the
/// caller went away), it counts as unknown.
pub(crate) struct Unsettled<'a> {
    pub(crate) lease: &'a Lease,
    pub(crate) permit: Option<CommandPermit>,
    pub(crate) sent: Instant,
    pub(crate) ttl: Duration,
}

impl Unsettled<'_> {
    pub(crate) fn settle(&mut self, outcome: Outcome) {
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

/// A held lock as seen by the code running under it: its key, its fencing token, how long
/// the lease is still trusted, and the means to extend it (ShedLock's lock extender).
///
/// [`current`](crate::current) gives one inside a `#[distributed_lock]` fn, and the tower
/// layer puts one in the request's extensions; [`LockGuard::held_lock`] gives one for any
/// guard. It does not keep the lock: the guard does. Once the guard is released or the lease
/// lost, [`is_held`](Self::is_held) is false and [`extend`](Self::extend) fails.
///
/// [`LockGuard::held_lock`]: crate::LockGuard::held_lock
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// distlock::set_default_client(distlock::LockClient::memory());
///
/// #[distlock::distributed_lock(key = "nightly-export", ttl = "10s")]
/// async fn export() -> Result<u64, distlock::LockError> {
///     let held = distlock::current().expect("inside a guarded fn");
///     assert_eq!(held.key(), "nightly-export");
///     held.extend(std::time::Duration::from_secs(60)).await?; // a long batch ahead
///     Ok(held.fencing_token()) // pass it to the store you write to
/// }
/// let fence = export().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HeldLock {
    key: String,
    fencing_token: u64,
    holding: Arc<Holding>,
}

impl HeldLock {
    pub(crate) fn new(holding: Arc<Holding>) -> Self {
        Self {
            key: holding.lease().key().to_owned(),
            fencing_token: holding.lease().fence(),
            holding,
        }
    }

    /// The key (without the client's prefix).
    ///
    /// # Examples
    ///
    /// ```
    /// if let Some(held) = distlock::current() {
    ///     println!("running under {}", held.key());
    /// }
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: pass it to the store you write to.
    ///
    /// # Examples
    ///
    /// ```
    /// let fence = distlock::current().map(|held| held.fencing_token());
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// True while the lease is believed held (as [`LockGuard::is_held`]).
    ///
    /// [`LockGuard::is_held`]: crate::LockGuard::is_held
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("k").await?;
    /// let held = guard.held_lock();
    /// assert!(held.is_held());
    /// guard.release().await?;
    /// assert!(!held.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_held(&self) -> bool {
        self.holding.lease().is_held()
    }

    /// How long the lease is still trusted without another renewal: zero once it is not
    /// held. The watchdog (when on) renews it long before it runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory().lock("k").ttl(Duration::from_secs(10)).await?;
    /// let left = guard.held_lock().remaining();
    /// assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remaining(&self) -> Duration {
        self.holding.lease().remaining()
    }

    /// Sets the lease to `ttl` from now, as [`LockGuard::extend`] does (never past the
    /// request's [`max_hold`](crate::LockRequest::max_hold): the lease stops there).
    ///
    /// [`LockGuard::extend`]: crate::LockGuard::extend
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory().lock("k").ttl(Duration::from_secs(1)).await?;
    /// guard.held_lock().extend(Duration::from_secs(30)).await?;
    /// assert!(guard.held_lock().remaining() > Duration::from_secs(20));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LockGuard::extend`]: [`LockError::Lost`] when the lock is no longer held (also
    /// after its guard was released), [`LockError::InvalidDuration`], backend failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`LockGuard::extend`].
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        self.holding.extend(ttl).await
    }

    /// Resolves when the lease is lost or let go (as [`LockGuard::lost_owned`]).
    ///
    /// [`LockGuard::lost_owned`]: crate::LockGuard::lost_owned
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("k").await?;
    /// let lost = guard.held_lock().lost();
    /// guard.release().await?;
    /// lost.await; // the lock is no longer held
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lease = self.holding.lease().clone();
        async move { lease.lost().await }
    }
}

impl HeldLock {
    /// The error for a lock this handle no longer holds.
    pub(crate) fn lost_error(&self) -> LockError {
        self.holding.lost_error()
    }

    /// Whether this is the lock on `full_key` taken through the client whose shared state is
    /// `client`.
    pub(crate) fn is_on(&self, client: &Arc<ClientState>, full_key: &str) -> bool {
        Arc::ptr_eq(self.holding.client(), client) && self.holding.lease().full_key() == full_key
    }
}

impl PartialEq for HeldLock {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.fencing_token == other.fencing_token
    }
}

impl Eq for HeldLock {}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .field("remaining", &self.remaining())
            .finish()
    }
}
