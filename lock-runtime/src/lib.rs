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
//! # Leader election
//!
//! One replica of a service leads at a time; the others wait and take over when it resigns,
//! dies or freezes. [`LockClient::leader`] campaigns until elected and gives a
//! [`Leadership`]; [`LeaderRequest::run`] is the service loop around it: campaign, run your
//! future while leading (dropped when leadership is lost), campaign again.
//! [`LockClient::current_leader`] tells anyone who leads (host, pid, since, term).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! use std::time::Duration;
//! let client = distlock::LockClient::memory();
//! client
//!     .leader("scheduler")
//!     .ttl(Duration::from_secs(10))
//!     .run(|leadership| async move {
//!         // Runs only while this replica leads; every write carries the term.
//!         println!("leading, term {}", leadership.fencing_token());
//!         Ok::<_, distlock::LockError>(())
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! An election is the ordinary lock `leader:<name>`: campaigning is waiting for it (notified,
//! not polled), leading is holding it with the watchdog renewing, the term is its fencing
//! token. So the guarantee is the lock's, lease plus fence. A leader's local deadline ends
//! before the server's lease does, so [`Leadership::is_leader`] turns false before anyone else
//! can be elected (on a deployment that keeps its data; see [`guarantees`]). But a leader
//! paused past its lease (GC, swap, `SIGSTOP`) between its last look at the clock and a write
//! still makes that write when it wakes: the store it writes to has to refuse terms lower than
//! one it has seen. Failover after a crash or freeze takes up to one lease (the lease has to
//! run out on the server); a resignation hands over at once. Details in [`LeaderRequest`].
//!
//! # Semaphores, read/write locks, several keys at once
//!
//! [`LockClient::semaphore`] (up to `permits` holders at once, [`Semaphore::acquire`] and
//! [`Semaphore::acquire_many`]), [`LockClient::rw_lock`] (many readers or one writer,
//! [`RwLock::read`] and [`RwLock::write`]) and [`LockClient::lock_all`] (every key or none) are
//! requests like [`LockClient::lock`], giving a [`LockSetGuard`] with the same `lost()`,
//! `release()` and `fencing_token()`. They are made of ordinary locks, so each has the lock's
//! guarantees on every deployment, and sets of locks never deadlock (see [`LockSetRequest`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! use std::time::Duration;
//! let client = distlock::LockClient::memory();
//!
//! let exports = client.semaphore("exports", 4);
//! let permit = exports.acquire().wait(Duration::from_secs(5)).await?;
//!
//! let catalog = client.rw_lock("catalog");
//! let read = catalog.read().await?;
//! let another = catalog.read().await?; // readers share
//! assert!(catalog.write().await.unwrap_err().is_busy());
//!
//! let transfer = client.lock_all(["account:7", "account:3"]).await?;
//! assert!(client.lock("account:3").await.unwrap_err().is_busy());
//! # Ok(())
//! # }
//! ```
//!
//! # Deployments and features
//!
//! [`LockClient::connect`] talks to one Redis server; [`LockClient::builder`] also offers
//! [Sentinel](LockClientBuilder::sentinel) (follows failovers), [Redlock](LockClientBuilder::redlock)
//! (majority of independent primaries) and, with the `cluster` feature, Redis Cluster. What
//! each promises is in [`guarantees`]. Features: `macros` (default: `#[distributed_lock]`),
//! `cluster` (Redis Cluster), `tls` (`rediss://` URLs), `metrics` (see [`metrics`]).
//!
//! An application that already has a `redis::Client` or a `redis::aio::ConnectionManager`
//! builds a client over it: [`LockClientBuilder::redis_client`],
//! [`LockClientBuilder::connection_manager`].
//!
//! # Tracing
//!
//! The runtime reports through [`tracing`](https://docs.rs/tracing) (targets under
//! `distlock`), with spans a subscriber can follow:
//!
//! | span | level | fields | when |
//! |---|---|---|---|
//! | `distlock.acquire` | DEBUG | `key`, `ttl`, `wait`; at the end `attempts` (acquire commands sent), `outcome` (`acquired` \| `busy` \| `error` \| `cancelled`), `fence` (when acquired), `error` (when failed) | one awaited [`LockRequest`], entered while it runs |
//! | `distlock.hold` | INFO | `key`, `fence` | one per lock held: opened when acquired (a child of the span that awaited the request, following from its `distlock.acquire`), closed when the hold ends, released or lost |
//! | `distlock.renew` | DEBUG | `locks` (in the batch), `outcome` (`renewed` \| `lost` \| `failed`) | one watchdog renewal batch; a root span following from the hold spans it renews |
//!
//! Events: `lock acquired` (DEBUG, in the acquire span), `lock busy` (DEBUG, when a request
//! gives up), `lock released` (DEBUG, in the hold span), `lock lost` and `lock held for its
//! maximum` (WARN, in the hold span), with the `key`, `fence` and durations as fields.
//! Keys appear in spans and events (never in metric labels, see [`metrics`]); credentials
//! never do. With no subscriber interested, spans are disabled handles: nothing is formatted
//! or allocated.
//!
//! # Seeing and clearing locks
//!
//! Each lock stores its holder: host, pid, acquired-at and an optional label
//! ([`LockClientBuilder::label`], [`LockRequest::label`]). [`LockClient::inspect`] reads one
//! key, [`LockClient::list`] streams every lock held under a prefix (with `SCAN`, page by
//! page), and [`LockClient::force_release`] clears a lock left by a wedged holder, only if it
//! is still held under the fencing token the operator saw. The `distlock` command-line tool
//! (crate `distlock-cli`) offers the same from a terminal: `list`, `inspect`, `watch`,
//! `release`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! use futures_util::TryStreamExt;
//!
//! let client = distlock::LockClient::builder()
//!     .memory(distlock::MemoryStore::new())
//!     .label("billing-worker")
//!     .build()
//!     .await?;
//! let _guard = client.lock("invoice:42").await?;
//! let held: Vec<distlock::LockInfo> = client.list("invoice:").try_collect().await?;
//! assert_eq!(held[0].label.as_deref(), Some("billing-worker"));
//! assert!(client.force_release("invoice:42", held[0].fencing_token).await?);
//! # Ok(())
//! # }
//! ```
//!
//! # The protocol
//!
//! A lock is the key `prefix + key` holding `"<state><token><fence>:[<label>/]<host>/<pid>/<ms>"`,
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
mod held;
mod info;
mod key;
mod leader;
mod lease;
mod list;
mod lock_all;
mod lock_set;
pub mod metrics;
mod request;
mod rw_lock;
mod semaphore;
mod state;
mod telemetry;
mod token;
mod waiter;
mod watchdog;

pub use backend::memory::MemoryStore;
pub use client::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_PREFIX, DEFAULT_TTL, LockClient, LockClientBuilder,
};
pub use context::{current, default_client, set_default_client};
pub use error::{BackendErrorKind, LockError};
pub use guard::LockGuard;
pub use held::HeldLock;
pub use info::LockInfo;
pub use key::{MAX_KEY_LEN, MAX_TTL, MIN_TTL, redact_url};
pub use leader::{LeaderInfo, LeaderRequest, Leadership};
pub use list::LockList;
pub use lock_all::MAX_KEYS;
pub use lock_set::{LockSetGuard, LockSetRequest};
pub use request::LockRequest;
pub use rw_lock::{MAX_READERS, RwLock};
pub use semaphore::{MAX_PERMITS, Semaphore};
pub use token::MAX_LABEL_LEN;

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
/// | `key = "order:{order.id}"` | required | the key template (below) |
/// | `ttl = "10s"` | the client's default TTL | the lease, renewed by the watchdog while the body runs: 100ms to 30 days |
/// | `wait = "2s"` | `"0s"`: one try | how long to wait for a busy lock |
/// | `client = self.locks` | [`default_client()`] | an expression over the parameters giving a [`LockClient`], `&LockClient` or `Arc<LockClient>` |
/// | `on_lost = "ignore"` | `"cancel"` | `"cancel"`: when the lease is lost the body is dropped at its next await and the fn returns `Err(LockError::Lost { .. }.into())`; `"ignore"`: the body finishes |
/// | `on_busy = "skip"` | `"error"` | `"error"`: a lock still busy after `wait` is returned as `Err(LockError::Busy { .. }.into())`; `"skip"`: the fn returns `Ok(None)` without running the body (the fn must return `Result<Option<T>, E>`) |
/// | `at_least = "30s"` | none | the lock stays held at least this long after it was acquired, also after the body returned ([`LockRequest::min_hold`]): later calls within it are turned away |
/// | `at_most = "10m"` | none | the lock is never held longer than this after it was acquired, watchdog or not ([`LockRequest::max_hold`]); reaching it acts like a lost lease (`on_lost`). At least 100ms, and not shorter than `at_least` |
/// | `on_error = "release"` | `"hold"` | with `at_least` only: what a body that returned `Err` or panicked does to the minimum hold. `"hold"`: kept as after a success (a failing job is not retried by every instance at once); `"release"`: released at once, so another instance may retry |
/// | `crate = path` | `::distlock` | where the runtime is, for a renamed dependency, e.g. `crate = my_app::locks` |
///
/// Durations are humantime strings (`"500ms"`, `"1m30s"`, `"2h"`) parsed at compile time, as
/// are the choices: a bad duration, an unknown choice, an argument given twice, `at_least`
/// longer than `at_most`, a zero `at_least` (leave it out instead) and `on_error` without
/// `at_least` are compile errors pointing at the argument.
///
/// # Skipping a busy lock: `on_busy = "skip"`
///
/// A call that finds the lock busy (for the whole `wait`) does not run the body and returns
/// `Ok(None)`, so "somebody else is doing it" needs no error matching. The return type must
/// be able to say so: `Result<Option<T>, E>` (any other is a compile error saying so).
///
/// ```
/// use distlock::{LockClient, LockError, distributed_lock};
///
/// #[distributed_lock(key = "reindex", client = locks, on_busy = "skip")]
/// async fn reindex(locks: &LockClient) -> Result<Option<usize>, LockError> {
///     Ok(Some(42)) // the number of documents reindexed
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), LockError> {
/// let locks = LockClient::memory();
/// let other = locks.lock("reindex").await?; // another instance is at it
/// assert_eq!(reindex(&locks).await?, None); // skipped, the body did not run
/// other.release().await?;
/// assert_eq!(reindex(&locks).await?, Some(42));
/// # Ok(())
/// # }
/// ```
///
/// # Scheduled jobs: `at_least` with `on_busy = "skip"`
///
/// When every instance of a service triggers the same job on the same schedule, a lock alone
/// is not enough: an instance whose trigger fires a few milliseconds after the first one
/// finished finds the lock free and runs the job again. With `at_least`, the lock stays held
/// (without a watchdog or a task: the release sets the lease to what remains) until at least
/// that long after it was taken, so that every later trigger of the same tick is turned away,
/// and with `on_busy = "skip"` being turned away is an `Ok(None)`, not an error:
///
/// ```
/// use distlock::{LockClient, LockError, distributed_lock};
///
/// #[derive(Debug, thiserror::Error)]
/// enum JobError {
///     #[error(transparent)]
///     Lock(#[from] LockError),
///     #[error("the report failed: {0}")]
///     Report(String),
/// }
///
/// /// Runs once per tick across all instances: each instance calls it every minute.
/// #[distributed_lock(
///     key = "daily-report:{day}",
///     on_busy = "skip",   // another instance has it (or had it in this tick): Ok(None)
///     at_least = "30s",   // hold at least this long: longer than the instances' skew
///     at_most = "10m",    // a hung run frees the job after 10 minutes at most
/// )]
/// async fn daily_report(day: u32) -> Result<Option<()>, JobError> {
///     // ... build and send the report ...
///     Ok(Some(()))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), JobError> {
/// distlock::set_default_client(LockClient::memory());
/// // Two instances triggered for the same day, one slightly after the other finished:
/// assert_eq!(daily_report(7).await?, Some(()));
/// assert_eq!(daily_report(7).await?, None); // turned away: within `at_least`
/// # Ok(())
/// # }
/// ```
///
/// The rule behind it: **the spread between the instances' triggers of one tick (their clock
/// skew plus scheduling jitter) must stay below `at_least`**, and `at_least` below the period,
/// so that the next tick finds the lock free. `at_least` is measured on the holder's clock
/// from when the acquire was sent (with a small drift margin added), and the lock is
/// then kept by the server's TTL, so it rests on the servers keeping their data as any lock
/// does (what each setting rests on: [scheduled jobs in the
/// guarantees](guarantees#scheduled-jobs-at-least-at-most-skip)). A run that takes longer
/// than `at_least` holds the lock until it ends (renewed by the watchdog), as without it.
///
/// On failure (`Err` or a panic) the minimum is kept by default (`on_error = "hold"`): a job
/// that fails is not retried by every instance at once. With `on_error = "release"` the lock
/// is released at once and the next trigger, on any instance, may retry. A call cancelled
/// from outside (its future dropped) lets go as a failed one does.
///
/// # Bounding a run: `at_most`
///
/// The watchdog renews the lease for as long as the body runs, so a body that hangs holds its
/// lock forever; `at_most` caps that. Renewals and [`HeldLock::extend`] stop short of it, and
/// when it is reached the lease ends as if lost: with `on_lost = "cancel"` (the default) the
/// body is dropped at its next await and the fn returns `Err(LockError::Lost { .. }.into())`;
/// with `on_lost = "ignore"` the body goes on without the lock.
///
/// ```
/// use std::time::Duration;
/// use distlock::{LockClient, LockError, distributed_lock};
///
/// #[distributed_lock(key = "sync", client = locks, ttl = "1s", at_most = "300ms")]
/// async fn sync(locks: &LockClient) -> Result<(), LockError> {
///     std::future::pending::<()>().await; // hangs
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), LockError> {
/// let locks = LockClient::memory();
/// let err = sync(&locks).await.unwrap_err(); // after about 300ms
/// assert!(err.is_lost());
/// // The lock is free again (the lease ended at `at_most`):
/// let free = locks.lock("sync").wait(Duration::from_secs(1)).await?;
/// # Ok(())
/// # }
/// ```
///
/// Inside the body, [`current()`] tells how long the lease is still trusted
/// ([`HeldLock::remaining`]) and extends it ([`HeldLock::extend`], never past `at_most`):
///
/// ```
/// use std::time::Duration;
/// use distlock::{LockError, distributed_lock};
///
/// #[distributed_lock(key = "export", ttl = "10s", at_most = "1h")]
/// async fn export() -> Result<(), LockError> {
///     let held = distlock::current().expect("inside a guarded fn");
///     if held.remaining() < Duration::from_secs(60) {
///         held.extend(Duration::from_secs(300)).await?; // a long batch ahead
///     }
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), LockError> {
/// # distlock::set_default_client(distlock::LockClient::memory());
/// # export().await?;
/// # Ok(())
/// # }
/// ```
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
/// The fn must return `Result<_, E>` with `E: From<LockError>` (and `Result<Option<T>, E>`
/// with `on_busy = "skip"`; `impl Trait` in it is fine); lock failures come back through it:
/// [`LockError::Busy`] when the lock stayed busy for the whole wait (unless
/// `on_busy = "skip"`), [`LockError::Lost`] when the lease was lost or reached `at_most`
/// (with `on_lost = "cancel"`, also when the release found the lease already gone after a
/// successful body), backend failures, and [`LockError::NoDefaultClient`].
///
/// # Re-entrancy
///
/// A guarded call made inside the body of another guarded call that holds the same key on the
/// same client runs without acquiring again. Re-entrant does not mean concurrent: siblings
/// are not nested, so two guarded futures joined in one task exclude each other as two tasks
/// do, also when they are joined inside a body that holds their key. There they take turns
/// without touching the backend: the one that finds its sibling inside waits up to its own
/// `wait` (with the default zero it gets [`LockError::Busy`], or `Ok(None)` with
/// `on_busy = "skip"`). A call nested in such a call runs at once, like one nested in the
/// holder directly. A nested call runs under the holder's lease: its own `ttl`, `at_least`
/// and `at_most` do not apply.
///
/// # Cancel safety
///
/// Dropping the returned future lets go of the lock in the background at once (keeping what
/// remains of `at_least` unless `on_error = "release"`).
#[cfg(feature = "macros")]
pub use distlock_macros::distributed_lock;
