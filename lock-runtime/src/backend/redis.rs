//! One Redis server: a multiplexed auto-reconnecting connection, EVALSHA scripts, and one
//! shared pub/sub connection per client for release notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::Notify;

use super::{Attempt, Renewal, Wakeups, millis, parse_value};
use crate::key::redact_url;
use crate::token::Token;
use crate::{LockError, LockInfo};

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
    notices: tokio::sync::Mutex<Option<Arc<Notices>>>,
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
        let redacted = redact_url(url);
        if url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(LockError::InvalidUrl {
                url: redacted,
                reason: "rediss:// needs the `tls` feature of distlock".into(),
            });
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
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| with_url(LockError::from_redis(e), &redacted))?;
        Ok(Self {
            client,
            conn,
            url: redacted,
            notices: tokio::sync::Mutex::new(None),
        })
    }

    pub(crate) async fn acquire(
        &self,
        key: &str,
        user_key: &str,
        token: &Token,
        owner: &str,
        ttl: Duration,
    ) -> Result<Attempt, LockError> {
        let reply: Vec<i64> = ACQUIRE
            .key(key)
            .arg(token.as_str())
            .arg(millis(ttl))
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(LockError::from_redis)?;
        match reply.as_slice() {
            [1, fence] => Ok(Attempt::Acquired {
                fence: u64::try_from(*fence).unwrap_or(0),
            }),
            [0, pttl] => Ok(Attempt::Busy {
                pttl: u64::try_from(*pttl).ok().map(Duration::from_millis),
            }),
            _ => Err(LockError::KeyConflict {
                key: user_key.to_owned(),
            }),
        }
    }

    pub(crate) async fn release(&self, key: &str, token: &Token) -> Result<bool, LockError> {
        let released: i64 = RELEASE
            .key(key)
            .arg(token.as_str())
            .arg(millis(TOMBSTONE))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(LockError::from_redis)?;
        Ok(released == 1)
    }

    pub(crate) async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<bool>, LockError> {
        let mut call = RENEW.prepare_invoke();
        for r in batch {
            call.key(r.key).arg(r.token.as_str()).arg(millis(r.ttl));
        }
        let reply: Vec<i64> = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(LockError::from_redis)?;
        Ok(reply.into_iter().map(|r| r == 1).collect())
    }

    pub(crate) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        let (value, pttl): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(LockError::from_redis)?;
        let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
        Ok(value.and_then(|v| parse_value(&v, ttl)))
    }

    pub(crate) async fn subscribe(&self, key: &str) -> Result<Wakeups, LockError> {
        let notices = self.notices().await?;
        let notify = notices.interest(key);
        let interest = Interest {
            notices: notices.clone(),
            key: key.to_owned(),
        };
        // Until SUBSCRIBE is acknowledged a release could go unheard; return only after it.
        if let Err(e) = notices.sink.clone().subscribe(key).await {
            notices.alive.store(false, Ordering::Release);
            return Err(LockError::from_redis(e));
        }
        Ok(Wakeups::new(notify, interest))
    }

    /// The shared pub/sub connection, opened on first use and again after it died.
    async fn notices(&self) -> Result<Arc<Notices>, LockError> {
        let mut slot = self.notices.lock().await;
        if let Some(n) = slot.as_ref().filter(|n| n.alive.load(Ordering::Acquire)) {
            return Ok(n.clone());
        }
        let pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| with_url(LockError::from_redis(e), &self.url))?;
        let (sink, mut stream) = pubsub.split();
        let notices = Arc::new(Notices {
            sink,
            alive: AtomicBool::new(true),
            waiting: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&notices);
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Some(notices) = weak.upgrade() else {
                    return;
                };
                let channel = msg.get_channel_name();
                if let Some((notify, _)) = notices.lock().get(channel) {
                    notify.notify_waiters();
                }
            }
            // The connection is gone: wake every waiter so it retries (and resubscribes) now.
            if let Some(notices) = weak.upgrade() {
                notices.alive.store(false, Ordering::Release);
                for (notify, _) in notices.lock().values() {
                    notify.notify_waiters();
                }
            }
        });
        *slot = Some(notices.clone());
        Ok(notices)
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

/// Release notices heard on the shared pub/sub connection, by channel (= lock key).
struct Notices {
    sink: PubSubSink,
    alive: AtomicBool,
    waiting: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Notices {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interest(&self, key: &str) -> Arc<Notify> {
        let mut waiting = self.lock();
        let entry = waiting
            .entry(key.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        entry.0.clone()
    }
}

struct Interest {
    notices: Arc<Notices>,
    key: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut waiting = self.notices.lock();
        let Some(entry) = waiting.get_mut(&self.key) else {
            return;
        };
        entry.1 -= 1;
        if entry.1 > 0 {
            return;
        }
        waiting.remove(&self.key);
        drop(waiting);
        let mut sink = self.notices.sink.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = sink.unsubscribe(key).await;
            });
        }
    }
}
