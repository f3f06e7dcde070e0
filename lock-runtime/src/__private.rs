//! Support for the code `#[distributed_lock]` generates. Not a public API: no stability
//! promises, may change in any release.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::context::{CHAIN, Frame, Turn, innermost};
use crate::{LockClient, LockError, LockGuard};

pub use std::time::Duration as StdDuration;

/// A client as named by `client = <expr>`; the macro passes `&(<expr>)`, so the expression
/// may be a `LockClient`, a `&LockClient` or an `Arc<LockClient>`.
#[diagnostic::on_unimplemented(
    message = "`client = ..` must name a `distlock::LockClient` (owned, borrowed or in an `Arc`), not `{Self}`",
    label = "not a LockClient"
)]
pub trait IntoLockClient {
    /// An owned handle (a cheap clone).
    fn into_lock_client(self) -> LockClient;
}

impl IntoLockClient for &LockClient {
    fn into_lock_client(self) -> LockClient {
        self.clone()
    }
}

impl IntoLockClient for &&LockClient {
    fn into_lock_client(self) -> LockClient {
        (*self).clone()
    }
}

impl IntoLockClient for &&mut LockClient {
    fn into_lock_client(self) -> LockClient {
        (**self).clone()
    }
}

impl IntoLockClient for &Arc<LockClient> {
    fn into_lock_client(self) -> LockClient {
        (**self).clone()
    }
}

/// What a guarded fn may return: `Result<T, E>` with `E: From<LockError>`.
#[diagnostic::on_unimplemented(
    message = "a #[distributed_lock] fn must return `Result<_, E>` where `E: From<distlock::LockError>`; `{Self}` does not",
    label = "lock errors (busy, lost, backend down) are returned through this type",
    note = "return e.g. `Result<T, distlock::LockError>`, or add `impl From<distlock::LockError> for YourError` (`#[from]` with thiserror)"
)]
pub trait LockResult {
    /// The value returned when taking or holding the lock failed.
    fn lock_failed(error: LockError) -> Self;
    /// Whether the body succeeded.
    fn succeeded(&self) -> bool;
}

impl<T, E: From<LockError>> LockResult for Result<T, E> {
    fn lock_failed(error: LockError) -> Self {
        Err(E::from(error))
    }

    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

pub use crate::context::default_client;

/// A value usable in a key template; `P` is a marker type named after the placeholder, so
/// the error for a value that is not `Display` names it.
#[diagnostic::on_unimplemented(
    message = "the key placeholder `{{{P}}}` needs a `Display` value, and `{Self}` is not `Display`",
    label = "`{{{P}}}` is not `Display`",
    note = "placeholders are formatted with `Display` (`·` stands for the `.` of the template): use a field that implements it, or implement `Display` for `{Self}`"
)]
pub trait KeyPart<P> {
    /// Appends the value to the key.
    fn push_to(&self, key: &mut String);
}

impl<T: std::fmt::Display + ?Sized, P> KeyPart<P> for T {
    fn push_to(&self, key: &mut String) {
        use std::fmt::Write;
        let _ = write!(key, "{self}");
    }
}

/// Appends one placeholder's value to the key being built.
pub fn push_key_part<P, T: KeyPart<P> + ?Sized>(key: &mut String, value: &T) {
    value.push_to(key);
}

/// How the guarded body reacts to a lost lease.
#[derive(Debug, Clone, Copy)]
pub enum OnLost {
    /// Drop the body and return `Err(LockError::Lost { .. }.into())`.
    Cancel,
    /// Let the body finish.
    Ignore,
}

/// Acquire `key`, run `body` with the lock held (and visible to [`crate::current`]),
/// release. A call nested in a guarded call that holds the same key on the same client does
/// not acquire again: it waits (up to `wait`) for its turn among the calls re-entering that
/// holder (siblings joined in its body exclude each other), then runs `body` under a frame of
/// its own.
pub async fn locked<R, F>(
    client: Result<LockClient, LockError>,
    key: String,
    ttl: Option<Duration>,
    wait: Duration,
    on_lost: OnLost,
    body: F,
) -> R
where
    F: Future<Output = R>,
    R: LockResult,
{
    // The generic part is kept small: this fn is instantiated once per guarded fn.
    let (guard, frame) = match enter(client, key, ttl, wait).await {
        Ok(Entered::Nested(turn, frame)) => {
            let result = CHAIN.scope(Some(frame), body).await;
            drop(turn);
            return result;
        }
        Ok(Entered::Held(guard, frame)) => (guard, frame),
        Err(err) => return R::lock_failed(err),
    };
    let body = CHAIN.scope(Some(frame), body);
    let result = match on_lost {
        OnLost::Cancel => {
            let lost = guard.lost_owned();
            tokio::pin!(body);
            tokio::select! {
                biased;
                result = &mut body => result,
                () = lost => return R::lock_failed(abandon(guard)),
            }
        }
        OnLost::Ignore => body.await,
    };
    match leave(guard, on_lost, result.succeeded()).await {
        Some(err) => R::lock_failed(err),
        None => result,
    }
}

enum Entered {
    /// The call chain already holds this key on this client: this call's turn on the frame
    /// holding it, and its own frame.
    Nested(Turn, Arc<Frame>),
    Held(LockGuard, Arc<Frame>),
}

/// Acquires (unless the call chain holds the key already) and builds the call-chain frame.
async fn enter(
    client: Result<LockClient, LockError>,
    key: String,
    ttl: Option<Duration>,
    wait: Duration,
) -> Result<Entered, LockError> {
    let client = client?;
    let full_key = client.full_key(&key);
    let outer = innermost();
    if let Some(holder) = Frame::holding(outer.as_ref(), &client, &full_key) {
        let turn = holder.take_turn(wait).await?;
        let frame = holder.reentered(outer.clone());
        return Ok(Entered::Nested(turn, Arc::new(frame)));
    }
    let mut request = client.lock(key.clone()).wait(wait);
    if let Some(ttl) = ttl {
        request = request.ttl(ttl);
    }
    let guard = request.await?;
    let frame = Frame::new(client, full_key, key, guard.fencing_token(), outer);
    Ok(Entered::Held(guard, Arc::new(frame)))
}

/// The lease was lost mid-body: drop the guard (released in the background) and say so.
fn abandon(guard: LockGuard) -> LockError {
    LockError::Lost {
        key: guard.key().to_owned(),
    }
}

/// Releases after the body; an error only when the body's success cannot stand: with
/// `on_lost = "cancel"`, a lease that ran out before the body finished unnoticed would claim
/// exclusion that did not hold.
async fn leave(guard: LockGuard, on_lost: OnLost, succeeded: bool) -> Option<LockError> {
    match guard.release().await {
        Ok(()) => None,
        Err(err @ LockError::Lost { .. }) if matches!(on_lost, OnLost::Cancel) && succeeded => {
            Some(err)
        }
        Err(err) => {
            tracing::debug!(%err, "releasing after the guarded call failed");
            None
        }
    }
}
