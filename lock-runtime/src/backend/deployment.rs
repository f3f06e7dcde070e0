//! What every deployment does: the [`Deployment`] trait, and the arguments and outcomes of its
//! operations.
//!
//! A deployment is where locks live: this process's memory, one Redis server, a primary
//! followed through Sentinel, Redlock's independent primaries, or Redis Cluster. Each keeps
//! the same promises (a release or renewal takes effect only for the token that holds the
//! key, fences increase, released locks go to the first queued waiter and send a notice), so
//! the client, guard, watchdog and waiting logic above them are shared.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::LockError;
use crate::info::LockInfo;
use crate::token::Token;

/// One deployment of the lock protocol, with one shape per operation.
///
/// Every operation that may talk to a server returns a `Send` future (a `LockRequest` is
/// boxed as one, and the watchdog and background releases run on another runtime); an
/// implementation writes them as `async fn`.
pub(crate) trait Deployment {
    /// The kind of deployment, as the metrics label it.
    fn kind(&self) -> &'static str;

    /// The longest lease this deployment can keep safely, if it has a limit: on Redlock the
    /// quarantine (a node restarted empty votes again after it, so a longer lease could be
    /// granted twice). None by default.
    fn max_ttl(&self) -> Option<Duration> {
        None
    }

    /// One acquire attempt: acquired with a fence larger than every earlier one for the key,
    /// or busy. A waiting caller (`args.waiter`) joins the key's queue of waiting clients.
    fn acquire(
        &self,
        args: &AcquireArgs<'_>,
    ) -> impl Future<Output = Result<Attempt, LockError>> + Send;

    /// Releases `key` if `token` holds it (to the first queued client, with a notice, when
    /// one waits).
    fn release(
        &self,
        key: &str,
        token: &Token,
    ) -> impl Future<Output = Result<Release, LockError>> + Send;

    /// A release done here and now when it needs no I/O (the in-process deployment), with
    /// what [`release`](Self::release) would have answered; `None` when the deployment must
    /// be asked over the network (then the caller calls `release`).
    fn release_now(&self, _key: &str, _token: &Token) -> Option<Release> {
        None
    }

    /// One round trip (per server) for the whole batch; per entry `Some(true)` renewed,
    /// `Some(false)` not held by that token any more, `None` unknown (Redlock without a
    /// majority either way, a Cluster slot that did not answer).
    fn renew(
        &self,
        batch: &[Renewal<'_>],
    ) -> impl Future<Output = Result<Vec<Option<bool>>, LockError>> + Send;

    /// `waiter` gave up waiting for `key`: out of the key's queue of waiting clients (a
    /// reservation made for it goes to the next one).
    fn leave(&self, key: &str, waiter: &str) -> impl Future<Output = Result<(), LockError>> + Send;

    /// Who holds `key`, if anyone.
    fn inspect(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<LockInfo>, LockError>> + Send;

    /// Releases `key` if it is held under `fence`: true when it was (see
    /// `scripts/force_release.lua`).
    fn force_release(
        &self,
        key: &str,
        fence: u64,
    ) -> impl Future<Output = Result<bool, LockError>> + Send;

    /// The next page of held locks under `at.prefix` (full keys); sets `at.done` after the
    /// last one. A page may be empty without being the last.
    fn list_page(
        &self,
        at: &mut ListCursor,
    ) -> impl Future<Output = Result<Vec<LockInfo>, LockError>> + Send;

    /// Start hearing release notices for `key` meant for `waiter`. Returns once the
    /// subscription is in place, so a release after this call is never missed.
    fn subscribe(
        &self,
        key: &str,
        waiter: &str,
    ) -> impl Future<Output = Result<Wakeups, LockError>> + Send;
}

/// The outcome of one acquire attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    Acquired {
        fence: u64,
    },
    /// Held by someone else; their remaining lease when it has one.
    Busy {
        pttl: Option<Duration>,
    },
}

/// The outcome of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Released; nobody was turned away while it was held.
    Released,
    /// Released to the first client in the queue of waiters, which was sent a notice.
    Notified,
    /// The token no longer held the key: nothing was changed.
    NotHeld,
    /// The release was sent again after its connection dropped, and the copy that answered
    /// found the token gone: an earlier copy may have released the lock (which then moved
    /// on), or the token had lost it before. Whoever asked decides from what it knew.
    Unsure,
}

/// How long a released lock stays reserved for the first client in its queue of waiters.
/// The notice reaches that client in about one round trip; if it is gone, the others wait at
/// most this long.
pub(crate) const RESERVATION: Duration = Duration::from_millis(250);

/// What an acquire sends: the full key, the caller's key (for errors), the new token, owner
/// info, the lease, and the client's waiter id when the caller will wait (a one-try acquire
/// leaves no trace on a busy lock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcquireArgs<'a> {
    pub(crate) key: &'a str,
    pub(crate) user_key: &'a str,
    pub(crate) token: &'a Token,
    pub(crate) owner: &'a str,
    pub(crate) ttl: Duration,
    pub(crate) waiter: Option<&'a str>,
}

/// One lease to renew in a batch.
#[derive(Debug)]
pub(crate) struct Renewal<'a> {
    pub(crate) key: &'a str,
    pub(crate) token: &'a Token,
    pub(crate) ttl: Duration,
}

/// Wake-ups for one waited key; dropping it ends the interest.
pub(crate) struct Wakeups {
    pub(crate) notify: Arc<Notify>,
    _interest: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

impl Wakeups {
    pub(crate) fn new(notify: Arc<Notify>, interest: impl Send + Sync + 'static) -> Self {
        Self {
            notify,
            _interest: Box::new(interest),
        }
    }
}

/// Where a listing is: which node it scans, the node's SCAN cursor, and what a deployment
/// needs to remember between pages.
#[derive(Debug)]
pub(crate) struct ListCursor {
    /// The full-key prefix of the locks listed.
    pub(crate) prefix: String,
    /// The SCAN pattern: the prefix with glob characters escaped, then `*`.
    pub(crate) pattern: String,
    /// The node being scanned (an index into the deployment's nodes).
    pub(crate) node: usize,
    /// Its SCAN cursor (0 before the first page).
    pub(crate) cursor: u64,
    pub(crate) done: bool,
    pub(crate) state: ListState,
}

/// Per-deployment listing state.
#[derive(Debug, Default)]
pub(crate) enum ListState {
    /// Not begun (or nothing to remember).
    #[default]
    Start,
    /// Redis Cluster: the primaries' addresses, found on the first page.
    #[cfg(feature = "cluster")]
    Primaries(Vec<(String, u16)>),
    /// In-process: the keys held when the listing began, not yet read.
    Snapshot(VecDeque<String>),
    /// Redlock: which nodes were scanned to the end, and how many could not be.
    Redlock { scanned: Vec<bool>, failed: usize },
}

impl ListCursor {
    pub(crate) fn new(prefix: String) -> Self {
        let mut pattern = String::with_capacity(prefix.len() + 8);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        Self {
            prefix,
            pattern,
            node: 0,
            cursor: 0,
            done: false,
            state: ListState::Start,
        }
    }

    /// Moves on after a page of the current node answered `next` (0: that node is done).
    pub(crate) fn advance(&mut self, next: u64, nodes: usize) {
        if next == 0 {
            self.node += 1;
            self.cursor = 0;
            self.done = self.node >= nodes;
        } else {
            self.cursor = next;
        }
    }
}
