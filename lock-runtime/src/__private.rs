//! Support for the code `#[distributed_lock]` generates. Not a public API: no stability
//! promises, may change in any release.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::context::{CHAIN, Frame, innermost};
use crate::{LockClient, LockError};

pub use std::result::Result;
pub use std::string::String;
pub use std::time::Duration as StdDuration;

/// A client, owned or borrowed, as named by `client = <expr>`.
pub trait IntoLockClient {
    /// An owned handle (a cheap clone).
    fn into_lock_client(self) -> LockClient;
}

impl IntoLockClient for LockClient {
    fn into_lock_client(self) -> LockClient {
        self
    }
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

impl IntoLockClient for &Arc<LockClient> {
    fn into_lock_client(self) -> LockClient {
        (**self).clone()
    }
}

impl IntoLockClient for &mut LockClient {
    fn into_lock_client(self) -> LockClient {
        self.clone()
    }
}

/// The default client, as a result the guarded fn can return through `From`.
pub fn default_client() -> Result<LockClient, LockError> {
    crate::default_client()
}

/// A value usable in a key template.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used in a lock key template: it does not implement `Display`",
    label = "this placeholder's value must implement `std::fmt::Display`",
    note = "key placeholders are formatted with `Display`; use a field that implements it, or implement `Display` for `{Self}`"
)]
pub trait KeyPart {
    /// Appends the value to the key.
    fn push_to(&self, key: &mut String);
}

impl<T: std::fmt::Display + ?Sized> KeyPart for T {
    fn push_to(&self, key: &mut String) {
        use std::fmt::Write;
        let _ = write!(key, "{self}");
    }
}

/// Appends one placeholder's value to the key being built.
pub fn push_key_part<T: KeyPart + ?Sized>(key: &mut String, value: &T) {
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
/// release. A call nested in a guarded call that holds the same key on the same client runs
/// `body` directly.
pub async fn locked<T, E, F>(
    client: LockClient,
    key: String,
    ttl: Option<Duration>,
    wait: Duration,
    on_lost: OnLost,
    body: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: From<LockError>,
{
    let full_key = client.full_key(&key);
    let outer = innermost();
    if Frame::holding(outer.as_ref(), &client, &full_key).is_some() {
        return body.await;
    }
    let mut request = client.lock(key.clone()).wait(wait);
    if let Some(ttl) = ttl {
        request = request.ttl(ttl);
    }
    let guard = request.await?;
    let frame = Frame::new(client, full_key, key, guard.fencing_token(), outer);
    let body = CHAIN.scope(Some(Arc::new(frame)), body);
    let result = match on_lost {
        OnLost::Cancel => {
            let lease = guard.lease();
            tokio::pin!(body);
            tokio::select! {
                biased;
                result = &mut body => result,
                () = lease.lost() => {
                    let key = lease.key.clone();
                    drop(guard);
                    return Err(LockError::Lost { key }.into());
                }
            }
        }
        OnLost::Ignore => body.await,
    };
    match guard.release().await {
        Ok(()) => result,
        // The lease ran out before the body finished and nobody noticed in time: a success
        // would claim exclusion that did not hold.
        Err(err @ LockError::Lost { .. })
            if matches!(on_lost, OnLost::Cancel) && result.is_ok() =>
        {
            Err(err.into())
        }
        Err(err) => {
            tracing::debug!(%err, "releasing after the guarded call failed");
            result
        }
    }
}
