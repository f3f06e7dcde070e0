//! `distlock`: list, inspect, watch and release the locks that distlock holds in Redis.
//!
//! ```text
//! distlock list jobs:                      # the locks held under distlock:jobs:
//! distlock inspect jobs:nightly --json     # one lock, as JSON
//! distlock watch                           # a live table with lease bars and waiters
//! distlock release jobs:nightly --fence 1732380000123456
//! ```
//!
//! Exit codes: 0 done, 1 error, 2 usage, 3 not found (or not under that fence).

mod args;
mod connect;
mod redact;
mod render;
mod watch;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;
use distlock::{LockClient, LockError, LockInfo};
use futures_util::TryStreamExt;

use crate::args::{Cli, Command};

/// Why a command did not succeed, and so the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Exit 1: connection, server, or a declined confirmation.
    Error(String),
    /// Exit 2: the command cannot run as given.
    Usage(String),
    /// Exit 3: no lock held on the key, or not under that fence.
    NotFound(String),
    /// Standard output was closed (`distlock list | head`): stop quietly.
    Closed,
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Error(_) => 1,
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
        }
    }
}

impl From<LockError> for Failure {
    fn from(err: LockError) -> Self {
        // The runtime's messages carry no credentials (URLs are redacted).
        Self::Error(err.to_string())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap quotes the arguments it refuses: no password goes out with them.
            let text = redact::redact_text(&err.render().to_string());
            if err.use_stderr() {
                eprint!("{text}");
            } else {
                let _ = write_out(&text);
            }
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::Error(message) | Failure::Usage(message) | Failure::NotFound(message) => {
                    eprintln!("{}", redact::redact_urls(&format!("error: {message}")));
                }
                Failure::Closed => {}
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    // Refuse before connecting what cannot be confirmed.
    if let Command::Release { yes: false, .. } = cli.command
        && !std::io::stdin().is_terminal()
    {
        return Err(Failure::Usage(
            "release asks for confirmation and standard input is not a terminal: \
             pass --yes to release without asking"
                .into(),
        ));
    }
    let client = connect::connect(cli).await?;
    match &cli.command {
        Command::List { keys, json } => list(&client, keys, *json).await,
        Command::Inspect { key, json } => inspect(&client, key, *json).await,
        Command::Release { key, fence, yes } => release(&client, key, *fence, *yes).await,
        Command::Watch {
            keys,
            interval,
            once,
            iterations,
            json,
        } => {
            let watch = watch::Watch {
                target: connect::describe(cli),
                client_prefix: cli.prefix.clone(),
                prefix: keys.clone(),
                interval: *interval,
                frames: if *once { Some(1) } else { *iterations },
                json: *json,
            };
            watch::run(&client, watch).await
        }
    }
}

/// Every lock held under `prefix`, sorted by key.
pub(crate) async fn fetch(client: &LockClient, prefix: &str) -> Result<Vec<LockInfo>, LockError> {
    let mut locks: Vec<LockInfo> = client.list(prefix).try_collect().await?;
    locks.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    // SCAN may yield a key twice while the server resizes its table.
    locks.dedup_by(|a, b| a.key == b.key && a.fencing_token == b.fencing_token);
    Ok(locks)
}

async fn list(client: &LockClient, prefix: &str, json: bool) -> Result<(), Failure> {
    let locks = fetch(client, prefix).await?;
    if json {
        return write_out(&(render::json_array(&locks) + "\n"));
    }
    if locks.is_empty() {
        return write_out(&format!(
            "no locks held under \"{}{}\"\n",
            render::clean(client.prefix()),
            render::clean(prefix)
        ));
    }
    let now_ms = render::now_ms();
    let held = locks.len();
    let waiting: usize = locks.iter().map(|l| l.waiters).sum();
    let rows: Vec<Vec<String>> = locks
        .into_iter()
        .map(|info| {
            vec![
                render::clean(&info.key),
                info.fencing_token.to_string(),
                render::holder(&info),
                render::label(&info),
                render::held_for(&info, now_ms),
                render::ttl(&info),
                info.waiters.to_string(),
            ]
        })
        .collect();
    let lines = render::table(
        &[
            "KEY",
            "FENCE",
            "HOLDER",
            "LABEL",
            "HELD FOR",
            "LEASE LEFT",
            "WAITERS",
        ],
        rows,
        &[],
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| {
            writeln!(
                out,
                "{} held, {waiting} waiting",
                if held == 1 {
                    "1 lock".to_owned()
                } else {
                    format!("{held} locks")
                }
            )
        })
        .and_then(|()| out.flush());
    written.map_err(output_failure)
}

async fn inspect(client: &LockClient, key: &str, json: bool) -> Result<(), Failure> {
    let Some(info) = client.inspect(key).await? else {
        if json {
            write_out("null\n")?;
        }
        return Err(Failure::NotFound(format!(
            "no lock held on \"{}\"",
            render::clean(key)
        )));
    };
    if json {
        return write_out(&(render::json(&info) + "\n"));
    }
    let acquired = match info.acquired_at_ms {
        Some(ms) => format!(
            "{} ({} ago)",
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)),
            render::held_for(&info, render::now_ms())
        ),
        None => "?".to_owned(),
    };
    let pid = info.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
    let host = info
        .host
        .as_deref()
        .map_or_else(|| "?".to_owned(), render::clean);
    let text = [
        ("key", render::clean(&info.key)),
        ("fencing token", info.fencing_token.to_string()),
        ("label", render::label(&info)),
        ("host", host),
        ("pid", pid),
        ("acquired", acquired),
        ("lease left", render::ttl(&info)),
        ("waiters", info.waiters.to_string()),
        (
            "contended",
            if info.contended { "yes" } else { "no" }.to_owned(),
        ),
    ]
    .iter()
    .map(|(name, value)| format!("{name:<14} {value}\n"))
    .collect::<String>();
    write_out(&text)
}

async fn release(client: &LockClient, key: &str, fence: u64, yes: bool) -> Result<(), Failure> {
    let shown = render::clean(key);
    let info = client.inspect(key).await?.ok_or_else(|| {
        Failure::NotFound(format!("no lock held on \"{shown}\": nothing released"))
    })?;
    if info.fencing_token != fence {
        return Err(Failure::NotFound(format!(
            "\"{shown}\" is held under fence {}, not {fence}: nothing released",
            info.fencing_token
        )));
    }
    if !yes {
        eprint!(
            "Release \"{shown}\" (fence {fence}, held by {} [{}] for {})?\n\
             Its holder may still be running: it finds the lock lost at its next renewal.\n\
             Release? [y/N] ",
            render::holder(&info),
            render::label(&info),
            render::held_for(&info, render::now_ms()),
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Err(Failure::Error("not confirmed: nothing released".into()));
        }
    }
    if client.force_release(key, fence).await? {
        write_out(&format!("released \"{shown}\" (fence {fence})\n"))
    } else {
        Err(Failure::NotFound(format!(
            "\"{shown}\" is no longer held under fence {fence}: nothing released"
        )))
    }
}

/// Writes to standard output; a closed pipe ends the command quietly.
pub(crate) fn write_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(output_failure)
}

/// A closed pipe ends the command quietly; any other write error is an error.
fn output_failure(err: std::io::Error) -> Failure {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Error(format!("could not write the output: {err}"))
    }
}
