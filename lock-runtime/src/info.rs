//! [`LockInfo`]: who holds a lock, as stored with it.

use std::time::Duration;

/// Who holds a lock, as stored with it. From [`LockClient::inspect`](crate::LockClient::inspect)
/// and [`LockClient::list`](crate::LockClient::list).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let _guard = client.lock("job").label("nightly-report").await?;
/// let info: distlock::LockInfo = client.inspect("job").await?.unwrap();
/// assert_eq!(info.key, "job");
/// assert_eq!(info.label.as_deref(), Some("nightly-report"));
/// assert!(info.ttl.unwrap() <= client.default_ttl());
/// assert_eq!(info.waiters, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's key as the caller names it (without the client's prefix).
    pub key: String,
    /// The holder's fencing token.
    pub fencing_token: u64,
    /// The holder's label ([`LockClientBuilder::label`](crate::LockClientBuilder::label),
    /// [`LockRequest::label`](crate::LockRequest::label)), if it set one.
    pub label: Option<String>,
    /// The holder's host name.
    pub host: Option<String>,
    /// The holder's process id.
    pub pid: Option<u32>,
    /// When the holder acquired it, in milliseconds since the Unix epoch (holder's clock).
    pub acquired_at_ms: Option<u64>,
    /// The remaining lease, when it has one.
    pub ttl: Option<Duration>,
    /// Whether someone was turned away while it was held.
    pub contended: bool,
    /// How many clients are queued waiting for it. Redlock never queues (queues on
    /// independent nodes could disagree), so there it is always zero; see
    /// [`contended`](Self::contended).
    pub waiters: usize,
}
