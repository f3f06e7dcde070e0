//! [`LockGuard`]: a held lock.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Backend, Deployment, Release, Renewal};
use crate::held::{HeldLock, Holding};
use crate::lease::Lease;
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
    holding: Arc<Holding>,
    /// Whether letting go keeps what remains of the minimum hold (`min_hold`); false after
    /// [`keep_minimum_on_drop(false)`](Self::keep_minimum_on_drop).
    keep_minimum: bool,
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
            holding: Arc::new(Holding::new(client, lease, id)),
            keep_minimum: true,
            released: false,
        }
    }

    fn lease(&self) -> &Arc<Lease> {
        self.holding.lease()
    }

    /// A handle on this lock for the code running under it: key, fencing token, remaining
    /// lease, extend. It does not keep the lock (this guard does).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("k").await?;
    /// let held = guard.held_lock();
    /// assert_eq!(held.fencing_token(), guard.fencing_token());
    /// # Ok(())
    /// # }
    /// ```
    pub fn held_lock(&self) -> HeldLock {
        HeldLock::new(self.holding.clone())
    }

    /// How long the lease is still trusted without another renewal; zero once lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory().lock("k").ttl(Duration::from_secs(5)).await?;
    /// assert!(guard.remaining() <= Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remaining(&self) -> Duration {
        self.lease().remaining()
    }

    /// Whether dropping this guard unreleased keeps the lock for what remains of the request's
    /// [`min_hold`](crate::LockRequest::min_hold) (true, the default: a job that failed or
    /// panicked is not retried by every instance at once) or releases it at once (false).
    /// Without a minimum hold it changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let mut guard = client.lock("report").min_hold(Duration::from_secs(30)).await?;
    /// guard.keep_minimum_on_drop(false);
    /// drop(guard); // as after a failed run: free at once
    /// let again = client.lock("report").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_minimum_on_drop(&mut self, keep: bool) {
        self.keep_minimum = keep;
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
        self.lease().key()
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
        self.lease().fence()
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
        self.lease().is_held()
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
        self.lease().lost()
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
    pub fn lost_owned(&self) -> impl Future<Output = ()> + Send + use<> {
        let lease = self.lease().clone();
        async move { lease.lost().await }
    }

    /// Sets the lease to `ttl` from now, shorter or longer; the watchdog keeps renewing with
    /// the new value. The guard's own deadline follows the server's: after a shorter
    /// extension [`is_held`](Self::is_held) and [`lost`](Self::lost) go by the shorter lease.
    /// With a [`max_hold`](crate::LockRequest::max_hold) the lease stops at it: a longer
    /// `ttl` is shortened to end there.
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
    /// also when the extension was granted but answered only after the lease it was sent
    /// under had run out (it cannot be trusted),
    /// [`LockError::InvalidDuration`] for a lease outside 100 ms ..= 30 days, backend
    /// failures (the lease may or may not have been changed: the guard then trusts the
    /// shorter of the two).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call whose command may have landed counts as a failed one (the
    /// guard trusts the shorter of the old and the new lease).
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        self.holding.extend(ttl).await
    }

    /// Releases the lock (compare-and-delete by token: never someone else's). With a
    /// [`min_hold`](crate::LockRequest::min_hold) not yet over, the lock is not deleted but
    /// kept for what remains of it, and then runs out: nobody takes it before.
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
    /// deleted. Backend failures: the lock then runs out with its lease. A release whose
    /// connection dropped before the answer is sent again; if the copy that answers finds the
    /// lock gone, the outcome is unknown (an earlier copy released it and it moved on, or the
    /// server had lost it): a backend error of kind `Connection`, never a false `Ok`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the release finishes in the background.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.let_go(true).await
    }

    /// Releases the lock at once, even within the request's
    /// [`min_hold`](crate::LockRequest::min_hold): after a failed run, so that another
    /// instance may try again.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let guard = client.lock("report").min_hold(Duration::from_secs(30)).await?;
    /// guard.release_now().await?; // the run failed: let another instance retry
    /// let again = client.lock("report").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`release`](Self::release).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the lock is let go in the background as a
    /// dropped guard is (see [`keep_minimum_on_drop`](Self::keep_minimum_on_drop)).
    pub async fn release_now(mut self) -> Result<(), LockError> {
        self.let_go(false).await
    }

    /// Deletes the lock, or keeps it for what remains of the minimum hold when `keep_minimum`.
    async fn let_go(&mut self, keep_minimum: bool) -> Result<(), LockError> {
        let holding = self.holding.clone();
        let (client, lease) = (holding.client(), holding.lease());
        client.watchdog().forget(holding.id());
        // The holder lets go: from here on nothing in this process believes it holds the
        // lock (an extend through a `HeldLock` fails). The gate turn stays with the lease
        // until the server answered.
        lease.end();
        // If this future is dropped before the answer, `self` is dropped unreleased and its
        // `Drop` lets go again in the background (letting go twice is harmless).
        let kept = let_go(client.backend(), lease, keep_minimum).await;
        self.released = true;
        drop(lease.take_pass());
        match kept {
            Ok(true) => Ok(()),
            Ok(false) => Err(holding.lost_error()),
            Err(err) => Err(err),
        }
    }
}

/// Lets go of `lease`: deletes the lock, or (with `keep_minimum`, within the lease's minimum
/// hold) sets its lease to what remains of the minimum. `Ok(false)`: the token no longer held
/// the key. A release sent again after its connection dropped, whose last copy found the
/// token gone, is neither: the first copy may have released the lock (which moved on), or the
/// server may have lost it before (a restart, a failover), and nothing here tells which.
async fn let_go(backend: &Backend, lease: &Lease, keep_minimum: bool) -> Result<bool, LockError> {
    let keeping = keep_minimum && lease.has_minimum();
    // Keeping is a command on the lease: after any renewal in flight, so none lands after
    // it, and what remains of the minimum is reckoned once that wait is over.
    let permit = if keeping {
        Some(lease.command().await)
    } else {
        None
    };
    let Some(ttl) = permit.as_ref().and_then(|_| lease.kept_for(Instant::now())) else {
        return match backend.release(lease.full_key(), lease.token()).await? {
            Release::Released | Release::Notified => Ok(true),
            Release::NotHeld => Ok(false),
            Release::Unsure => Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "the connection dropped before the release of `{}` was answered; sent \
                     again, it found the lock gone: released by the first copy, or lost before",
                    lease.key()
                ),
            )),
        };
    };
    let answers = backend
        .renew(&[Renewal {
            key: lease.full_key(),
            token: lease.token(),
            ttl,
        }])
        .await?;
    match answers.first() {
        Some(Some(kept)) => Ok(*kept),
        _ => Err(LockError::backend(
            BackendErrorKind::Connection,
            "too few Redlock nodes answered to keep the lock for its minimum hold",
        )),
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (client, lease) = (self.holding.client(), self.holding.lease());
        client.watchdog().forget(self.holding.id());
        lease.end();
        if !(self.keep_minimum && lease.has_minimum()) {
            release_in_background(
                client.backend(),
                lease.full_key().to_owned(),
                lease.token().clone(),
                lease.take_pass(),
            );
            return;
        }
        let pass = lease.take_pass();
        if let Some(pass) = &pass {
            pass.set_releasing(true);
        }
        let (backend, lease) = (client.backend().clone(), lease.clone());
        crate::background::spawn(async move {
            if let Err(err) = let_go(&backend, &lease, true).await {
                tracing::debug!(%err, "letting go after the minimum hold failed; the lease will run out");
            }
            drop(pass);
        });
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
    if backend.release_now(&key, &token).is_some() {
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
