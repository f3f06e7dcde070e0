//! The command line: global connection options and the four commands.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// See, watch and clear the distributed locks that distlock keeps in Redis.
///
/// Connects to one Redis server (--url, or the REDIS_URL environment variable, or
/// redis://127.0.0.1:6379), a Sentinel-managed primary (--sentinel with --sentinel-url), a
/// Redis Cluster (--cluster) or Redlock nodes (--redlock). Passwords in URLs are never
/// printed.
///
/// Exit codes: 0 done; 1 an error (connection, server, a declined confirmation); 2 a usage
/// error (also: release without --yes when stdin is not a terminal); 3 not found (no lock
/// held on the key, or not under the fence given).
#[derive(Debug, Parser)]
#[command(
    name = "distlock",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) target: Target,

    /// The key prefix the applications use (LockClientBuilder::prefix).
    #[arg(long, global = true, default_value = distlock::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub(crate) prefix: String,

    /// The time limit for connecting and for each command (e.g. 500ms, 2s).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the locks are.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// A Redis server URL (redis:// or rediss://). Default: $REDIS_URL, else
    /// redis://127.0.0.1:6379.
    #[arg(long, global = true, value_name = "URL",
          conflicts_with_all = ["sentinel", "cluster", "redlock"])]
    pub(crate) url: Option<String>,

    /// Use the primary that Redis Sentinel knows by this name (with --sentinel-url). The
    /// primary's password, if any, is read from $DISTLOCK_PRIMARY_PASSWORD.
    #[arg(long, global = true, value_name = "MASTER", requires = "sentinel_urls",
          conflicts_with_all = ["cluster", "redlock"])]
    pub(crate) sentinel: Option<String>,

    /// A sentinel's URL (repeat for several).
    #[arg(
        long = "sentinel-url",
        global = true,
        value_name = "URL",
        requires = "sentinel"
    )]
    pub(crate) sentinel_urls: Vec<String>,

    /// A Redis Cluster node's URL (repeat for several).
    #[arg(long, global = true, value_name = "URL", conflicts_with = "redlock")]
    pub(crate) cluster: Vec<String>,

    /// A Redlock node's URL (repeat for each node).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) redlock: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the locks held under a key prefix, sorted by key.
    List {
        /// Only keys (without the application's --prefix) starting with this.
        #[arg(default_value = "", value_name = "PREFIX", hide_default_value = true)]
        keys: String,
        /// Print a JSON array of locks (shape: see the README).
        #[arg(long)]
        json: bool,
    },
    /// Show who holds one lock.
    Inspect {
        /// The key (without the application's --prefix).
        key: String,
        /// Print the lock as a JSON object, or null when it is not held.
        #[arg(long)]
        json: bool,
    },
    /// Release a lock held under a given fencing token (for a wedged holder).
    ///
    /// Only the holder shown with that fence is released; the holder finds its lock lost at
    /// its next renewal, and the next holder's fence is larger. Asks for confirmation on a
    /// terminal; without a terminal, --yes is required.
    Release {
        /// The key (without the application's --prefix).
        key: String,
        /// The fencing token the lock is held under (from list or inspect).
        #[arg(long, value_name = "N")]
        fence: u64,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// A live table of the locks held under a prefix: holder, fence, lease bar, waiters.
    Watch {
        /// Only keys (without the application's --prefix) starting with this.
        #[arg(default_value = "", value_name = "PREFIX", hide_default_value = true)]
        keys: String,
        /// Time between refreshes (e.g. 500ms, 2s).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Render one frame and exit.
        #[arg(long, conflicts_with = "iterations")]
        once: bool,
        /// Render this many frames and exit.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
        /// Print one JSON object per refresh, one per line (shape: see the README).
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}
