//! Redis Cluster: each lock lives in its key's slot; the redis crate's cluster client follows
//! MOVED/ASK redirections (resharding included); release notices go out on sharded channels
//! (`SPUBLISH` / `SSUBSCRIBE`) on the node owning the slot, never broadcast; the watchdog's
//! renewals are batched per slot (a script may only touch keys of one slot).
//!
//! When a slot moves, its node drops the sharded subscriptions of the slot's channels (an
//! `sunsubscribe` push); the subscriber subscribes each waited channel again, which the client
//! routes to the slot's new owner, and wakes its waiters so they retry at once.
//!
//! Replication to the slot's replicas is asynchronous. With
//! [`cluster_wait_replicas`](crate::LockClientBuilder::cluster_wait_replicas) an acquire is
//! followed by `WAIT` on the slot's primary and only succeeds once enough replicas have the
//! lock; otherwise it is released again and fails.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{ProtocolVersion, PushInfo, PushKind};
use tokio::sync::Notify;

use super::deployment::{
    AcquireArgs, Attempt, Deployment, ListCursor, ListState, Release, Renewal, Wakeups,
};
use super::notices::{Event, Notices, Subscriber};
use super::redis::{
    acquire_on, force_release_on, inspect_on, leave_on, parse_reads, parse_scan,
    read_locks_pipeline, release_on, renew_on, scan_command,
};
use super::script::{millis, parse_attempt};
use crate::info::LockInfo;
use crate::key::redact_url;
use crate::token::Token;
use crate::{BackendErrorKind, LockError};

pub(crate) struct ClusterBackend {
    conn: ClusterConnection,
    urls: Vec<String>,
    command_timeout: Duration,
    wait_replicas: Option<(usize, Duration)>,
    notices: OnceLock<Arc<Notices>>,
}

impl std::fmt::Debug for ClusterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("ClusterBackend")
            .field("nodes", &urls)
            .finish_non_exhaustive()
    }
}

fn client(
    urls: &[String],
    command_timeout: Duration,
    configure: impl FnOnce(redis::cluster::ClusterClientBuilder) -> redis::cluster::ClusterClientBuilder,
) -> Result<ClusterClient, LockError> {
    let builder = ClusterClient::builder(urls.to_vec())
        .connection_timeout(command_timeout)
        .response_timeout(command_timeout);
    configure(builder)
        .build()
        .map_err(|e| LockError::InvalidUrl {
            url: urls
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", "),
            reason: crate::key::url_error_reason(&e),
        })
}

impl ClusterBackend {
    pub(crate) async fn connect(
        urls: &[String],
        command_timeout: Duration,
        wait_replicas: Option<(usize, Duration)>,
    ) -> Result<Self, LockError> {
        if urls.is_empty() {
            return Err(LockError::InvalidUrl {
                url: String::new(),
                reason: "Redis Cluster needs at least one node URL".into(),
            });
        }
        let conn = client(urls, command_timeout, |b| b)?
            .get_async_connection()
            .await
            .map_err(LockError::from_redis)?;
        Ok(Self {
            conn,
            urls: urls.to_vec(),
            command_timeout,
            wait_replicas,
            notices: OnceLock::new(),
        })
    }

    /// `WAIT replicas timeout` on the primary owning `key`'s slot, over the connection that
    /// carried the acquire: how many of its replicas acknowledged the writes made so far.
    async fn wait_replicas(
        &self,
        key: &str,
        replicas: usize,
        timeout: Duration,
    ) -> Result<usize, LockError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(millis(timeout));
        let primary = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(key, SlotAddr::Master),
        ));
        let reply = self
            .conn
            .clone()
            .route_command(wait, primary)
            .await
            .map_err(LockError::from_redis)?;
        redis::from_redis_value::<usize>(reply).map_err(|e| {
            LockError::backend(
                BackendErrorKind::Server,
                format!("WAIT answered something other than a count: {e}"),
            )
        })
    }

    /// The addresses of the cluster's primaries, sorted.
    async fn primaries(&self) -> Result<Vec<(String, u16)>, LockError> {
        let every_primary = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self
            .conn
            .clone()
            .route_command(redis::cmd("PING"), every_primary)
            .await
            .map_err(LockError::from_redis)?;
        let unexpected = || {
            LockError::backend(
                BackendErrorKind::Server,
                "the cluster did not name its primaries",
            )
        };
        let redis::Value::Map(answers) = reply else {
            return Err(unexpected());
        };
        let mut primaries = Vec::with_capacity(answers.len());
        for (address, answer) in answers {
            if let redis::Value::ServerError(err) = answer {
                return Err(LockError::backend(
                    BackendErrorKind::Connection,
                    format!("a primary could not be reached to list its locks: {err:?}"),
                ));
            }
            let address: String = redis::from_redis_value(address).map_err(|_| unexpected())?;
            let (host, port) = address.rsplit_once(':').ok_or_else(unexpected)?;
            let port = port.parse().map_err(|_| unexpected())?;
            primaries.push((host.to_owned(), port));
        }
        primaries.sort();
        Ok(primaries)
    }

    /// The shared release notices, over a RESP3 cluster connection of their own whose pushes
    /// carry the sharded notices (made on first use, replaced when it dies or goes silent).
    fn notices(&self, waiter: &str) -> Arc<Notices> {
        self.notices
            .get_or_init(|| {
                let urls = self.urls.clone();
                let timeout = self.command_timeout;
                let connect = move || {
                    let urls = urls.clone();
                    Box::pin(async move {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        let conn = client(&urls, timeout, |b| {
                            b.use_protocol(ProtocolVersion::RESP3).push_sender(tx)
                        })?
                        .get_async_connection()
                        .await
                        .map_err(LockError::from_redis)?;
                        let pushes = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|push| (push, rx))
                        });
                        let events = pushes
                            .filter_map(|push| std::future::ready(event(push)))
                            .boxed();
                        Ok((Subscriber::Sharded(conn), events))
                    }) as _
                };
                Notices::new(Box::new(connect), waiter, self.command_timeout)
            })
            .clone()
    }
}

impl Deployment for ClusterBackend {
    fn kind(&self) -> &'static str {
        "cluster"
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let reply = acquire_on(&mut self.conn.clone(), args, None).await?;
        let attempt = parse_attempt(&reply, args.user_key)?;
        let (Attempt::Acquired { .. }, Some((replicas, timeout))) = (&attempt, self.wait_replicas)
        else {
            return Ok(attempt);
        };
        let acked = self.wait_replicas(args.key, replicas, timeout).await;
        if let Ok(acked) = acked
            && acked >= replicas
        {
            return Ok(attempt);
        }
        // Not (known to be) replicated: give it back rather than hold a lock that a failover
        // can lose. A failed release is retried in the background by the caller (the acquire
        // fails either way).
        if let Err(err) = release_on(
            &mut self.conn.clone(),
            args.key,
            args.token,
            Some("SPUBLISH"),
        )
        .await
        {
            tracing::debug!(%err, "releasing an unacknowledged lock failed");
        }
        Err(match acked {
            Ok(acked) => LockError::backend(
                BackendErrorKind::Timeout,
                format!(
                    "only {acked} of {replicas} replicas of the slot's primary acknowledged the lock on `{}` within {timeout:?}; released",
                    args.user_key
                ),
            ),
            Err(err) => err,
        })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        release_on(&mut self.conn.clone(), key, token, Some("SPUBLISH")).await
    }

    async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        leave_on(&mut self.conn.clone(), key, waiter, Some("SPUBLISH")).await
    }

    /// One script call per slot, all at once; a slot whose call failed is unknown.
    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, r) in batch.iter().enumerate() {
            by_slot.entry(slot(r.key)).or_default().push(i);
        }
        let calls = by_slot.values().map(|indices| {
            let group: Vec<Renewal<'_>> = indices
                .iter()
                .map(|&i| Renewal {
                    key: batch[i].key,
                    token: batch[i].token,
                    ttl: batch[i].ttl,
                })
                .collect();
            let mut conn = self.conn.clone();
            async move { renew_on(&mut conn, &group).await }
        });
        let replies = join_all(calls).await;
        let mut out = vec![None; batch.len()];
        for (indices, reply) in by_slot.values().zip(replies) {
            match reply {
                Ok(renewed) => {
                    for (&i, r) in indices.iter().zip(renewed) {
                        out[i] = Some(r);
                    }
                }
                Err(err) => tracing::debug!(%err, "renewing a slot's locks failed"),
            }
        }
        Ok(out)
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        inspect_on(&mut self.conn.clone(), key).await
    }

    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        force_release_on(&mut self.conn.clone(), key, fence, Some("SPUBLISH")).await
    }

    /// A listing page: `SCAN` on one primary at a time (the primaries are found on the first
    /// page), then the values of the keys found in one pipeline routed by key. A resharding
    /// during the listing may skip or repeat keys.
    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        if !matches!(at.state, ListState::Primaries(_)) {
            at.state = ListState::Primaries(self.primaries().await?);
        }
        let ListState::Primaries(primaries) = &at.state else {
            return Ok(Vec::new());
        };
        let Some((host, port)) = primaries.get(at.node).cloned() else {
            at.done = true;
            return Ok(Vec::new());
        };
        let count = primaries.len();
        let node = SingleNodeRoutingInfo::ByAddress { host, port };
        let mut conn = self.conn.clone();
        let reply = conn
            .route_command(
                scan_command(at.cursor, &at.pattern),
                RoutingInfo::SingleNode(node.clone()),
            )
            .await
            .map_err(LockError::from_redis)?;
        let (next, keys) = parse_scan(reply)?;
        // The keys are that node's: read them there, in one pipeline (a key whose slot moved
        // meanwhile answers an error and is passed over).
        let locks = if keys.is_empty() {
            Vec::new()
        } else {
            let pipe = read_locks_pipeline(&keys);
            let commands = 2 * keys.len();
            let replies = conn
                .route_pipeline(pipe, 0, commands, node)
                .await
                .map_err(LockError::from_redis)?;
            parse_reads(keys, &replies)?
        };
        at.advance(next, count);
        Ok(locks.into_iter().flatten().map(|lock| lock.info).collect())
    }

    async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        self.notices(waiter).wakeups(key, None::<Arc<Notify>>).await
    }
}

/// What a push from the cluster connection means for the waiters.
fn event(push: PushInfo) -> Option<Event> {
    let text = |i: usize| {
        push.data
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok())
    };
    match push.kind {
        PushKind::SMessage => Some(Event::Notice {
            channel: String::from_utf8_lossy(&text(0)?).into_owned(),
            payload: text(1)?,
        }),
        PushKind::SUnsubscribe => Some(Event::Dropped {
            channel: String::from_utf8_lossy(&text(0)?).into_owned(),
        }),
        PushKind::Disconnection => Some(Event::Interrupted),
        _ => None,
    }
}

/// The Cluster hash slot of `key`: CRC16 of the key, or of its first non-empty `{hash tag}`.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }
}
