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

/// What a guarded fn's return type says when `on_busy = "skip"` turned the call away:
/// `Ok(None)`.
#[diagnostic::on_unimplemented(
    message = "`on_busy = \"skip\"` needs the fn to return `Result<Option<T>, E>` (with `E: From<distlock::LockError>`) so that a skipped run can return `Ok(None)`; `{Self}` cannot say \"skipped\"",
    label = "a skipped run returns `Ok(None)` through this type",
    note = "wrap the value in `Option`: `-> Result<Option<T>, E>`, or use `on_busy = \"error\"` (the default) to get `LockError::Busy`"
)]
pub trait Skippable: LockResult {
    /// The value of a skipped run.
    fn skipped() -> Self;
}

impl<T, E: From<LockError>> Skippable for Result<Option<T>, E> {
    fn skipped() -> Self {
        Ok(None)
    }
}

/// How the guarded body reacts to a lost lease.
#[derive(Debug, Clone, Copy)]
pub enum OnLost {
    /// Drop the body and return `Err(LockError::Lost { .. }.into())`.
    Cancel,
    /// Let the body finish.
    Ignore,
}

/// What happens to a minimum hold (`at_least`) when the body fails (returns `Err` or
/// panics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Keep the lock for what remains of the minimum, as after a success.
    Hold,
    /// Release at once, so that another instance may try again.
    Release,
}

/// The arguments of one guarded fn, as the attribute wrote them.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The lease; `None`: the client's default.
    pub ttl: Option<Duration>,
    /// How long to wait for a busy lock.
    pub wait: Duration,
    /// What a lost lease does to the body.
    pub on_lost: OnLost,
    /// The minimum hold (`LockRequest::min_hold`).
    pub at_least: Option<Duration>,
    /// The maximum hold (`LockRequest::max_hold`).
    pub at_most: Option<Duration>,
    /// What a failed body does to the minimum hold.
    pub on_error: OnError,
}

impl Options {
    /// The defaults: the client's lease, one try, cancel on loss, no minimum or maximum.
    pub const DEFAULT: Self = Self {
        ttl: None,
        wait: Duration::ZERO,
        on_lost: OnLost::Cancel,
        at_least: None,
        at_most: None,
        on_error: OnError::Hold,
    };
}

/// A guarded fn's body, and what its return type makes of lock errors. Built by
/// [`on_busy_error`] or [`on_busy_skip`], whose bounds check the return type: the macro spans
/// that call over the fn's return type, so that a return type that cannot carry a
/// `LockError` (or cannot say "skipped") gets one error, there; [`locked`] has no bounds
/// left to fail.
pub struct Body<F: Future> {
    future: F,
    /// The value returned when the lock was not taken (busy, no client, backend down).
    not_taken: fn(LockError) -> F::Output,
    /// The value returned when the lease was lost (or reached `at_most`).
    failed: fn(LockError) -> F::Output,
    /// Whether the body succeeded (for `on_error`).
    succeeded: fn(&F::Output) -> bool,
}

impl<F: Future> std::fmt::Debug for Body<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

/// The body of a fn with `on_busy = "error"` (the default): a busy lock is returned as
/// `Err(LockError::Busy { .. }.into())`.
pub fn on_busy_error<R, F>(future: F) -> Body<F>
where
    F: Future<Output = R>,
    R: LockResult,
{
    Body {
        future,
        not_taken: R::lock_failed,
        failed: R::lock_failed,
        succeeded: R::succeeded,
    }
}

/// The body of a fn with `on_busy = "skip"`: a busy lock skips the body, `Ok(None)`.
pub fn on_busy_skip<R, F>(future: F) -> Body<F>
where
    F: Future<Output = R>,
    R: Skippable,
{
    Body {
        future,
        not_taken: skipped_if_busy::<R>,
        failed: R::lock_failed,
        succeeded: R::succeeded,
    }
}

fn skipped_if_busy<R: Skippable>(err: LockError) -> R {
    if err.is_busy() {
        tracing::debug!(%err, "busy: the guarded call was skipped");
        R::skipped()
    } else {
        R::lock_failed(err)
    }
}

/// Acquire `key`, run `body` with the lock held (and visible to [`crate::current`]),
/// release (keeping the minimum hold, if any). A lock not taken is answered as the body's
/// constructor says ([`on_busy_error`], [`on_busy_skip`]).
///
/// A call nested in a guarded call that holds the same key on the same client does not
/// acquire again: it waits (up to `wait`) for its turn among the calls re-entering that
/// holder (siblings joined in its body exclude each other), then runs `body` under a frame of
/// its own, with the holder's lease (its own `ttl`, `at_least` and `at_most` do not apply).
pub async fn locked<F: Future>(
    client: Result<LockClient, LockError>,
    key: String,
    options: Options,
    body: Body<F>,
) -> F::Output {
    let Body {
        future: body,
        not_taken,
        failed,
        succeeded,
    } = body;
    // The generic part is kept small: this fn is instantiated once per guarded fn, and its
    // future nests in the caller's (boxed: acquiring and letting go are large state machines
    // that a chain of nested guarded calls would otherwise stack up).
    let (mut guard, frame) = match Box::pin(enter(client, key, &options)).await {
        Ok(Entered::Nested(turn, frame)) => {
            // The holder's lock, watched as the holder would with `on_lost = "cancel"`: a
            // nested call that cancels on loss must not run on when the lock it re-entered is
            // gone (the holder may ignore losses, or be a `HeldLock::scope`).
            let held = frame.held().clone();
            let body = CHAIN.scope(Some(frame), body);
            let result = match options.on_lost {
                OnLost::Cancel => {
                    let lost = held.lost();
                    tokio::pin!(body);
                    tokio::select! {
                        biased;
                        result = &mut body => result,
                        () = lost => return failed(held.lost_error()),
                    }
                }
                OnLost::Ignore => body.await,
            };
            drop(turn);
            if matches!(options.on_lost, OnLost::Cancel) && succeeded(&result) && !held.is_held() {
                // Lost while the body's last step ran: its success cannot stand.
                return failed(held.lost_error());
            }
            return result;
        }
        Ok(Entered::Held(guard, frame)) => (guard, frame),
        Err(err) => return not_taken(err),
    };
    // A panic drops the guard: keep the minimum hold, or not, as for an error.
    guard.keep_minimum_on_drop(options.on_error == OnError::Hold);
    let body = CHAIN.scope(Some(frame), body);
    let result = match options.on_lost {
        OnLost::Cancel => {
            let lost = guard.lost_owned();
            tokio::pin!(body);
            tokio::select! {
                biased;
                result = &mut body => result,
                () = lost => return failed(abandon(guard)),
            }
        }
        OnLost::Ignore => body.await,
    };
    match Box::pin(leave(guard, &options, succeeded(&result))).await {
        Some(err) => failed(err),
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
    options: &Options,
) -> Result<Entered, LockError> {
    let client = client?;
    let full_key = client.full_key(&key);
    let outer = innermost();
    if let Some(holder) = Frame::holding(outer.as_ref(), &client, &full_key) {
        let turn = holder.take_turn(options.wait).await?;
        let frame = holder.reentered(outer.clone());
        return Ok(Entered::Nested(turn, Arc::new(frame)));
    }
    let mut request = client.lock(key).wait(options.wait);
    if let Some(ttl) = options.ttl {
        request = request.ttl(ttl);
    }
    if let Some(at_least) = options.at_least {
        request = request.min_hold(at_least);
    }
    if let Some(at_most) = options.at_most {
        request = request.max_hold(at_most);
    }
    let guard = request.await?;
    let frame = Frame::new(guard.held_lock(), outer);
    Ok(Entered::Held(guard, Arc::new(frame)))
}

/// The lease was lost mid-body (or reached `at_most`): drop the guard (let go in the
/// background) and say so.
fn abandon(guard: LockGuard) -> LockError {
    LockError::Lost {
        key: guard.key().to_owned(),
    }
}

/// Lets go after the body (keeping the minimum hold unless the body failed and `on_error`
/// says release); an error only when the body's success cannot stand: with
/// `on_lost = "cancel"`, a lease that ran out before the body finished unnoticed would claim
/// exclusion that did not hold.
async fn leave(guard: LockGuard, options: &Options, succeeded: bool) -> Option<LockError> {
    let released = if succeeded || options.on_error == OnError::Hold {
        guard.release().await
    } else {
        guard.release_now().await
    };
    match released {
        Ok(()) => None,
        Err(err @ LockError::Lost { .. })
            if matches!(options.on_lost, OnLost::Cancel) && succeeded =>
        {
            Some(err)
        }
        Err(err) => {
            tracing::debug!(%err, "releasing after the guarded call failed");
            None
        }
    }
}
