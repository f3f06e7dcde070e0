//! Distributed locks for async Rust on Redis.
//!
//! - **Leases with a watchdog**: a lock is a key with a TTL; one task per client renews every
//!   held lock (batched, every ttl/3) and reports loss through [`LockGuard::lost`].
//! - **Fencing tokens** that strictly increase per key, also across release, expiry and a
//!   Redis restart that lost its data ([`LockGuard::fencing_token`]).
//! - **Notified, fair waiting**: tasks of one process queue FIFO per key; across processes a
//!   waiter is woken by the holder's release notice, not by polling.
//! - **Cancel safety**: a dropped acquire or guard releases by token in the background.
//! - An **in-process backend** ([`LockClient::memory`]) with the same semantics.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! use std::time::Duration;
//! use distlock::LockClient;
//!
//! // LockClient::connect("redis://127.0.0.1:6379").await? for Redis.
//! let client = LockClient::memory();
//!
//! let guard = client
//!     .lock("invoice:42")
//!     .ttl(Duration::from_secs(10))
//!     .wait(Duration::from_secs(2))
//!     .await?;
//! // ... the critical section; guard.fencing_token() goes along with every write ...
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # One job at a time: `#[distributed_lock]`
//!
//! ```
//! use distlock::{LockClient, LockError, distributed_lock};
//!
//! struct Invoice {
//!     id: u64,
//! }
//!
//! #[distributed_lock(key = "invoice:{invoice.id}", ttl = "10s", wait = "2s")]
//! async fn settle(invoice: &Invoice) -> Result<u64, LockError> {
//!     // Runs while the lock is held (and renewed); the fence goes along with every write.
//!     Ok(distlock::current().expect("held").fencing_token())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), LockError> {
//! distlock::set_default_client(LockClient::memory());
//! let fence = settle(&Invoice { id: 42 }).await?;
//! # assert!(fence > 0);
//! # Ok(())
//! # }
//! ```
//!
//! See [`distributed_lock`] for the arguments and the compile-time checks.
//!
//! # Deployments and features
//!
//! [`LockClient::connect`] talks to one Redis server; [`LockClient::builder`] also offers
//! [Sentinel](LockClientBuilder::sentinel) (follows failovers), [Redlock](LockClientBuilder::redlock)
//! (majority of independent primaries) and, with the `cluster` feature, Redis Cluster. What
//! each promises is in [`guarantees`]. Features: `macros` (default: `#[distributed_lock]`),
//! `cluster` (Redis Cluster), `tls` (`rediss://` URLs).
//!
//! # The protocol
//!
//! A lock is the key `prefix + key` holding `"<state><token>:<fence>:<host>/<pid>/<ms>"`,
//! set if absent with a millisecond lease by one Lua script, which also derives the fencing
//! token from the server clock (never below the fence the key still remembers). Release is a
//! compare-and-delete by the 128-bit token that leaves a short tombstone with the fence, and
//! publishes a notice only when somebody was turned away. Every key a script touches is passed
//! in `KEYS`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
pub mod __private;
mod backend;
mod background;
mod client;
mod context;
mod error;
pub mod guarantees;
mod guard;
mod info;
mod key;
mod lease;
mod request;
mod state;
mod token;
mod waiter;
mod watchdog;

pub use backend::memory::MemoryStore;
pub use client::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_PREFIX, DEFAULT_TTL, LockClient, LockClientBuilder,
};
pub use context::{HeldLock, current, default_client, set_default_client};
pub use error::{BackendErrorKind, LockError};
pub use guard::LockGuard;
pub use info::LockInfo;
pub use key::{MAX_KEY_LEN, MAX_TTL, MIN_TTL};
pub use request::LockRequest;

/// Runs an `async fn` while holding a distributed lock: compute the key, acquire (waiting up
/// to `wait`), run the body with the watchdog renewing the lease, release.
///
/// ```
/// use distlock::{LockClient, LockError, distributed_lock};
///
/// struct Order {
///     id: u64,
/// }
///
/// #[derive(Debug)]
/// enum AppError {
///     Lock(LockError),
/// }
///
/// impl From<LockError> for AppError {
///     fn from(e: LockError) -> Self {
///         AppError::Lock(e)
///     }
/// }
///
/// #[distributed_lock(key = "order:{order.id}", ttl = "10s", wait = "2s")]
/// async fn settle(order: &Order) -> Result<u64, AppError> {
///     // Only one caller per order id runs this at a time, across all processes.
///     let fence = distlock::current().expect("inside a guarded fn").fencing_token();
///     Ok(fence)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), AppError> {
/// distlock::set_default_client(LockClient::memory());
/// let fence = settle(&Order { id: 7 }).await?;
/// assert!(fence > 0);
/// # Ok(())
/// # }
/// ```
///
/// # Arguments
///
/// | argument | default | meaning |
/// |---|---|---|
/// | `key = "..."` | required | the key template (below) |
/// | `ttl = "10s"` | the client's default TTL | the lease, a humantime duration of 100ms or more |
/// | `wait = "2s"` | `"0s"`: one try | how long to wait for a busy lock |
/// | `client = <expr>` | [`default_client()`] | an expression over the parameters giving a [`LockClient`], `&LockClient` or `Arc<LockClient>`, e.g. `client = self.locks` |
/// | `on_lost = "cancel"` | `"cancel"` | `"cancel"`: when the lease is lost the body is dropped at its next await and the fn returns `Err(LockError::Lost { .. }.into())`; `"ignore"`: the body finishes |
/// | `crate = path` | `::distlock` | where the runtime is, for a renamed dependency |
///
/// Durations are parsed at compile time.
///
/// # Key templates
///
/// Literal text with `{path}` placeholders, where a path is a parameter name followed by field
/// accesses: `"invoice:{self.tenant}:{invoice.id}"`. `{{` and `}}` are literal braces. Each
/// value is formatted with `Display`, once, before acquiring. An unknown parameter, an unknown
/// field, an empty or unbalanced placeholder, or a value that is not `Display` is a compile
/// error pointing at the template.
///
/// # Errors
///
/// The fn must return `Result<_, E>` with `E: From<LockError>`; lock failures come back
/// through it: [`LockError::Busy`] when the lock stayed busy for the whole wait,
/// [`LockError::Lost`] when the lease was lost (with `on_lost = "cancel"`, also when the
/// release found the lease already gone after a successful body), backend failures, and
/// [`LockError::NoDefaultClient`].
///
/// # Re-entrancy
///
/// A guarded call made inside the body of another guarded call that holds the same key on the
/// same client runs without acquiring again. Re-entrant does not mean concurrent: siblings
/// are not nested, so two guarded futures joined in one task exclude each other as two tasks
/// do, also when they are joined inside a body that holds their key. There they take turns
/// without touching the backend: the one that finds its sibling inside waits up to its own
/// `wait` (with the default zero it gets [`LockError::Busy`]). A call nested in such a call
/// runs at once, like one nested in the holder directly.
///
/// # Cancel safety
///
/// Dropping the returned future releases the lock (in the background) at once.
#[cfg(feature = "macros")]
pub use distlock_macros::distributed_lock;
