//! One Redis server: a multiplexed auto-reconnecting connection, EVALSHA scripts, and one
//! shared pub/sub connection per client for release notices.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use super::notices::{Event, Notices, Subscriber};
use super::{AcquireArgs, Attempt, RESERVATION, Release, Renewal, Wakeups, millis, parse_value};
use crate::key::redact_url;
use crate::token::Token;
use crate::{BackendErrorKind, LockError, LockInfo};

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/acquire.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/release.lua")));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/renew.lua")));

/// How long a released lock's tombstone keeps its fence.
const TOMBSTONE: Duration = Duration::from_secs(10);

pub(crate) struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    url: String,
    command_timeout: Duration,
    notices: OnceLock<Arc<Notices>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str, command_timeout: Duration) -> Result<Self, LockError> {
        Self::open(url, command_timeout, true).await
    }

    /// Like [`connect`](Self::connect), but the first connection is made on first use (a
    /// Redlock node that is down at startup).
    pub(crate) async fn connect_lazy(
        url: &str,
        command_timeout: Duration,
    ) -> Result<Self, LockError> {
        Self::open(url, command_timeout, false).await
    }

    async fn open(url: &str, command_timeout: Duration, eager: bool) -> Result<Self, LockError> {
        let redacted = redact_url(url);
        if url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(LockError::InvalidUrl {
                url: redacted,
                reason: "rediss:// needs the `tls` feature of distlock".into(),
            });
        }
        #[cfg(feature = "tls")]
        if url.starts_with("rediss://") {
            // rustls needs a crypto provider; use ring unless the application installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url).map_err(|e| LockError::InvalidUrl {
            url: redacted.clone(),
            reason: e.to_string().replace(url, &redacted),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(500));
        let conn = if eager {
            ConnectionManager::new_with_config(client.clone(), config).await
        } else {
            ConnectionManager::new_lazy_with_config(client.clone(), config)
        }
        .map_err(|e| with_url(LockError::from_redis(e), &redacted))?;
        Ok(Self {
            client,
            conn,
            url: redacted,
            command_timeout,
            notices: OnceLock::new(),
        })
    }

    /// The server's URL, password redacted.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let reply = acquire_on(&mut self.conn.clone(), args, None).await?;
        parse_attempt(&reply, args.user_key)
    }

    /// An acquire that also reports how long this node has kept its data: `(attempt, boot
    /// marker, server clock)`, both in microseconds. For Redlock (which never queues).
    pub(crate) async fn acquire_with_boot(
        &self,
        args: &AcquireArgs<'_>,
        boot_key: &str,
    ) -> Result<(Attempt, u64, u64), LockError> {
        let reply = acquire_on(&mut self.conn.clone(), args, Some(boot_key)).await?;
        let attempt = parse_attempt(&reply, args.user_key)?;
        let micros = |i: usize| {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
        };
        match (micros(2), micros(3)) {
            (Some(boot), Some(now)) => Ok((attempt, boot, now)),
            _ => Err(LockError::backend(
                BackendErrorKind::Server,
                "the acquire script answered without the node's boot marker",
            )),
        }
    }

    /// `WAIT replicas timeout`: how many replicas acknowledged the writes made so far on this
    /// connection.
    pub(crate) async fn wait_replicas(
        &self,
        replicas: usize,
        timeout: Duration,
    ) -> Result<usize, LockError> {
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(millis(timeout))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(LockError::from_redis)
    }

    pub(crate) async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        release_on(&mut self.conn.clone(), key, token, None).await
    }

    pub(crate) async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<bool>, LockError> {
        renew_on(&mut self.conn.clone(), batch).await
    }

    pub(crate) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        inspect_on(&mut self.conn.clone(), key).await
    }

    /// Wake-ups for `key` (also on `shared`, for Redlock), once subscribed. Fails at once
    /// while the subscriber connection is being (re)made, and within the command timeout
    /// otherwise; see [`Notices`].
    pub(crate) async fn subscribe(
        &self,
        key: &str,
        waiter: &str,
        shared: Option<Arc<Notify>>,
    ) -> Result<Wakeups, LockError> {
        self.notices(waiter)
            .wakeups(key, shared)
            .await
            .map_err(|e| with_url(e, &self.url))
    }

    /// The shared release notices, over a pub/sub connection of their own (made on first use,
    /// replaced when it dies or goes silent).
    fn notices(&self, waiter: &str) -> Arc<Notices> {
        self.notices
            .get_or_init(|| {
                let client = self.client.clone();
                let url = self.url.clone();
                let connect = move || {
                    let (client, url) = (client.clone(), url.clone());
                    Box::pin(async move {
                        let pubsub = client
                            .get_async_pubsub()
                            .await
                            .map_err(|e| with_url(LockError::from_redis(e), &url))?;
                        let (sink, stream) = pubsub.split();
                        let events = stream
                            .map(|msg| Event::Notice {
                                channel: msg.get_channel_name().to_owned(),
                                payload: msg.get_payload_bytes().to_vec(),
                            })
                            .boxed();
                        Ok((Subscriber::Plain(sink), events))
                    }) as _
                };
                Notices::new(Box::new(connect), waiter, self.command_timeout)
            })
            .clone()
    }
}

/// Runs the acquire script on `conn` (a connection or a Cluster connection); `boot_key` for
/// Redlock. The raw reply; see [`parse_attempt`].
pub(crate) async fn acquire_on<C: ConnectionLike>(
    conn: &mut C,
    args: &AcquireArgs<'_>,
    boot_key: Option<&str>,
) -> Result<Vec<redis::Value>, LockError> {
    let mut call = ACQUIRE.key(args.key);
    let waiter = match boot_key {
        Some(boot_key) => {
            call.key(boot_key);
            "" // Redlock does not queue
        }
        None => args.waiter,
    };
    call.arg(args.token.as_str())
        .arg(millis(args.ttl))
        .arg(args.owner)
        .arg(waiter);
    call.invoke_async(conn).await.map_err(LockError::from_redis)
}

/// Runs the release script on `conn`; `publish` is `"SPUBLISH"` on Redis Cluster.
pub(crate) async fn release_on<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    token: &Token,
    publish: Option<&str>,
) -> Result<Release, LockError> {
    let mut call = RELEASE.key(key);
    call.arg(token.as_str())
        .arg(millis(TOMBSTONE))
        .arg(millis(RESERVATION));
    if let Some(publish) = publish {
        call.arg(publish);
    }
    let released: i64 = call
        .invoke_async(conn)
        .await
        .map_err(LockError::from_redis)?;
    Ok(match released {
        2 => Release::Notified,
        1 => Release::Released,
        _ => Release::NotHeld,
    })
}

/// Runs the renew script on `conn` for the whole batch (one slot's keys on Redis Cluster).
pub(crate) async fn renew_on<C: ConnectionLike>(
    conn: &mut C,
    batch: &[Renewal<'_>],
) -> Result<Vec<bool>, LockError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = RENEW.prepare_invoke();
    for r in batch {
        call.key(r.key).arg(r.token.as_str()).arg(millis(r.ttl));
    }
    let reply: Vec<i64> = call
        .invoke_async(conn)
        .await
        .map_err(LockError::from_redis)?;
    Ok(reply.into_iter().map(|r| r == 1).collect())
}

/// Who holds `key`, read with `GET` and `PTTL` in one round trip.
pub(crate) async fn inspect_on<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
) -> Result<Option<LockInfo>, LockError> {
    let (value, pttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(key)
        .cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(LockError::from_redis)?;
    let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
    Ok(value.and_then(|v| parse_value(&v, ttl)))
}

/// Reads the acquire script's reply (see `scripts/acquire.lua`).
pub(crate) fn parse_attempt(reply: &[redis::Value], user_key: &str) -> Result<Attempt, LockError> {
    let int = |v: &redis::Value| redis::from_redis_value_ref::<i64>(v).ok();
    match reply {
        [status, fence, ..] if int(status) == Some(1) => {
            let fence = redis::from_redis_value_ref::<String>(fence)
                .ok()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| {
                    LockError::backend(
                        BackendErrorKind::Server,
                        "the acquire script answered without a fence",
                    )
                })?;
            Ok(Attempt::Acquired { fence })
        }
        [status, pttl, ..] if int(status) == Some(0) => Ok(Attempt::Busy {
            pttl: int(pttl)
                .and_then(|p| u64::try_from(p).ok())
                .map(Duration::from_millis),
        }),
        _ => Err(LockError::KeyConflict {
            key: user_key.to_owned(),
        }),
    }
}

fn with_url(err: LockError, url: &str) -> LockError {
    match err {
        LockError::Backend {
            kind,
            message,
            source,
        } => LockError::Backend {
            kind,
            message: format!("{message} (at {url})"),
            source,
        },
        other => other,
    }
}
