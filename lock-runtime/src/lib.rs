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
mod client;
mod context;
mod error;
mod guard;
mod key;
mod request;
mod token;
mod waiter;
mod watchdog;

pub use backend::memory::MemoryStore;
pub use client::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_PREFIX, DEFAULT_TTL, LockClient, LockClientBuilder, LockInfo,
};
pub use context::{HeldLock, current, default_client, set_default_client};
pub use error::{BackendErrorKind, LockError};
pub use guard::LockGuard;
pub use key::{MAX_KEY_LEN, MAX_TTL, MIN_TTL};
pub use request::LockRequest;
