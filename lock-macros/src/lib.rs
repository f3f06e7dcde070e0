//! `#[distributed_lock]`: run an async fn under a distributed lock.
//!
//! Use it through the `distlock` crate, which re-exports it as `distlock::distributed_lock`
//! and documents it with runnable examples; this crate only generates the code.
//!
//! ```ignore
//! #[distlock::distributed_lock(key = "order:{order.id}", ttl = "10s", wait = "2s")]
//! async fn settle(order: &Order) -> Result<Receipt, AppError> { /* ... */ }
//! ```
//!
//! The fn must be `async` and return `Result<_, E>` with `E: From<distlock::LockError>` (lock
//! errors come back through it; `impl Trait` in it is fine). Durations are humantime strings
//! (`"500ms"`, `"1m30s"`), parsed at compile time; every argument is checked at compile time
//! and a wrong one is an error pointing at it.
//!
//! # Arguments
//!
//! **`key = "<template>"`** (required): the lock's name, literal text with `{path}`
//! placeholders, where a path is a parameter optionally followed by field accesses; `{{` and
//! `}}` are literal braces. Each value is formatted with `Display`.
//!
//! ```ignore
//! #[distributed_lock(key = "invoice:{self.tenant}:{invoice.id}")]
//! ```
//!
//! **`ttl = "<duration>"`** (default: the client's): the lease, renewed by the watchdog while
//! the body runs; 100ms to 30 days.
//!
//! ```ignore
//! #[distributed_lock(key = "k", ttl = "10s")]
//! ```
//!
//! **`wait = "<duration>"`** (default `"0s"`, one try): how long to wait for a busy lock.
//!
//! ```ignore
//! #[distributed_lock(key = "k", wait = "2s")]
//! ```
//!
//! **`client = <expr>`** (default: the default client): an expression over the parameters
//! giving a `LockClient`, `&LockClient` or `Arc<LockClient>`.
//!
//! ```ignore
//! #[distributed_lock(key = "k", client = self.locks)]
//! ```
//!
//! **`on_lost = "cancel" | "ignore"`** (default `"cancel"`): when the lease is lost, drop the
//! body and return `Err(LockError::Lost { .. }.into())`, or let the body finish.
//!
//! ```ignore
//! #[distributed_lock(key = "k", on_lost = "ignore")]
//! ```
//!
//! **`on_busy = "error" | "skip"`** (default `"error"`): a lock still busy after `wait` is
//! `Err(LockError::Busy { .. }.into())`, or, with `"skip"`, `Ok(None)` without running the
//! body; `"skip"` needs a return type `Result<Option<T>, E>`.
//!
//! ```ignore
//! #[distributed_lock(key = "reindex", on_busy = "skip")]
//! async fn reindex() -> Result<Option<usize>, LockError> { /* ... */ }
//! ```
//!
//! **`at_least = "<duration>"`**: the lock stays held at least this long after it was
//! acquired, also after the body returned, so that later calls within it are turned away
//! (scheduled jobs triggered on every instance). Not zero (leave it out instead).
//!
//! ```ignore
//! #[distributed_lock(key = "daily-report:{day}", on_busy = "skip", at_least = "30s")]
//! async fn daily_report(day: u32) -> Result<Option<()>, JobError> { /* ... */ }
//! ```
//!
//! **`at_most = "<duration>"`**: the lock is never held longer than this after it was
//! acquired, watchdog or not; reaching it acts like a lost lease (`on_lost`). At least 100ms
//! and not shorter than `at_least`.
//!
//! ```ignore
//! #[distributed_lock(key = "sync", at_most = "10m")]
//! ```
//!
//! **`on_error = "hold" | "release"`** (default `"hold"`, only with `at_least`): after a body
//! that returned `Err` or panicked, keep the lock for the rest of `at_least` (a failing job
//! is not retried by every instance at once), or release it at once so another may retry.
//!
//! ```ignore
//! #[distributed_lock(key = "import", at_least = "1m", on_error = "release")]
//! ```
//!
//! **`crate = <path>`** (default `::distlock`): where the runtime is, for a renamed or
//! re-exported dependency.
//!
//! ```ignore
//! #[my_app::locks::distributed_lock(key = "k", crate = my_app::locks)]
//! ```

mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Runs the annotated `async fn` while holding the lock named by `key` (implemented in the
/// `distlock-macros` crate; use it as `distlock::distributed_lock`).
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
