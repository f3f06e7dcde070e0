//! Holder identity: a random token per acquisition plus owner info stored with the lock.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{BackendErrorKind, LockError};

/// 128 random bits from the OS CSPRNG, as 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn generate() -> Result<Self, LockError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| {
            LockError::backend(
                BackendErrorKind::Server,
                format!("the OS random source failed: {e}"),
            )
        })?;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in raw.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Ok(Self(out))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell tokens apart in logs, not enough to forge one.
        write!(f, "Token({}..)", &self.as_str()[..6])
    }
}

/// A client's id in the queues of waiting clients: 16 hex characters.
pub(crate) fn waiter_id() -> String {
    Token::generate()
        .map(|t| t.as_str()[..16].to_owned())
        .unwrap_or_else(|_| format!("{:016x}", unix_micros() ^ u64::from(std::process::id())))
}

/// `host/pid/acquired-at-ms`, stored with each lock so "who holds this?" has an answer, with
/// the holder's label in front when there is one: `label/host/pid/acquired-at-ms`, the label
/// as [`OwnerLabel`] stores it.
pub(crate) fn owner_info_labelled(label: Option<&OwnerLabel>) -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        gethostname::gethostname()
            .to_string_lossy()
            .replace(['/', ':', '|'], "_")
            .replace(char::is_control, "_")
    });
    match label {
        Some(label) => format!(
            "{}/{host}/{}/{}",
            label.stored(),
            std::process::id(),
            unix_millis()
        ),
        None => format!("{host}/{}/{}", std::process::id(), unix_millis()),
    }
}

/// The longest owner label kept, in bytes; a longer one is cut at a character boundary.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let _guard = client.lock("job").label("x".repeat(500)).await?;
/// let info = client.inspect("job").await?.unwrap();
/// assert_eq!(info.label.unwrap().len(), distlock::MAX_LABEL_LEN);
/// # Ok(())
/// # }
/// ```
pub const MAX_LABEL_LEN: usize = 128;

/// A holder's label as stored in the lock value.
///
/// The rule, which keeps every script's fixed slicing and the owner parsing valid whatever the
/// label holds:
/// - the label is cut to [`MAX_LABEL_LEN`] bytes (at a character boundary);
/// - control characters become U+FFFD (a label is for people and terminals);
/// - `%`, `/` and `|` are percent-encoded (`%25`, `%2F`, `%7C`): `|` separates the queue of
///   waiting clients and `/` the owner fields, so neither can appear raw;
/// - an empty label is no label.
///
/// Stored as `label/host/pid/acquired-at-ms`: a value written without a label
/// (`host/pid/acquired-at-ms`, as older versions wrote) still parses, and an older reader
/// sees `label/host` as the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerLabel(String);

impl OwnerLabel {
    /// `None` for an empty label.
    pub(crate) fn new(label: &str) -> Option<Self> {
        let mut end = label.len().min(MAX_LABEL_LEN);
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        let label = &label[..end];
        if label.is_empty() {
            return None;
        }
        let mut stored = String::with_capacity(label.len());
        for c in label.chars() {
            match c {
                '%' => stored.push_str("%25"),
                '/' => stored.push_str("%2F"),
                '|' => stored.push_str("%7C"),
                c if c.is_control() => stored.push(char::REPLACEMENT_CHARACTER),
                c => stored.push(c),
            }
        }
        Some(Self(stored))
    }

    fn stored(&self) -> &str {
        &self.0
    }
}

/// Reads a stored label back: percent escapes decoded (a malformed one is kept as it is),
/// control characters (which distlock never writes) shown as U+FFFD.
pub(crate) fn decode_label(stored: &str) -> Option<String> {
    if stored.is_empty() {
        return None;
    }
    let bytes = stored.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(
        String::from_utf8_lossy(&out)
            .chars()
            .map(|c| {
                if c.is_control() {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect(),
    )
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_and_distinct() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn labels_round_trip_without_reserved_characters() {
        for label in [
            "billing",
            "job 42: nightly/report",
            "a|b|c",
            "100%",
            "%2F literally",
            "émoji 🔒 ok",
            "/leading/and/trailing/",
            "||",
        ] {
            let stored = OwnerLabel::new(label).unwrap();
            assert!(!stored.stored().contains(['|', '/']), "{stored:?}");
            assert_eq!(decode_label(stored.stored()).as_deref(), Some(label));
        }
        assert_eq!(OwnerLabel::new(""), None);
    }

    #[test]
    fn labels_are_capped_and_cleaned() {
        let long = "é".repeat(100); // 200 bytes
        let stored = OwnerLabel::new(&long).unwrap();
        let back = decode_label(stored.stored()).unwrap();
        assert_eq!(back.len(), MAX_LABEL_LEN);
        assert!(long.starts_with(&back));
        let stored = OwnerLabel::new("a\x1b[31mred\nline").unwrap();
        assert_eq!(
            decode_label(stored.stored()).unwrap(),
            "a\u{fffd}[31mred\u{fffd}line"
        );
        // What distlock never writes is still shown safely.
        assert_eq!(decode_label("x%1By%zz%").unwrap(), "x\u{fffd}y%zz%");
        assert_eq!(decode_label(""), None);
    }
}
