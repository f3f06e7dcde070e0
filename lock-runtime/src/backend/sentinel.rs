//! A primary found through Redis Sentinel, followed across failovers.
//!
//! The redis crate asks Sentinel once; this backend asks again whenever the primary it talks
//! to fails (connection errors, or `READONLY` once it was demoted), switches to the new
//! primary and retries the command once. Held locks carry over only if the new primary has
//! them: a lock the failover lost is reported by the next renewal through `lost()`. With
//! [`replica acknowledgement`](crate::LockClientBuilder::sentinel_wait_replicas) an acquire
//! only succeeds once replicas have the lock, so it survives the failover.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::deployment::{AcquireArgs, Attempt, Deployment, ListCursor, Release, Renewal, Wakeups};
use super::redis::RedisBackend;
use crate::info::LockInfo;
use crate::key::redact_url;
use crate::token::Token;
use crate::{BackendErrorKind, LockError};

#[derive(Debug)]
pub(crate) struct SentinelBackend {
    primary: Arc<Primary>,
    wait_replicas: Option<(usize, Duration)>,
}

/// How to log in to the primary (sentinels and primaries usually have separate passwords).
#[derive(Clone, Default)]
pub(crate) struct PrimaryAuth {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for PrimaryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl PrimaryAuth {
    /// `redis://[user][:password@]host:port`, credentials percent-encoded.
    fn url(&self, host: &str, port: u16) -> String {
        let encode = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        let user = self.username.as_deref().map(encode).unwrap_or_default();
        match &self.password {
            Some(password) => format!("redis://{user}:{}@{host}:{port}", encode(password)),
            None if !user.is_empty() => format!("redis://{user}@{host}:{port}"),
            None => format!("redis://{host}:{port}"),
        }
    }
}

/// The primary in use, shared with the task that listens for `+switch-master`.
struct Primary {
    master: String,
    sentinels: Vec<String>,
    auth: PrimaryAuth,
    command_timeout: Duration,
    current: RwLock<(String, Arc<RedisBackend>)>,
    switching: tokio::sync::Mutex<()>,
}

impl SentinelBackend {
    pub(crate) async fn connect(
        master: &str,
        sentinels: &[String],
        command_timeout: Duration,
        wait_replicas: Option<(usize, Duration)>,
        auth: PrimaryAuth,
    ) -> Result<Self, LockError> {
        if sentinels.is_empty() {
            return Err(LockError::InvalidUrl {
                url: String::new(),
                reason: "Sentinel needs at least one sentinel URL".into(),
            });
        }
        let address = resolve(master, sentinels, &auth, command_timeout).await?;
        let node = RedisBackend::connect(&address, command_timeout).await?;
        let primary = Arc::new(Primary {
            master: master.to_owned(),
            sentinels: sentinels.to_vec(),
            auth,
            command_timeout,
            current: RwLock::new((address, Arc::new(node))),
            switching: tokio::sync::Mutex::new(()),
        });
        for url in sentinels {
            tokio::spawn(listen_for_switches(url.clone(), Arc::downgrade(&primary)));
        }
        Ok(Self {
            primary,
            wait_replicas,
        })
    }

    /// Runs `op` on the primary; when it fails the way a failover makes things fail, follows
    /// the primary and, if it moved, runs it once more on the new one.
    ///
    /// Not again on the same primary, nor on the same server reached anew (the primary moved
    /// away and back): its failure was its own (a timeout, a dropped connection the link
    /// already retried), and the first copy may still land there. Sent again with the same
    /// token, an acquire would then race the release owed for that first copy (its caller,
    /// this call, went away) and could be released under its holder.
    async fn on_primary<T, F, Fut>(&self, op: F) -> Result<T, LockError>
    where
        F: Fn(Arc<RedisBackend>) -> Fut,
        Fut: Future<Output = Result<T, LockError>>,
    {
        let node = self.primary.node();
        match op(node.clone()).await {
            Err(err) if failover_symptom(&err) => {
                let next = self.primary.follow(&node).await?;
                if Arc::ptr_eq(&next, &node) || next.url() == node.url() {
                    return Err(err);
                }
                op(next).await
            }
            other => other,
        }
    }
}

/// Every operation runs on the current primary, following it across a failover (see
/// [`on_primary`](SentinelBackend::on_primary)).
impl Deployment for SentinelBackend {
    fn kind(&self) -> &'static str {
        "sentinel"
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let (key, token) = (args.key, args.token);
        self.on_primary(|node| async move {
            let attempt = node.acquire(args).await?;
            let (Attempt::Acquired { .. }, Some((replicas, timeout))) = (&attempt, self.wait_replicas)
            else {
                return Ok(attempt);
            };
            let acked = node.wait_replicas(replicas, timeout).await?;
            if acked >= replicas {
                return Ok(attempt);
            }
            let _ = node.release(key, token).await;
            Err(LockError::backend(
                BackendErrorKind::Timeout,
                format!("only {acked} of {replicas} replicas acknowledged the lock within {timeout:?}; released"),
            ))
        })
        .await
    }

    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        self.on_primary(|node| async move { node.release(key, token).await })
            .await
    }

    async fn leave(&self, key: &str, waiter: &str) -> Result<(), LockError> {
        self.on_primary(|node| async move { node.leave(key, waiter).await })
            .await
    }

    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        self.on_primary(|node| async move { node.renew(batch).await })
            .await
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        self.on_primary(|node| async move { node.inspect(key).await })
            .await
    }

    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        self.on_primary(|node| async move { node.force_release(key, fence).await })
            .await
    }

    /// A listing page from the current primary. After a failover the listing goes on with
    /// the same cursor on the new primary: keys may then be skipped or repeated.
    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        let (cursor, pattern) = (at.cursor, at.pattern.as_str());
        let (next, locks) = self
            .on_primary(|node| async move { node.scan_page(cursor, pattern).await })
            .await?;
        at.advance(next, 1);
        Ok(locks.into_iter().map(|lock| lock.info).collect())
    }

    async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        self.on_primary(|node| async move { node.subscribe(key, waiter).await })
            .await
    }
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sentinels: Vec<String> = self.sentinels.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("Primary")
            .field("master", &self.master)
            .field("sentinels", &sentinels)
            .field("auth", &self.auth)
            .field("current", &self.node())
            .finish_non_exhaustive()
    }
}

impl Primary {
    fn node(&self) -> Arc<RedisBackend> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Asks the sentinels for the primary again and switches to it if it moved.
    async fn follow(&self, failed: &Arc<RedisBackend>) -> Result<Arc<RedisBackend>, LockError> {
        let _one_at_a_time = self.switching.lock().await;
        let current = self.node();
        if !Arc::ptr_eq(&current, failed) {
            return Ok(current); // another call already switched
        }
        let address = resolve(
            &self.master,
            &self.sentinels,
            &self.auth,
            self.command_timeout,
        )
        .await?;
        self.switch_to(address, current).await
    }

    async fn switch_to(
        &self,
        address: String,
        current: Arc<RedisBackend>,
    ) -> Result<Arc<RedisBackend>, LockError> {
        let known = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        if address == known {
            return Ok(current);
        }
        tracing::warn!(primary = %redact_url(&address), "Sentinel names a new primary; switching");
        let node = Arc::new(RedisBackend::connect(&address, self.command_timeout).await?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (address, node.clone());
        Ok(node)
    }
}

/// Follows `+switch-master` announcements of one sentinel, reconnecting when it drops, until
/// the client is gone. Errors on the primary make the client ask again anyway; this makes the
/// switch prompt while the old primary still answers (it keeps accepting writes until
/// Sentinel reconfigures it).
async fn listen_for_switches(url: String, primary: std::sync::Weak<Primary>) {
    use futures_util::StreamExt;
    loop {
        let Some(timeout) = primary.upgrade().map(|p| p.command_timeout) else {
            return;
        };
        let subscribed = async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut pubsub = client.get_async_pubsub().await.ok()?;
            pubsub.subscribe("+switch-master").await.ok()?;
            Some(pubsub)
        };
        if let Ok(Some(pubsub)) = tokio::time::timeout(timeout, subscribed).await {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(primary) = primary.upgrade() else {
                    return;
                };
                let text: String = msg.get_payload().unwrap_or_default();
                // "<name> <old-ip> <old-port> <new-ip> <new-port>"
                let fields: Vec<&str> = text.split(' ').collect();
                if let [name, _, _, ip, port] = fields.as_slice()
                    && *name == primary.master
                {
                    let Ok(port) = port.parse() else { continue };
                    let address = primary.auth.url(ip, port);
                    let _one_at_a_time = primary.switching.lock().await;
                    let current = primary.node();
                    if let Err(err) = primary.switch_to(address, current).await {
                        tracing::warn!(%err, "could not connect to the new primary yet");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Connection trouble, or a primary that was demoted to a replica.
fn failover_symptom(err: &LockError) -> bool {
    match err {
        LockError::Backend { kind, message, .. } => {
            matches!(
                kind,
                BackendErrorKind::Connection | BackendErrorKind::Timeout
            ) || message.contains("READONLY")
        }
        _ => false,
    }
}

/// The primary's address according to the first sentinel that knows it.
async fn resolve(
    master: &str,
    sentinels: &[String],
    auth: &PrimaryAuth,
    timeout: Duration,
) -> Result<String, LockError> {
    let mut last_error = None;
    for url in sentinels {
        let asked = async {
            let client = redis::Client::open(url.as_str()).map_err(|e| LockError::InvalidUrl {
                url: redact_url(url),
                reason: crate::key::url_error_reason(&e),
            })?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(LockError::from_redis)?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
                .map_err(LockError::from_redis)
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(Some((host, port)))) => return Ok(auth.url(&host, port)),
            Ok(Ok(None)) => {
                last_error = Some(format!(
                    "{} does not know a primary named `{master}`",
                    redact_url(url)
                ));
            }
            Ok(Err(err @ LockError::InvalidUrl { .. })) => return Err(err),
            Ok(Err(err)) => last_error = Some(format!("{}: {err}", redact_url(url))),
            Err(_) => {
                last_error = Some(format!("{}: no answer within {timeout:?}", redact_url(url)))
            }
        }
    }
    Err(LockError::backend(
        BackendErrorKind::Connection,
        format!(
            "no sentinel could name the primary `{master}`: {}",
            last_error.unwrap_or_default()
        ),
    ))
}
