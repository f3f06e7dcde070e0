//! `distlock watch`: a refreshing table of the held locks, drawn with plain ANSI sequences.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use distlock::{LockClient, LockInfo};

use crate::render;
use crate::{Failure, fetch, write_out};

/// How `watch` was asked to run.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The deployment, for the header (passwords redacted).
    pub(crate) target: String,
    pub(crate) client_prefix: String,
    pub(crate) prefix: String,
    pub(crate) interval: Duration,
    /// `None`: until interrupted.
    pub(crate) frames: Option<u64>,
    pub(crate) json: bool,
}

/// The width of the lease bar, in cells.
const BAR: usize = 20;

/// Lines above the table: title, summary, blank line, column header.
const CHROME: usize = 4;

/// The longest remaining lease seen per (key, fence): the bar's estimate of the lease.
type Seen = HashMap<(String, u64), Duration>;

pub(crate) async fn run(client: &LockClient, watch: Watch) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let live = watch.frames.is_none() && !watch.json && stdout.is_terminal();
    let color = live && std::env::var_os("NO_COLOR").is_none();
    let mut seen = Seen::new();
    let mut frame = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    if live {
        // The alternate screen, cursor hidden; both undone on the way out.
        write_out("\x1b[?1049h\x1b[?25l")?;
    }
    let outcome = async {
        loop {
            frame += 1;
            let locks = fetch(client, &watch.prefix).await;
            let now = SystemTime::now();
            match (&locks, live) {
                (Err(err), false) => return Err(Failure::Error(err.to_string())),
                _ if watch.json => {
                    let locks = locks.as_deref().unwrap_or_default();
                    let at_ms = render::now_ms();
                    write_out(&format!(
                        "{{\"at_ms\":{at_ms},\"locks\":{}}}\n",
                        render::json_array(locks)
                    ))?;
                }
                _ => {
                    let size = live
                        .then(|| {
                            terminal_size::terminal_size()
                                .map(|(w, h)| (usize::from(w.0), usize::from(h.0)))
                        })
                        .flatten();
                    let lines = draw(
                        &watch,
                        locks.as_ref(),
                        &mut seen,
                        now,
                        size.map(|s| s.1),
                        color,
                    );
                    if live {
                        let mut screen = String::from("\x1b[H");
                        for (i, line) in lines.iter().enumerate() {
                            if i > 0 {
                                screen.push_str("\r\n");
                            }
                            // A wrapped line would scroll the frame: cut it at the edge.
                            match size {
                                Some((width, _)) => screen.push_str(&render::fit(line, width)),
                                None => screen.push_str(line),
                            }
                            screen.push_str("\x1b[K");
                        }
                        // No newline after the last line (it would scroll a full screen).
                        screen.push_str("\x1b[J");
                        write_out(&screen)?;
                    } else {
                        if frame > 1 {
                            write_out("\n")?;
                        }
                        write_out(&(lines.join("\n") + "\n"))?;
                    }
                }
            }
            if watch.frames.is_some_and(|n| frame >= n) {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(watch.interval) => {}
                _ = &mut interrupted => return Ok(()),
            }
        }
    }
    .await;
    if live {
        let _ = write_out("\x1b[?25h\x1b[?1049l");
    }
    let _ = std::io::stdout().flush();
    outcome
}

/// One frame: title, summary, and the table (cut to `height` lines when given).
fn draw(
    watch: &Watch,
    locks: Result<&Vec<LockInfo>, &distlock::LockError>,
    seen: &mut Seen,
    now: SystemTime,
    height: Option<usize>,
    color: bool,
) -> Vec<String> {
    let clock = humantime::format_rfc3339_seconds(now);
    let mut lines = vec![format!(
        "distlock watch  {}  prefix \"{}\"  keys \"{}*\"  every {}  {clock}",
        watch.target,
        render::clean(&watch.client_prefix),
        render::clean(&watch.prefix),
        humantime::format_duration(watch.interval),
    )];
    let locks = match locks {
        Ok(locks) => locks,
        Err(err) => {
            lines.push(format!("error: {err} (retrying)"));
            return lines;
        }
    };
    let waiting: usize = locks.iter().map(|l| l.waiters).sum();
    lines.push(format!(
        "{} held, {} waiting",
        plural(locks.len(), "lock", "locks"),
        plural(waiting, "client", "clients"),
    ));
    lines.push(String::new());

    // Remember the longest lease seen per holding, for as long as it is listed.
    let mut still = Seen::with_capacity(locks.len());
    for info in locks {
        let id = (info.key.clone(), info.fencing_token);
        let longest = seen
            .get(&id)
            .copied()
            .max(info.ttl)
            .unwrap_or(Duration::ZERO);
        still.insert(id, longest);
    }
    *seen = still;

    let room = height.map(|h| h.saturating_sub(CHROME + 1).max(1));
    let shown = room.map_or(locks.len(), |r| locks.len().min(r));
    let now_ms = render::now_ms();
    let rows: Vec<Vec<String>> = locks[..shown]
        .iter()
        .map(|info| {
            let longest = seen
                .get(&(info.key.clone(), info.fencing_token))
                .copied()
                .unwrap_or_default();
            let lease = match info.ttl {
                Some(ttl) => {
                    let (bar, fraction) =
                        render::lease_bar(ttl, render::likely_lease(longest), BAR);
                    let bar = if color {
                        let tint = if fraction > 0.5 {
                            32 // green
                        } else if fraction > 0.2 {
                            33 // yellow
                        } else {
                            31 // red
                        };
                        format!("\x1b[{tint}m{bar}\x1b[0m")
                    } else {
                        bar
                    };
                    format!("{bar} {:>6}", render::short(ttl))
                }
                None => format!("{:BAR$}      -", ""),
            };
            vec![
                render::clean(&info.key),
                render::holder(info),
                render::label(info),
                info.fencing_token.to_string(),
                render::held_for(info, now_ms),
                lease,
                info.waiters.to_string(),
            ]
        })
        .collect();
    lines.extend(render::table(
        &[
            "KEY", "HOLDER", "LABEL", "FENCE", "HELD", "LEASE", "WAITERS",
        ],
        rows,
        &[48, 32, 24],
    ));
    if shown < locks.len() {
        lines.push(format!(
            "… and {} more (narrow the key prefix to see them)",
            locks.len() - shown
        ));
    }
    lines
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
