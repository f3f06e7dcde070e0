//! Where locks live: one Redis server, or this process's memory.
//!
//! Every backend speaks the same small protocol (acquire, release, batched renew, inspect,
//! release notices), so the client, guard, watchdog and waiting logic above it are shared.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::LockError;
use crate::info::LockInfo;
use crate::token::Token;

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
mod coalesce;
pub(crate) mod layout;
mod link;
pub(crate) mod memory;
pub(crate) mod notices;
pub(crate) mod redis;
pub(crate) mod redlock;
mod script;
pub(crate) mod sentinel;

#[cfg(feature = "cluster")]
pub(crate) use self::cluster::ClusterBackend;
pub(crate) use self::memory::MemoryBackend;
pub(crate) use self::redis::RedisBackend;
pub(crate) use self::redlock::RedlockBackend;
pub(crate) use self::sentinel::{PrimaryAuth, SentinelBackend};

/// The outcome of one acquire attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    Acquired {
        fence: u64,
    },
    /// Held by someone else; their remaining lease when it has one.
    Busy {
        pttl: Option<Duration>,
    },
}

/// The outcome of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Released; nobody was turned away while it was held.
    Released,
    /// Released to the first client in the queue of waiters, which was sent a notice.
    Notified,
    /// The token no longer held the key: nothing was changed.
    NotHeld,
}

/// What an acquire sends: the full key, the caller's key (for errors), the new token, owner
/// info, the lease, and the client's waiter id when the caller will wait (a one-try acquire
/// leaves no trace on a busy lock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcquireArgs<'a> {
    pub(crate) key: &'a str,
    pub(crate) user_key: &'a str,
    pub(crate) token: &'a Token,
    pub(crate) owner: &'a str,
    pub(crate) ttl: Duration,
    pub(crate) waiter: Option<&'a str>,
}

/// One lease to renew in a batch.
#[derive(Debug)]
pub(crate) struct Renewal<'a> {
    pub(crate) key: &'a str,
    pub(crate) token: &'a Token,
    pub(crate) ttl: Duration,
}

/// Wake-ups for one waited key; dropping it ends the interest.
pub(crate) struct Wakeups {
    pub(crate) notify: Arc<Notify>,
    _interest: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

impl Wakeups {
    pub(crate) fn new(notify: Arc<Notify>, interest: impl Send + Sync + 'static) -> Self {
        Self {
            notify,
            _interest: Box::new(interest),
        }
    }
}

// One per client, inside its `Arc`: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Backend {
    Redis(RedisBackend),
    Redlock(RedlockBackend),
    Sentinel(SentinelBackend),
    #[cfg(feature = "cluster")]
    Cluster(ClusterBackend),
    Memory(MemoryBackend),
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Backend {
    /// The kind of deployment, as the metrics label it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Redlock(_) => "redlock",
            Self::Sentinel(_) => "sentinel",
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => "cluster",
            Self::Memory(_) => "memory",
        }
    }

    pub(crate) async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        match self {
            Self::Redis(b) => b.acquire(args).await,
            Self::Redlock(b) => b.acquire(args).await,
            Self::Sentinel(b) => b.acquire(args).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.acquire(args).await,
            Self::Memory(b) => Ok(b.acquire(args)),
        }
    }

    /// A release that needs no I/O (the in-process backend), done at once; `None` when the
    /// backend must be asked over the network.
    pub(crate) fn release_without_io(&self, key: &str, token: &Token) -> Option<Release> {
        match self {
            Self::Memory(b) => Some(b.release(key, token)),
            _ => None,
        }
    }

    pub(crate) async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        match self {
            Self::Redis(b) => b.release(key, token).await,
            Self::Redlock(b) => b.release(key, token).await,
            Self::Sentinel(b) => b.release(key, token).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.release(key, token).await,
            Self::Memory(b) => Ok(b.release(key, token)),
        }
    }

    /// One round trip (per server) for the whole batch; per entry `Some(true)` renewed,
    /// `Some(false)` not held by that token any more, `None` unknown (Redlock without a
    /// majority either way).
    /// The longest lease this deployment can keep safely, if it has a limit: on Redlock the
    /// quarantine (a node restarted empty votes again after it, so a longer lease could be
    /// granted twice).
    pub(crate) fn max_ttl(&self) -> Option<Duration> {
        match self {
            Self::Redlock(b) => Some(b.quarantine()),
            _ => None,
        }
    }

    /// `waiter` gave up waiting for `key`: out of the key's queue of waiting clients (a
    /// reservation made for it goes to the next one).
    pub(crate) async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        match self {
            Self::Redis(b) => b.leave(key, waiter).await,
            // Redlock never queues.
            Self::Redlock(_) => Ok(()),
            Self::Sentinel(b) => b.leave(key, waiter).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.leave(key, waiter).await,
            Self::Memory(b) => {
                b.leave(key, waiter);
                Ok(())
            }
        }
    }

    pub(crate) async fn renew(
        &self,
        batch: &[Renewal<'_>],
    ) -> Result<Vec<Option<bool>>, LockError> {
        let known = |v: Vec<bool>| v.into_iter().map(Some).collect();
        match self {
            Self::Redis(b) => b.renew(batch).await.map(known),
            Self::Redlock(b) => Ok(b.renew(batch).await),
            Self::Sentinel(b) => b.renew(batch).await.map(known),
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => Ok(b.renew(batch).await),
            Self::Memory(b) => Ok(known(b.renew(batch))),
        }
    }

    pub(crate) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        match self {
            Self::Redis(b) => b.inspect(key).await,
            Self::Redlock(b) => b.inspect(key).await,
            Self::Sentinel(b) => b.inspect(key).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.inspect(key).await,
            Self::Memory(b) => Ok(b.inspect(key)),
        }
    }

    /// Releases `key` if it is held under `fence`: true when it was (see
    /// `scripts/force_release.lua`).
    pub(crate) async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        let released = match self {
            Self::Redis(b) => b.force_release(key, fence).await?,
            Self::Redlock(b) => return b.force_release(key, fence).await,
            Self::Sentinel(b) => b.force_release(key, fence).await?,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.force_release(key, fence).await?,
            Self::Memory(b) => b.force_release(key, fence),
        };
        Ok(released != Release::NotHeld)
    }

    /// The next page of held locks under `at.prefix` (full keys); sets `at.done` after the
    /// last one. A page may be empty without being the last.
    pub(crate) async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        let stored = match self {
            Self::Redis(b) => {
                let (next, locks) = b.list_page(at.cursor, &at.pattern).await?;
                at.advance(next, 1);
                locks
            }
            Self::Sentinel(b) => {
                let (next, locks) = b.list_page(at.cursor, &at.pattern).await?;
                at.advance(next, 1);
                locks
            }
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.list_page(at).await?,
            Self::Redlock(b) => return b.list_page(at).await,
            Self::Memory(b) => return Ok(b.list_page(at)),
        };
        Ok(stored.into_iter().map(|s| s.info).collect())
    }

    /// Start hearing release notices for `key` meant for `waiter`. Returns once the
    /// subscription is in place, so a release after this call is never missed.
    pub(crate) async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        match self {
            Self::Redis(b) => b.subscribe(key, waiter, None).await,
            Self::Redlock(b) => b.subscribe(key, waiter).await,
            Self::Sentinel(b) => b.subscribe(key, waiter).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(b) => b.subscribe(key, waiter).await,
            Self::Memory(b) => Ok(b.subscribe(key)),
        }
    }
}

/// Where a listing is: which node it scans, the node's SCAN cursor, and what a deployment
/// needs to remember between pages.
#[derive(Debug)]
pub(crate) struct ListCursor {
    /// The full-key prefix of the locks listed.
    pub(crate) prefix: String,
    /// The SCAN pattern: the prefix with glob characters escaped, then `*`.
    pub(crate) pattern: String,
    /// The node being scanned (an index into the deployment's nodes).
    pub(crate) node: usize,
    /// Its SCAN cursor (0 before the first page).
    pub(crate) cursor: u64,
    pub(crate) done: bool,
    pub(crate) state: ListState,
}

/// Per-deployment listing state.
#[derive(Debug, Default)]
pub(crate) enum ListState {
    /// Not begun (or nothing to remember).
    #[default]
    Start,
    /// Redis Cluster: the primaries' addresses, found on the first page.
    #[cfg(feature = "cluster")]
    Primaries(Vec<(String, u16)>),
    /// In-process: the keys held when the listing began, not yet read.
    Snapshot(std::collections::VecDeque<String>),
    /// Redlock: which nodes were scanned to the end, and how many could not be.
    Redlock { scanned: Vec<bool>, failed: usize },
}

impl ListCursor {
    pub(crate) fn new(prefix: String) -> Self {
        let mut pattern = String::with_capacity(prefix.len() + 8);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        Self {
            prefix,
            pattern,
            node: 0,
            cursor: 0,
            done: false,
            state: ListState::Start,
        }
    }

    /// Moves on after a page of the current node answered `next` (0: that node is done).
    pub(crate) fn advance(&mut self, next: u64, nodes: usize) {
        if next == 0 {
            self.node += 1;
            self.cursor = 0;
            self.done = self.node >= nodes;
        } else {
            self.cursor = next;
        }
    }
}

/// How long a released lock stays reserved for the first client in its queue of waiters.
/// The notice reaches that client in about one round trip; if it is gone, the others wait at
/// most this long.
pub(crate) const RESERVATION: Duration = Duration::from_millis(250);
