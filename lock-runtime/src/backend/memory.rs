//! The in-process backend: the same protocol as Redis, kept in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Attempt, Renewal, Wakeups, lock_info};
use crate::LockInfo;
use crate::token::{Token, unix_micros};

/// A lock table in this process's memory, shareable between several clients.
///
/// [`LockClient::memory()`](crate::LockClient::memory) makes a client over a fresh store of its
/// own. Build several clients over one store (each with its own watchdog and waiting, as
/// separate processes would have) with [`LockClientBuilder::memory`](crate::LockClientBuilder::memory).
/// Leases expire, fencing tokens increase and waiters are woken exactly as on Redis.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use distlock::{LockClient, MemoryStore};
///
/// let store = MemoryStore::new();
/// let a = LockClient::builder().memory(store.clone()).build().await?;
/// let b = LockClient::builder().memory(store.clone()).build().await?;
/// let held = a.lock("job").await?;
/// assert!(b.lock("job").await.unwrap_err().is_busy());
/// held.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("locks", &self.lock().locks.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    locks: HashMap<String, Held>,
    last_fence: u64,
    wakers: HashMap<String, Weak<Notify>>,
    ops_since_sweep: usize,
}

struct Held {
    token: Token,
    fence: u64,
    owner: String,
    expires: Instant,
    contended: bool,
}

impl MemoryStore {
    /// An empty store.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = distlock::MemoryStore::new();
    /// assert!(store.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no lock is held.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(distlock::MemoryStore::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        let now = Instant::now();
        self.lock().locks.values().all(|h| h.expires <= now)
    }

    /// Forget every lock at once, as `FLUSHALL` does on Redis: holders find out on their next
    /// renewal. Fencing tokens keep increasing.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = distlock::MemoryStore::new();
    /// store.clear();
    /// assert!(store.is_empty());
    /// ```
    pub fn clear(&self) {
        self.lock().locks.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    pub(crate) fn new(store: MemoryStore) -> Self {
        Self { store }
    }

    pub(crate) fn acquire(&self, key: &str, token: &Token, owner: &str, ttl: Duration) -> Attempt {
        let now = Instant::now();
        let mut state = self.store.lock();
        state.sweep(now);
        if let Some(held) = state.locks.get_mut(key).filter(|h| h.expires > now) {
            held.contended = true;
            return Attempt::Busy {
                pttl: Some(held.expires - now),
            };
        }
        let fence = unix_micros().max(state.last_fence + 1);
        state.last_fence = fence;
        state.locks.insert(
            key.to_owned(),
            Held {
                token: token.clone(),
                fence,
                owner: owner.to_owned(),
                expires: now + ttl,
                contended: false,
            },
        );
        Attempt::Acquired { fence }
    }

    pub(crate) fn release(&self, key: &str, token: &Token) -> bool {
        let now = Instant::now();
        let mut state = self.store.lock();
        let Some(held) = state.locks.get(key) else {
            return false;
        };
        if held.token != *token || held.expires <= now {
            return false;
        }
        let contended = held.contended;
        state.locks.remove(key);
        if contended {
            if let Some(notify) = state.wakers.get(key).and_then(Weak::upgrade) {
                notify.notify_waiters();
            }
        }
        true
    }

    pub(crate) fn renew(&self, batch: &[Renewal<'_>]) -> Vec<bool> {
        let now = Instant::now();
        let mut state = self.store.lock();
        batch
            .iter()
            .map(|r| match state.locks.get_mut(r.key) {
                Some(held) if held.token == *r.token && held.expires > now => {
                    held.expires = now + r.ttl;
                    true
                }
                _ => false,
            })
            .collect()
    }

    pub(crate) fn inspect(&self, key: &str) -> Option<LockInfo> {
        let now = Instant::now();
        let state = self.store.lock();
        let held = state.locks.get(key).filter(|h| h.expires > now)?;
        Some(lock_info(
            held.fence,
            &held.owner,
            Some(held.expires - now),
            held.contended,
        ))
    }

    pub(crate) fn subscribe(&self, key: &str) -> Wakeups {
        let mut state = self.store.lock();
        let existing = state.wakers.get(key).and_then(Weak::upgrade);
        let notify = existing.unwrap_or_else(|| {
            let notify = Arc::new(Notify::new());
            state.wakers.insert(key.to_owned(), Arc::downgrade(&notify));
            notify
        });
        Wakeups::new(notify, ())
    }
}

impl State {
    /// Drop expired locks and dead wakers now and then, so the table does not grow forever.
    fn sweep(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < 1024 + self.locks.len() {
            return;
        }
        self.ops_since_sweep = 0;
        self.locks.retain(|_, h| h.expires > now);
        self.wakers.retain(|_, w| w.strong_count() > 0);
    }
}
