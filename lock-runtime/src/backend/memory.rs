//! The in-process backend: the same protocol as Redis, kept in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::deployment::{
    AcquireArgs, Attempt, Deployment, ListCursor, ListState, RESERVATION, Release, Renewal, Wakeups,
};
use super::layout::lock_info;
use crate::LockError;
use crate::info::LockInfo;
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
    locks: HashMap<String, Slot>,
    last_fence: u64,
    wakers: HashMap<String, Weak<Notify>>,
    ops_since_sweep: usize,
}

/// A key's state, as on Redis: held (with the clients turned away, in order), or released
/// and reserved for the first of them for a moment.
enum Slot {
    Held {
        token: Token,
        fence: u64,
        owner: String,
        expires: Instant,
        queue: VecDeque<String>,
        /// A waiting client was turned away (it may have left the queue since).
        contended: bool,
    },
    Reserved {
        queue: VecDeque<String>,
        expires: Instant,
    },
}

impl Slot {
    fn expires(&self) -> Instant {
        match self {
            Slot::Held { expires, .. } | Slot::Reserved { expires, .. } => *expires,
        }
    }
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
        self.lock()
            .locks
            .values()
            .all(|slot| !matches!(slot, Slot::Held { expires, .. } if *expires > now))
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

    /// Releases `key` if `token` holds it: no I/O, so done at once.
    fn release_at_once(&self, key: &str, token: &Token) -> Release {
        let now = Instant::now();
        let mut state = self.store.lock();
        let Some(Slot::Held {
            token: holder,
            expires,
            queue,
            contended,
            ..
        }) = state.locks.get_mut(key)
        else {
            return Release::NotHeld;
        };
        if *holder != *token || *expires <= now {
            return Release::NotHeld;
        }
        if queue.is_empty() {
            let contended = *contended;
            state.locks.remove(key);
            if !contended {
                return Release::Released;
            }
            // Someone waited and gave up: a notice for anyone.
            if let Some(notify) = state.wakers.get(key).and_then(Weak::upgrade) {
                notify.notify_waiters();
            }
            return Release::Notified;
        }
        let queue = std::mem::take(queue);
        state.locks.insert(
            key.to_owned(),
            Slot::Reserved {
                queue,
                expires: now + RESERVATION,
            },
        );
        if let Some(notify) = state.wakers.get(key).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
        Release::Notified
    }

    /// Who holds `key`, read at once.
    fn holder(&self, key: &str) -> Option<LockInfo> {
        let now = Instant::now();
        let state = self.store.lock();
        match state.locks.get(key)? {
            Slot::Held {
                fence,
                owner,
                expires,
                contended,
                queue,
                ..
            } if *expires > now => {
                let mut info = lock_info(*fence, owner, Some(*expires - now), *contended);
                info.key = key.to_owned();
                info.waiters = queue.len();
                Some(info)
            }
            _ => None,
        }
    }
}

/// Every operation is done at once under the store's mutex (never held across an `.await`).
impl Deployment for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let AcquireArgs {
            key,
            token,
            owner,
            ttl,
            waiter,
            ..
        } = *args;
        let now = Instant::now();
        let mut state = self.store.lock();
        state.sweep(now);
        let mut queue = VecDeque::new();
        match state.locks.get_mut(key).filter(|slot| slot.expires() > now) {
            Some(Slot::Held {
                queue,
                expires,
                contended,
                ..
            }) => {
                if let Some(waiter) = waiter {
                    *contended = true;
                    if !queue.iter().any(|w| w == waiter) {
                        queue.push_back(waiter.to_owned());
                    }
                }
                return Ok(Attempt::Busy {
                    pttl: Some(*expires - now),
                });
            }
            Some(Slot::Reserved {
                queue: waiting,
                expires,
            }) => {
                if waiter.is_none() || waiting.front().map(String::as_str) != waiter {
                    if let Some(waiter) = waiter
                        && !waiting.iter().any(|w| w == waiter)
                    {
                        waiting.push_back(waiter.to_owned());
                    }
                    return Ok(Attempt::Busy {
                        pttl: Some(*expires - now),
                    });
                }
                waiting.pop_front();
                queue = std::mem::take(waiting);
            }
            None => {}
        }
        let fence = unix_micros().max(state.last_fence + 1);
        state.last_fence = fence;
        state.locks.insert(
            key.to_owned(),
            Slot::Held {
                token: token.clone(),
                fence,
                owner: owner.to_owned(),
                expires: now + ttl,
                contended: !queue.is_empty(),
                queue,
            },
        );
        Ok(Attempt::Acquired { fence })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        Ok(self.release_at_once(key, token))
    }

    fn release_now(&self, key: &str, token: &Token) -> Option<Release> {
        Some(self.release_at_once(key, token))
    }

    async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        let now = Instant::now();
        let mut state = self.store.lock();
        let Some(slot) = state.locks.get_mut(key).filter(|slot| slot.expires() > now) else {
            return Ok(());
        };
        let reserved = matches!(slot, Slot::Reserved { .. });
        let (Slot::Held { queue, .. } | Slot::Reserved { queue, .. }) = slot;
        let Some(at) = queue.iter().position(|w| w == waiter) else {
            return Ok(());
        };
        queue.remove(at);
        if at != 0 || !reserved {
            return Ok(());
        }
        // The lock was reserved for this waiter: hand it to the next one, or free it.
        if queue.is_empty() {
            state.locks.remove(key);
            return Ok(());
        }
        if let Slot::Reserved { expires, .. } = slot {
            *expires = now + RESERVATION;
        }
        if let Some(notify) = state.wakers.get(key).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
        Ok(())
    }

    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        let now = Instant::now();
        let mut state = self.store.lock();
        Ok(batch
            .iter()
            .map(|r| match state.locks.get_mut(r.key) {
                Some(Slot::Held { token, expires, .. }) if *token == *r.token && *expires > now => {
                    *expires = now + r.ttl;
                    Some(true)
                }
                _ => Some(false),
            })
            .collect())
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        Ok(self.holder(key))
    }

    /// Releases `key` if it is held under `fence`, as its holder's release would.
    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        let token = {
            let state = self.store.lock();
            match state.locks.get(key) {
                Some(Slot::Held {
                    token, fence: held, ..
                }) if *held == fence => token.clone(),
                _ => return Ok(false),
            }
        };
        // The token held the key under that fence; if it changed meanwhile, nothing is done.
        Ok(self.release_at_once(key, &token) != Release::NotHeld)
    }

    /// The keys held under the prefix when the listing began (sorted), then up to 1000 of
    /// them per page, read as they are now.
    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        if !matches!(at.state, ListState::Snapshot(_)) {
            let now = Instant::now();
            let state = self.store.lock();
            let mut keys: Vec<String> = state
                .locks
                .iter()
                .filter(|(key, slot)| {
                    key.starts_with(&at.prefix)
                        && matches!(slot, Slot::Held { expires, .. } if *expires > now)
                })
                .map(|(key, _)| key.clone())
                .collect();
            keys.sort_unstable();
            at.state = ListState::Snapshot(keys.into());
        }
        let ListState::Snapshot(keys) = &mut at.state else {
            return Ok(Vec::new());
        };
        let page: Vec<String> = keys.drain(..keys.len().min(1000)).collect();
        at.done = keys.is_empty();
        Ok(page.iter().filter_map(|key| self.holder(key)).collect())
    }

    async fn subscribe(&self, key: &str, _waiter: &str) -> Result<Wakeups, LockError> {
        let mut state = self.store.lock();
        let existing = state.wakers.get(key).and_then(Weak::upgrade);
        let notify = existing.unwrap_or_else(|| {
            let notify = Arc::new(Notify::new());
            state.wakers.insert(key.to_owned(), Arc::downgrade(&notify));
            notify
        });
        Ok(Wakeups::new(notify, ()))
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
        self.locks.retain(|_, slot| slot.expires() > now);
        self.wakers.retain(|_, w| w.strong_count() > 0);
    }
}
