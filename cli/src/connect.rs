//! A [`LockClient`] for the deployment named on the command line.

use distlock::{LockClient, LockError};

use crate::args::Cli;

/// Where `REDIS_URL` is unset and nothing else is named.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// What the tool talks to, for headers (passwords redacted).
pub(crate) fn describe(cli: &Cli) -> String {
    let target = &cli.target;
    let list = |urls: &[String]| {
        urls.iter()
            .map(|u| distlock::redact_url(u))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(master) = &target.sentinel {
        format!("sentinel `{master}` via {}", list(&target.sentinel_urls))
    } else if !target.cluster.is_empty() {
        format!("cluster {}", list(&target.cluster))
    } else if !target.redlock.is_empty() {
        format!("redlock {}", list(&target.redlock))
    } else {
        distlock::redact_url(&url(cli))
    }
}

fn url(cli: &Cli) -> String {
    cli.target
        .url
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

pub(crate) async fn connect(cli: &Cli) -> Result<LockClient, LockError> {
    let target = &cli.target;
    let builder = LockClient::builder()
        .prefix(cli.prefix.clone())
        .command_timeout(cli.timeout);
    let builder = if let Some(master) = &target.sentinel {
        let builder = builder.sentinel(master.clone(), target.sentinel_urls.clone());
        match std::env::var("DISTLOCK_PRIMARY_PASSWORD") {
            Ok(password) if !password.is_empty() => builder.sentinel_primary_auth(
                std::env::var("DISTLOCK_PRIMARY_USER")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .as_deref(),
                &password,
            ),
            _ => builder,
        }
    } else if !target.cluster.is_empty() {
        builder.cluster(target.cluster.clone())
    } else if !target.redlock.is_empty() {
        builder.redlock(target.redlock.clone())
    } else {
        builder.url(url(cli))
    };
    builder.build().await
}
