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

/// `host/pid/acquired-at-ms`, stored with each lock so "who holds this?" has an answer.
pub(crate) fn owner_info() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        gethostname::gethostname()
            .to_string_lossy()
            .replace(['/', ':', '|'], "_")
    });
    format!("{host}/{}/{}", std::process::id(), unix_millis())
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
}
