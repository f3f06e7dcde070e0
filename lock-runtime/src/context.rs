//! The default client and the locks held along the current call chain.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{HeldLock, LockClient, LockError};

static DEFAULT_CLIENT: RwLock<Option<LockClient>> = RwLock::new(None);

/// Sets the client that `#[distributed_lock]` uses when it names none. Call it once at
/// startup; a later call replaces it for guarded calls that start afterwards.
///
/// # Examples
///
/// ```
/// distlock::set_default_client(distlock::LockClient::memory());
/// assert!(distlock::default_client().is_ok());
/// ```
pub fn set_default_client(client: LockClient) {
    *DEFAULT_CLIENT.write().unwrap_or_else(|p| p.into_inner()) = Some(client);
}

/// The client set by [`set_default_client`].
///
/// # Examples
///
/// ```
/// distlock::set_default_client(distlock::LockClient::memory());
/// let client = distlock::default_client()?;
/// # Ok::<(), distlock::LockError>(())
/// ```
///
/// # Errors
///
/// [`LockError::NoDefaultClient`] when none was set.
pub fn default_client() -> Result<LockClient, LockError> {
    DEFAULT_CLIENT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(LockError::NoDefaultClient)
}

/// One guarded call on the chain: what it holds and where it was called from.
///
/// A guarded call that finds its key held further up its chain does not acquire again, but
/// it is not free to run alongside other calls that do the same: it takes this frame's
/// `turn` first (so calls joined inside one holder exclude each other as two tasks would),
/// and pushes a frame of its own (so calls nested in it take turns on it, not on the frame it
/// is itself holding a turn of).
#[derive(Debug)]
pub(crate) struct Frame {
    held: HeldLock,
    parent: Option<Arc<Frame>>,
    turn: Arc<Mutex<()>>,
}

/// A re-entering call's turn on the frame holding its key; the next one may enter when it
/// is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _turn: OwnedMutexGuard<()>,
}

tokio::task_local! {
    pub(crate) static CHAIN: Option<Arc<Frame>>;
}

/// The innermost frame of the call chain being polled, if any.
pub(crate) fn innermost() -> Option<Arc<Frame>> {
    CHAIN.try_with(Clone::clone).ok().flatten()
}

impl Frame {
    /// The frame of a call holding `held`, called from `parent`.
    pub(crate) fn new(held: HeldLock, parent: Option<Arc<Frame>>) -> Self {
        Self {
            held,
            parent,
            turn: Arc::default(),
        }
    }

    /// The lock this frame's call runs under.
    pub(crate) fn held(&self) -> &HeldLock {
        &self.held
    }

    /// The frame of a call that re-enters `self` (which holds its key) from `innermost`, the
    /// innermost frame of its chain: same lock, its own turn.
    pub(crate) fn reentered(&self, innermost: Option<Arc<Frame>>) -> Self {
        Self::new(self.held.clone(), innermost)
    }

    /// Waits up to `wait` until no other call re-entering this frame is inside (one try when
    /// `wait` is zero).
    ///
    /// # Errors
    ///
    /// [`LockError::Busy`] when another one stayed inside for the whole wait.
    pub(crate) async fn take_turn(&self, wait: Duration) -> Result<Turn, LockError> {
        let turn = if wait.is_zero() {
            self.turn.clone().try_lock_owned().ok()
        } else {
            tokio::time::timeout(wait, self.turn.clone().lock_owned())
                .await
                .ok()
        };
        turn.map(|turn| Turn { _turn: turn })
            .ok_or_else(|| LockError::Busy {
                key: self.held.key().to_owned(),
                retry_after: None,
            })
    }

    /// The frame on this chain (this one or an outer one) holding `full_key` on `client`,
    /// while its lock is still held: a call under a frame whose lock was released or lost
    /// (a [`HeldLock::scope`] outliving its guard, `on_lost = "ignore"`) acquires for itself.
    pub(crate) fn holding<'a>(
        mut frame: Option<&'a Arc<Frame>>,
        client: &LockClient,
        full_key: &str,
    ) -> Option<&'a Arc<Frame>> {
        while let Some(f) = frame {
            if f.held.is_on(client.state(), full_key) && f.held.is_held() {
                return Some(f);
            }
            frame = f.parent.as_ref();
        }
        None
    }
}

/// The lock held by the innermost guarded call (`#[distributed_lock]`) on this call chain:
/// its key, fencing token, remaining lease and the means to extend it. `None` outside guarded
/// calls.
///
/// # Examples
///
/// ```
/// assert!(distlock::current().is_none());
/// ```
pub fn current() -> Option<HeldLock> {
    innermost().map(|f| f.held.clone())
}

impl HeldLock {
    /// Runs `future` with this lock as [`current`] (on top of the call chain it is polled
    /// in): code that cannot be handed the lock directly finds it there, and a
    /// `#[distributed_lock]` call inside on the same key and client re-enters it instead of
    /// waiting for itself. The tower layer runs every locked request's handler like this.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let guard = distlock::LockClient::memory().lock("tenant:7").await?;
    /// let fence = guard
    ///     .held_lock()
    ///     .scope(async { distlock::current().map(|held| held.fencing_token()) })
    ///     .await;
    /// assert_eq!(fence, Some(guard.fencing_token()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        let frame = Frame::new(self, innermost());
        CHAIN.scope(Some(Arc::new(frame)), future)
    }
}
