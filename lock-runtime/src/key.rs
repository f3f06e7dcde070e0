//! Lock keys, durations and URLs: validation before anything reaches the backend.

use std::time::Duration;

use crate::LockError;

/// The longest lock key accepted, in bytes (without the prefix).
///
/// Redis itself takes keys up to 512 MB; a lock key longer than this is almost always a bug
/// (a whole payload interpolated into a template) and costs memory on every renewal.
///
/// # Examples
///
/// ```
/// let client = distlock::LockClient::memory();
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let err = client.lock("x".repeat(distlock::MAX_KEY_LEN + 1)).await.unwrap_err();
/// assert!(matches!(err, distlock::LockError::InvalidKey { .. }));
/// # });
/// ```
pub const MAX_KEY_LEN: usize = 512;

/// The shortest lease accepted.
///
/// # Examples
///
/// ```
/// assert_eq!(distlock::MIN_TTL, std::time::Duration::from_millis(100));
/// ```
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// The longest lease accepted (30 days).
///
/// # Examples
///
/// ```
/// assert_eq!(distlock::MAX_TTL.as_secs(), 30 * 24 * 3600);
/// ```
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub(crate) fn validate_key(key: &str) -> Result<(), LockError> {
    let reason = if key.is_empty() {
        "a lock key cannot be empty"
    } else if key.len() > MAX_KEY_LEN {
        "a lock key is at most distlock::MAX_KEY_LEN (512) bytes"
    } else if key.chars().any(char::is_control) {
        "a lock key cannot contain control characters"
    } else {
        return Ok(());
    };
    Err(LockError::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

pub(crate) fn validate_ttl(what: &'static str, ttl: Duration) -> Result<(), LockError> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(LockError::InvalidDuration {
            what,
            value: ttl,
            reason: "a lease must be between 100ms and 30 days",
        })
    }
}

/// `url` with the password (if any) replaced by `***`, for messages and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_owned();
    };
    format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("order:1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
