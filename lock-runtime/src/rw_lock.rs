//! [`RwLock`]: many readers or one writer.

use crate::LockClient;
use crate::key::validate_key;
use crate::lock_set::{Gate, LockSetRequest, Plan};

/// How many readers can hold a [`RwLock`] at once; more wait for one of them to finish. It is
/// part of the key layout (a writer takes that many read slots), so it is the same for every
/// client and every version that shares a deployment.
pub const MAX_READERS: usize = 16;

impl LockClient {
    /// A read/write lock named `key`: many readers or one writer at a time, across every
    /// client of the deployment. See [`RwLock`] for the key layout and the guarantees.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let config = client.rw_lock("config");
    /// let r1 = config.read().await?;
    /// let r2 = config.read().await?; // readers share
    /// assert!(config.write().await.unwrap_err().is_busy()); // a writer does not
    /// drop((r1, r2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn rw_lock(&self, key: impl Into<String>) -> RwLock {
        RwLock {
            client: self.clone(),
            key: key.into(),
        }
    }
}

/// A distributed read/write lock, from [`LockClient::rw_lock`]: up to [`MAX_READERS`] readers
/// at once, or one writer. [`read`](Self::read) and [`write`](Self::write) are requests like
/// [`LockClient::lock`] (lease, wait, watchdog) and give a
/// [`LockSetGuard`](crate::LockSetGuard) that renews and reports loss like a lock guard.
///
/// # How it works
///
/// The lock `key` is made of ordinary locks under the client's prefix: [`MAX_READERS`] read
/// slots `rwlock:<key>:read:<i>` and the write lock `rwlock:<key>:write`.
///
/// - A reader holds one read slot: it tries them one at a time from a rotating start and,
///   when all are taken and it may wait, waits on all of them at once.
/// - A writer holds the write lock and every read slot. It takes the write lock first (so
///   writers come one at a time, in order) and then every slot at once, each waiting in its
///   slot's queue.
///
/// So a writer and a reader can never hold at the same time (they would hold the same slot,
/// which one lock cannot have two holders of), on every deployment and with the guarantees of
/// a lock (see [`guarantees`](crate::guarantees)). Writers are not starved: a writer is
/// queued on every slot it waits for, so each slot goes to it when its reader lets go, and
/// readers that come later find the slots taken or promised and queue behind it. (Redlock
/// keeps no queues of waiters: there a waiting writer is woken by release notices but has no
/// place in line, so a steady stream of readers can hold it off.) A write
/// hold's fencing token is the write lock's, larger for every writer.
///
/// A key follows the rules of a lock key, with room for the layout
/// ([`MAX_KEY_LEN`](crate::MAX_KEY_LEN)` - 32` bytes to be safe).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::memory();
/// let catalog = client.rw_lock("catalog");
/// {
///     let _read = catalog.read().wait(Duration::from_secs(1)).await?;
///     // ... read the catalog; other readers may too ...
/// }
/// let write = catalog.write().wait(Duration::from_secs(5)).await?;
/// // ... rewrite the catalog, passing write.fencing_token() to the store ...
/// write.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    client: LockClient,
    key: String,
}

impl RwLock {
    /// The lock's key.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(distlock::LockClient::memory().rw_lock("config").key(), "config");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes a read hold: shared with other readers, never with a writer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let read = distlock::LockClient::memory().rw_lock("config").read().await?;
    /// assert!(read.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn read(&self) -> LockSetRequest {
        self.request(|slots| Plan::Slots {
            slots,
            need: 1,
            gate: None,
        })
    }

    /// Takes the write hold: nobody else, reader or writer, holds meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let write = client.rw_lock("config").write().await?;
    /// assert!(client.rw_lock("config").read().await.unwrap_err().is_busy());
    /// # Ok(())
    /// # }
    /// ```
    pub fn write(&self) -> LockSetRequest {
        let gate = Gate {
            key: format!("rwlock:{}:write", self.key),
            keep: true,
        };
        self.request(|slots| Plan::Slots {
            need: slots.len(),
            slots,
            gate: Some(gate),
        })
    }

    fn request(&self, plan: impl FnOnce(Vec<String>) -> Plan) -> LockSetRequest {
        let slots = (0..MAX_READERS)
            .map(|i| format!("rwlock:{}:read:{i}", self.key))
            .collect();
        let plan = validate_key(&self.key).map(|()| plan(slots));
        LockSetRequest::new(&self.client, self.key.clone(), plan)
    }
}
