//! `#[distributed_lock]`: run an async fn under a distributed lock.
//!
//! Use it through the `distlock` crate, which re-exports it as `distlock::distributed_lock`
//! and documents it in full.
//!
//! ```ignore
//! #[distlock::distributed_lock(key = "order:{order.id}", ttl = "10s", wait = "2s")]
//! async fn settle(order: &Order) -> Result<Receipt, AppError> { /* ... */ }
//! ```

mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Runs the annotated `async fn` while holding the lock named by `key`.
///
/// See `distlock::distributed_lock` for the arguments, the key template syntax and examples.
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
