//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong when taking, holding or releasing a lock.
///
/// Negative outcomes carry data rather than strings: [`LockError::Busy`] says how long the
/// current holder's lease still runs, so callers can answer "try again in N seconds".
/// Use the predicates ([`is_busy`](Self::is_busy), [`retry_after`](Self::retry_after), ...)
/// rather than matching on variants you don't need; more variants may be added.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
///
/// let client = distlock::LockClient::memory();
/// let held = client.lock("report").await?;
/// let err = client.lock("report").await.unwrap_err();
/// assert!(err.is_busy());
/// assert!(err.retry_after().unwrap() <= Duration::from_secs(30));
/// held.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Someone else holds the lock and it did not come free within the wait.
    #[error("lock `{key}` is busy{}", RetryAfter(*.retry_after))]
    Busy {
        /// The key as the caller named it (without the prefix).
        key: String,
        /// How long the current holder's lease still runs, when known.
        retry_after: Option<Duration>,
    },
    /// The lease was lost while held: it expired, or the key was deleted or taken over.
    #[error("lock `{key}` was lost: its lease ran out or the key was removed or taken over")]
    Lost {
        /// The key as the caller named it.
        key: String,
    },
    /// The key cannot be used as a lock key (empty, too long, control characters).
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key, cut to 64 characters.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lease or wait duration outside what the lock accepts.
    #[error("invalid duration {value:?} for {what}: {reason}")]
    InvalidDuration {
        /// Which setting (`"ttl"`, `"wait"`, ...).
        what: &'static str,
        /// The value given.
        value: Duration,
        /// The accepted range.
        reason: &'static str,
    },
    /// A count the primitive cannot use: a semaphore of zero permits, more permits asked for
    /// than the semaphore has, an empty set of keys.
    #[error("invalid {what} {value}: {reason}")]
    InvalidCount {
        /// Which setting (`"permits"`, `"keys"`, ...).
        what: &'static str,
        /// The value given.
        value: usize,
        /// The accepted range.
        reason: &'static str,
    },
    /// A connection URL that cannot be used. Passwords are redacted.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with its credentials replaced by `***` (everything after `scheme://`, or
        /// the whole text, when it could not be understood).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The lock key already holds a value distlock did not write (another type, or a string of
    /// another format). distlock leaves such keys untouched rather than overwrite user data.
    #[error(
        "key `{key}` holds a value that distlock did not write (WRONGTYPE or foreign data); \
         pick another key or prefix"
    )]
    KeyConflict {
        /// The key as the caller named it.
        key: String,
    },
    /// The backend failed: connection refused or dropped, authentication, a timeout, a server
    /// error.
    #[error("Redis {kind}: {message}")]
    Backend {
        /// The kind of failure.
        kind: BackendErrorKind,
        /// What happened, without credentials.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A guarded function named no client and no default client was set.
    #[error(
        "no default lock client: call distlock::set_default_client(..) at startup, \
         or name one with #[distributed_lock(client = ..)]"
    )]
    NoDefaultClient,
}

/// What kind of backend failure a [`LockError::Backend`] is.
///
/// # Examples
///
/// ```
/// use distlock::BackendErrorKind;
/// assert_eq!(BackendErrorKind::Auth.to_string(), "authentication failed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// Could not connect, or the connection dropped.
    Connection,
    /// The server refused the credentials.
    Auth,
    /// The server did not answer in time, or an acquire answered too late to be trusted.
    Timeout,
    /// The server answered with an error.
    Server,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connection => "connection failed",
            Self::Auth => "authentication failed",
            Self::Timeout => "timed out",
            Self::Server => "server error",
        })
    }
}

struct RetryAfter(Option<Duration>);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " (the holder's lease ends in {d:?})"),
            None => Ok(()),
        }
    }
}

impl LockError {
    /// True when the lock was held by someone else for the whole wait.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = distlock::LockError::Busy { key: "k".into(), retry_after: None };
    /// assert!(err.is_busy());
    /// ```
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// True when a held lease was lost.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = distlock::LockError::Lost { key: "k".into() };
    /// assert!(err.is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// True for backend failures (connection, auth, timeout, server error): worth retrying later.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!distlock::LockError::NoDefaultClient.is_backend());
    /// ```
    pub fn is_backend(&self) -> bool {
        matches!(self, Self::Backend { .. })
    }

    /// For [`LockError::Busy`]: how long until the holder's lease runs out, when known.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = distlock::LockError::Busy { key: "k".into(), retry_after: Some(Duration::from_secs(3)) };
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The lock key this error is about, when it is about one.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = distlock::LockError::Lost { key: "job:7".into() };
    /// assert_eq!(err.key(), Some("job:7"));
    /// ```
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Busy { key, .. }
            | Self::Lost { key }
            | Self::InvalidKey { key, .. }
            | Self::KeyConflict { key } => Some(key),
            _ => None,
        }
    }

    pub(crate) fn backend(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self::Backend {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A connection that was already gone when the command was made (not a timeout, not a
    /// refusal): worth one more try on a fresh connection.
    pub(crate) fn is_connection_dropped(&self) -> bool {
        let Self::Backend {
            kind: BackendErrorKind::Connection,
            source: Some(source),
            ..
        } = self
        else {
            return false;
        };
        source
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|e| e.is_connection_dropped() || e.is_unrecoverable_error())
    }

    pub(crate) fn from_redis(err: redis::RedisError) -> Self {
        use redis::ErrorKind;
        let kind = if err.kind() == ErrorKind::AuthenticationFailed
            || err.code() == Some("WRONGPASS")
            || err.code() == Some("NOAUTH")
            || err.code() == Some("NOPERM")
            // A server that wants a password refuses an unauthenticated client's command of
            // more than a few arguments (a batch of acquires) with a protocol error, not NOAUTH.
            || err.to_string().contains("Protocol error: unauthenticated")
        {
            BackendErrorKind::Auth
        } else if err.is_timeout() {
            BackendErrorKind::Timeout
        } else if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
            BackendErrorKind::Connection
        } else {
            BackendErrorKind::Server
        };
        Self::Backend {
            kind,
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

/// Lock errors as I/O errors, for fns returning `std::io::Result`: busy maps to
/// `WouldBlock`, lost to `Interrupted`, bad input to `InvalidInput`, backend failures to
/// `ConnectionRefused`, `PermissionDenied`, `TimedOut` or `Other`.
///
/// # Examples
///
/// ```
/// let err: std::io::Error = distlock::LockError::Busy { key: "k".into(), retry_after: None }.into();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// ```
impl From<LockError> for std::io::Error {
    fn from(err: LockError) -> Self {
        use std::io::ErrorKind;
        let kind = match &err {
            LockError::Busy { .. } => ErrorKind::WouldBlock,
            LockError::Lost { .. } => ErrorKind::Interrupted,
            LockError::InvalidKey { .. }
            | LockError::InvalidDuration { .. }
            | LockError::InvalidCount { .. }
            | LockError::InvalidUrl { .. } => ErrorKind::InvalidInput,
            LockError::Backend { kind, .. } => match kind {
                BackendErrorKind::Connection => ErrorKind::ConnectionRefused,
                BackendErrorKind::Auth => ErrorKind::PermissionDenied,
                BackendErrorKind::Timeout => ErrorKind::TimedOut,
                BackendErrorKind::Server => ErrorKind::Other,
            },
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}
