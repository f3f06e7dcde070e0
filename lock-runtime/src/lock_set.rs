//! Several locks taken together: the mechanism under [`Semaphore`](crate::Semaphore),
//! [`RwLock`](crate::RwLock) and [`LockClient::lock_all`](crate::LockClient::lock_all).
//!
//! Every primitive here is made of ordinary locks, each taken by an ordinary [`LockRequest`]
//! on the caller's terms (lease, watchdog, label). So each one keeps everything a lock has, on
//! every deployment: one holder per key, leases that free themselves when a holder dies,
//! renewal and loss reports, fencing tokens, notified FIFO waiting, cancel safety. What this
//! module adds is only which keys to take, and one rule that keeps sets of locks from
//! deadlocking:
//!
//! **Only a task that waits alone may wait while holding.** A set is taken one of two ways:
//! - *in order* ([`Plan::All`]): the keys sorted, each awaited in turn. Every such task waits
//!   only for a key greater than all those it holds, so no cycle of waits can form;
//! - *behind a gate* ([`Plan::Slots`]): several of a primitive's numbered slots are gathered
//!   while holding that primitive's gate lock, which only gatherers of several slots take. The
//!   gate holder is then the only task waiting for those slots while holding any; everyone
//!   else waits holding none of them.
//!
//! A set that cannot be completed by its deadline gives back what it took and reports busy.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{join_all, select_all};
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::{LockClient, LockError, LockGuard, LockInfo, LockRequest};

/// Which locks a [`LockSetRequest`] takes.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// `need` of the numbered `slots` (full keys without the client prefix, as the caller
    /// would name them), gathered behind `gate` when it is set.
    Slots {
        slots: Vec<String>,
        need: usize,
        gate: Option<Gate>,
    },
    /// Every one of `keys` (sorted, without duplicates), in order.
    All { keys: Vec<String> },
}

/// The lock a gatherer of several slots holds while it gathers.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) key: String,
    /// Whether the set keeps the gate while held (a writer does: its fencing token is the
    /// gate's, which only writers take) or gives it back once gathered (a semaphore does).
    pub(crate) keep: bool,
}

/// A request for several locks held together, made by [`Semaphore::acquire`],
/// [`Semaphore::acquire_many`], [`RwLock::read`], [`RwLock::write`] and
/// [`LockClient::lock_all`]; set the lease and the wait as on a [`LockRequest`], then `.await`
/// it for a [`LockSetGuard`].
///
/// [`Semaphore::acquire`]: crate::Semaphore::acquire
/// [`Semaphore::acquire_many`]: crate::Semaphore::acquire_many
/// [`RwLock::read`]: crate::RwLock::read
/// [`RwLock::write`]: crate::RwLock::write
/// [`LockClient::lock_all`]: crate::LockClient::lock_all
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use std::time::Duration;
/// let client = distlock::LockClient::memory();
/// let permit = client
///     .semaphore("exports", 4)
///     .acquire()
///     .ttl(Duration::from_secs(10))     // each lease, renewed by the watchdog
///     .wait(Duration::from_millis(500)) // how long to wait if none is free (default: one try)
///     .await?;
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Made of locks, without deadlocks
///
/// Each primitive is made of ordinary locks, each taken on this request's terms, so it has
/// everything a lock has on every deployment: one holder per key, leases that free themselves
/// when a holder dies, renewal and loss reports, fencing tokens, notified FIFO waiting,
/// cancel safety. Sets of locks do not deadlock because only a caller that waits alone waits
/// while holding: [`lock_all`](crate::LockClient::lock_all) takes its keys in sorted order
/// (so it only ever waits for a key larger than all it holds), and a caller gathering
/// several slots of a semaphore or a write hold does so behind the primitive's gate lock (so
/// it is the only one waiting for those slots while holding some).
///
/// # Errors (when awaited)
///
/// [`LockError::Busy`] (named after the semaphore, the lock or the busy key) when the set
/// could not be completed within the wait; nothing stays taken then.
/// [`LockError::InvalidCount`], [`LockError::InvalidKey`], [`LockError::InvalidDuration`] for
/// bad input; [`LockError::KeyConflict`] and backend failures as for one lock.
///
/// # Cancel safety
///
/// Cancel safe: if the future is dropped, every lock it took (or whose acquire was in flight)
/// is released by token in the background, as a dropped [`LockRequest`]'s is.
#[derive(Debug)]
#[must_use = "a lock request does nothing until it is awaited"]
pub struct LockSetRequest {
    client: LockClient,
    /// The caller's terms, for the name of the primitive (used in errors).
    terms: LockRequest,
    name: String,
    plan: Result<Plan, LockError>,
}

impl LockSetRequest {
    pub(crate) fn new(client: &LockClient, name: String, plan: Result<Plan, LockError>) -> Self {
        Self {
            client: client.clone(),
            terms: client.lock(name.clone()),
            name,
            plan,
        }
    }

    /// Each lock's lease (default: the client's default TTL). At least 100 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = distlock::LockClient::memory();
    /// let request = client.rw_lock("config").read().ttl(std::time::Duration::from_secs(3));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.terms = self.terms.ttl(ttl);
        self
    }

    /// How long to wait for the whole set (default zero: one try, then [`LockError::Busy`]).
    /// One deadline for the set, however many locks it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = distlock::LockClient::memory();
    /// let request = client.lock_all(["a", "b"]).wait(std::time::Duration::from_secs(2));
    /// ```
    pub fn wait(mut self, wait: Duration) -> Self {
        self.terms = self.terms.wait(wait);
        self
    }

    /// Whether the watchdog renews the leases while held (default true).
    ///
    /// # Examples
    ///
    /// ```
    /// let client = distlock::LockClient::memory();
    /// let request = client.semaphore("s", 2).acquire().watchdog(false);
    /// ```
    pub fn watchdog(mut self, renew: bool) -> Self {
        self.terms = self.terms.watchdog(renew);
        self
    }

    /// The label stored with each lock of the set (see [`LockRequest::label`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let client = distlock::LockClient::memory();
    /// let request = client.semaphore("s", 2).acquire().label("export 7");
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.terms = self.terms.label(label);
        self
    }

    async fn take(self) -> Result<LockSetGuard, LockError> {
        let Self {
            client,
            terms,
            name,
            plan,
        } = self;
        let deadline = Instant::now().checked_add(terms.wait_for());
        let busy = |retry_after| LockError::Busy {
            key: name.clone(),
            retry_after,
        };
        match plan? {
            Plan::All { keys } => {
                let guards = take_in_order(&terms, &keys, deadline).await?;
                let fence = guards.iter().map(LockGuard::fencing_token).max();
                Ok(LockSetGuard::new(name, guards, fence))
            }
            Plan::Slots { slots, need, gate } => {
                let gate = match gate {
                    Some(gate) => {
                        let wait = until(deadline);
                        let held = terms.for_key(gate.key, wait).await.map_err(|err| {
                            if err.is_busy() {
                                busy(err.retry_after())
                            } else {
                                err
                            }
                        })?;
                        Some((held, gate.keep))
                    }
                    None => None,
                };
                let gathered = gather(&client, &terms, &slots, need, deadline)
                    .await
                    .map_err(|failed| match failed {
                        Gathering::Busy(retry_after) => busy(retry_after),
                        Gathering::Failed(err) => err,
                    });
                let mut guards = Vec::with_capacity(need + 1);
                let mut fence = None;
                if let Some((gate, keep)) = gate {
                    if keep && gathered.is_ok() {
                        fence = Some(gate.fencing_token());
                        guards.push(gate);
                    } else {
                        // Only a deadlock guard: given back now, as a refused set is.
                        give_back([gate]).await;
                    }
                }
                let slots = gathered?;
                if fence.is_none() {
                    fence = slots.iter().map(LockGuard::fencing_token).max();
                }
                guards.extend(slots);
                Ok(LockSetGuard::new(name, guards, fence))
            }
        }
    }
}

impl IntoFuture for LockSetRequest {
    type Output = Result<LockSetGuard, LockError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.take())
    }
}

/// What is left of the wait at `deadline` (`None`: no end).
fn until(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// Takes every key of `keys` (sorted, distinct) or none.
///
/// In rounds: every key not yet held is tried at once (one try each, so for a free set this
/// is one round trip). If one is busy and there is a wait, the keys after the first busy one
/// go back, and that key is awaited with what is left of the set's deadline: the caller then
/// waits only for a key larger than all it holds. Then the next round.
async fn take_in_order(
    terms: &LockRequest,
    keys: &[String],
    deadline: Option<Instant>,
) -> Result<Vec<LockGuard>, LockError> {
    let mut held: Vec<Option<LockGuard>> = keys.iter().map(|_| None).collect();
    loop {
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| held[i].is_none()).collect();
        let tries = join_all(
            missing
                .iter()
                .map(|&i| terms.for_key(keys[i].clone(), Duration::ZERO).into_future()),
        );
        let mut first_busy = None;
        for (i, answer) in missing.into_iter().zip(tries.await) {
            match answer {
                Ok(guard) => held[i] = Some(guard),
                Err(err) if err.is_busy() => {
                    first_busy.get_or_insert((i, err));
                }
                Err(err) => {
                    give_back(held.into_iter().flatten()).await;
                    return Err(err);
                }
            }
        }
        let Some((first, busy)) = first_busy else {
            return Ok(held.into_iter().flatten().collect());
        };
        // Hold nothing above the key waited for.
        give_back(held[first..].iter_mut().filter_map(Option::take)).await;
        let wait = until(deadline);
        if terms.wait_for().is_zero() || wait.is_zero() {
            give_back(held.into_iter().flatten()).await;
            return Err(busy);
        }
        match terms.for_key(keys[first].clone(), wait).await {
            Ok(guard) => held[first] = Some(guard),
            Err(err) => {
                give_back(held.into_iter().flatten()).await;
                return Err(err);
            }
        }
    }
}

/// Why [`gather`] came back without its slots.
enum Gathering {
    /// Not enough slots came free within the wait; the shortest lease seen, when known.
    Busy(Option<Duration>),
    Failed(LockError),
}

/// Takes `need` of `slots`, or none.
///
/// Unless every slot is needed, `need` slots from a rotating start are tried at once (for a
/// lightly used primitive, one round trip). If some were busy, the others are read at once and
/// those that look free are tried, never more than are still needed: a caller takes only
/// slots it keeps and waits only when none looks free, so it neither turns others away with
/// slots it gives back nor has slots reserved for it that it does not need. If that is not
/// enough and the wait is not over, every slot not yet held is awaited at once (extras that
/// come in together are given back at once): each request joins its slot's
/// queue of waiters, so the earliest waiter is first in every queue, and the first `need` to
/// come in are kept; the rest are dropped, which gives back what they took and leaves the
/// queues.
async fn gather(
    client: &LockClient,
    terms: &LockRequest,
    slots: &[String],
    need: usize,
    deadline: Option<Instant>,
) -> Result<Vec<LockGuard>, Gathering> {
    let mut held: Vec<LockGuard> = Vec::with_capacity(need);
    let mut retry_after: Option<Duration> = None;
    let mut shortest = |err: &LockError| {
        if let Some(after) = err.retry_after() {
            retry_after = Some(retry_after.map_or(after, |r| r.min(after)));
        }
    };
    if need < slots.len() {
        static START: AtomicUsize = AtomicUsize::new(0);
        let start = START.fetch_add(1, Ordering::Relaxed);
        let order: Vec<&String> = (0..slots.len())
            .map(|i| &slots[(start + i) % slots.len()])
            .collect();
        let mut candidates: Vec<&String> = order[..need].to_vec();
        let mut looked = false;
        loop {
            while held.len() < need && !candidates.is_empty() {
                let batch: Vec<&String> = candidates
                    .drain(..(need - held.len()).min(candidates.len()))
                    .collect();
                let answers = join_all(
                    batch
                        .iter()
                        .map(|slot| terms.for_key((*slot).clone(), Duration::ZERO).into_future()),
                )
                .await;
                for answer in answers {
                    match answer {
                        Ok(guard) => held.push(guard),
                        Err(err) if err.is_busy() => shortest(&err),
                        Err(err) => {
                            give_back(held).await;
                            return Err(Gathering::Failed(err));
                        }
                    }
                }
            }
            if held.len() == need {
                return Ok(held);
            }
            if looked {
                break;
            }
            looked = true;
            let rest = &order[need..];
            let seen = join_all(rest.iter().map(|slot| client.inspect(slot))).await;
            for (slot, info) in rest.iter().zip(seen) {
                match info {
                    Ok(None) => candidates.push(slot),
                    Ok(Some(_)) => {}
                    Err(err) => {
                        give_back(held).await;
                        return Err(Gathering::Failed(err));
                    }
                }
            }
        }
        if terms.wait_for().is_zero() || until(deadline).is_zero() {
            give_back(held).await;
            return Err(Gathering::Busy(retry_after));
        }
    }
    let wait = until(deadline);
    let mut waiting: FuturesUnordered<_> = slots
        .iter()
        .filter(|slot| !held.iter().any(|g| g.key() == slot.as_str()))
        .map(|slot| terms.for_key(slot.clone(), wait).into_future())
        .collect();
    let mut failed = None;
    while held.len() < need {
        match waiting.next().await {
            Some(Ok(guard)) => held.push(guard),
            Some(Err(err)) if err.is_busy() => shortest(&err),
            Some(Err(err)) => {
                failed = Some(err);
                break;
            }
            None => break,
        }
    }
    // Requests still waiting leave their queues; one whose acquire was in flight gives the
    // lock back by token.
    drop(waiting);
    if held.len() == need {
        return Ok(held);
    }
    give_back(held).await;
    Err(failed.map_or(Gathering::Busy(retry_after), Gathering::Failed))
}

/// Gives back a partly taken set, all at once: a refused request leaves nothing taken when it
/// answers, as long as the server answers promptly. Waiting is bounded, so that a stalled
/// server does not hold the answer past the wait by a command timeout per step; what has not
/// landed by then is released by token in the background, as a dropped guard is.
async fn give_back(held: impl IntoIterator<Item = LockGuard>) {
    let releases = join_all(held.into_iter().map(LockGuard::release_now));
    let _ = tokio::time::timeout(GIVE_BACK_BOUND, releases).await;
}

/// How long a refused request waits for its give-backs to land.
const GIVE_BACK_BOUND: Duration = Duration::from_millis(100);

/// Several locks held together: a semaphore's permits, a read or write hold of a
/// [`RwLock`](crate::RwLock), the keys of [`LockClient::lock_all`](crate::LockClient::lock_all).
/// Each lock is renewed by the watchdog while the guard lives; the set is lost when any of
/// them is; dropping the guard releases them all in the background.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// let client = distlock::LockClient::memory();
/// let both = client.lock_all(["account:1", "account:2"]).await?;
/// let fence = both.fencing_token(); // pass it to the store you write to
/// tokio::select! {
///     () = both.lost() => { /* stop: one of the locks may have another holder now */ }
///     () = async { /* move money between the two accounts */ } => {}
/// }
/// both.release().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "the locks are released as soon as the guard is dropped"]
pub struct LockSetGuard {
    name: String,
    /// Never empty.
    guards: Vec<LockGuard>,
    fence: u64,
}

impl std::fmt::Debug for LockSetGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockSetGuard")
            .field("name", &self.name)
            .field(
                "keys",
                &self.guards.iter().map(LockGuard::key).collect::<Vec<_>>(),
            )
            .field("fencing_token", &self.fence)
            .finish_non_exhaustive()
    }
}

impl LockSetGuard {
    fn new(name: String, guards: Vec<LockGuard>, fence: Option<u64>) -> Self {
        debug_assert!(!guards.is_empty(), "a set holds at least one lock");
        Self {
            name,
            guards,
            fence: fence.unwrap_or(0),
        }
    }

    /// The name the set was asked for by: the semaphore's, the read/write lock's, or for
    /// [`lock_all`](crate::LockClient::lock_all) the keys joined with `+`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let permit = distlock::LockClient::memory().semaphore("exports", 2).acquire().await?;
    /// assert_eq!(permit.name(), "exports");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The set's fencing token. For a write hold, the write lock's own (larger for every
    /// writer); for a semaphore permit, the permit's; for several permits or keys, the
    /// largest of theirs. [`fencing_tokens`](Self::fencing_tokens) has each one.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let first = client.rw_lock("config").write().await?.fencing_token();
    /// let second = client.rw_lock("config").write().await?;
    /// assert!(second.fencing_token() > first);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// Each lock of the set: its key (without the client's prefix) and fencing token.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let set = client.lock_all(["b", "a"]).await?;
    /// let keys: Vec<&str> = set.fencing_tokens().map(|(key, _)| key).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fencing_tokens(&self) -> impl Iterator<Item = (&str, u64)> {
        self.guards.iter().map(|g| (g.key(), g.fencing_token()))
    }

    /// Whether every lock of the set is still held, by this process's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let set = distlock::LockClient::memory().lock_all(["a", "b"]).await?;
    /// assert!(set.is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_held(&self) -> bool {
        self.guards.iter().all(LockGuard::is_held)
    }

    /// How long the shortest lease of the set still runs (zero once one is lost).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let set = client.lock_all(["a", "b"]).ttl(Duration::from_secs(5)).await?;
    /// assert!(set.remaining() <= Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remaining(&self) -> Duration {
        self.guards
            .iter()
            .map(LockGuard::remaining)
            .min()
            .unwrap_or_default()
    }

    /// Resolves as soon as any lock of the set is lost (see [`LockGuard::lost`]): stop
    /// working on what the set protects.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let set = client
    ///     .lock_all(["a", "b"])
    ///     .ttl(Duration::from_millis(200))
    ///     .watchdog(false)
    ///     .await?;
    /// set.lost().await; // the leases run out after ~200ms
    /// assert!(!set.is_held());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        let each: Vec<_> = self.guards.iter().map(|g| Box::pin(g.lost())).collect();
        async move {
            select_all(each).await;
        }
    }

    /// Like [`lost`](Self::lost), but owning what it watches (see [`LockGuard::lost_owned`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let client = distlock::LockClient::memory();
    /// let set = client.lock_all(["a"]).ttl(Duration::from_millis(200)).watchdog(false).await?;
    /// tokio::spawn(set.lost_owned()).await.unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn lost_owned(&self) -> impl Future<Output = ()> + Send + use<> {
        let each: Vec<_> = self
            .guards
            .iter()
            .map(|g| Box::pin(g.lost_owned()))
            .collect();
        async move {
            select_all(each).await;
        }
    }

    /// Sets every lease of the set to `ttl` from now (see [`LockGuard::extend`]), all at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// use std::time::Duration;
    /// let set = distlock::LockClient::memory().lock_all(["a", "b"]).await?;
    /// set.extend(Duration::from_secs(60)).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LockGuard::extend`], for the first lock that failed: [`LockError::Lost`] when one
    /// is no longer held (the set is then lost).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, lock by lock as [`LockGuard::extend`].
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        join_all(self.guards.iter().map(|g| g.extend(ttl)))
            .await
            .into_iter()
            .collect()
    }

    /// Releases every lock of the set, all at once (compare-and-delete by token).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), distlock::LockError> {
    /// let client = distlock::LockClient::memory();
    /// let set = client.lock_all(["a", "b"]).await?;
    /// set.release().await?;
    /// let again = client.lock("a").await?; // free at once
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] when a lock of the set was already gone; the others were still
    /// released. Backend failures: those locks run out with their leases.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the releases finish in the background.
    pub async fn release(self) -> Result<(), LockError> {
        join_all(self.guards.into_iter().map(LockGuard::release))
            .await
            .into_iter()
            .collect()
    }
}

/// The holders of `keys`, read all at once.
pub(crate) async fn inspect_all(
    client: &LockClient,
    keys: &[String],
) -> Result<Vec<LockInfo>, LockError> {
    let read = join_all(keys.iter().map(|k| client.inspect(k))).await;
    let mut holders = Vec::new();
    for info in read {
        holders.extend(info?);
    }
    Ok(holders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn guards_and_requests_are_send_and_sync() {
        assert_send_sync::<LockSetGuard>();
        assert_send_sync::<LockSetRequest>();
        assert_send_sync::<crate::Semaphore>();
        assert_send_sync::<crate::RwLock>();
    }

    #[tokio::test]
    async fn futures_are_send() {
        let client = LockClient::memory();
        assert_send(&client.semaphore("s", 2).acquire().into_future());
        assert_send(&client.rw_lock("r").write().into_future());
        assert_send(&client.lock_all(["a", "b"]).into_future());
        assert_send(&client.semaphore("s", 2).holders());
        let set = client.lock_all(["a", "b"]).await.expect("free");
        assert_send(&set.lost());
        assert_send(&set.extend(Duration::from_secs(1)));
        assert_send(&set.release());
    }

    #[tokio::test]
    async fn a_refused_set_leaves_nothing_and_names_the_busy_key() {
        let client = LockClient::memory();
        let held = client.lock("b").await.expect("free");
        let err = client
            .lock_all(["a", "b", "c"])
            .await
            .expect_err("b is held");
        assert!(
            matches!(&err, LockError::Busy { key, .. } if key == "b"),
            "{err:?}"
        );
        for key in ["a", "c"] {
            assert!(
                client.inspect(key).await.expect("inspect").is_none(),
                "{key}"
            );
        }
        drop(held);
        let set = client.lock_all(["c", "a", "b"]).await.expect("all free");
        assert_eq!(set.name(), "a+b+c");
        assert_eq!(set.fencing_tokens().count(), 3);
        assert_eq!(
            set.fencing_token(),
            set.fencing_tokens().map(|(_, f)| f).max().unwrap()
        );
    }
}
