//! Leader election on top of a lock: [`LockClient::leader`] campaigns, [`Leadership`] is
//! the won term, [`LeaderRequest::run`] is the loop a service runs while it leads, and
//! [`LockClient::current_leader`] answers "who leads now?".
//!
//! # Key layout
//!
//! An election named `name` is the ordinary lock `leader:<name>` (stored, like every lock,
//! under the client's prefix: `distlock:leader:<name>` by default). Campaigning is acquiring
//! that lock with the watchdog on and notified waiting; leading is holding it; the term is its
//! fencing token; resigning is releasing it. Nothing else is stored, so
//! [`LockClient::inspect`]`("leader:<name>")` and tools that list locks see elections too, and
//! a plain [`LockClient::lock`]`("leader:<name>")` competes in the election.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::key::{MAX_KEY_LEN, validate_key};
use crate::waiter::pause;
use crate::{LockClient, LockError, LockGuard, LockInfo};

/// What an election's name is put under to make its lock key.
const LEADER_KEY_PREFIX: &str = "leader:";

/// How long one acquire of a campaign waits before it is made again. Waiting is notified (a
/// release wakes the campaign at once), so this only bounds how long one request lives.
const CAMPAIGN_CHUNK: Duration = Duration::from_secs(60);

/// The first pause after a backend error while campaigning; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

impl LockClient {
    /// Starts a campaign for leadership of the election `name`; `.await` it to campaign until
    /// elected, or [`run`](LeaderRequest::run) a service loop that leads whenever it can.
    ///
    /// The election is the lock `leader:<name>` (see [`LeaderRequest`] for the key layout and
    /// what the guarantee rests on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let leadership = client
    ///     .leader("scheduler")
    ///     .ttl(Duration::from_secs(10))
    ///     .await?;
    /// assert!(leadership.is_leader());
    /// println!("leading term {}", leadership.fencing_token());
    /// leadership.resign().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn leader(&self, name: impl Into<String>) -> LeaderRequest {
        LeaderRequest {
            client: self.clone(),
            name: name.into(),
            ttl: None,
        }
    }

    /// Who leads the election `name` right now, if anyone: term, host, pid, since when.
    /// Anyone can ask, campaigning or not.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// assert!(client.current_leader("scheduler").await?.is_none());
    /// let leadership = client.leader("scheduler").await?;
    /// let leader = client.current_leader("scheduler").await?.expect("someone leads");
    /// assert_eq!(leader.term, leadership.fencing_token());
    /// assert_eq!(leader.pid, Some(std::process::id()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] for a name that cannot be an election name (see
    /// [`LeaderRequest`]); backend failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn current_leader(&self, name: &str) -> Result<Option<LeaderInfo>, LockError> {
        let key = leader_key(name)?;
        Ok(self
            .inspect(&key)
            .await?
            .map(|info| LeaderInfo::new(name, info)))
    }
}

/// A campaign for leadership, from [`LockClient::leader`]: set the lease, then `.await` it
/// (campaign until elected, get a [`Leadership`]) or [`run`](Self::run) a service loop.
///
/// # Key layout and names
///
/// The election `name` is the lock `leader:<name>` under the client's prefix
/// (`distlock:leader:<name>` by default). A name follows the rules of a lock key: not empty,
/// no control characters, and at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)` - 7` bytes (the
/// `leader:` takes the rest).
///
/// # What the guarantee rests on
///
/// Leadership is a lease with a fencing token, and nothing more:
///
/// - **The lease.** A leader believes it leads ([`Leadership::is_leader`]) until its local
///   deadline, which is measured from before the command that set the lease was sent, minus
///   a drift margin, so it ends before the server lets anyone else in (see the
///   [guarantees](crate::guarantees)). The watchdog renews it every ttl/3; a renewal that finds
///   the key gone or taken ends it at once ([`Leadership::lost`] fires).
/// - **The fence.** A leader that is paused (GC, swap, `SIGSTOP`, a VM migration) past its
///   lease may still *believe* it leads when it wakes, until its next look at the clock — and
///   it can be paused between that look and its next write. Only the store it writes to can
///   close that gap: pass [`Leadership::fencing_token`] (the term) with every write and let
///   the store refuse a term lower than the highest it has seen. Terms strictly increase
///   from one leader to the next.
///
/// A failover takes at most one lease (`ttl`) after the leader died or froze, plus the
/// campaigners' retry: a dead leader cannot release, so its lease has to run out on the
/// server. A leader that resigns or drops its [`Leadership`] hands over at once (waiting
/// campaigners are notified).
///
/// # Campaigning
///
/// Campaigning is waiting for the lock, in long notified waits (no polling loop). Backend
/// errors while campaigning (connection lost, timeouts, a server that is down) do not end the
/// campaign: it logs them (`tracing`, at `warn` for the first of a run of errors, `debug`
/// after) and tries again with a jittered backoff from 100 ms up to 5 s. What ends a campaign
/// with an error is what retrying cannot fix: an invalid name ([`LockError::InvalidKey`]), an
/// invalid lease ([`LockError::InvalidDuration`]), and a key holding data distlock did not
/// write ([`LockError::KeyConflict`]). To bound a campaign, put it in a
/// [`tokio::time::timeout`]: dropping it is cancel safe.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::memory();
/// let first = client.leader("compactor").ttl(Duration::from_secs(5)).await?;
///
/// // A second campaigner waits until the first resigns (or dies and its lease runs out).
/// let second = tokio::spawn({
///     let client = client.clone();
///     async move { client.leader("compactor").ttl(Duration::from_secs(5)).await }
/// });
/// let first_term = first.fencing_token();
/// first.resign().await?;
/// let second = second.await.expect("campaign task")?;
/// assert!(second.fencing_token() > first_term);
/// # Ok(())
/// # }
/// ```
///
/// # Errors (when awaited)
///
/// [`LockError::InvalidKey`], [`LockError::InvalidDuration`] and [`LockError::KeyConflict`],
/// as above; never [`LockError::Busy`] and never a backend failure (those are retried).
///
/// # Cancel safety
///
/// Cancel safe: dropping the campaign drops its acquire, which releases the lock (by token,
/// in the background) if it was taken in the meantime.
#[derive(Debug)]
#[must_use = "a campaign does nothing until it is awaited or run"]
pub struct LeaderRequest {
    client: LockClient,
    name: String,
    ttl: Option<Duration>,
}

impl LeaderRequest {
    /// The leader's lease (default: the client's default TTL). At least 100 ms. The watchdog
    /// renews it every ttl/3 while leading; after the leader dies, the others take over
    /// within it.
    ///
    /// # Examples
    ///
    /// ```
    /// let campaign = distlock::LockClient::memory()
    ///     .leader("scheduler")
    ///     .ttl(std::time::Duration::from_secs(5));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Campaigns until elected, then runs `lead(leadership)` while leading; when leadership
    /// is lost, the future `lead` returned is dropped (cancelled at its next `.await`) and the
    /// campaign starts again. Returns when that future finishes, with its result: `Ok` and
    /// `Err` alike end the loop (loop inside `lead` to keep going), and the leadership is
    /// resigned before `run` returns.
    ///
    /// The term lasts as long as the future runs, whether it keeps the [`Leadership`] it was
    /// given or drops it (`|_| async { .. }` leads too).
    ///
    /// This is the shape of a service that should do its work on one replica at a time: every
    /// replica calls `run`, one leads, the others wait and take over when it goes away.
    /// Cancellation is the "stopped leading" signal: put what must happen then in a value's
    /// `Drop` inside the future, or watch [`Leadership::lost_owned`] yourself. Code between
    /// two `.await`s is not interrupted, so write to your store with the term
    /// ([`Leadership::fencing_token`]) and let the store refuse stale terms.
    ///
    /// If `lead` [resigns](Leadership::resign) and then keeps going, it is cancelled like on
    /// a loss, and the campaign starts again (after the other campaigners had their chance:
    /// a release goes to the first waiting client). To step down for good, return.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let ticks = client
    ///     .leader("billing-scheduler")
    ///     .ttl(Duration::from_secs(10))
    ///     .run(|leadership| async move {
    ///         let mut ticks = 0;
    ///         while ticks < 3 {
    ///             // ... work, writing with leadership.fencing_token() ...
    ///             tokio::time::sleep(Duration::from_millis(10)).await;
    ///             ticks += 1;
    ///         }
    ///         Ok::<_, distlock::LockError>(ticks) // done: resigns and returns
    ///     })
    ///     .await?;
    /// assert_eq!(ticks, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The error of `lead`'s future, or a [`LockError`] that ends the campaign (see
    /// [`LeaderRequest`]: an invalid name or lease, a key conflict), converted with `From`.
    /// Backend failures are retried, never returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it drops the campaign (releasing whatever it took) or the
    /// running future and its [`Leadership`] (resigned in the background).
    pub async fn run<F, Fut, T, E>(self, mut lead: F) -> Result<T, E>
    where
        F: FnMut(Leadership) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<LockError>,
    {
        loop {
            let leadership = self.campaign().await?;
            // Held here too: the term lasts as long as the work, whether the work keeps its
            // `Leadership` or drops it.
            let term = leadership.term.clone();
            let lost = leadership.lost_owned();
            let work = lead(leadership);
            tokio::select! {
                // Checked first: once leadership is known lost, the work is not polled again.
                biased;
                () = lost => {
                    if term.guard().is_some() {
                        tracing::warn!(
                            election = %self.name,
                            term = term.fence,
                            "leadership lost: the leader's work is cancelled; campaigning again"
                        );
                    } else {
                        tracing::info!(
                            election = %self.name,
                            term = term.fence,
                            "resigned by the leader's work: it is cancelled; campaigning again"
                        );
                    }
                }
                out = work => {
                    if let Some(guard) = term.take_guard()
                        && let Err(err) = guard.release().await
                    {
                        tracing::debug!(election = %self.name, term = term.fence, %err, "resigning after the work returned");
                    }
                    return out;
                }
            }
        }
    }

    /// Campaigns until elected: acquire in long notified waits, retry backend errors.
    async fn campaign(&self) -> Result<Leadership, LockError> {
        let key = leader_key(&self.name)?;
        let mut backoff = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            let mut request = self
                .client
                .lock(key.as_str())
                .wait(CAMPAIGN_CHUNK)
                .watchdog(true);
            if let Some(ttl) = self.ttl {
                request = request.ttl(ttl);
            }
            match request.await {
                Ok(guard) => {
                    tracing::info!(election = %self.name, term = guard.fencing_token(), "elected");
                    return Ok(Leadership::new(self.name.clone(), guard));
                }
                Err(err) if err.is_busy() => {
                    // Somebody else leads; the backend answered, so start errors afresh.
                    failures = 0;
                    backoff = FIRST_RETRY;
                }
                Err(err) if err.is_backend() => {
                    failures = failures.saturating_add(1);
                    let nap = pause(None, backoff);
                    backoff = (backoff * 2).min(MAX_RETRY);
                    if failures == 1 {
                        tracing::warn!(election = %self.name, %err, retry_in = ?nap, "campaign: backend error; retrying");
                    } else {
                        tracing::debug!(election = %self.name, %err, failures, retry_in = ?nap, "campaign: backend error; retrying");
                    }
                    tokio::time::sleep(nap).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl IntoFuture for LeaderRequest {
    type Output = Result<Leadership, LockError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.campaign().await })
    }
}

/// Leadership of an election, won by a campaign ([`LockClient::leader`]): the lock
/// `leader:<name>`, held and renewed by the watchdog. Resigned by [`resign`](Self::resign),
/// or in the background when dropped (the one given to the work of [`LeaderRequest::run`]
/// lasts as long as the work, dropped or not).
///
/// While [`is_leader`](Self::is_leader) is true, no other campaigner has been elected (on a
/// deployment that keeps its data; see [`LeaderRequest`] for what that rests on). Stop leading
/// when [`lost`](Self::lost) fires, and pass the term ([`fencing_token`](Self::fencing_token))
/// with every write, so that a store can refuse a leader that was paused past its lease.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let leadership = client.leader("scheduler").await?;
/// tokio::select! {
///     () = leadership.lost() => { /* stop: someone else may lead now */ }
///     () = async { /* lead, writing with leadership.fencing_token() */ } => {}
/// }
/// leadership.resign().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "leadership is resigned as soon as it is dropped"]
pub struct Leadership {
    term: Arc<Term>,
}

/// One won term, shared by the [`Leadership`] and, inside [`LeaderRequest::run`], by the loop
/// that resigns it when the work returns.
struct Term {
    name: String,
    fence: u64,
    /// `None` once resigned. Dropped with the last handle: released in the background.
    guard: Mutex<Option<LockGuard>>,
    /// Set when resigned; closed when the last handle is dropped. Either ends
    /// [`Leadership::lost_owned`].
    ended: watch::Sender<bool>,
}

impl Term {
    fn guard(&self) -> MutexGuard<'_, Option<LockGuard>> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the guard out to release it; from then on this term is over.
    fn take_guard(&self) -> Option<LockGuard> {
        let guard = self.guard().take();
        self.ended.send_replace(true);
        guard
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.term.name)
            .field("term", &self.term.fence)
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    fn new(name: String, guard: LockGuard) -> Self {
        Self {
            term: Arc::new(Term {
                name,
                fence: guard.fencing_token(),
                guard: Mutex::new(Some(guard)),
                ended: watch::Sender::new(false),
            }),
        }
    }

    /// The election's name, as given to [`LockClient::leader`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let leadership = distlock::LockClient::memory().leader("scheduler").await?;
    /// assert_eq!(leadership.name(), "scheduler");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.term.name
    }

    /// True while this process leads: the lease is not reported lost and its local deadline
    /// has not passed. Cheap (no I/O); check it before acting as leader, and still fence
    /// writes with the term (a pause can come between the check and the write).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let leadership = distlock::LockClient::memory().leader("scheduler").await?;
    /// assert!(leadership.is_leader());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_leader(&self) -> bool {
        self.term.guard().as_ref().is_some_and(LockGuard::is_held)
    }

    /// The term: the fencing token of the leader lock, larger than that of every earlier
    /// leader of this election (also across resignations, expiries and a Redis restart that
    /// lost its data). Send it with every write a leader makes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let first = client.leader("scheduler").await?;
    /// let term = first.fencing_token();
    /// first.resign().await?;
    /// let next = client.leader("scheduler").await?;
    /// assert!(next.fencing_token() > term);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.term.fence
    }

    /// Resolves when leadership is lost: a renewal found the key gone or taken, or the lease's
    /// local deadline passed without a successful renewal. Never resolves while
    /// [`is_leader`](Self::is_leader) is true.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let store = distlock::MemoryStore::new();
    /// let client = distlock::LockClient::builder().memory(store.clone()).build().await?;
    /// let leadership = client
    ///     .leader("scheduler")
    ///     .ttl(std::time::Duration::from_millis(300))
    ///     .await?;
    /// store.clear(); // an operator deletes the key; the next renewal finds out
    /// leadership.lost().await;
    /// assert!(!leadership.is_leader());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        self.lost_owned()
    }

    /// Like [`lost`](Self::lost), but owning what it watches, so it can outlive a borrow of
    /// the leadership (moved into a spawned task, or kept next to the future that got the
    /// [`Leadership`]). It also resolves when the term ends by [`resign`](Self::resign) or
    /// drop (inside [`LeaderRequest::run`]: when the work ends).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let leadership = client.leader("scheduler").await?;
    /// let ended = tokio::spawn(leadership.lost_owned());
    /// leadership.resign().await?;
    /// ended.await.expect("watcher task"); // resolves once leadership ended
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost_owned(&self) -> impl Future<Output = ()> + Send + use<> {
        let lease_lost = self.term.guard().as_ref().map(LockGuard::lost_owned);
        let mut ended = self.term.ended.subscribe();
        async move {
            let Some(lease_lost) = lease_lost else {
                return; // resigned already
            };
            tokio::select! {
                () = lease_lost => {}
                // Resigned, or every handle dropped (then this is an error: same meaning).
                _ = ended.wait_for(|ended| *ended) => {}
            }
        }
    }

    /// Steps down: releases the leader lock (only if still ours), so that a waiting
    /// campaigner is elected at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let leadership = client.leader("scheduler").await?;
    /// leadership.resign().await?;
    /// assert!(client.current_leader("scheduler").await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] (for the key `leader:<name>`) when leadership had already been
    /// lost: nothing was released. Backend failures: the lease then runs out by itself.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the release finishes in the background.
    pub async fn resign(self) -> Result<(), LockError> {
        match self.term.take_guard() {
            Some(guard) => guard.release().await,
            None => Ok(()),
        }
    }
}

/// Who leads an election, from [`LockClient::current_leader`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let _leadership = client.leader("scheduler").await?;
/// let leader: distlock::LeaderInfo = client.current_leader("scheduler").await?.unwrap();
/// println!(
///     "{} leads on {}/{} since {:?} (term {})",
///     leader.name,
///     leader.host.as_deref().unwrap_or("?"),
///     leader.pid.unwrap_or(0),
///     leader.since,
///     leader.term,
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The election's name.
    pub name: String,
    /// The leader's term: the fencing token of its leader lock
    /// ([`Leadership::fencing_token`]).
    pub term: u64,
    /// The leader's host name.
    pub host: Option<String>,
    /// The leader's process id.
    pub pid: Option<u32>,
    /// When the leader was elected (the leader's clock).
    pub since: Option<SystemTime>,
    /// How long the leader's lease still runs unless renewed.
    pub lease_remaining: Option<Duration>,
}

impl LeaderInfo {
    fn new(name: &str, lock: LockInfo) -> Self {
        Self {
            name: name.to_owned(),
            term: lock.fencing_token,
            host: lock.host,
            pid: lock.pid,
            since: lock
                .acquired_at_ms
                .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))),
            lease_remaining: lock.ttl,
        }
    }
}

/// The lock key of the election `name`: `leader:<name>`.
fn leader_key(name: &str) -> Result<String, LockError> {
    validate_key(name)?;
    if name.len() > MAX_KEY_LEN - LEADER_KEY_PREFIX.len() {
        return Err(LockError::InvalidKey {
            key: name.chars().take(64).collect(),
            reason: "an election name is at most distlock::MAX_KEY_LEN - 7 (505) bytes: \
                     its lock key is `leader:<name>`",
        });
    }
    Ok(format!("{LEADER_KEY_PREFIX}{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn leadership_is_send_and_sync() {
        assert_send_sync::<Leadership>();
        assert_send_sync::<LeaderRequest>();
        assert_send_sync::<LeaderInfo>();
    }

    #[test]
    fn names_become_leader_keys() {
        assert_eq!(leader_key("sched").unwrap(), "leader:sched");
        assert!(leader_key("").is_err());
        assert!(leader_key("a\nb").is_err());
        let longest = "n".repeat(MAX_KEY_LEN - LEADER_KEY_PREFIX.len());
        assert!(leader_key(&longest).is_ok());
        let err = leader_key(&format!("{longest}n")).unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn futures_are_send() {
        let client = LockClient::memory();
        let campaign = client.leader("x").into_future();
        assert_send(&campaign);
        let run = client
            .leader("y")
            .run(|l| async move { Ok::<_, LockError>(l.fencing_token()) });
        assert_send(&run);
        assert!(run.await.unwrap() > 0);
        assert!(campaign.await.unwrap().is_leader());
    }

    #[tokio::test]
    async fn an_invalid_name_or_lease_ends_the_campaign() {
        let client = LockClient::memory();
        let err = client.leader("").await.unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
        let err = client
            .leader("x")
            .ttl(Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::InvalidDuration { .. }), "{err:?}");
        let err = client
            .leader("x\u{7}")
            .run(|_| async { Ok::<(), LockError>(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
        assert!(client.current_leader("").await.is_err());
    }

    #[tokio::test]
    async fn lost_owned_outlives_the_leadership() {
        let client = LockClient::memory();
        let leadership = client.leader("x").await.unwrap();
        let ended = leadership.lost_owned();
        drop(leadership);
        ended.await;
        // A work that drops its leadership still leads until it returns.
        let observer = client.clone();
        let led = client
            .leader("y")
            .run(|leadership| {
                let observer = observer.clone();
                async move {
                    drop(leadership);
                    tokio::task::yield_now().await;
                    Ok::<_, LockError>(observer.current_leader("y").await?.is_some())
                }
            })
            .await
            .unwrap();
        assert!(led);
        assert!(client.current_leader("y").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn since_survives_absurd_timestamps() {
        let info = LeaderInfo::new(
            "x",
            crate::backend::layout::lock_info(7, "h/1/18446744073709551615", None, false),
        );
        assert_eq!(info.term, 7);
        assert_eq!(info.pid, Some(1));
        // Either a time or none, never a panic.
        let _ = info.since;
    }
}
