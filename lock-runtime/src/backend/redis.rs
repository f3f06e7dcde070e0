//! One Redis server: a multiplexed auto-reconnecting connection, EVALSHA scripts, and one
//! shared pub/sub connection per client for release notices.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use super::coalesce::{Coalescer, Op};
use super::deployment::{AcquireArgs, Attempt, Deployment, ListCursor, Release, Renewal, Wakeups};
use super::layout::{StoredLock, parse_stored, parse_value};
use super::link::Link;
use super::notices::{Event, Notices, Subscriber};
#[cfg(feature = "cluster")]
use super::script::RELEASE;
use super::script::{
    ACQUIRE, FORCE_RELEASE, LEAVE, PUT_BACK, RENEW, handoff_args, millis, parse_attempt,
};
use crate::info::LockInfo;
use crate::key::redact_url;
use crate::token::Token;
use crate::{BackendErrorKind, LockError};

pub(crate) struct RedisBackend {
    link: Arc<Link>,
    /// Acquires and releases, sent together when they wait on the connection together.
    coalescer: Coalescer,
    notices: OnceLock<Arc<Notices>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.link.url())
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
            reason: crate::key::url_error_reason(&e),
        })?;
        Self::over_client(client, redacted, command_timeout, eager).await
    }

    /// Over a `redis::Client` the application made: its settings (address, credentials,
    /// database, TLS, protocol) are kept; the connections are the library's own, made from
    /// it with the command timeout.
    pub(crate) async fn from_client(
        client: redis::Client,
        command_timeout: Duration,
    ) -> Result<Self, LockError> {
        let address = address(client.get_connection_info());
        Self::over_client(client, address, command_timeout, true).await
    }

    /// Over a [`ConnectionManager`] the application made, for every command (each still
    /// bounded by the command timeout). With the `client` it was made from, release notices
    /// get their own pub/sub connection and a manager broken for good is replaced; without
    /// it, waiters retry on the holder's lease and their backoff alone.
    pub(crate) fn from_manager(
        manager: ConnectionManager,
        client: Option<redis::Client>,
        command_timeout: Duration,
    ) -> Self {
        let url = client.as_ref().map_or_else(
            || "an application's ConnectionManager".to_owned(),
            |c| address(c.get_connection_info()),
        );
        Self::over_link(Link::new(
            client,
            manager_config(command_timeout),
            manager,
            url,
            command_timeout,
        ))
    }

    fn over_link(link: Link) -> Self {
        let link = Arc::new(link);
        Self {
            coalescer: Coalescer::new(link.clone()),
            link,
            notices: OnceLock::new(),
        }
    }

    async fn over_client(
        client: redis::Client,
        redacted: String,
        command_timeout: Duration,
        eager: bool,
    ) -> Result<Self, LockError> {
        let config = manager_config(command_timeout);
        // Made on the library's own runtime, so that the connection's tasks do not die with
        // the caller's.
        let conn = if eager {
            let (client, config) = (client.clone(), config.clone());
            crate::background::run(ConnectionManager::new_with_config(client, config))
                .await
                .ok_or_else(|| {
                    LockError::backend(BackendErrorKind::Connection, "no runtime to connect on")
                })?
        } else {
            crate::background::enter(|| {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            })
        }
        .map_err(|e| with_url(LockError::from_redis(e), &redacted))?;
        Ok(Self::over_link(Link::new(
            Some(client),
            config,
            conn,
            redacted,
            command_timeout,
        )))
    }

    /// The server's URL, password redacted.
    pub(crate) fn url(&self) -> &str {
        self.link.url()
    }

    /// Runs `op` on the connection (see [`Link::on_conn`]).
    async fn on_conn<T, F, Fut>(&self, op: F) -> Result<T, LockError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>>,
    {
        self.link.on_conn(op).await
    }

    /// An acquire that also reports how long this node has kept its data: `(attempt, boot
    /// marker, server clock)`, both in microseconds. For Redlock (which never queues).
    pub(crate) async fn acquire_with_boot(
        &self,
        args: &AcquireArgs<'_>,
        boot_key: &str,
    ) -> Result<(Attempt, u64, u64), LockError> {
        let reply = self
            .on_conn(|mut conn| async move { acquire_on(&mut conn, args, Some(boot_key)).await })
            .await?;
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
            .query_async(&mut self.link.conn())
            .await
            .map_err(LockError::from_redis)
    }

    /// One listing step: `SCAN` from `cursor` for `pattern`, then the values and leases of the
    /// keys found in one pipeline. The next cursor (0: done) and the held locks (keys full).
    pub(crate) async fn scan_page(
        &self,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<StoredLock>), LockError> {
        self.on_conn(|mut conn| async move {
            let (next, keys) = scan_on(&mut conn, cursor, pattern).await?;
            let locks = read_locks_on(&mut conn, keys).await?;
            Ok((next, locks.into_iter().flatten().collect()))
        })
        .await
    }

    /// The held locks at `keys` (in their order; `None` where none is held), one pipeline.
    pub(crate) async fn read_locks(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<StoredLock>>, LockError> {
        self.on_conn(|mut conn| async move { read_locks_on(&mut conn, keys.to_vec()).await })
            .await
    }

    /// The values stored at `keys` and when each runs out (unix ms, `PEXPIRETIME`), in their
    /// order, one pipeline; `None` where a key is missing, holds something else than a
    /// string, or has no end.
    pub(crate) async fn values_and_ends(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<(String, u64)>>, LockError> {
        self.on_conn(|mut conn| async move {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for key in keys {
                pipe.cmd("GET").arg(key).cmd("PEXPIRETIME").arg(key);
            }
            let replies: Vec<redis::Value> = pipe
                .query_async(&mut conn)
                .await
                .map_err(LockError::from_redis)?;
            Ok(replies
                .chunks(2)
                .map(|pair| {
                    let value = redis::from_redis_value_ref::<Option<String>>(&pair[0])
                        .ok()
                        .flatten()?;
                    let end = redis::from_redis_value_ref::<i64>(pair.get(1)?).ok()?;
                    Some((value, u64::try_from(end).ok()?))
                })
                .collect())
        })
        .await
    }

    /// Puts Redlock leases back on this node (`scripts/put_back.lua`): each `(key, value,
    /// end)` where the key holds nothing or another token's tombstone, until `end` (unix ms).
    pub(crate) async fn put_back(&self, copies: &[(String, String, u64)]) -> Result<(), LockError> {
        let keys: Vec<&str> = copies.iter().map(|(key, _, _)| key.as_str()).collect();
        let ends: Vec<String> = copies.iter().map(|(_, _, end)| end.to_string()).collect();
        let args: Vec<&str> = copies
            .iter()
            .zip(&ends)
            .flat_map(|((_, value, _), end)| [value.as_str(), end.as_str()])
            .collect();
        let (keys, args) = (&keys, &args);
        self.on_conn(|mut conn| async move {
            let _put: Vec<i64> = PUT_BACK.call(&mut conn, keys, args).await?;
            Ok(())
        })
        .await
    }

    /// Wake-ups for `key` that also wake `shared`: one wake-up for all of Redlock's nodes.
    /// See [`subscribe_with`](Self::subscribe_with).
    pub(crate) async fn subscribe_shared(
        &self,
        key: &str,
        waiter: &str,
        shared: Arc<Notify>,
    ) -> Result<Wakeups, LockError> {
        self.subscribe_with(key, waiter, Some(shared)).await
    }

    /// Wake-ups for `key` (also on `shared`, for Redlock), once subscribed. Fails at once
    /// while the subscriber connection is being (re)made, and within the command timeout
    /// otherwise; see [`Notices`].
    async fn subscribe_with(
        &self,
        key: &str,
        waiter: &str,
        shared: Option<Arc<Notify>>,
    ) -> Result<Wakeups, LockError> {
        let Some(notices) = self.notices(waiter) else {
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                "no release notices: a client built over a ConnectionManager alone cannot open \
                 a pub/sub connection (give it the redis::Client too)",
            ));
        };
        notices
            .wakeups(key, shared)
            .await
            .map_err(|e| with_url(e, self.link.url()))
    }

    /// The shared release notices, over a pub/sub connection of their own (made on first use,
    /// replaced when it dies or goes silent).
    fn notices(&self, waiter: &str) -> Option<Arc<Notices>> {
        let client = self.link.client()?;
        let notices = self
            .notices
            .get_or_init(|| {
                let client = client.clone();
                let url = self.link.url().to_owned();
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
                Notices::new(Box::new(connect), waiter, self.link.command_timeout())
            })
            .clone();
        Some(notices)
    }
}

impl Deployment for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let answer = self
            .coalescer
            .call(Op::Acquire {
                key: args.key.to_owned(),
                token: args.token.as_str().to_owned(),
                ttl_ms: millis(args.ttl).to_string(),
                owner: args.owner.to_owned(),
                waiter: args.waiter.unwrap_or("").to_owned(),
            })
            .await?;
        let reply: Vec<redis::Value> = own_answer(answer.value)?;
        parse_attempt(&reply, args.user_key)
    }

    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        let answer = self
            .coalescer
            .call(Op::Release {
                key: key.to_owned(),
                token: token.as_str().to_owned(),
            })
            .await?;
        match release_outcome(own_answer(answer.value)?) {
            // The copy that answered found the token gone; an earlier copy, whose answer was
            // lost with its connection, may have released it (and the lock moved on since).
            Release::NotHeld if answer.sent_again => Ok(Release::Unsure),
            released => Ok(released),
        }
    }

    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        let renewed = self
            .on_conn(|mut conn| async move { renew_on(&mut conn, batch).await })
            .await?;
        Ok(renewed.into_iter().map(Some).collect())
    }

    async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        self.on_conn(|mut conn| async move { leave_on(&mut conn, key, waiter, None).await })
            .await
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        self.on_conn(|mut conn| async move { inspect_on(&mut conn, key).await })
            .await
    }

    /// An operator's release.
    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        self.on_conn(|mut conn| async move { force_release_on(&mut conn, key, fence, None).await })
            .await
    }

    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        let (next, locks) = self.scan_page(at.cursor, &at.pattern).await?;
        at.advance(next, 1);
        Ok(locks.into_iter().map(|lock| lock.info).collect())
    }

    async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        self.subscribe_with(key, waiter, None).await
    }
}

/// Runs the acquire script on `conn` (a connection or a Cluster connection); `boot_key` for
/// Redlock. The raw reply; see [`parse_attempt`].
pub(crate) async fn acquire_on<C: ConnectionLike>(
    conn: &mut C,
    args: &AcquireArgs<'_>,
    boot_key: Option<&str>,
) -> Result<Vec<redis::Value>, LockError> {
    let waiter = match (args.waiter, boot_key) {
        (None, _) => "",
        // Redlock does not queue (queues on independent nodes could disagree).
        (Some(_), Some(_)) => "*",
        (Some(waiter), None) => waiter,
    };
    let ttl = millis(args.ttl).to_string();
    let argv = [args.token.as_str(), &ttl, args.owner, waiter];
    match boot_key {
        Some(boot_key) => ACQUIRE.call(conn, &[args.key, boot_key], &argv).await,
        None => ACQUIRE.call(conn, &[args.key], &argv).await,
    }
}

/// Runs the release script on `conn` (Redis Cluster, which publishes with `"SPUBLISH"`; one
/// server coalesces its releases, see [`Coalescer`]).
#[cfg(feature = "cluster")]
pub(crate) async fn release_on<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    token: &Token,
    publish: Option<&str>,
) -> Result<Release, LockError> {
    let [tombstone, reservation, publish] = handoff_args(publish);
    let released: i64 = RELEASE
        .call(
            conn,
            &[key],
            &[token.as_str(), &tombstone, &reservation, &publish],
        )
        .await?;
    Ok(release_outcome(released))
}

/// Runs the leave script on `conn`: `waiter` no longer waits for `key`.
pub(crate) async fn leave_on<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    waiter: &str,
    publish: Option<&str>,
) -> Result<(), LockError> {
    let [tombstone, reservation, publish] = handoff_args(publish);
    let _left: i64 = LEAVE
        .call(conn, &[key], &[waiter, &tombstone, &reservation, &publish])
        .await?;
    Ok(())
}

/// Runs the renew script on `conn` for the whole batch (one slot's keys on Redis Cluster).
pub(crate) async fn renew_on<C: ConnectionLike>(
    conn: &mut C,
    batch: &[Renewal<'_>],
) -> Result<Vec<bool>, LockError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = batch.iter().map(|r| r.key).collect();
    let ttls: Vec<String> = batch.iter().map(|r| millis(r.ttl).to_string()).collect();
    let args: Vec<&str> = batch
        .iter()
        .zip(&ttls)
        .flat_map(|(r, ttl)| [r.token.as_str(), ttl.as_str()])
        .collect();
    let reply: Vec<i64> = RENEW.call(conn, &keys, &args).await?;
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

/// Runs the force-release script on `conn`: releases `key` if it is held under `fence`; true
/// when it was.
pub(crate) async fn force_release_on<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    fence: u64,
    publish: Option<&str>,
) -> Result<bool, LockError> {
    let [tombstone, reservation, publish] = handoff_args(publish);
    let fence = format!("{fence:016}");
    let released: i64 = FORCE_RELEASE
        .call(conn, &[key], &[&fence, &tombstone, &reservation, &publish])
        .await?;
    Ok(release_outcome(released) != Release::NotHeld)
}

/// One operation's entry in a batch reply, read as `T`; an error entry is that operation's
/// error.
fn own_answer<T: redis::FromRedisValue>(answer: redis::Value) -> Result<T, LockError> {
    let answer = answer.extract_error().map_err(LockError::from_redis)?;
    redis::from_redis_value(answer).map_err(|e| LockError::from_redis(e.into()))
}

/// What the release and force-release scripts answer: 2 released to the next queued client,
/// 1 released, 0 not held.
fn release_outcome(answer: i64) -> Release {
    match answer {
        2 => Release::Notified,
        1 => Release::Released,
        _ => Release::NotHeld,
    }
}

/// Keys asked for per `SCAN` call when listing.
const SCAN_COUNT: usize = 1000;

/// `SCAN cursor MATCH pattern COUNT 1000 TYPE string`: lock values are strings, so the
/// server leaves other types out.
pub(crate) fn scan_command(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .arg("TYPE")
        .arg("string");
    cmd
}

/// Reads a `SCAN` reply: the next cursor and the keys (keys that are not UTF-8, which
/// distlock never writes, are left out).
pub(crate) fn parse_scan(reply: redis::Value) -> Result<(u64, Vec<String>), LockError> {
    let (cursor, keys): (String, Vec<Vec<u8>>) = redis::from_redis_value(reply).map_err(|e| {
        LockError::backend(
            BackendErrorKind::Server,
            format!("SCAN answered something unexpected: {e}"),
        )
    })?;
    let cursor = cursor.parse().map_err(|_| {
        LockError::backend(
            BackendErrorKind::Server,
            "SCAN answered a cursor that is not a number",
        )
    })?;
    let keys = keys
        .into_iter()
        .filter_map(|k| String::from_utf8(k).ok())
        .collect();
    Ok((cursor, keys))
}

/// One `SCAN` step on `conn`.
pub(crate) async fn scan_on<C: ConnectionLike>(
    conn: &mut C,
    cursor: u64,
    pattern: &str,
) -> Result<(u64, Vec<String>), LockError> {
    let reply = scan_command(cursor, pattern)
        .query_async(conn)
        .await
        .map_err(LockError::from_redis)?;
    parse_scan(reply)
}

/// `GET` and `PTTL` of every key, in one pipeline whose errors (such as `WRONGTYPE`) come
/// back per command.
pub(crate) fn read_locks_pipeline(keys: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for key in keys {
        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
    }
    pipe
}

/// Reads the replies to [`read_locks_pipeline`]: the held locks, in the order of `keys`,
/// `None` for a tombstone, a reservation, a missing key, a value distlock did not write, or
/// an error on that key. The keys in the answers are the full keys.
pub(crate) fn parse_reads(
    keys: Vec<String>,
    replies: &[redis::Value],
) -> Result<Vec<Option<StoredLock>>, LockError> {
    if replies.len() != 2 * keys.len() {
        return Err(LockError::backend(
            BackendErrorKind::Server,
            "a pipeline answered with the wrong number of replies",
        ));
    }
    Ok(keys
        .into_iter()
        .zip(replies.chunks_exact(2))
        .map(|(key, pair)| {
            let value = redis::from_redis_value_ref::<Option<Vec<u8>>>(&pair[0])
                .ok()
                .flatten()?;
            let pttl = redis::from_redis_value_ref::<i64>(&pair[1])
                .ok()
                .and_then(|p| u64::try_from(p).ok())
                .map(Duration::from_millis);
            let mut stored = parse_stored(std::str::from_utf8(&value).ok()?, pttl)?;
            stored.info.key = key;
            Some(stored)
        })
        .collect())
}

/// The held locks at `keys` on `conn`, one pipeline (see [`parse_reads`]).
pub(crate) async fn read_locks_on<C: ConnectionLike>(
    conn: &mut C,
    keys: Vec<String>,
) -> Result<Vec<Option<StoredLock>>, LockError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let replies: Vec<redis::Value> = read_locks_pipeline(&keys)
        .query_async(conn)
        .await
        .map_err(LockError::from_redis)?;
    parse_reads(keys, &replies)
}

/// How the library's connection managers are set up: every step bounded by the command
/// timeout, a few quick reconnect attempts.
fn manager_config(command_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(command_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_millis(500))
}

/// Where a `redis::Client` connects, as a URL without credentials.
fn address(info: &redis::ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        redis::ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}/{db}"),
        other => format!("redis+unix://{other}"),
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
