//! [`LockRequest`]: the builder returned by [`LockClient::lock`], awaited for a guard.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{AcquireArgs, Attempt, Backend};
use crate::guard::release_in_background;
use crate::key::{validate_key, validate_lease};
use crate::lease::Lease;
use crate::state::ClientState;
use crate::token::{Token, owner_info};
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
#[derive(Debug)]
#[must_use = "a lock request does nothing until it is awaited"]
pub struct LockRequest {
    client: Arc<ClientState>,
    key: String,
    ttl: Option<Duration>,
    wait: Duration,
    watchdog: bool,
}

impl LockRequest {
    pub(crate) fn new(client: Arc<ClientState>, key: String) -> Self {
        Self {
            client,
            key,
            ttl: None,
            wait: Duration::ZERO,
            watchdog: true,
        }
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

    async fn acquire(self) -> Result<LockGuard, LockError> {
        let Self {
            client,
            key,
            ttl,
            wait,
            watchdog,
        } = self;
        validate_key(&key)?;
        let ttl = ttl.unwrap_or(client.default_ttl());
        validate_lease(ttl, client.backend().max_ttl())?;
        let deadline = Instant::now().checked_add(wait);
        let full_key = client.full_key(&key);
        let busy = |retry_after| LockError::Busy {
            key: key.clone(),
            retry_after,
        };

        // First our own process: one task per key at a time talks to the backend, FIFO.
        let mut pass = client.gates().enter(&full_key);
        if wait.is_zero() {
            if let Err(retry_after) = pass.try_turn() {
                if !pass.holder_releasing() {
                    return Err(busy(retry_after));
                }
                // Our own dropped guard's release is in flight: one round trip away.
                let until = Instant::now() + client.command_timeout();
                pass.wait_turn(Some(until)).await.map_err(busy)?;
            }
        } else {
            pass.wait_turn(deadline).await.map_err(busy)?;
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
            let owner = owner_info();
            let attempt = backend
                .acquire(&AcquireArgs {
                    key: &full_key,
                    user_key: &key,
                    token: pending.token(),
                    owner: &owner,
                    ttl,
                    waiter: queued.waiter,
                })
                .await;
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
                        ttl,
                        sent,
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
                    return Ok(LockGuard::new(client.clone(), lease, watchdog, sent, pass));
                }
                Ok(Attempt::Busy { pttl }) => {
                    pending.disarm();
                    queued.joined = queued.waiter.is_some();
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
        Box::pin(self.acquire())
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
