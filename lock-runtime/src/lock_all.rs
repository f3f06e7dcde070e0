//! [`LockClient::lock_all`]: several keys, all or nothing.

use crate::key::validate_key;
use crate::lock_set::{LockSetRequest, Plan};
use crate::{LockClient, LockError};

/// The most keys one [`LockClient::lock_all`] takes.
pub const MAX_KEYS: usize = 1024;

impl LockClient {
    /// Takes every one of `keys` or none, under one guard: the ordinary locks of those keys
    /// (so a holder of [`lock`](Self::lock)`(k)` keeps a set with `k` out, and the other way
    /// round). Duplicates count once. A request like [`lock`](Self::lock) (lease, wait,
    /// watchdog), with one wait for the whole set, giving a
    /// [`LockSetGuard`](crate::LockSetGuard).
    ///
    /// # How it works
    ///
    /// The keys are first tried all at once (for a free set, one round trip: the tries share a
    /// connection's batch). If one is busy, what was taken goes back; with a wait, the keys are
    /// then taken one by one in sorted order, each waiting with what is left of the set's
    /// deadline. Every caller waits only for a key larger than all it holds, so two callers
    /// asking for overlapping sets, in any order, cannot deadlock; the one that waits first on
    /// a key is served first. On Redis Cluster the keys may live on different nodes, on
    /// Redlock each key is taken by majority; nothing else changes. Past the deadline, the
    /// keys held go back and the request is [`LockError::Busy`] naming the busy key.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let transfer = client
    ///     .lock_all(["account:7", "account:3"])
    ///     .wait(Duration::from_secs(2))
    ///     .await?;
    /// assert!(client.lock("account:3").await.unwrap_err().is_busy());
    /// transfer.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// When awaited: no keys, or more than [`MAX_KEYS`], is [`LockError::InvalidCount`]; a
    /// bad key, or one with `semaphore:` or `rwlock:` anywhere in it, the client's prefix
    /// included (it may be one of the locks [`Semaphore`](crate::Semaphore) and
    /// [`RwLock`](crate::RwLock) are made of, under some client's prefix, which only they
    /// take), is [`LockError::InvalidKey`].
    pub fn lock_all<I>(&self, keys: I) -> LockSetRequest
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        keys.sort_unstable();
        keys.dedup();
        let name = keys.join("+");
        let plan = check(self, &keys).map(|()| Plan::All { keys });
        LockSetRequest::new(self, name, plan)
    }
}

fn check(client: &LockClient, keys: &[String]) -> Result<(), LockError> {
    if !(1..=MAX_KEYS).contains(&keys.len()) {
        return Err(LockError::InvalidCount {
            what: "keys",
            value: keys.len(),
            reason: "lock_all takes between 1 and distlock::MAX_KEYS (1024) keys",
        });
    }
    keys.iter().try_for_each(|k| {
        validate_key(k)?;
        // On the full key: a client with another prefix names the same Redis keys with
        // another key (prefix `app:` and key `x:semaphore:s:0` is prefix `app:x:`'s permit).
        let full = client.full_key(k);
        if RESERVED.iter().any(|part| full.contains(part)) {
            return Err(LockError::InvalidKey {
                key: k.chars().take(64).collect(),
                reason: "a key with `semaphore:` or `rwlock:` in it (prefix included) may be \
                         one of the locks semaphores and read/write locks are made of; a set \
                         taking some of them could wait on a gatherer waiting on it",
            });
        }
        Ok(())
    })
}

/// What the primitives' own locks have in their keys, under any client's prefix: only their
/// own requests take those, so that every caller that waits while holding some of them waits
/// behind their gate.
const RESERVED: [&str; 2] = ["semaphore:", "rwlock:"];
