//! Where locks live: this process's memory, one Redis server, a primary under Sentinel,
//! Redlock's independent primaries, or Redis Cluster.
//!
//! Each is a [`Deployment`] (`deployment.rs`: the operations and their arguments), in the file
//! named after it; [`Backend`] is the one a client was built with. The Lua scripts
//! (`scripts/*.lua`) are called through `script.rs`, the stored value's layout they write is
//! read in `layout.rs`, and release notices are heard in `notices.rs`.

use std::time::Duration;

use crate::LockError;
use crate::info::LockInfo;
use crate::token::Token;

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
mod coalesce;
mod deployment;
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
pub(crate) use self::deployment::{
    AcquireArgs, Attempt, Deployment, ListCursor, Release, Renewal, Wakeups,
};
pub(crate) use self::memory::MemoryBackend;
pub(crate) use self::redis::RedisBackend;
pub(crate) use self::redlock::RedlockBackend;
pub(crate) use self::sentinel::{PrimaryAuth, SentinelBackend};

/// The deployment a client was built with.
///
/// An enum rather than `dyn Deployment`: calls are dispatched without boxing their futures.
/// Adding a deployment is one variant here and one arm in `dispatch!`.
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

/// Evaluates `$call` with `$d` bound to the deployment inside `$backend`, whichever it is.
macro_rules! dispatch {
    ($backend:expr, $d:ident => $call:expr) => {
        match $backend {
            Backend::Redis($d) => $call,
            Backend::Redlock($d) => $call,
            Backend::Sentinel($d) => $call,
            #[cfg(feature = "cluster")]
            Backend::Cluster($d) => $call,
            Backend::Memory($d) => $call,
        }
    };
}

impl Deployment for Backend {
    fn kind(&self) -> &'static str {
        dispatch!(self, d => d.kind())
    }

    fn max_ttl(&self) -> Option<Duration> {
        dispatch!(self, d => d.max_ttl())
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        dispatch!(self, d => d.acquire(args).await)
    }

    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        dispatch!(self, d => d.release(key, token).await)
    }

    fn release_now(&self, key: &str, token: &Token) -> Option<Release> {
        dispatch!(self, d => d.release_now(key, token))
    }

    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        dispatch!(self, d => d.renew(batch).await)
    }

    async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        dispatch!(self, d => d.leave(key, waiter).await)
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        dispatch!(self, d => d.inspect(key).await)
    }

    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        dispatch!(self, d => d.force_release(key, fence).await)
    }

    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        dispatch!(self, d => d.list_page(at).await)
    }

    async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        dispatch!(self, d => d.subscribe(key, waiter).await)
    }
}
