//! Release notices: one subscriber connection per client, multiplexing every waited key.
//!
//! A supervisor task owns the connection: it opens it (bounded by the command timeout),
//! subscribes every waited key again after a reconnect and wakes their waiters (a notice may
//! have been missed meanwhile), PINGs it every [`PING_EVERY`] so that a connection that went
//! silent (half-open, blackholed) is found out and replaced, and reconnects with a backoff.
//!
//! Nothing here holds a lock while doing I/O that a waiter of another key would need: the
//! table of channels sits behind a plain mutex that is never held across an `.await`, and
//! SUBSCRIBE / UNSUBSCRIBE of one channel are ordered by that channel's own lock. Every I/O is
//! bounded by the command timeout. [`Notices::wakeups`] fails at once while the connection
//! is being (re)made, except on first use, when it waits for that first attempt (bounded):
//! the waiter then waits on its backoff alone and asks again at its next turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::BoxStream;
use redis::aio::PubSubSink;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::deployment::Wakeups;
use crate::{BackendErrorKind, LockError};

/// A key nobody waits on stays subscribed this long, so that a key under steady contention is
/// not subscribed and unsubscribed on every turn.
const UNSUBSCRIBE_AFTER: Duration = Duration::from_secs(2);

/// How often the subscriber connection is asked for a PING. A connection that only listens
/// hears nothing when it goes silent; the PING (answered within the command timeout or the
/// connection is replaced) finds that out.
const PING_EVERY: Duration = Duration::from_secs(3);

/// The pause after a failed connection attempt, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

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

    async fn ping(&self) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.clone().ping::<redis::Value>().await.map(drop),
            #[cfg(feature = "cluster")]
            Self::Sharded(conn) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                };
                let every_primary = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.clone()
                    .route_command(redis::cmd("PING"), every_primary)
                    .await
                    .map(drop)
            }
        }
    }
}

/// What a subscriber connection hears.
pub(crate) enum Event {
    /// A release notice on `channel`; the payload names the client it is for (empty: anyone).
    Notice { channel: String, payload: Vec<u8> },
    /// The server ended the subscription of `channel` by itself (on Redis Cluster, when the
    /// channel's slot moved to another node).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Dropped { channel: String },
    /// The connection was interrupted and restored underneath (Cluster node reconnects):
    /// notices may have been missed.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Interrupted,
}

/// What a subscriber connection hears, until it closes.
pub(crate) type Events = BoxStream<'static, Event>;

/// Opens a subscriber connection (unbounded: the caller applies the command timeout).
pub(crate) type Connect =
    Box<dyn Fn() -> BoxFuture<'static, Result<(Subscriber, Events), LockError>> + Send + Sync>;

/// Release notices by channel (= lock key), for the waiters of one client.
pub(crate) struct Notices {
    connect: Connect,
    /// This client's waiter id: notices naming another client are not for us.
    me: Vec<u8>,
    /// Bound on connecting and on every command.
    timeout: Duration,
    state: Mutex<State>,
    /// Signalled whenever the connection comes up or goes down.
    link_changed: Notify,
    /// Tells the supervisor to stop (the last handle was dropped).
    stop: Arc<Notify>,
}

struct State {
    link: Link,
    channels: HashMap<String, Channel>,
    generation: u64,
}

enum Link {
    /// Not connected yet; no attempt made.
    Idle,
    /// The supervisor is connecting.
    Connecting,
    /// The last attempt failed; the supervisor tries again after a pause.
    Down,
    Up(Arc<Session>),
}

/// One subscriber connection.
struct Session {
    subscriber: Subscriber,
    generation: u64,
    /// Tells the supervisor that this connection stopped answering: replace it.
    broken: Notify,
}

struct Channel {
    notify: Arc<Notify>,
    /// Wake-ups shared with other connections (Redlock: one per waiter for all nodes).
    shared: Vec<Weak<Notify>>,
    interested: usize,
    /// The connection generation on which the subscription was confirmed.
    subscribed: Option<u64>,
    /// Orders SUBSCRIBE and UNSUBSCRIBE of this channel (never held by other channels).
    order: Arc<tokio::sync::Mutex<()>>,
}

impl Channel {
    fn wake(&self) {
        self.notify.notify_waiters();
        for shared in self.shared.iter().filter_map(Weak::upgrade) {
            shared.notify_waiters();
        }
    }
}

impl Notices {
    /// Release notices over connections made by `connect`, for the client whose waiter id is
    /// `waiter`. Connects on first use.
    pub(crate) fn new(connect: Connect, waiter: &str, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            connect,
            me: waiter.as_bytes().to_vec(),
            timeout,
            state: Mutex::new(State {
                link: Link::Idle,
                channels: HashMap::new(),
                generation: 0,
            }),
            link_changed: Notify::new(),
            stop: Arc::new(Notify::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake-ups for `key` (also on `shared` if given), once the subscription is confirmed.
    ///
    /// Fails at once while the connection is being (re)made, and after the command timeout
    /// when the connection does not confirm; the waiter then relies on its backoff.
    pub(crate) async fn wakeups(
        self: Arc<Self>,
        key: &str,
        shared: Option<Arc<Notify>>,
    ) -> Result<Wakeups, LockError> {
        let session = self.session().await?;
        let (notify, order, done) = {
            let mut state = self.state();
            let channel = state
                .channels
                .entry(key.to_owned())
                .or_insert_with(|| Channel {
                    notify: Arc::default(),
                    shared: Vec::new(),
                    interested: 0,
                    subscribed: None,
                    order: Arc::default(),
                });
            channel.interested += 1;
            if let Some(shared) = &shared {
                channel.shared.retain(|w| w.strong_count() > 0);
                channel.shared.push(Arc::downgrade(shared));
            }
            (
                shared.unwrap_or_else(|| channel.notify.clone()),
                channel.order.clone(),
                channel.subscribed == Some(session.generation),
            )
        };
        let interest = Interest {
            notices: self,
            key: key.to_owned(),
        };
        if !done {
            // On failure `interest` drops here, which counts this waiter out again.
            interest
                .notices
                .ensure_subscribed(key, &session, &order)
                .await?;
        }
        Ok(Wakeups::new(notify, interest))
    }

    /// The live connection. On first use, starts the supervisor and waits for its first
    /// attempt (bounded by the command timeout); otherwise fails at once when there is none.
    async fn session(self: &Arc<Self>) -> Result<Arc<Session>, LockError> {
        {
            let mut state = self.state();
            match &state.link {
                Link::Up(session) => return Ok(session.clone()),
                Link::Connecting | Link::Down => return Err(unavailable()),
                Link::Idle => {
                    state.link = Link::Connecting;
                    tokio::spawn(supervise(Arc::downgrade(self), self.stop.clone()));
                }
            }
        }
        // The supervisor's attempt is itself bounded by the timeout; the slack covers the
        // scheduling between its end and this wake-up.
        let deadline = Instant::now() + self.timeout + Duration::from_millis(100);
        loop {
            let changed = self.link_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match &self.state().link {
                Link::Up(session) => return Ok(session.clone()),
                Link::Down | Link::Idle => return Err(unavailable()),
                Link::Connecting => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(unavailable());
            }
        }
    }

    /// Subscribes `key` on `session` unless it already is. Bounded by the command timeout
    /// (twice when another SUBSCRIBE / UNSUBSCRIBE of the same key is in flight); a
    /// connection that does not confirm in time is replaced.
    async fn ensure_subscribed(
        &self,
        key: &str,
        session: &Arc<Session>,
        order: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<(), LockError> {
        let _turn = tokio::time::timeout(self.timeout, order.clone().lock_owned())
            .await
            .map_err(|_| not_confirmed(self.timeout))?;
        {
            let state = self.state();
            if !state.is_current(session) {
                return Err(unavailable());
            }
            match state.channels.get(key) {
                Some(c) if Arc::ptr_eq(&c.order, order) && c.interested > 0 => {
                    if c.subscribed == Some(session.generation) {
                        return Ok(());
                    }
                }
                _ => return Ok(()), // nobody waits on it any more
            }
        }
        match tokio::time::timeout(self.timeout, session.subscriber.subscribe(key)).await {
            Ok(Ok(())) => {
                if let Some(c) = self.state().channels.get_mut(key)
                    && Arc::ptr_eq(&c.order, order)
                {
                    c.subscribed = Some(session.generation);
                }
                Ok(())
            }
            Ok(Err(err)) => Err(LockError::from_redis(err)),
            Err(_) => {
                tracing::warn!(
                    "the subscriber connection did not confirm a SUBSCRIBE; replacing it"
                );
                session.broken.notify_one();
                Err(not_confirmed(self.timeout))
            }
        }
    }

    /// One waiter fewer on `key`; the last one schedules the unsubscribe.
    fn leave(self: &Arc<Self>, key: String) {
        let idle = match self.state().channels.get_mut(&key) {
            Some(channel) => {
                channel.interested -= 1;
                channel.interested == 0
            }
            None => false,
        };
        if !idle {
            return;
        }
        let notices = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(UNSUBSCRIBE_AFTER).await;
                notices.unsubscribe_if_idle(&key).await;
            });
        }
    }

    /// Unsubscribes `key` and forgets it if nobody has waited on it since.
    async fn unsubscribe_if_idle(&self, key: &str) {
        let Some(order) = self
            .state()
            .channels
            .get(key)
            .filter(|c| c.interested == 0)
            .map(|c| c.order.clone())
        else {
            return;
        };
        let Ok(_turn) = tokio::time::timeout(self.timeout, order.clone().lock_owned()).await else {
            return; // left for the next waiter's departure
        };
        let session = {
            let mut state = self.state();
            let current = match &state.link {
                Link::Up(session) => Some(session.clone()),
                _ => None,
            };
            let Some(channel) = state
                .channels
                .get_mut(key)
                .filter(|c| Arc::ptr_eq(&c.order, &order) && c.interested == 0)
            else {
                return;
            };
            let subscribed = channel.subscribed.take();
            current.filter(|s| subscribed == Some(s.generation))
        };
        if let Some(session) = session
            && tokio::time::timeout(self.timeout, session.subscriber.unsubscribe(key))
                .await
                .is_err()
        {
            session.broken.notify_one();
        }
        let mut state = self.state();
        if state
            .channels
            .get(key)
            .is_some_and(|c| Arc::ptr_eq(&c.order, &order) && c.interested == 0)
        {
            state.channels.remove(key);
        }
    }

    /// A notice arrived on `channel`. It names the client the lock is reserved for (the others
    /// stay asleep); an empty one is for anyone.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        if !payload.is_empty() && payload != self.me.as_slice() {
            return;
        }
        if let Some(channel) = self.state().channels.get(channel) {
            channel.wake();
        }
    }

    /// Wakes every waiter, so that each retries now (a notice may have been missed).
    fn wake_all(&self) {
        for channel in self.state().channels.values() {
            channel.wake();
        }
    }

    /// The server dropped `channel` on `session` by itself: subscribe it again (the client
    /// routes it to the slot's new owner) if someone still waits on it, then wake its waiters
    /// so they retry at once rather than at their backoff.
    fn dropped(self: &Arc<Self>, channel: String, session: &Arc<Session>) {
        let order = {
            let mut state = self.state();
            let Some(c) = state.channels.get_mut(&channel) else {
                return;
            };
            if c.subscribed != Some(session.generation) {
                return; // our own UNSUBSCRIBE, or an older connection
            }
            c.subscribed = None;
            if c.interested == 0 {
                return;
            }
            c.order.clone()
        };
        tracing::debug!(%channel, "the server dropped a subscription; subscribing again");
        let notices = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            if let Err(err) = notices.ensure_subscribed(&channel, &session, &order).await {
                tracing::debug!(%err, %channel, "subscribing again failed; waiters use their backoff");
            }
            if let Some(c) = notices.state().channels.get(&channel) {
                c.wake();
            }
        });
    }

    /// A new connection is up: publish it.
    fn up(&self, subscriber: Subscriber) -> Arc<Session> {
        let mut state = self.state();
        state.generation += 1;
        let session = Arc::new(Session {
            subscriber,
            generation: state.generation,
            broken: Notify::new(),
        });
        state.link = Link::Up(session.clone());
        drop(state);
        self.link_changed.notify_waiters();
        session
    }

    /// The connection attempt failed, or the connection ended.
    fn down(&self) {
        self.state().link = Link::Down;
        self.link_changed.notify_waiters();
        self.wake_all();
    }

    fn connecting(&self) {
        self.state().link = Link::Connecting;
    }

    /// After a reconnect: subscribes again every key somebody waits on, then wakes them.
    async fn resubscribe_all(&self, session: &Arc<Session>) {
        let waited: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = self
            .state()
            .channels
            .iter()
            .filter(|(_, c)| c.interested > 0)
            .map(|(k, c)| (k.clone(), c.order.clone()))
            .collect();
        if waited.is_empty() {
            return;
        }
        join_all(
            waited
                .iter()
                .map(|(key, order)| self.ensure_subscribed(key, session, order)),
        )
        .await;
        self.wake_all();
    }
}

impl State {
    fn is_current(&self, session: &Arc<Session>) -> bool {
        matches!(&self.link, Link::Up(s) if Arc::ptr_eq(s, session))
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Keeps one subscriber connection up while the [`Notices`] live.
async fn supervise(notices: Weak<Notices>, stop: Arc<Notify>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(n) = notices.upgrade() else { return };
        let (attempt, timeout) = ((n.connect)(), n.timeout);
        n.connecting();
        drop(n);
        let connected = tokio::select! {
            connected = tokio::time::timeout(timeout, attempt) => connected,
            () = stop.notified() => return,
        };
        match connected {
            Ok(Ok((subscriber, events))) => {
                let Some(n) = notices.upgrade() else { return };
                let session = n.up(subscriber);
                n.resubscribe_all(&session).await;
                drop(n);
                retry = FIRST_RETRY;
                if !listen(&notices, &stop, &session, events, timeout).await {
                    return;
                }
            }
            Ok(Err(err)) => tracing::debug!(%err, "no subscriber connection"),
            Err(_) => tracing::debug!("no subscriber connection within {timeout:?}"),
        }
        let Some(n) = notices.upgrade() else { return };
        n.down();
        drop(n);
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = stop.notified() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Delivers what `session` hears until it ends, goes silent or is reported broken. False
/// when the supervisor is to stop.
async fn listen(
    notices: &Weak<Notices>,
    stop: &Notify,
    session: &Arc<Session>,
    mut events: Events,
    timeout: Duration,
) -> bool {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    tracing::debug!("the subscriber connection closed; reconnecting");
                    return true;
                };
                let Some(n) = notices.upgrade() else { return false };
                match event {
                    Event::Notice { channel, payload } => n.deliver(&channel, &payload),
                    Event::Dropped { channel } => n.dropped(channel, session),
                    Event::Interrupted => n.wake_all(),
                }
            }
            _ = ping.tick() => {
                if notices.strong_count() == 0 {
                    return false;
                }
                if !matches!(
                    tokio::time::timeout(timeout, session.subscriber.ping()).await,
                    Ok(Ok(()))
                ) {
                    tracing::warn!("the subscriber connection did not answer a PING; replacing it");
                    return true;
                }
            }
            () = session.broken.notified() => return true,
            () = stop.notified() => return false,
        }
    }
}

fn unavailable() -> LockError {
    LockError::backend(
        BackendErrorKind::Connection,
        "release notices unavailable: the subscriber connection is being made",
    )
}

fn not_confirmed(timeout: Duration) -> LockError {
    LockError::backend(
        BackendErrorKind::Timeout,
        format!("the subscriber connection did not confirm a subscription within {timeout:?}"),
    )
}

/// One waiter's interest in a key; dropping it counts the waiter out.
struct Interest {
    notices: Arc<Notices>,
    key: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.notices.leave(std::mem::take(&mut self.key));
    }
}
