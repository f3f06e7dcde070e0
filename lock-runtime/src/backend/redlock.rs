//! Redlock: one lock over N independent Redis primaries, held when a majority grants it.
//!
//! Acquire asks every node at once with the same token; the lock is held when a majority of
//! *voting* nodes (below) granted it and the answers came back within the lease (less drift,
//! checked by the caller). Otherwise the nodes that did grant it are released again, and the
//! caller learns whether the key was busy or too few nodes could vote (a distinct error).
//! Release goes to all nodes, renewal too (held while a majority renews).
//!
//! # Nodes that lost their data
//!
//! A node that lost its data (restarted without persistence, flushed) could grant a lock that
//! is still held elsewhere. Every node therefore carries a boot marker, set by the first
//! acquire that finds it missing, and a node *votes* only once its marker is at least the
//! quarantine (the longest lease in use) old, measured on that node's own clock. By then every
//! lock it may have forgotten has expired. What the other nodes say does not matter: a node
//! that cannot vouch for its own past does not count, even if all nodes restarted together.
//!
//! An empty node cannot tell "brand new" from "restarted": so a brand-new deployment (or one
//! where every node restarted empty) grants no lock until one quarantine after its nodes were
//! first used. Acquires meanwhile fail with the quorum-unavailable error, not as busy. The
//! marker is kept per key prefix (`<prefix>__boot`), so a prefix used for the first time on
//! running nodes waits one quarantine too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;

use super::{AcquireArgs, Attempt, RedisBackend, Release, Renewal, Wakeups};
use crate::token::Token;
use crate::{BackendErrorKind, LockError, LockInfo};

#[derive(Debug)]
pub(crate) struct RedlockBackend {
    nodes: Vec<RedisBackend>,
    boot_key: String,
    quarantine: Duration,
}

impl RedlockBackend {
    /// Connects to every node; needs a majority reachable now (the rest connect later).
    pub(crate) async fn connect(
        urls: &[String],
        command_timeout: Duration,
        prefix: &str,
        quarantine: Duration,
    ) -> Result<Self, LockError> {
        if urls.is_empty() {
            return Err(LockError::InvalidUrl {
                url: String::new(),
                reason: "Redlock needs at least one node URL (three or more independent primaries in practice)".into(),
            });
        }
        let attempts = join_all(
            urls.iter()
                .map(|u| RedisBackend::connect(u, command_timeout)),
        )
        .await;
        let quorum = urls.len() / 2 + 1;
        let reachable = attempts.iter().filter(|a| a.is_ok()).count();
        let mut nodes = Vec::with_capacity(urls.len());
        let mut first_error = None;
        for (url, attempt) in urls.iter().zip(attempts) {
            match attempt {
                Ok(node) => nodes.push(node),
                Err(
                    err @ (LockError::InvalidUrl { .. }
                    | LockError::Backend {
                        kind: BackendErrorKind::Auth,
                        ..
                    }),
                ) => {
                    return Err(err);
                }
                Err(err) => {
                    tracing::warn!(%err, "Redlock node unreachable at startup; will retry on use");
                    first_error.get_or_insert(err);
                    nodes.push(RedisBackend::connect_lazy(url, command_timeout).await?);
                }
            }
        }
        if reachable < quorum {
            let detail = first_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "Redlock quorum unavailable: {reachable} of {} nodes reachable, {quorum} needed ({detail})",
                    urls.len()
                ),
            ));
        }
        Ok(Self {
            nodes,
            boot_key: format!("{prefix}__boot"),
            quarantine,
        })
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    pub(crate) async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let (key, token) = (args.key, args.token);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.acquire_with_boot(args, &self.boot_key)),
        )
        .await;
        // How long each answering node has kept its data.
        let ages: Vec<Option<u64>> = answers
            .iter()
            .map(|a| {
                a.as_ref()
                    .ok()
                    .map(|(_, boot, now)| now.saturating_sub(*boot))
            })
            .collect();
        // A node counts only once it has kept its data for the quarantine, on its own clock:
        // nodes that restarted empty together must not vouch for each other.
        let counts = |age: u64| age >= micros(self.quarantine);

        let mut granted = Vec::new();
        let mut fence = 0;
        let mut busy: Option<Option<Duration>> = None;
        let mut unavailable = 0;
        let mut first_error = None;
        for (i, (answer, age)) in answers.into_iter().zip(&ages).enumerate() {
            match answer {
                Ok((Attempt::Acquired { fence: f }, _, _)) => {
                    granted.push(i);
                    if age.is_some_and(counts) {
                        fence = fence.max(f);
                    } else {
                        unavailable += 1;
                    }
                }
                Ok((Attempt::Busy { pttl }, _, _)) => {
                    let shortest = match (busy.flatten(), pttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    busy = Some(shortest);
                }
                Err(err @ LockError::KeyConflict { .. }) => {
                    self.undo(&granted, key, token).await;
                    return Err(err);
                }
                Err(err) => {
                    unavailable += 1;
                    first_error.get_or_insert(err);
                }
            }
        }
        let counted = granted.len()
            - granted
                .iter()
                .filter(|&&i| !ages[i].is_some_and(counts))
                .count();
        if counted >= self.quorum() {
            return Ok(Attempt::Acquired { fence });
        }
        self.undo(&granted, key, token).await;
        if unavailable > self.nodes.len() - self.quorum() {
            let young = granted.len() - counted;
            let mut detail = String::new();
            if young > 0 {
                detail.push_str(&format!(
                    "; {young} kept their data for less than the quarantine ({:?})",
                    self.quarantine
                ));
            }
            if let Some(err) = first_error {
                detail.push_str(&format!("; {err}"));
            }
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "Redlock quorum unavailable: {} of {} nodes could vote, {} needed{detail}",
                    self.nodes.len() - unavailable,
                    self.nodes.len(),
                    self.quorum()
                ),
            ));
        }
        Ok(Attempt::Busy {
            pttl: busy.flatten(),
        })
    }

    /// Gives back a partial acquisition.
    async fn undo(&self, granted: &[usize], key: &str, token: &Token) {
        join_all(granted.iter().map(|&i| self.nodes[i].release(key, token))).await;
    }

    pub(crate) async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        let answers = join_all(self.nodes.iter().map(|n| n.release(key, token))).await;
        let released = answers
            .iter()
            .filter(|a| matches!(a, Ok(Release::Released | Release::Notified)))
            .count();
        if released >= self.quorum() {
            let notified = answers.iter().any(|a| matches!(a, Ok(Release::Notified)));
            return Ok(if notified {
                Release::Notified
            } else {
                Release::Released
            });
        }
        let not_held = answers
            .iter()
            .filter(|a| matches!(a, Ok(Release::NotHeld)))
            .count();
        if not_held > self.nodes.len() - self.quorum() {
            return Ok(Release::NotHeld);
        }
        match answers.into_iter().find_map(Result::err) {
            Some(err) => Err(err),
            None => Ok(Release::NotHeld),
        }
    }

    /// Per lease: held when a majority renewed it, lost when a majority says another token
    /// (or none) holds it, unknown otherwise (retried until the deadline).
    pub(crate) async fn renew(&self, batch: &[Renewal<'_>]) -> Vec<Option<bool>> {
        let answers = join_all(self.nodes.iter().map(|n| n.renew(batch))).await;
        (0..batch.len())
            .map(|i| {
                let yes = answers
                    .iter()
                    .filter(|a| matches!(a, Ok(v) if v.get(i) == Some(&true)))
                    .count();
                let no = answers
                    .iter()
                    .filter(|a| matches!(a, Ok(v) if v.get(i) == Some(&false)))
                    .count();
                if yes >= self.quorum() {
                    Some(true)
                } else if no > self.nodes.len() - self.quorum() {
                    Some(false)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The holder as the first node that knows one says.
    pub(crate) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        let answers = join_all(self.nodes.iter().map(|n| n.inspect(key))).await;
        let mut first_error = None;
        for answer in answers {
            match answer {
                Ok(Some(info)) => return Ok(Some(info)),
                Ok(None) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// Release notices from every node, on one shared wake-up.
    pub(crate) async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        let notify = Arc::new(Notify::new());
        let subscriptions = join_all(
            self.nodes
                .iter()
                .map(|n| n.subscribe(key, waiter, Some(notify.clone()))),
        )
        .await;
        let live: Vec<Wakeups> = subscriptions.into_iter().filter_map(Result::ok).collect();
        if live.is_empty() {
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                "no Redlock node accepted a subscription",
            ));
        }
        Ok(Wakeups::new(notify, live))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
