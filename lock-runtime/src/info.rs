//! [`LockInfo`]: who holds a lock, as stored with it.

use std::time::Duration;

/// Who holds a lock, as stored with it. From [`LockClient::inspect`](crate::LockClient::inspect).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let _guard = client.lock("job").await?;
/// let info: distlock::LockInfo = client.inspect("job").await?.unwrap();
/// assert!(info.ttl.unwrap() <= client.default_ttl());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The holder's fencing token.
    pub fencing_token: u64,
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
}
