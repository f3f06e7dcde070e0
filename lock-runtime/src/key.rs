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

/// Checks a lease against what the deployment can keep (`max`: Redlock's quarantine).
pub(crate) fn validate_lease(ttl: Duration, max: Option<Duration>) -> Result<(), LockError> {
    validate_ttl("ttl", ttl)?;
    match max {
        Some(max) if ttl > max => Err(LockError::InvalidDuration {
            what: "ttl",
            value: ttl,
            reason: "a Redlock lease cannot be longer than the quarantine \
                     (LockClientBuilder::redlock_quarantine, default: the default TTL): a node \
                     restarted empty votes again after it",
        }),
        _ => Ok(()),
    }
}

/// Checks a request's `min_hold` and `max_hold` (`max`: the longest lease the deployment can
/// keep, which the minimum hold becomes at release).
pub(crate) fn validate_holds(
    min_hold: Option<Duration>,
    max_hold: Option<Duration>,
    max: Option<Duration>,
) -> Result<(), LockError> {
    if let Some(max_hold) = max_hold {
        validate_ttl("max_hold", max_hold)?;
    }
    let Some(min_hold) = min_hold else {
        return Ok(());
    };
    let invalid = |reason| {
        Err(LockError::InvalidDuration {
            what: "min_hold",
            value: min_hold,
            reason,
        })
    };
    if min_hold > MAX_TTL {
        return invalid("a minimum hold is at most 30 days");
    }
    if max_hold.is_some_and(|m| min_hold > m) {
        return invalid("the minimum hold cannot be longer than the maximum hold (max_hold)");
    }
    if max.is_some_and(|m| min_hold > m) {
        return invalid(
            "a Redlock minimum hold cannot be longer than the quarantine: the lock is kept \
             for it as a lease",
        );
    }
    Ok(())
}

/// What stands in for anything hidden.
const HIDDEN: &str = "***";

/// Why redis-rs refused a URL, without the part of the URL it may quote (its error detail can
/// hold a fragment of a password, e.g. after a `?` inside it).
pub(crate) fn url_error_reason(e: &redis::RedisError) -> String {
    match e.detail() {
        Some(detail) => e.to_string().strip_suffix(detail).map_or_else(
            || e.category().to_owned(),
            |s| s.trim_end_matches([':', ' ', '-']).to_owned(),
        ),
        None => e.to_string(),
    }
}

/// `url` with every credential in it replaced by `***`, for messages, logs and `Debug`.
///
/// Errs on the side of hiding: the user info is everything up to the *last* `@` (a password
/// may hold `/ ? # @ :` unencoded), a user info without `:` (perhaps a password written
/// without its colon) is hidden whole, and so are the values of `pass`, `password`, `user`
/// and similar query parameters (`redis+unix://` URLs carry credentials there). When the URL
/// cannot be understood (no `scheme://`, a host or port that is not one, control characters
/// or spaces), everything after `scheme://` is hidden, or the whole text when there is no
/// scheme to keep.
///
/// The crate's own errors and `Debug` output already show URLs this way; use it for the URLs
/// your program prints itself (the `distlock` command-line tool does).
///
/// # Examples
///
/// ```
/// assert_eq!(
///     distlock::redact_url("redis://app:s3cret@10.0.0.1:6379/0"),
///     "redis://app:***@10.0.0.1:6379/0"
/// );
/// assert_eq!(distlock::redact_url("not a url s3cret"), "***");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return HIDDEN.to_owned();
    };
    if !is_scheme(&url[..scheme_end]) {
        return HIDDEN.to_owned();
    }
    let (prefix, rest) = url.split_at(scheme_end + 3);
    let unreadable = || format!("{prefix}{HIDDEN}");
    if rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return unreadable();
    }
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (host_port, tail) = after.split_at(after.find(['/', '?', '#']).unwrap_or(after.len()));
    if !is_host_port(host_port) {
        return unreadable();
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(prefix);
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) if user.chars().all(is_userinfo_char) => {
                out.push_str(user);
                out.push(':');
            }
            // No colon: a user name, or a password without its colon. Hide it.
            _ => {}
        }
        out.push_str(HIDDEN);
        out.push('@');
    }
    out.push_str(host_port);
    push_redacted_tail(&mut out, tail);
    out
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Unreserved, percent-encoded or sub-delimiter characters (what a user name may hold).
fn is_userinfo_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or nothing (a Unix socket URL).
fn is_host_port(host_port: &str) -> bool {
    let (host_ok, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once(']') else {
            return false;
        };
        let addr_ok = !addr.is_empty()
            && addr
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '%'));
        (
            addr_ok,
            port.strip_prefix(':').or(port.is_empty().then_some("")),
        )
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, Some("")),
        };
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'));
        (host_ok, port)
    };
    let port_ok = port.is_some_and(|p| p.is_empty() || p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// Appends the path, the query with credential-like parameter values hidden, and the
/// fragment.
fn push_redacted_tail(out: &mut String, tail: &str) {
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_credential_param(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(HIDDEN);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
}

fn is_credential_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "user", "auth", "token", "secret", "key"]
        .iter()
        .any(|word| name.contains(word))
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
        assert_eq!(
            redact_url("rediss://[::1]:6380/2?protocol=resp3#insecure"),
            "rediss://[::1]:6380/2?protocol=resp3#insecure"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret&user=alice"),
            "redis+unix:///run/redis.sock?db=1&pass=***&user=***"
        );
    }

    #[test]
    fn the_user_info_runs_to_the_last_at() {
        for (url, shown) in [
            ("redis://:pa/ss@host:6379", "redis://:***@host:6379"),
            ("redis://:pa#ss@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://:pa?ss@host", "redis://:***@host"),
            ("redis://u:p@ss@host", "redis://u:***@host"),
            ("redis://u:pa:ss@host", "redis://u:***@host"),
            ("redis://:a@b?protocol=c@host", "redis://:***@host"),
            ("redis://:pa://ss@host", "redis://:***@host"),
            // No colon: a user name, or a password that lost its colon; hidden either way.
            ("redis://s3cret@host", "redis://***@host"),
            ("redis://pa/ss:x@host", "redis://***@host"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn what_cannot_be_understood_is_hidden() {
        for (url, shown) in [
            ("not a url", "***"),
            (":s3cret@host:6379", "***"),
            ("user:s3cret@host:6379", "***"),
            ("redis:/:s3cret@host", "***"),
            (":s3cret@h://x", "***"),
            ("redis://:s3cret@host:port", "redis://***"),
            ("redis://s3cret:6379x", "redis://***"),
            ("redis://:pa ss@host", "redis://***"),
            ("redis://:s3cret@[::1", "redis://***"),
            ("redis://:s3cret@host:99999", "redis://***"),
            ("redis://:s3cret@ho$t", "redis://***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    /// Many hostile passwords in many URL shapes: the password never shows.
    #[test]
    fn no_password_survives_redaction() {
        let passwords = [
            "pa/ss",
            "pa#ss",
            "pa?ss",
            "p@ss",
            "pa:ss",
            "%2F",
            "pä$$wörd🔑",
            "a@b?protocol=c",
            "x://y@z",
            "s3cret",
            "[pw]",
            "pa&pass=ss",
        ];
        let encoded = |pw: &str| -> String {
            pw.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        for pw in passwords {
            let enc = encoded(pw);
            let shapes = [
                format!("redis://:{pw}@127.0.0.1:6379"),
                format!("redis://alice:{pw}@127.0.0.1:6379/0"),
                format!("rediss://alice:{pw}@[::1]:6380/0?protocol=resp3#insecure"),
                format!("redis://:{pw}@127.0.0.1:notaport"),
                format!("redis://:{pw}@127.0.0.1:6379/garbage?x=%ZZ#frag"),
                format!("redis://:{pw}@127.0.0.1:6379@@"),
                format!("redis://{pw}@127.0.0.1:6379"),
                format!(":{pw}@127.0.0.1:6379"),
                format!("alice:{pw}@127.0.0.1:6379"),
                format!("redis:/:{pw}@127.0.0.1"),
                format!("redis+unix:///tmp/redis.sock?pass={pw}"),
                format!("redis://:{enc}@127.0.0.1:6379"),
            ];
            for url in shapes {
                let shown = redact_url(&url);
                assert!(!shown.contains(pw), "{pw:?} in {shown:?} (from {url:?})");
                assert!(!shown.contains(&enc), "{enc:?} in {shown:?} (from {url:?})");
            }
        }
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
