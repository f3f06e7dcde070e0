//! How locks are shown: the JSON shape, tables, durations, lease bars.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distlock::LockInfo;
use serde::Serialize;

/// One lock in JSON output. The shape is stable: fields are only ever added.
#[derive(Debug, Serialize)]
pub(crate) struct LockJson<'a> {
    key: &'a str,
    fencing_token: u64,
    label: Option<&'a str>,
    host: Option<&'a str>,
    pid: Option<u32>,
    acquired_at_ms: Option<u64>,
    ttl_ms: Option<u64>,
    waiters: usize,
    contended: bool,
}

impl<'a> From<&'a LockInfo> for LockJson<'a> {
    fn from(info: &'a LockInfo) -> Self {
        Self {
            key: &info.key,
            fencing_token: info.fencing_token,
            label: info.label.as_deref(),
            host: info.host.as_deref(),
            pid: info.pid,
            acquired_at_ms: info.acquired_at_ms,
            ttl_ms: info
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            waiters: info.waiters,
            contended: info.contended,
        }
    }
}

/// `info` as one JSON object.
pub(crate) fn json(info: &LockInfo) -> String {
    serde_json::to_string(&LockJson::from(info)).unwrap_or_else(|_| "null".to_owned())
}

/// The locks as a JSON array.
pub(crate) fn json_array(locks: &[LockInfo]) -> String {
    let locks: Vec<LockJson<'_>> = locks.iter().map(LockJson::from).collect();
    serde_json::to_string(&locks).unwrap_or_else(|_| "[]".to_owned())
}

/// Text from the store, safe for a terminal: control characters (escape sequences) become
/// U+FFFD. distlock never writes them; another program might have.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// `host/pid`, or `?` for what the holder did not store.
pub(crate) fn holder(info: &LockInfo) -> String {
    let host = info.host.as_deref().map_or_else(|| "?".to_owned(), clean);
    match info.pid {
        Some(pid) => format!("{host}/{pid}"),
        None => host,
    }
}

pub(crate) fn label(info: &LockInfo) -> String {
    info.label.as_deref().map_or_else(|| "-".to_owned(), clean)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago the holder acquired it (by the holder's clock against ours), or `?`.
pub(crate) fn held_for(info: &LockInfo, now_ms: u64) -> String {
    match info.acquired_at_ms {
        Some(at) if at <= now_ms => short(Duration::from_millis(now_ms - at)),
        Some(_) => "0s".to_owned(), // clocks apart
        None => "?".to_owned(),
    }
}

/// The remaining lease, or `-` for none.
pub(crate) fn ttl(info: &LockInfo) -> String {
    info.ttl.map_or_else(|| "-".to_owned(), short)
}

/// A short human duration: `850ms`, `8.2s`, `42s`, `1m05s`, `2h03m`, `3d04h`.
pub(crate) fn short(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 10 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// The lease a lock was most likely granted, from the longest remaining time seen: that time
/// rounded up to a round duration (leases are round numbers; a renewed lease never has less
/// than two thirds left).
pub(crate) fn likely_lease(longest_seen: Duration) -> Duration {
    const ROUND_MS: [u64; 24] = [
        100, 200, 250, 300, 500, 750, 1_000, 2_000, 3_000, 5_000, 10_000, 15_000, 20_000, 30_000,
        45_000, 60_000, 90_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
        7_200_000,
    ];
    let ms = u64::try_from(longest_seen.as_millis()).unwrap_or(u64::MAX);
    let round = ROUND_MS
        .iter()
        .copied()
        .find(|&r| r >= ms)
        .unwrap_or_else(|| ms.div_ceil(3_600_000).saturating_mul(3_600_000));
    Duration::from_millis(round)
}

/// `remaining` out of `lease` as a bar of `width` cells: `█` left, `░` gone.
pub(crate) fn lease_bar(remaining: Duration, lease: Duration, width: usize) -> (String, f64) {
    let fraction = if lease.is_zero() {
        0.0
    } else {
        (remaining.as_secs_f64() / lease.as_secs_f64()).clamp(0.0, 1.0)
    };
    let full = ((fraction * width as f64).round() as usize).min(width);
    let bar = "█".repeat(full) + &"░".repeat(width - full);
    (bar, fraction)
}

/// Columns laid out with the widths of their widest cells (cells cut to `max` characters
/// with `…`), two spaces apart; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>, max: &[usize]) -> Vec<String> {
    let cut = |cell: String, i: usize| -> String {
        let limit = max.get(i).copied().unwrap_or(usize::MAX);
        if cell.chars().count() <= limit {
            cell
        } else {
            let mut out: String = cell.chars().take(limit.saturating_sub(1)).collect();
            out.push('…');
            out
        }
    };
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows)
        .map(|row: Vec<String>| {
            row.into_iter()
                .enumerate()
                .map(|(i, c)| cut(c, i))
                .collect()
        })
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_width(cell));
            }
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - visible_width(cell) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        })
        .collect()
}

/// `line` cut to `width` characters on the screen (colour sequences kept, and closed when
/// the cut falls inside one).
pub(crate) fn fit(line: &str, width: usize) -> String {
    if visible_width(line) <= width {
        return line.to_owned();
    }
    let mut out = String::with_capacity(line.len());
    let (mut shown, mut in_escape) = (0, false);
    for c in line.chars() {
        if in_escape {
            out.push(c);
            in_escape = c != 'm';
        } else if c == '\u{1b}' {
            out.push(c);
            in_escape = true;
        } else if shown < width {
            out.push(c);
            shown += 1;
        }
    }
    out.push_str("\x1b[0m");
    out
}

/// Characters that take room on the screen: colour sequences (`ESC [ ... m`) take none.
fn visible_width(cell: &str) -> usize {
    let mut width = 0;
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        let cases = [
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(8_249), "8.2s"),
            (Duration::from_secs(42), "42s"),
            (Duration::from_secs(65), "1m05s"),
            (Duration::from_secs(2 * 3600 + 180), "2h03m"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600), "3d04h"),
        ];
        for (d, shown) in cases {
            assert_eq!(short(d), shown);
        }
    }

    #[test]
    fn leases_round_up() {
        assert_eq!(
            likely_lease(Duration::from_millis(8_700)),
            Duration::from_secs(10)
        );
        assert_eq!(
            likely_lease(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            likely_lease(Duration::from_millis(20_001)),
            Duration::from_secs(30)
        );
        assert_eq!(
            likely_lease(Duration::from_secs(3 * 3600 + 1)),
            Duration::from_secs(4 * 3600)
        );
    }

    #[test]
    fn bars_fill_with_what_remains() {
        let (bar, f) = lease_bar(Duration::from_secs(5), Duration::from_secs(10), 10);
        assert_eq!(bar, "█████░░░░░");
        assert!((f - 0.5).abs() < 1e-9);
        let (bar, _) = lease_bar(Duration::from_secs(50), Duration::from_secs(10), 4);
        assert_eq!(bar, "████");
        let (bar, _) = lease_bar(Duration::ZERO, Duration::ZERO, 3);
        assert_eq!(bar, "░░░");
    }

    #[test]
    fn tables_align_and_cut() {
        let lines = table(
            &["KEY", "N"],
            vec![
                vec!["a-very-long-key".into(), "1".into()],
                vec!["b".into(), "22".into()],
            ],
            &[6],
        );
        assert_eq!(lines, ["KEY     N", "a-ver…  1", "b       22"]);
        let lines = table(
            &["A", "B"],
            vec![vec!["\u{1b}[32mxx\u{1b}[0m".into(), "1".into()]],
            &[],
        );
        assert_eq!(lines[0], "A   B");
        assert!(lines[1].ends_with("m  1"), "{:?}", lines[1]);
    }

    #[test]
    fn lines_fit_the_screen() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdef", 3), "abc\u{1b}[0m");
        assert_eq!(
            fit("ab\u{1b}[32mcdef\u{1b}[0mgh", 4),
            "ab\u{1b}[32mcd\u{1b}[0m\u{1b}[0m"
        );
    }

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a\u{fffd}[2Jb\u{fffd}");
    }
}
