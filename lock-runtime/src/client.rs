//! [`LockClient`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    Backend, Deployment, MemoryBackend, PrimaryAuth, RedisBackend, RedlockBackend, SentinelBackend,
};
use crate::key::{validate_key, validate_ttl};
use crate::metrics::KeyLabeller;
use crate::state::ClientState;
use crate::token::OwnerLabel;
use crate::{LockError, LockInfo, LockList, LockRequest, MemoryStore};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "distlock:";
/// The default lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The default time limit for one backend command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle to a lock backend: cheap to clone (the state is shared behind an `Arc`),
/// `Send + Sync + 'static`.
///
/// Each client runs one watchdog task that renews all of its held locks and, when waiting is
/// needed, one shared connection for release notices.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// use distlock::LockClient;
///
/// let client = match std::env::var("REDIS_URL") {
///     Ok(url) => LockClient::connect(&url).await?,
///     Err(_) => LockClient::memory(),
/// };
/// let guard = client.lock("invoice:42").ttl(Duration::from_secs(10)).await?;
/// println!("holding {} with fence {}", guard.key(), guard.fencing_token());
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LockClient {
    state: Arc<ClientState>,
}

impl std::fmt::Debug for LockClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockClient")
            .field("backend", self.state.backend())
            .field("prefix", &self.state.prefix())
            .field("default_ttl", &self.state.default_ttl())
            .finish_non_exhaustive()
    }
}

impl LockClient {
    /// Connects to one Redis server (`redis://` or, with the `tls` feature, `rediss://`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::connect("redis://127.0.0.1:6379").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidUrl`] for a URL that does not parse (password redacted);
    /// [`LockError::Backend`] when the server refuses the connection or the credentials.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        Self::builder().url(url).build().await
    }

    /// A client over a fresh in-process store: same semantics (leases, fencing, waiting),
    /// no Redis. For tests, demos and single-process programs.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = distlock::LockClient::memory();
    /// assert_eq!(client.held_locks(), 0);
    /// ```
    pub fn memory() -> Self {
        Self::from_parts(
            Backend::Memory(MemoryBackend::new(MemoryStore::new())),
            DEFAULT_PREFIX.to_owned(),
            DEFAULT_TTL,
            DEFAULT_COMMAND_TIMEOUT,
            None,
            None,
        )
    }

    /// A builder for the key prefix, the default lease and the backend.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::builder()
    ///     .prefix("billing:locks:")
    ///     .default_ttl(Duration::from_secs(5))
    ///     .memory(distlock::MemoryStore::new())
    ///     .build()
    ///     .await?;
    /// assert_eq!(client.prefix(), "billing:locks:");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> LockClientBuilder {
        LockClientBuilder::default()
    }

    fn from_parts(
        backend: Backend,
        prefix: String,
        default_ttl: Duration,
        command_timeout: Duration,
        key_labeller: Option<Arc<KeyLabeller>>,
        label: Option<OwnerLabel>,
    ) -> Self {
        Self {
            state: Arc::new(
                ClientState::new(backend, prefix, default_ttl, command_timeout, key_labeller)
                    .with_label(label),
            ),
        }
    }

    /// Starts a request for the lock `key`; configure it, then `.await` it for a
    /// [`LockGuard`](crate::LockGuard).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let guard = client
    ///     .lock("nightly-report")
    ///     .ttl(Duration::from_secs(60))
    ///     .wait(Duration::from_secs(5))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(&self, key: impl Into<String>) -> LockRequest {
        LockRequest::new(self.state.clone(), key.into())
    }

    /// Who holds `key` right now, if anyone: fencing token, host, pid, since when, how long.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// assert!(client.inspect("job").await?.is_none());
    /// let guard = client.lock("job").await?;
    /// let info = client.inspect("job").await?.expect("held");
    /// assert_eq!(info.fencing_token, guard.fencing_token());
    /// assert_eq!(info.pid, Some(std::process::id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] and backend failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        validate_key(key)?;
        let info = self
            .state
            .backend()
            .inspect(&self.state.full_key(key))
            .await?;
        Ok(info.map(|mut info| {
            key.clone_into(&mut info.key);
            info
        }))
    }

    /// The locks held now whose key (without the client's prefix) starts with `prefix` (`""`:
    /// all of them), as a [`Stream`](futures_util::Stream) of `Result<LockInfo, LockError>`:
    /// key, holder (label, host, pid), acquired-at, remaining lease, fence, queued waiters.
    ///
    /// Read with `SCAN`, never `KEYS`, in pages of about a thousand keys whose values and
    /// leases come in one round trip each; only one page is in memory at a time, so listing
    /// a hundred thousand locks is fine. Tombstones, reservations and values distlock did not
    /// write are passed over. It is not a snapshot: a lock taken or released while the
    /// listing runs may or may not be in it, and `SCAN` may yield a key twice when the server
    /// resizes its table meanwhile; a lock held throughout is listed.
    ///
    /// Per deployment: one Redis server; Sentinel: the current primary; Redis Cluster: every
    /// primary, one after the other; Redlock: a lock whose key a majority of nodes hold with
    /// the same token (its fence is the largest of theirs, its lease what remains until fewer
    /// than a majority hold it); in-process: the store.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use futures_util::StreamExt;
    ///
    /// let client = distlock::LockClient::memory();
    /// let _guard = client.lock("jobs:nightly").label("scheduler").await?;
    /// let mut locks = client.list("jobs:");
    /// while let Some(info) = locks.next().await {
    ///     let info = info?;
    ///     println!("{} held by {:?} (fence {})", info.key, info.label, info.fencing_token);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Items are errors when the backend fails (the stream then ends), and the one item is
    /// [`LockError::InvalidKey`] for a prefix that could not start a key (longer than
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN), control characters).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads; dropping the stream leaves nothing behind on the server.
    pub fn list(&self, prefix: &str) -> LockList {
        LockList::new(self.state.backend().clone(), self.state.prefix(), prefix)
    }

    /// Releases the lock on `key` if it is still held under `fencing_token` (as
    /// [`inspect`](Self::inspect) or [`list`](Self::list) showed it): for an operator clearing
    /// a lock left by a wedged holder. True when it was released, false when the key is not
    /// held under that fence any more (released, expired, or taken again: nothing is touched).
    ///
    /// It ends the lock as its holder's release would: the fence stays remembered, so the
    /// next holder's fence is larger; a queued waiter is notified at once. The holder finds
    /// the lock lost at its next renewal ([`LockGuard::lost`](crate::LockGuard::lost)), but
    /// until then it may still believe it holds it: writes it makes meanwhile are stopped
    /// only by a store that checks fences.
    ///
    /// On Redlock fences are per node: the fence of any node holding the acquisition names
    /// it, every node holding it releases it, and true means a majority did. Pass the fence
    /// [`inspect`](Self::inspect) reports: the holder's own fencing token names it only while
    /// the node that gave that fence keeps its copy (a copy lost and put back carries another
    /// node's fence).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let wedged = client.lock("import").ttl(std::time::Duration::from_millis(300)).await?;
    /// let info = client.inspect("import").await?.unwrap();
    /// assert!(!client.force_release("import", info.fencing_token + 1).await?); // not that one
    /// assert!(client.force_release("import", info.fencing_token).await?);
    /// wedged.lost().await; // found at its next renewal
    /// let next = client.lock("import").await?;
    /// assert!(next.fencing_token() > info.fencing_token);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] and backend failures (on Redlock: when too few nodes answer to
    /// tell).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that a dropped call may still have released the lock on
    /// the server (one script call per node); it never releases anything but the lock held
    /// under that fence.
    pub async fn force_release(&self, key: &str, fencing_token: u64) -> Result<bool, LockError> {
        validate_key(key)?;
        self.state
            .backend()
            .force_release(&self.state.full_key(key), fencing_token)
            .await
    }

    /// How many locks this client holds right now (leases its watchdog tracks).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let guard = client.lock("a").await?;
    /// assert_eq!(client.held_locks(), 1);
    /// guard.release().await?;
    /// assert_eq!(client.held_locks(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn held_locks(&self) -> usize {
        self.state.watchdog().len()
    }

    /// The prefix put before every key.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(distlock::LockClient::memory().prefix(), "distlock:");
    /// ```
    pub fn prefix(&self) -> &str {
        self.state.prefix()
    }

    /// The lease used when a request sets none.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(distlock::LockClient::memory().default_ttl().as_secs(), 30);
    /// ```
    pub fn default_ttl(&self) -> Duration {
        self.state.default_ttl()
    }

    pub(crate) fn full_key(&self, key: &str) -> String {
        self.state.full_key(key)
    }

    /// The shared state of this client (the same for all its handles).
    pub(crate) fn state(&self) -> &Arc<ClientState> {
        &self.state
    }
}

/// Configures a [`LockClient`]: backend, key prefix, default lease, command timeout.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::builder()
///     .url("redis://127.0.0.1:6379")
///     .prefix("myapp:locks:")
///     .default_ttl(Duration::from_secs(10))
///     .command_timeout(Duration::from_millis(500))
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until .build().await"]
pub struct LockClientBuilder {
    prefix: String,
    default_ttl: Duration,
    command_timeout: Duration,
    quarantine: Option<Duration>,
    wait_replicas: Option<(usize, Duration)>,
    #[cfg(feature = "cluster")]
    cluster_wait_replicas: Option<(usize, Duration)>,
    primary_auth: PrimaryAuth,
    key_labeller: Option<Arc<KeyLabeller>>,
    label: Option<OwnerLabel>,
    target: Target,
}

enum Target {
    None,
    Url(String),
    /// An application's own connection objects: a `redis::Client`, a `ConnectionManager`,
    /// or both.
    Existing {
        client: Option<redis::Client>,
        manager: Option<redis::aio::ConnectionManager>,
    },
    Redlock(Vec<String>),
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    Memory(MemoryStore),
}

/// Passwords never show: URLs are redacted (`redis://user:***@host`), and so are the
/// Sentinel primary's credentials.
impl std::fmt::Debug for LockClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockClientBuilder")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("command_timeout", &self.command_timeout)
            .field("quarantine", &self.quarantine)
            .field("wait_replicas", &self.wait_replicas)
            .field("primary_auth", &self.primary_auth)
            .field("custom_key_label", &self.key_labeller.is_some())
            .field("label", &self.label)
            .finish()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::key::redact_url;
        let redacted = |urls: &[String]| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>();
        match self {
            Self::None => f.write_str("None"),
            Self::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            // Never the client's own Debug: it would show the credentials.
            Self::Existing { client, manager } => f
                .debug_struct("Existing")
                .field("redis_client", &client.is_some())
                .field("connection_manager", &manager.is_some())
                .finish(),
            Self::Redlock(urls) => f.debug_tuple("Redlock").field(&redacted(urls)).finish(),
            Self::Sentinel { master, sentinels } => f
                .debug_struct("Sentinel")
                .field("master", master)
                .field("sentinels", &redacted(sentinels))
                .finish(),
            #[cfg(feature = "cluster")]
            Self::Cluster(urls) => f.debug_tuple("Cluster").field(&redacted(urls)).finish(),
            Self::Memory(store) => f.debug_tuple("Memory").field(store).finish(),
        }
    }
}

impl Default for LockClientBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            quarantine: None,
            wait_replicas: None,
            #[cfg(feature = "cluster")]
            cluster_wait_replicas: None,
            primary_auth: PrimaryAuth::default(),
            key_labeller: None,
            label: None,
            target: Target::None,
        }
    }
}

impl LockClientBuilder {
    /// Use one Redis server at `url`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().url("redis://127.0.0.1:6379/0");
    /// ```
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Target::Url(url.into());
        self
    }

    /// Use one Redis server through a `redis::Client` you already have (its address,
    /// credentials, database, TLS and protocol settings are kept). The library makes its own
    /// connections from it: a multiplexed command connection on its background runtime,
    /// bounded by the [command timeout](Self::command_timeout), and one pub/sub connection
    /// for release notices when a request waits.
    ///
    /// Combined with [`connection_manager`](Self::connection_manager), commands go through
    /// that manager and the client only opens the pub/sub connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = redis::Client::open("redis://127.0.0.1:6379")?; // the application's own
    /// let locks = distlock::LockClient::builder().redis_client(redis).build().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_client(mut self, client: redis::Client) -> Self {
        let manager = match self.target {
            Target::Existing { manager, .. } => manager,
            _ => None,
        };
        self.target = Target::Existing {
            client: Some(client),
            manager,
        };
        self
    }

    /// Send every lock command through a `redis::aio::ConnectionManager` you already have
    /// (one connection shared with the rest of the application). Each command is still
    /// bounded by the [command timeout](Self::command_timeout), whatever timeouts the
    /// manager was configured with.
    ///
    /// A manager cannot open the pub/sub connection that release notices need: also give the
    /// `redis::Client` it was made from with [`redis_client`](Self::redis_client), or a
    /// request that waits for a busy lock retries when the holder's lease runs out and on a
    /// jittered backoff (25 ms doubling to 1 s) instead of being woken by the release.
    /// With the client, a manager that broke for good (its runtime shut down) is also
    /// replaced by one of the library's own; without it, commands then fail.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let manager = redis::aio::ConnectionManager::new(redis.clone()).await?; // the application's
    /// let locks = distlock::LockClient::builder()
    ///     .connection_manager(manager)
    ///     .redis_client(redis) // for release notices
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection_manager(mut self, manager: redis::aio::ConnectionManager) -> Self {
        let client = match self.target {
            Target::Existing { client, .. } => client,
            _ => None,
        };
        self.target = Target::Existing {
            client,
            manager: Some(manager),
        };
        self
    }

    /// Use Redlock over several independent Redis primaries (not replicas of each other, not
    /// a Cluster): a lock is held when a majority of them grant it. See the
    /// [guarantees](crate::guarantees) for what that does and does not promise; fencing
    /// tokens are then per-node server clocks, not one counter. A slow or frozen node costs
    /// an acquire or renewal at most `min(command timeout, lease / 10)`. A brand-new
    /// deployment grants locks only after one [quarantine](Self::redlock_quarantine).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().redlock([
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ]);
    /// ```
    pub fn redlock<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.target = Target::Redlock(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Redlock only: how long a node must have kept its data before it votes, so that every
    /// lock a node that lost its data (restarted without persistence, flushed) forgot has
    /// expired first. Set it to your longest lease; default: the default TTL. A lease
    /// longer than the quarantine (a request's `ttl`, an `extend`) is refused with
    /// [`LockError::InvalidDuration`]: it could be granted twice.
    ///
    /// Each node measures this on its own clock from the boot marker the first acquire wrote
    /// on it, whatever the other nodes say. An empty node cannot tell whether it is brand new
    /// or restarted, so a brand-new deployment grants no lock (acquires fail with "quorum
    /// unavailable", not as busy) until one quarantine after its first use. The marker is
    /// kept per key prefix: a new prefix waits one quarantine too.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .redlock(["redis://a:6379", "redis://b:6379", "redis://c:6379"])
    ///     .redlock_quarantine(std::time::Duration::from_secs(60));
    /// ```
    pub fn redlock_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = Some(quarantine);
        self
    }

    /// Use Redis Cluster, starting from any of `urls` (feature `cluster`). Each lock lives in
    /// its key's slot; redirections and resharding are followed; release notices use sharded
    /// channels; renewals are batched per slot.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.target = Target::Cluster(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Cluster only: an acquire succeeds only once `replicas` replicas of the slot's primary
    /// acknowledged it (`WAIT` on that primary) within `timeout`; otherwise it is released and
    /// fails with a [`LockError::Backend`] of kind
    /// [`Timeout`](crate::BackendErrorKind::Timeout). A lock acknowledged this way survives a
    /// failover to one of those replicas; without it, a failover to a replica that had not
    /// received the lock yet loses it (see the [guarantees](crate::guarantees)). `timeout`
    /// must be more than zero and less than the command timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .cluster_wait_replicas(1, std::time::Duration::from_millis(100));
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster_wait_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.cluster_wait_replicas = Some((replicas, timeout));
        self
    }

    /// Use the primary that Redis Sentinel names `master`, asking the sentinels at
    /// `sentinel_urls`; the client follows failovers to the new primary. A lock the failover
    /// lost (not yet replicated) is reported through [`LockGuard::lost`](crate::LockGuard::lost)
    /// at the next renewal; see [`sentinel_wait_replicas`](Self::sentinel_wait_replicas) to
    /// make locks survive it.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .sentinel("mymaster", ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]);
    /// ```
    pub fn sentinel<I, U>(mut self, master: impl Into<String>, sentinel_urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.target = Target::Sentinel {
            master: master.into(),
            sentinels: sentinel_urls.into_iter().map(Into::into).collect(),
        };
        self
    }

    /// Sentinel only: an acquire succeeds only once `replicas` replicas acknowledged it
    /// (`WAIT`) within `timeout`; otherwise it is released and fails. A lock acknowledged this
    /// way survives a failover to one of those replicas. Keep `timeout` below the command
    /// timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .sentinel("mymaster", ["redis://10.0.0.1:26379"])
    ///     .sentinel_wait_replicas(1, std::time::Duration::from_millis(100));
    /// ```
    pub fn sentinel_wait_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_replicas = Some((replicas, timeout));
        self
    }

    /// Sentinel only: the credentials of the primary (and replicas); the sentinels' own go in
    /// their URLs. Without it the primary is reached without credentials.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder()
    ///     .sentinel("mymaster", ["redis://:sentinel-pw@10.0.0.1:26379"])
    ///     .sentinel_primary_auth(None, "primary-pw");
    /// ```
    pub fn sentinel_primary_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.primary_auth = PrimaryAuth {
            username: username.map(str::to_owned),
            password: Some(password.to_owned()),
        };
        self
    }

    /// Use an in-process store (several clients may share one).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().memory(distlock::MemoryStore::new());
    /// ```
    pub fn memory(mut self, store: MemoryStore) -> Self {
        self.target = Target::Memory(store);
        self
    }

    /// The prefix put before every key (default `"distlock:"`); may be empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().prefix("app:");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The lease used when a request sets none (default 30 s; at least 100 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().default_ttl(std::time::Duration::from_secs(5));
    /// ```
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How the metrics label a key (feature `metrics`): `label(key)` for a key as requested
    /// (without the client's prefix) must come from a small, fixed set, as every distinct
    /// label is a time series of its own. Default:
    /// [`default_key_label`](crate::metrics::default_key_label), the part before the first
    /// `:`. At most [`MAX_KEY_LABELS`](crate::metrics::MAX_KEY_LABELS) distinct labels are
    /// reported per client; see [`metrics`](crate::metrics) for the metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::borrow::Cow;
    /// let builder = distlock::LockClient::builder().metrics_key_label(|key: &str| {
    ///     // "tenant-7:invoice:42" -> "invoice": the tenant is not worth a series.
    ///     Cow::Owned(key.split(':').nth(1).unwrap_or("other").to_owned())
    /// });
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_key_label<F>(mut self, label: F) -> Self
    where
        F: Fn(&str) -> std::borrow::Cow<'static, str> + Send + Sync + 'static,
    {
        self.key_labeller = Some(Arc::new(label));
        self
    }

    /// A label stored with every lock this client takes, for the people reading
    /// [`inspect`](LockClient::inspect), [`list`](LockClient::list) or the `distlock`
    /// command-line tool: a service name, a deployment, a job id. A request can set its own
    /// ([`LockRequest::label`]).
    ///
    /// It is kept at most [`MAX_LABEL_LEN`](crate::MAX_LABEL_LEN) bytes long (cut at a
    /// character boundary), control characters become U+FFFD, and an empty label is none;
    /// any other character is kept (`|`, `/` and `%` are escaped in storage and read back as
    /// they were).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::builder()
    ///     .memory(distlock::MemoryStore::new())
    ///     .label("billing-worker")
    ///     .build()
    ///     .await?;
    /// let _guard = client.lock("invoice:42").await?;
    /// let info = client.inspect("invoice:42").await?.unwrap();
    /// assert_eq!(info.label.as_deref(), Some("billing-worker"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = OwnerLabel::new(&label.into());
        self
    }

    /// The time limit for connecting and for each command (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = distlock::LockClient::builder().command_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Connects and returns the client.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::builder().memory(Default::default()).build().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidDuration`] for a default lease out of range or a
    /// `cluster_wait_replicas` timeout that is zero or not below the command timeout,
    /// [`LockError::InvalidKey`] for a prefix with control characters,
    /// [`LockError::InvalidUrl`] when no backend was chosen or the URL is bad,
    /// [`LockError::Backend`] when fewer than a majority of Redlock nodes are reachable, and
    /// [`LockError::Backend`] when the server cannot be reached or refuses the credentials.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn build(self) -> Result<LockClient, LockError> {
        validate_ttl("default_ttl", self.default_ttl)?;
        if self.prefix.chars().any(char::is_control) {
            return Err(LockError::InvalidKey {
                key: self.prefix.chars().take(64).collect(),
                reason: "a key prefix cannot contain control characters",
            });
        }
        if self.command_timeout.is_zero() {
            return Err(LockError::InvalidDuration {
                what: "command_timeout",
                value: self.command_timeout,
                reason: "must be more than zero",
            });
        }
        let backend = match self.target {
            Target::None => {
                return Err(LockError::InvalidUrl {
                    url: String::new(),
                    reason: "no backend chosen: call .url(..) or .memory(..) on the builder".into(),
                });
            }
            Target::Url(url) => {
                Backend::Redis(RedisBackend::connect(&url, self.command_timeout).await?)
            }
            Target::Existing {
                client,
                manager: Some(manager),
            } => Backend::Redis(RedisBackend::from_manager(
                manager,
                client,
                self.command_timeout,
            )),
            Target::Existing {
                client: Some(client),
                manager: None,
            } => Backend::Redis(RedisBackend::from_client(client, self.command_timeout).await?),
            Target::Existing {
                client: None,
                manager: None,
            } => unreachable!("set with a client or a manager"),
            Target::Redlock(urls) => {
                let quarantine = self.quarantine.unwrap_or(self.default_ttl);
                crate::key::validate_lease(self.default_ttl, Some(quarantine))?;
                Backend::Redlock(
                    RedlockBackend::connect(&urls, self.command_timeout, &self.prefix, quarantine)
                        .await?,
                )
            }
            Target::Sentinel { master, sentinels } => Backend::Sentinel(
                SentinelBackend::connect(
                    &master,
                    &sentinels,
                    self.command_timeout,
                    self.wait_replicas,
                    self.primary_auth,
                )
                .await?,
            ),
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => {
                if let Some((_, timeout)) = self.cluster_wait_replicas
                    && (timeout.is_zero() || timeout >= self.command_timeout)
                {
                    return Err(LockError::InvalidDuration {
                        what: "cluster_wait_replicas timeout",
                        value: timeout,
                        reason: "must be more than zero and less than the command timeout",
                    });
                }
                Backend::Cluster(
                    crate::backend::ClusterBackend::connect(
                        &urls,
                        self.command_timeout,
                        self.cluster_wait_replicas,
                    )
                    .await?,
                )
            }
            Target::Memory(store) => Backend::Memory(MemoryBackend::new(store)),
        };
        Ok(LockClient::from_parts(
            backend,
            self.prefix,
            self.default_ttl,
            self.command_timeout,
            self.key_labeller,
            self.label,
        ))
    }
}
