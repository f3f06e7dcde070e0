//! [`Semaphore`]: up to `permits` holders at once, each with its own lease.

use crate::key::validate_key;
use crate::lock_set::{Gate, LockSetRequest, Plan, inspect_all};
use crate::{LockClient, LockError, LockInfo};

/// The most permits a [`Semaphore`] can have: each permit is a lock, and a waiter waits on
/// every one of them.
pub const MAX_PERMITS: usize = 1024;

impl LockClient {
    /// A semaphore of `permits` permits named `name`: up to `permits` holders at once, across
    /// every client of the deployment. See [`Semaphore`] for the key layout and the
    /// guarantees.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let exports = client.semaphore("exports", 2);
    /// let a = exports.acquire().await?;
    /// let b = exports.acquire().await?;
    /// assert!(exports.acquire().await.unwrap_err().is_busy()); // both permits are out
    /// a.release().await?;
    /// let c = exports.acquire().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn semaphore(&self, name: impl Into<String>, permits: usize) -> Semaphore {
        Semaphore {
            client: self.clone(),
            name: name.into(),
            permits,
        }
    }
}

/// A distributed counting semaphore, from [`LockClient::semaphore`]: up to `permits` holders
/// at once. [`acquire`](Self::acquire) takes one permit, [`acquire_many`](Self::acquire_many)
/// several at once; both are requests like [`LockClient::lock`] (lease, wait, watchdog) and
/// give a [`LockSetGuard`](crate::LockSetGuard).
///
/// # How it works
///
/// Permit `i` (from 0) is the ordinary lock `semaphore:<name>:<i>` under the client's prefix,
/// so each permit has what a lock has: its own lease (a dead holder's permit frees itself
/// when the lease runs out), renewal by the watchdog and a loss report, its own fencing
/// token, FIFO notified waiting, and the same guarantees on every deployment (see
/// [`guarantees`](crate::guarantees)). No two holders can have the same permit, so no more
/// than `permits` can hold at once.
///
/// Taking one permit tries the permits one at a time, starting from a rotating one; if none
/// is free and the request may wait, it waits on all of them at once (in each permit's queue)
/// and keeps the first that comes to it. A waiter queued earlier is ahead in every queue, so
/// permits go to waiters in the order they came (on Redlock, which keeps no queues of waiters,
/// they are woken by release notices but not served in order). Taking several goes behind the lock
/// `semaphore:<name>:gate`, so that two callers gathering several permits never wait for each
/// other's (see [`LockSetRequest`](crate::LockSetRequest) for the rule that keeps sets deadlock-free).
///
/// Every client must use the same `permits` (at most [`MAX_PERMITS`]) for a name: a client told more permits grants
/// that many. A name follows the rules of a lock key, with room for the layout
/// ([`MAX_KEY_LEN`](crate::MAX_KEY_LEN)` - 32` bytes to be safe).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::memory();
/// let uploads = client.semaphore("uploads", 4);
/// let permit = uploads
///     .acquire()
///     .ttl(Duration::from_secs(30))
///     .wait(Duration::from_secs(5))
///     .await?;
/// // ... at most four of these run at once, across every process ...
/// assert_eq!(uploads.holders().await?.len(), 1);
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    client: LockClient,
    name: String,
    permits: usize,
}

impl Semaphore {
    /// The semaphore's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let exports = distlock::LockClient::memory().semaphore("exports", 2);
    /// assert_eq!(exports.name(), "exports");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many permits the semaphore has.
    ///
    /// # Examples
    ///
    /// ```
    /// let exports = distlock::LockClient::memory().semaphore("exports", 2);
    /// assert_eq!(exports.permits(), 2);
    /// ```
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Takes one permit; set the lease and the wait, then `.await` it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let permit = client.semaphore("exports", 2).acquire().await?;
    /// println!("permit fence {}", permit.fencing_token());
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire(&self) -> LockSetRequest {
        self.acquire_many(1)
    }

    /// Takes `count` permits, all or none, under one guard.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let pool = client.semaphore("gpu", 4);
    /// let big = pool.acquire_many(3).await?;
    /// assert!(pool.acquire_many(2).await.unwrap_err().is_busy()); // only one left
    /// let small = pool.acquire().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// When awaited, `count` outside `1..=permits` is [`LockError::InvalidCount`].
    pub fn acquire_many(&self, count: usize) -> LockSetRequest {
        LockSetRequest::new(&self.client, self.name.clone(), self.plan(count))
    }

    fn plan(&self, count: usize) -> Result<Plan, LockError> {
        if !(1..=MAX_PERMITS).contains(&self.permits) {
            return Err(LockError::InvalidCount {
                what: "permits",
                value: self.permits,
                reason: "a semaphore has between 1 and distlock::MAX_PERMITS (1024) permits",
            });
        }
        if !(1..=self.permits).contains(&count) {
            return Err(LockError::InvalidCount {
                what: "permits asked for",
                value: count,
                reason: "between 1 and the semaphore's permits",
            });
        }
        validate_key(&self.name)?;
        let gate = (count > 1).then(|| Gate {
            key: format!("semaphore:{}:gate", self.name),
            keep: false,
        });
        Ok(Plan::Slots {
            slots: self.slots(),
            need: count,
            gate,
        })
    }

    fn slots(&self) -> Vec<String> {
        (0..self.permits)
            .map(|i| format!("semaphore:{}:{i}", self.name))
            .collect()
    }

    /// Who holds the semaphore's permits now: one [`LockInfo`] per permit held (its key is the
    /// permit's lock, `semaphore:<name>:<i>`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let exports = client.semaphore("exports", 3);
    /// let _two = exports.acquire_many(2).await?;
    /// let holders = exports.holders().await?;
    /// assert_eq!(holders.len(), 2);
    /// assert_eq!(holders[0].pid, Some(std::process::id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] for a name that cannot be a lock key; backend failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn holders(&self) -> Result<Vec<LockInfo>, LockError> {
        validate_key(&self.name)?;
        inspect_all(&self.client, &self.slots()).await
    }
}
