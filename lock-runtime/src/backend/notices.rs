//! Release notices: one subscriber connection per client, multiplexing every waited key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::sync::Notify;

use super::Wakeups;
use crate::LockError;

/// A key nobody waits on stays subscribed this long, so that a key under steady contention is
/// not subscribed and unsubscribed on every turn.
const UNSUBSCRIBE_AFTER: Duration = Duration::from_secs(2);

/// Where SUBSCRIBE and UNSUBSCRIBE go.
pub(crate) enum Subscriber {
    /// One server: a pub/sub connection (`SUBSCRIBE`).
    Plain(PubSubSink),
    /// Redis Cluster: a RESP3 cluster connection, sharded channels (`SSUBSCRIBE`) on the node
    /// owning each key's slot.
    #[cfg(feature = "cluster")]
    Sharded(redis::cluster_async::ClusterConnection),
}

impl Subscriber {
    async fn subscribe(&self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.clone().subscribe(channel).await,
            #[cfg(feature = "cluster")]
            Self::Sharded(conn) => conn.clone().ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.clone().unsubscribe(channel).await,
            #[cfg(feature = "cluster")]
            Self::Sharded(conn) => conn.clone().sunsubscribe(channel).await,
        }
    }
}

/// Release notices by channel (= lock key), for the waiters of one client.
///
/// SUBSCRIBE and UNSUBSCRIBE go out one at a time under `changes`, in the same order as the
/// table changes, so an UNSUBSCRIBE can never overtake a later SUBSCRIBE of the same key.
pub(crate) struct Notices {
    subscriber: Subscriber,
    /// This client's waiter id: notices naming another client are not for us.
    me: Vec<u8>,
    alive: AtomicBool,
    waiting: Mutex<HashMap<String, Channel>>,
    changes: tokio::sync::Mutex<()>,
}

struct Channel {
    notify: Arc<Notify>,
    interested: usize,
}

impl Notices {
    pub(crate) fn new(subscriber: Subscriber, waiter: &str) -> Arc<Self> {
        Arc::new(Self {
            subscriber,
            me: waiter.as_bytes().to_vec(),
            alive: AtomicBool::new(true),
            waiting: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A notice arrived on `channel`. It names the client the lock is reserved for (the others
    /// stay asleep); an empty one is for anyone.
    pub(crate) fn deliver(&self, channel: &str, payload: &[u8]) {
        if !payload.is_empty() && payload != self.me.as_slice() {
            return;
        }
        if let Some(channel) = self.lock().get(channel) {
            channel.notify.notify_waiters();
        }
    }

    /// The connection is gone: wake every waiter so it retries (and resubscribes) now.
    pub(crate) fn died(&self) {
        self.alive.store(false, Ordering::Release);
        for channel in self.lock().values() {
            channel.notify.notify_waiters();
        }
    }

    /// Wake-ups for `key` (on `shared` if given), once the subscription is confirmed.
    pub(crate) async fn wakeups(
        self: Arc<Self>,
        key: &str,
        shared: Option<Arc<Notify>>,
    ) -> Result<Wakeups, LockError> {
        let notify = self.join(key, shared).await.inspect_err(|_| {
            self.alive.store(false, Ordering::Release);
        })?;
        let interest = Interest {
            notices: self,
            key: key.to_owned(),
        };
        Ok(Wakeups::new(notify, interest))
    }

    /// Counts one more waiter on `key`, subscribing first if the key is not subscribed yet;
    /// returns once the subscription is confirmed.
    async fn join(&self, key: &str, shared: Option<Arc<Notify>>) -> Result<Arc<Notify>, LockError> {
        let _changes = self.changes.lock().await;
        if let Some(channel) = self.lock().get_mut(key) {
            channel.interested += 1;
            return Ok(channel.notify.clone());
        }
        self.subscriber
            .subscribe(key)
            .await
            .map_err(LockError::from_redis)?;
        let notify = shared.unwrap_or_default();
        self.lock().insert(
            key.to_owned(),
            Channel {
                notify: notify.clone(),
                interested: 1,
            },
        );
        Ok(notify)
    }

    /// Unsubscribes `key` if nobody has waited on it since.
    async fn unsubscribe_if_idle(&self, key: String) {
        let _changes = self.changes.lock().await;
        {
            let mut waiting = self.lock();
            if waiting.get(&key).is_none_or(|c| c.interested > 0) {
                return;
            }
            waiting.remove(&key);
        }
        let _ = self.subscriber.unsubscribe(&key).await;
    }
}

struct Interest {
    notices: Arc<Notices>,
    key: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let idle = match self.notices.lock().get_mut(&self.key) {
            Some(channel) => {
                channel.interested -= 1;
                channel.interested == 0
            }
            None => false,
        };
        if !idle {
            return;
        }
        let notices = self.notices.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(UNSUBSCRIBE_AFTER).await;
                notices.unsubscribe_if_idle(key).await;
            });
        }
    }
}
