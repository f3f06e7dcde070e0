//! [`LockRequest`]: the builder returned by [`LockClient::lock`], awaited for a guard.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{AcquireArgs, Attempt, Backend, Deployment};
use crate::guard::release_in_background;
use crate::key::{validate_holds, validate_key, validate_lease};
use crate::lease::{Grant, Holds, Lease, acquire_ttl};
use crate::metrics::Answer;
use crate::state::ClientState;
use crate::telemetry::{AcquireTrace, acquire_span, caller_span};
use crate::token::{OwnerLabel, Token, owner_info_labelled};
use crate::waiter::{FIRST_BACKOFF, MAX_BACKOFF, pause};
use crate::{BackendErrorKind, LockError, LockGuard};

/// A request for one lock: set the lease, the wait and the watchdog, then `.await` it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::memory();
/// let guard = client
///     .lock("payments:acct-7")
///     .ttl(Duration::from_secs(5))     // the lease; renewed by the watchdog while held
///     .wait(Duration::from_millis(500)) // how long to wait if busy (default: one try)
///     .watchdog(true)                   // the default
///     .await?;
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors (when awaited)
///
/// [`LockError::Busy`] when the lock stayed held for the whole wait, [`LockError::InvalidKey`]
/// and [`LockError::InvalidDuration`] for bad input, [`LockError::KeyConflict`] when the key
/// holds data distlock did not write, [`LockError::Backend`] when the backend fails.
///
/// # Cancel safety
///
/// Cancel safe: if the future is dropped after the acquire was sent, the lock (if it was
/// taken) is released by token in the background; nothing outlives its lease.
#[derive(Debug, Clone)]
#[must_use = "a lock request does nothing until it is awaited"]
pub struct LockRequest {
    client: Arc<ClientState>,
    key: String,
    ttl: Option<Duration>,
    wait: Duration,
    watchdog: bool,
    min_hold: Option<Duration>,
    max_hold: Option<Duration>,
    /// `None`: the client's label; `Some(None)`: none.
    label: Option<Option<OwnerLabel>>,
    /// The key label of this request's metrics, in place of the client's key labeller.
    metrics_label: Option<Cow<'static, str>>,
}

impl LockRequest {
    pub(crate) fn new(client: Arc<ClientState>, key: String) -> Self {
        Self {
            client,
            key,
            ttl: None,
            wait: Duration::ZERO,
            watchdog: true,
            min_hold: None,
            max_hold: None,
            label: None,
            metrics_label: None,
        }
    }

    /// The key label this request's metrics (feature `metrics`) carry, in place of the one
    /// the client's key labeller derives from the key: for keys that come from outside (a
    /// request's path or header, as the tower layer locks them), whose text must not become
    /// a label value. Bounded like every key label ([`metrics`](crate::metrics)). Without the
    /// feature it changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let untrusted = "4111111111111111:refund"; // from a request
    /// let client = distlock::LockClient::memory();
    /// let guard = client.lock(untrusted).metrics_label("refunds").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics_label(mut self, label: impl Into<Cow<'static, str>>) -> Self {
        self.metrics_label = Some(label.into());
        self
    }

    /// The label stored with this lock, in place of the client's
    /// ([`LockClientBuilder::label`](crate::LockClientBuilder::label)): a job id, a request
    /// id, a person. Same rules: at most [`MAX_LABEL_LEN`](crate::MAX_LABEL_LEN) bytes,
    /// control characters replaced; an empty label stores none (not even the client's).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let _guard = client.lock("report").label("run 2024-06-01").await?;
    /// let info = client.inspect("report").await?.unwrap();
    /// assert_eq!(info.label.as_deref(), Some("run 2024-06-01"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(OwnerLabel::new(&label.into()));
        self
    }

    /// Keeps the lock at least this long after it was acquired, also after the guard is
    /// released: [`LockGuard::release`] (and a dropped guard) then sets the lease to what
    /// remains of the minimum instead of deleting the lock, so that nobody takes it within
    /// it. Made for scheduled jobs: an instance whose trigger comes a little later than the
    /// others' finds the job's lock still held and is turned away. Nothing runs meanwhile: no
    /// renewal, no task. [`LockGuard::release_now`] releases at once (after a failed run).
    ///
    /// The minimum is measured from when the acquire was sent, on this process's clock (as
    /// [`max_hold`](Self::max_hold) is); the lock is kept a margin longer (1 % + 2 ms) for
    /// drift, by the acquire's own lease and by every later command's, watchdog or not. Zero
    /// means none.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let guard = client.lock("report").min_hold(Duration::from_secs(30)).await?;
    /// guard.release().await?; // the job was quick...
    /// assert!(client.lock("report").await.unwrap_err().is_busy()); // ...the lock stays
    /// # Ok(())
    /// # }
    /// ```
    pub fn min_hold(mut self, min_hold: Duration) -> Self {
        self.min_hold = (!min_hold.is_zero()).then_some(min_hold);
        self
    }

    /// Never holds the lock longer than this after acquiring it, watchdog or not: renewals
    /// and [`LockGuard::extend`] stop short of it, and the lease ends there as if lost
    /// ([`LockGuard::lost`] fires). A hung holder can no longer keep a lock forever. At least
    /// 100 ms; never shorter than [`min_hold`](Self::min_hold).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let guard = distlock::LockClient::memory()
    ///     .lock("sync")
    ///     .ttl(Duration::from_secs(1))
    ///     .max_hold(Duration::from_millis(300))
    ///     .await?;
    /// guard.lost().await; // after ~300ms, although the watchdog renews
    /// assert!(!guard.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = Some(max_hold);
        self
    }

    /// The lease (default: the client's default TTL). At least 100 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// let request = distlock::LockClient::memory().lock("k").ttl(std::time::Duration::from_secs(3));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long to wait for a busy lock (default zero: one try, then [`LockError::Busy`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let request = distlock::LockClient::memory().lock("k").wait(std::time::Duration::from_secs(2));
    /// ```
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Whether the watchdog renews the lease every ttl/3 while held (default true). Without
    /// it the lease simply runs out after the TTL, and [`LockGuard::lost`] fires then.
    ///
    /// # Examples
    ///
    /// ```
    /// let request = distlock::LockClient::memory().lock("k").watchdog(false);
    /// ```
    pub fn watchdog(mut self, renew: bool) -> Self {
        self.watchdog = renew;
        self
    }

    /// The same request for another key with another wait: how the primitives built of
    /// several locks (see [`crate::lock_set`]) take each of them on the caller's terms.
    pub(crate) fn for_key(&self, key: String, wait: Duration) -> Self {
        Self {
            key,
            wait,
            ..self.clone()
        }
    }

    /// How long this request waits for a busy lock.
    pub(crate) fn wait_for(&self) -> Duration {
        self.wait
    }

    /// Acquires, recording the outcome in `trace` (see [`crate::telemetry`]).
    async fn acquire(self, mut trace: AcquireTrace) -> Result<LockGuard, LockError> {
        let acquired = self.try_acquire(&mut trace).await;
        if let Err(err) = &acquired {
            trace.failed(err);
        }
        acquired
    }

    async fn try_acquire(self, trace: &mut AcquireTrace) -> Result<LockGuard, LockError> {
        let Self {
            client,
            key,
            ttl,
            wait,
            watchdog,
            min_hold,
            max_hold,
            label,
            metrics_label,
        } = self;
        validate_key(&key)?;
        trace.set_metrics(match &metrics_label {
            Some(label) => client.metrics().for_label(label),
            None => client.metrics().for_key(&key),
        });
        let ttl = ttl.unwrap_or(client.default_ttl());
        validate_lease(ttl, client.backend().max_ttl())?;
        validate_holds(min_hold, max_hold, client.backend().max_ttl())?;
        // The acquire's lease lasts through the minimum hold and stops at the cap.
        let acquire_ttl = acquire_ttl(ttl, min_hold, max_hold);
        let deadline = Instant::now().checked_add(wait);
        let full_key = client.full_key(&key);
        let busy = |retry_after| LockError::Busy {
            key: key.clone(),
            retry_after,
        };

        // First our own process: one task per key at a time talks to the backend, FIFO.
        let mut pass = client.gates().enter(&full_key);
        if let Err(retry_after) = pass.try_turn() {
            if wait.is_zero() {
                if !pass.holder_releasing() {
                    return Err(busy(retry_after));
                }
                // Our own dropped guard's release is in flight: one round trip away.
                trace.waiting();
                let until = Instant::now() + client.command_timeout();
                pass.wait_turn(Some(until)).await.map_err(busy)?;
            } else {
                trace.waiting();
                pass.wait_turn(deadline).await.map_err(busy)?;
            }
        }

        let backend = client.backend();
        let mut wakeups = None;
        // Only a request that will wait joins the key's queue of waiting clients, and it
        // leaves the queue again if it gives up.
        let mut queued = Queued {
            backend,
            key: &full_key,
            waiter: (!wait.is_zero()).then_some(client.waiter_id()),
            joined: false,
        };

        let mut backoff = FIRST_BACKOFF;
        loop {
            let notify = wakeups
                .as_ref()
                .map(|w: &crate::backend::Wakeups| w.notify.clone());
            let notified = notify.as_ref().map(|n| n.notified());
            tokio::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }

            let token = Token::generate()?;
            let sent = Instant::now();
            let pending = PendingAcquire {
                backend,
                key: &full_key,
                token: Some(token),
            };
            // From here until its answer is read the attempt may have joined the queue: a
            // request dropped in between must leave it too.
            queued.joined = queued.waiter.is_some();
            let owner = owner_info_labelled(match &label {
                Some(own) => own.as_ref(),
                None => client.label(),
            });
            let attempt = backend
                .acquire(&AcquireArgs {
                    key: &full_key,
                    user_key: &key,
                    token: pending.token(),
                    owner: &owner,
                    ttl: acquire_ttl,
                    waiter: queued.waiter,
                })
                .await;
            trace.answered(
                sent,
                match &attempt {
                    Ok(Attempt::Acquired { .. }) => Answer::Acquired,
                    Ok(Attempt::Busy { .. }) => Answer::Busy,
                    Err(_) => Answer::Error,
                },
            );
            let pttl = match attempt {
                Ok(Attempt::Acquired { fence }) => {
                    // A reservation made for us (if any) was taken by this acquire.
                    queued.joined = false;
                    let token = pending.disarm();
                    let lease = Arc::new(Lease::granted(
                        key,
                        full_key.clone(),
                        token,
                        fence,
                        Grant {
                            ttl,
                            sent,
                            lease: acquire_ttl,
                        },
                        Holds::new(sent, min_hold, max_hold),
                    ));
                    if !lease.is_held() {
                        // The answer came too late to trust the lease: give it back.
                        release_in_background(
                            backend,
                            lease.full_key().to_owned(),
                            lease.token().clone(),
                            None,
                        );
                        return Err(LockError::backend(
                            BackendErrorKind::Timeout,
                            format!(
                                "acquiring `{}` took longer than its {ttl:?} lease; released",
                                lease.key()
                            ),
                        ));
                    }
                    lease.set_hold(trace.acquired(lease.key(), fence));
                    return Ok(LockGuard::new(client.clone(), lease, watchdog, sent, pass));
                }
                Ok(Attempt::Busy { pttl }) => {
                    pending.disarm();
                    pttl
                }
                Err(err) => {
                    // A failed call may still have landed; the token is released in the
                    // background when `pending` drops here.
                    return Err(err);
                }
            };

            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                // Give up our place now, so that a release right after this answer is not
                // reserved for us (bounded: the wait is over).
                queued
                    .leave(LEAVE_BOUND.min(client.command_timeout()))
                    .await;
                return Err(busy(pttl));
            }
            trace.waiting();
            if wakeups.is_none() {
                // Subscribe, then try again at once: a release between our first try and the
                // subscription is caught by that retry, any later one by the notice.
                // Bounded by the wait: a slow subscription must not hold a waiter past it.
                let subscribe = backend.subscribe(&full_key, client.waiter_id());
                let subscribed = match deadline {
                    Some(d) => tokio::time::timeout_at(d, subscribe)
                        .await
                        .unwrap_or_else(|_| {
                            Err(LockError::backend(
                                BackendErrorKind::Timeout,
                                "no subscription to release notices before the deadline",
                            ))
                        }),
                    None => subscribe.await,
                };
                match subscribed {
                    Ok(w) => {
                        wakeups = Some(w);
                        continue;
                    }
                    Err(err) => {
                        tracing::debug!(%err, "no release notices; waiting on backoff alone");
                    }
                }
            }
            let nap = pause(pttl, backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let until = deadline.map_or(now + nap, |d| d.min(now + nap));
            match notified.as_pin_mut() {
                Some(n) => {
                    tokio::select! {
                        () = n => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
                None => tokio::time::sleep_until(until).await,
            }
        }
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard, LockError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let ttl = self.ttl.unwrap_or(self.client.default_ttl());
        let span = acquire_span(&self.key, ttl, self.wait);
        let trace = AcquireTrace::new(span.clone(), caller_span());
        Box::pin(self.acquire(trace).instrument(span))
    }
}

/// An acquire in flight whose SET may land: releases the token in the background if dropped
/// before being disarmed (the caller went away, or the call failed and may have landed).
struct PendingAcquire<'a> {
    backend: &'a Arc<Backend>,
    key: &'a str,
    token: Option<Token>,
}

impl PendingAcquire<'_> {
    fn token(&self) -> &Token {
        self.token.as_ref().expect("token present until disarmed")
    }

    fn disarm(mut self) -> Token {
        self.token.take().expect("token present until disarmed")
    }
}

impl Drop for PendingAcquire<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            release_in_background(self.backend, self.key.to_owned(), token, None);
        }
    }
}

/// This client's place in the key's queue of waiting clients: left in the background when
/// the request ends without the lock (it gave up, failed, or was dropped).
struct Queued<'a> {
    backend: &'a Arc<Backend>,
    key: &'a str,
    waiter: Option<&'a str>,
    joined: bool,
}

/// How long a request that gave up waits for its place in the queue to be given up; past
/// that it is given up in the background.
const LEAVE_BOUND: Duration = Duration::from_millis(50);

impl Queued<'_> {
    /// Leaves the queue within `bound` if it was joined; otherwise dropping leaves it later.
    async fn leave(&mut self, bound: Duration) {
        let (true, Some(waiter)) = (self.joined, self.waiter) else {
            return;
        };
        if let Ok(Ok(())) = tokio::time::timeout(bound, self.backend.leave(self.key, waiter)).await
        {
            self.joined = false;
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let (true, Some(waiter)) = (self.joined, self.waiter) else {
            return;
        };
        let (backend, key, waiter) = (self.backend.clone(), self.key.to_owned(), waiter.to_owned());
        crate::background::spawn(async move {
            if let Err(err) = backend.leave(&key, &waiter).await {
                tracing::debug!(%err, "leaving the queue of waiting clients failed; it ends with the lease");
            }
        });
    }
}
