//! The library's own thread for work that must outlive the caller's runtime.
//!
//! Renewals and background releases cannot depend on the runtime of whoever took the lock: a
//! client is often created on one runtime and used on another (a default client shared by
//! several `#[tokio::test]`s, a runtime per worker thread), and a task spawned on a runtime
//! dies with it. So the watchdog and every release of a dropped guard run here: one thread per
//! process, started on first use, with a single-threaded runtime that lives as long as the
//! process. The work done here is small (one batched renewal per tick, a release per dropped
//! guard), and connections it needs are re-made on this runtime if theirs went away.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

/// Runs `future` on the library's background runtime (or, should the OS refuse it a thread,
/// on the caller's runtime; with neither, the future is dropped and leases run out by
/// themselves).
pub(crate) fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(handle) = handle().or_else(|| Handle::try_current().ok()).as_ref() {
        drop(handle.spawn(future));
    }
}

/// Runs `future` to completion on the background runtime and waits for it here, so that the
/// tasks it spawns (a connection's driver) live there, not on the caller's runtime. `None` if
/// it could not finish there (no background runtime and no current one).
pub(crate) async fn run<F>(future: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.await.ok()
}

/// Calls `f` inside the background runtime's context (what it spawns lives there).
pub(crate) fn enter<R>(f: impl FnOnce() -> R) -> R {
    match handle() {
        Some(handle) => {
            let _entered = handle.enter();
            f()
        }
        None => f(),
    }
}

fn handle() -> Option<Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .inspect_err(|err| tracing::error!(%err, "no distlock background runtime"))
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("distlock-background".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .inspect_err(|err| tracing::error!(%err, "no distlock background thread"))
                .ok()?;
            Some(handle)
        })
        .clone()
}
