//! The stored value of a lock, as the scripts write it, read back into a [`LockInfo`].
//!
//! The layout (state byte, token, fence, owner info, queue of waiting clients) is described
//! in `scripts/acquire.lua`; the scripts slice values by it, and this module parses it the
//! same way for inspection and listing.

use std::time::Duration;

use crate::info::LockInfo;

/// Parses a stored lock value: state byte, 32-byte token, 16-digit fence, `:` and the owner
/// info (the layout is described in `scripts/acquire.lua`). The key is left empty.
pub(crate) fn parse_value(value: &str, ttl: Option<Duration>) -> Option<LockInfo> {
    parse_stored(value, ttl).map(|stored| stored.info)
}

/// A held lock as read from the store, with its token (which never leaves the crate).
#[derive(Debug)]
pub(crate) struct StoredLock {
    pub(crate) token: String,
    pub(crate) info: LockInfo,
}

/// Parses a stored lock value into what it says and the holder's token; `None` for a
/// tombstone, a reservation, or a value distlock did not write.
pub(crate) fn parse_stored(value: &str, ttl: Option<Duration>) -> Option<StoredLock> {
    let state = *value.as_bytes().first()?;
    if !matches!(state, b'H' | b'W') || value.get(49..50) != Some(":") {
        return None;
    }
    let token = value.get(1..33)?;
    let fence = value.get(33..49)?;
    if !fence.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fence = fence.parse().ok()?;
    let rest = value.get(50..).unwrap_or("");
    let (owner, queue) = rest.split_once('|').unwrap_or((rest, ""));
    let mut info = lock_info(fence, owner, ttl, state == b'W');
    info.waiters = queue.split('|').filter(|id| !id.is_empty()).count();
    Some(StoredLock {
        token: token.to_owned(),
        info,
    })
}

/// Builds a [`LockInfo`] (key empty, no waiters) from the stored owner info
/// `"[<label>/]<host>/<pid>/<acquired-at-ms>"`; the label as `token::OwnerLabel` stores it.
pub(crate) fn lock_info(
    fencing_token: u64,
    owner: &str,
    ttl: Option<Duration>,
    contended: bool,
) -> LockInfo {
    let mut parts = owner.rsplitn(4, '/');
    let acquired_at_ms = parts.next().and_then(|s| s.parse().ok());
    let pid = parts.next().and_then(|s| s.parse().ok());
    let host = parts.next().map(str::to_owned);
    let label = parts.next().and_then(crate::token::decode_label);
    LockInfo {
        key: String::new(),
        fencing_token,
        label,
        host,
        pid,
        acquired_at_ms,
        ttl,
        contended,
        waiters: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{OwnerLabel, owner_info_labelled};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn value(state: char, owner: &str) -> String {
        format!("{state}{TOKEN}{:016}:{owner}", 1_700_000_000_123_456u64)
    }

    #[test]
    fn old_values_without_a_label_parse() {
        let stored = parse_stored(&value('H', "web-1/4242/1700000000123"), None).unwrap();
        assert_eq!(stored.token, TOKEN);
        let info = stored.info;
        assert_eq!(info.fencing_token, 1_700_000_000_123_456);
        assert_eq!(info.host.as_deref(), Some("web-1"));
        assert_eq!(info.pid, Some(4242));
        assert_eq!(info.acquired_at_ms, Some(1_700_000_000_123));
        assert_eq!(info.label, None);
        assert_eq!(info.waiters, 0);
        assert!(!info.contended);
    }

    #[test]
    fn labels_and_queues_parse() {
        let label = OwnerLabel::new("billing|job/7 100%").unwrap();
        let owner = owner_info_labelled(Some(&label));
        let held = value('W', &format!("{owner}|aaaa|bbbb|"));
        let info = parse_value(&held, Some(Duration::from_secs(3))).unwrap();
        assert_eq!(info.label.as_deref(), Some("billing|job/7 100%"));
        assert_eq!(info.pid, Some(std::process::id()));
        assert!(info.host.is_some());
        assert!(info.acquired_at_ms.is_some());
        assert_eq!(info.waiters, 2);
        assert!(info.contended);
        // A queue emptied by leaving clients.
        let info = parse_value(
            &value('W', &format!("{}|", owner_info_labelled(None))),
            None,
        )
        .unwrap();
        assert_eq!((info.waiters, info.label), (0, None));
    }

    #[test]
    fn other_values_are_not_locks() {
        for other in [
            String::new(),
            "T1700000000123456".to_owned(),
            format!("T{:016}{TOKEN}", 1u64),
            format!("R{:016}{TOKEN}aaaa|", 1u64),
            "hello".to_owned(),
            format!("H{TOKEN}17000000001234x6:h/1/2"),
            format!("H{TOKEN}1700000000123456-h/1/2"),
            format!("X{TOKEN}1700000000123456:h/1/2"),
            "H\u{e9}\u{e9}\u{e9}".repeat(20),
        ] {
            assert!(parse_stored(&other, None).is_none(), "{other:?}");
        }
    }
}
