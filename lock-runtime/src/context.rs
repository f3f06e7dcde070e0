//! The default client and the locks held along the current call chain.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{LockClient, LockError};

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

/// The lock held by the innermost `#[distributed_lock]` call on the current call chain.
///
/// # Examples
///
/// ```
/// let none = distlock::current();
/// assert!(none.is_none()); // not inside a guarded fn
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    key: String,
    fencing_token: u64,
}

impl HeldLock {
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
    pub(crate) client: LockClient,
    pub(crate) full_key: String,
    pub(crate) held: HeldLock,
    pub(crate) parent: Option<Arc<Frame>>,
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
    pub(crate) fn new(
        client: LockClient,
        full_key: String,
        key: String,
        fencing_token: u64,
        parent: Option<Arc<Frame>>,
    ) -> Self {
        Self {
            client,
            full_key,
            held: HeldLock { key, fencing_token },
            parent,
            turn: Arc::default(),
        }
    }

    /// The frame of a call that re-enters `self` (which holds its key) from `innermost`, the
    /// innermost frame of its chain: same lock, its own turn.
    pub(crate) fn reentered(&self, innermost: Option<Arc<Frame>>) -> Self {
        Self {
            client: self.client.clone(),
            full_key: self.full_key.clone(),
            held: self.held.clone(),
            parent: innermost,
            turn: Arc::default(),
        }
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
                key: self.held.key.clone(),
                retry_after: None,
            })
    }

    /// The frame on this chain (this one or an outer one) holding `full_key` on `client`.
    pub(crate) fn holding<'a>(
        mut frame: Option<&'a Arc<Frame>>,
        client: &LockClient,
        full_key: &str,
    ) -> Option<&'a Arc<Frame>> {
        while let Some(f) = frame {
            if f.full_key == full_key && f.client.same_as(client) {
                return Some(f);
            }
            frame = f.parent.as_ref();
        }
        None
    }
}

/// The lock held by the innermost guarded call (`#[distributed_lock]`) on this call chain:
/// its key and fencing token. `None` outside guarded calls.
///
/// # Examples
///
/// ```
/// assert!(distlock::current().is_none());
/// ```
pub fn current() -> Option<HeldLock> {
    innermost().map(|f| f.held.clone())
}
