//! Redlock: one lock over N independent Redis primaries, held when a majority grants it.
//!
//! Acquire asks every node at once with the same token; the lock is held when a majority of
//! *voting* nodes (below) granted it and the answers came back within the lease (less drift,
//! checked by the caller). Otherwise the nodes that did grant it are released again, and the
//! caller learns whether the key was busy or too few nodes could vote (a distinct error).
//! Release goes to all nodes, renewal too (held while a majority renews).
//!
//! # Slow nodes
//!
//! Every node is asked on a task of its own, so a frozen or unreachable node never holds up
//! the others. A node may take at most `min(command timeout, lease / 10)` to answer an
//! acquire or a renewal, so a slow minority costs at most a tenth of the lease and the lease
//! stays trustworthy. An acquire returns as soon as a majority of voting nodes granted it; one
//! that fails waits (at most that long) for the other nodes to answer and be given back, and
//! a node that answers later still is released in the background, after its acquire on the
//! same connection. Release and inspect return as soon as a majority agrees and give up on a
//! silent node after the command timeout. Connecting at startup waits at most the command
//! timeout per node (in parallel); a node not reachable by then is connected on use.
//!
//! # Nodes that lost their data
//!
//! A node that lost its data (restarted without persistence, flushed) could grant a lock that
//! is still held elsewhere. Every node therefore carries a boot marker, set by the first
//! acquire that finds it missing, and a node *votes* only once its marker is at least the
//! quarantine (the longest lease in use) old, measured on that node's own clock. By then every
//! lock it may have forgotten has expired. What the other nodes say does not matter: a node
//! that cannot vouch for its own past does not count, even if all nodes restarted together.
//!
//! An empty node cannot tell "brand new" from "restarted": so a brand-new deployment (or one
//! where every node restarted empty) grants no lock until one quarantine after its nodes were
//! first used. Acquires meanwhile fail with the quorum-unavailable error, not as busy. The
//! marker is kept per key prefix (`<prefix>__boot`), so a prefix used for the first time on
//! running nodes waits one quarantine too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::deployment::{
    AcquireArgs, Attempt, Deployment, ListCursor, ListState, Release, Renewal, Wakeups,
};
use super::layout::{StoredLock, parse_stored};
use super::redis::RedisBackend;
use crate::info::LockInfo;
use crate::token::Token;
use crate::{BackendErrorKind, LockError};

#[derive(Debug)]
pub(crate) struct RedlockBackend {
    nodes: Vec<Arc<RedisBackend>>,
    boot_key: Arc<str>,
    quarantine: Duration,
    command_timeout: Duration,
}

impl RedlockBackend {
    /// Connects to every node (each for at most the command timeout, in parallel); needs a
    /// majority reachable now (the rest connect on use).
    pub(crate) async fn connect(
        urls: &[String],
        command_timeout: Duration,
        prefix: &str,
        quarantine: Duration,
    ) -> Result<Self, LockError> {
        if urls.is_empty() {
            return Err(LockError::InvalidUrl {
                url: String::new(),
                reason: "Redlock needs at least one node URL (three or more independent primaries in practice)".into(),
            });
        }
        let attempts = join_all(urls.iter().map(|u| {
            tokio::time::timeout(command_timeout, RedisBackend::connect(u, command_timeout))
        }))
        .await;
        let quorum = urls.len() / 2 + 1;
        let mut reachable = 0;
        let mut nodes = Vec::with_capacity(urls.len());
        let mut first_error = None;
        for (url, attempt) in urls.iter().zip(attempts) {
            let err = match attempt {
                Ok(Ok(node)) => {
                    reachable += 1;
                    nodes.push(Arc::new(node));
                    continue;
                }
                Ok(Err(
                    err @ (LockError::InvalidUrl { .. }
                    | LockError::Backend {
                        kind: BackendErrorKind::Auth,
                        ..
                    }),
                )) => return Err(err),
                Ok(Err(err)) => err,
                Err(_) => LockError::backend(
                    BackendErrorKind::Timeout,
                    format!(
                        "no connection within {command_timeout:?} (at {})",
                        crate::key::redact_url(url)
                    ),
                ),
            };
            tracing::warn!(%err, "Redlock node unreachable at startup; will retry on use");
            first_error.get_or_insert(err);
            nodes.push(Arc::new(
                RedisBackend::connect_lazy(url, command_timeout).await?,
            ));
        }
        if reachable < quorum {
            let detail = first_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "Redlock quorum unavailable: {reachable} of {} nodes reachable, {quorum} needed ({detail})",
                    urls.len()
                ),
            ));
        }
        Ok(Self {
            nodes,
            boot_key: Arc::from(format!("{prefix}__boot")),
            quarantine,
            command_timeout,
        })
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// How long one node may take to answer an acquire or renewal of a `ttl` lease (a
    /// renewal gets at least [`RENEW_FLOOR`]).
    fn node_timeout(&self, ttl: Duration) -> Duration {
        (ttl / 10).min(self.command_timeout)
    }

    /// Whether a node whose boot marker says `boot` and whose clock says `now` (both its own,
    /// in microseconds) has kept its data for the quarantine.
    fn votes(&self, boot: u64, now: u64) -> bool {
        now.saturating_sub(boot) >= micros(self.quarantine)
    }

    /// Puts leases a majority just renewed back on the nodes that answered they do not hold
    /// them (a node frozen past the lease, one restarted empty, a key deleted or evicted):
    /// each lease's value and end are read from a node that renewed it, and written where the
    /// key holds nothing or another token's tombstone (`scripts/put_back.lua`), to run out
    /// when that copy does. Otherwise a lease that lost a copy lives on a bare majority, and
    /// the next minority fault takes it. Safe because it only adds copies of a lease a
    /// majority holds now (so no other client can hold a majority), never over a live lock or
    /// the lease's own tombstone, and never past the copied lease's end.
    ///
    /// Best effort, within `budget` in all (a tenth of the shortest lease at most, so that it
    /// never makes a renewal answer late): the renewal awaits it, so that the caller's next
    /// command on the lease usually comes after it; what is not done in time is tried again
    /// at the next renewal. A copy landing after a release (which does not wait for a renewal
    /// in flight) on a node where the release found nothing is a minority copy that runs out
    /// with the lease it copied. A node older than Redis 7 (no `PEXPIRETIME`) is not copied
    /// from.
    async fn put_back(&self, leases: Vec<PutBack>, budget: Duration) {
        let mut sources: Vec<usize> = leases.iter().map(|l| l.from).collect();
        sources.sort_unstable();
        sources.dedup();
        let from_each = sources.into_iter().map(|from| {
            let leases: Vec<&PutBack> = leases.iter().filter(|l| l.from == from).collect();
            self.put_back_from(from, leases)
        });
        let _ = tokio::time::timeout(budget, join_all(from_each)).await;
    }

    /// [`put_back`](Self::put_back) of the leases read from node `from`.
    async fn put_back_from(&self, from: usize, leases: Vec<&PutBack>) {
        let keys: Vec<String> = leases.iter().map(|l| l.key.clone()).collect();
        let Ok(read) = self.nodes[from].values_and_ends(&keys).await else {
            return;
        };
        let mut copies: Vec<Vec<(String, String, u64)>> = vec![Vec::new(); self.nodes.len()];
        for (lease, read) in leases.iter().zip(read) {
            // Still this lease's lock on the source (it may have been released since).
            let Some((value, end)) = read.filter(|(value, _)| {
                parse_stored(value, None).is_some_and(|s| s.token == lease.token.as_str())
            }) else {
                continue;
            };
            for &to in &lease.to {
                copies[to].push((lease.key.clone(), value.clone(), end));
            }
        }
        join_all(
            copies
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.is_empty())
                .map(|(to, c)| self.nodes[to].put_back(c)),
        )
        .await;
    }

    /// What every node stores for `key` (in node order): its lock, none, or why it could not
    /// be read.
    async fn read_everywhere(&self, key: &str) -> Vec<Result<Option<StoredLock>, LockError>> {
        let keys = [key.to_owned()];
        join_all(self.nodes.iter().map(|node| {
            let keys = &keys;
            async move {
                within(self.command_timeout, node, node.read_locks(keys))
                    .await
                    .map(|mut found| found.pop().flatten())
            }
        }))
        .await
    }

    /// Runs `op` on every node, each on a task of its own (so that it finishes even when the
    /// caller stops listening); the answers in the order they come.
    fn on_every_node<T, F, Fut>(&self, op: F) -> mpsc::UnboundedReceiver<Result<T, LockError>>
    where
        T: Send + 'static,
        F: Fn(Arc<RedisBackend>, Duration) -> Fut,
        Fut: Future<Output = Result<T, LockError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        for node in &self.nodes {
            let answer = op(node.clone(), self.command_timeout);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(answer.await);
            });
        }
        rx
    }
}

impl Deployment for RedlockBackend {
    fn kind(&self) -> &'static str {
        "redlock"
    }

    /// The quarantine: a node that lost its data does not vote for that long.
    fn max_ttl(&self) -> Option<Duration> {
        Some(self.quarantine)
    }

    async fn acquire(&self, args: &AcquireArgs<'_>) -> Result<Attempt, LockError> {
        let n = self.nodes.len();
        let quorum = self.quorum();
        let per_node = self.node_timeout(args.ttl);
        let request = Arc::new(OwnedAcquire::from(args));
        let (verdict_tx, verdict_rx) = watch::channel(Verdict::Pending);
        let verdict = VerdictOnDrop(verdict_tx);
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        let mut tasks: Vec<JoinHandle<()>> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                tokio::spawn(acquire_on_node(NodeAcquire {
                    index: i,
                    node: node.clone(),
                    boot_key: self.boot_key.clone(),
                    request: request.clone(),
                    answer_within: per_node,
                    release_within: self.command_timeout,
                    answers: answers_tx.clone(),
                    verdict: verdict_rx.clone(),
                }))
            })
            .collect();
        drop(answers_tx);

        let (mut votes, mut not_voting, mut failed, mut answered) = (0, 0, 0, 0);
        let mut fence = 0;
        let mut busy: Option<Option<Duration>> = None;
        let mut first_error = None;
        while let Some((i, answer)) = answers.recv().await {
            answered += 1;
            match answer {
                Some(Ok((Attempt::Acquired { fence: f }, boot, now))) => {
                    if self.votes(boot, now) {
                        votes += 1;
                        fence = fence.max(f);
                    } else {
                        not_voting += 1;
                    }
                }
                Some(Ok((Attempt::Busy { .. }, boot, now))) if !self.votes(boot, now) => {
                    not_voting += 1; // what it holds may postdate its restart: no vote
                }
                Some(Ok((Attempt::Busy { pttl }, _, _))) => {
                    let shortest = match (busy.flatten(), pttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    busy = Some(shortest);
                }
                Some(Err(err @ LockError::KeyConflict { .. })) => {
                    give_back(verdict, &mut tasks, per_node).await;
                    return Err(err);
                }
                Some(Err(err)) => {
                    failed += 1;
                    first_error.get_or_insert(err);
                }
                None => {
                    failed += 1;
                    first_error.get_or_insert_with(|| {
                        LockError::backend(
                            BackendErrorKind::Timeout,
                            format!("no answer within {per_node:?} (at {})", self.nodes[i].url()),
                        )
                    });
                }
            }
            if votes >= quorum {
                verdict.keep();
                return Ok(Attempt::Acquired { fence });
            }
            if votes + (n - answered) < quorum {
                break; // the nodes still silent cannot make a majority any more
            }
        }
        give_back(verdict, &mut tasks, per_node).await;
        if not_voting + failed > n - quorum {
            let mut detail = String::new();
            if not_voting > 0 {
                detail.push_str(&format!(
                    "; {not_voting} kept their data for less than the quarantine ({:?})",
                    self.quarantine
                ));
            }
            if let Some(err) = first_error {
                detail.push_str(&format!("; {err}"));
            }
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "Redlock quorum unavailable: {} of {n} nodes could vote, {quorum} needed{detail}",
                    n - not_voting - failed
                ),
            ));
        }
        Ok(Attempt::Busy {
            pttl: busy.flatten(),
        })
    }

    /// Released when a majority released it; the nodes still silent are left to finish in the
    /// background (each within the command timeout).
    async fn release(&self, key: &str, token: &Token) -> Result<Release, LockError> {
        let n = self.nodes.len();
        let quorum = self.quorum();
        let mut answers = self.on_every_node(|node, timeout| {
            let (key, token) = (key.to_owned(), token.clone());
            async move { within(timeout, &node, node.release(&key, &token)).await }
        });
        let (mut released, mut not_held, mut notified, mut unsure) = (0, 0, false, false);
        let mut first_error = None;
        while let Some(answer) = answers.recv().await {
            match answer {
                Ok(Release::Released) => released += 1,
                Ok(Release::Notified) => {
                    released += 1;
                    notified = true;
                }
                Ok(Release::NotHeld) => not_held += 1,
                // That node's earlier copy may have released it, or it had lost it: neither
                // side of the quorum.
                Ok(Release::Unsure) => unsure = true,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
            if released >= quorum {
                return Ok(if notified {
                    Release::Notified
                } else {
                    Release::Released
                });
            }
            if not_held > n - quorum {
                return Ok(Release::NotHeld);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None if unsure => Ok(Release::Unsure),
            None => Ok(Release::NotHeld),
        }
    }

    /// Per lease: held when a majority renewed it, lost when a majority says another token
    /// (or none) holds it, unknown otherwise (retried until the deadline). A node gets at most
    /// a tenth of the shortest lease in the batch to answer. A lease a majority renewed is put
    /// back on the nodes that said they do not hold it ([`put_back`](Self::put_back)).
    async fn renew(&self, batch: &[Renewal<'_>]) -> Result<Vec<Option<bool>>, LockError> {
        let Some(shortest) = batch.iter().map(|r| r.ttl).min() else {
            return Ok(Vec::new());
        };
        // A renewal (or a minimum hold's rest, or a lease shortened near its cap) may carry a
        // lease of a few milliseconds: a tenth of it is no time to answer in. Its deadline is
        // measured from when it was sent whatever the wait, so waiting longer costs nothing.
        let per_node = self
            .node_timeout(shortest)
            .max(RENEW_FLOOR)
            .min(self.command_timeout);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|n| within(per_node, n, n.renew(batch))),
        )
        .await;
        // The nodes that answered `said` for lease `i`.
        let said = |i: usize, said: bool| -> Vec<usize> {
            (0..answers.len())
                .filter(|&n| matches!(&answers[n], Ok(v) if v.get(i) == Some(&Some(said))))
                .collect()
        };
        let mut put_back = Vec::new();
        let renewed = (0..batch.len())
            .map(|i| {
                let (yes, no) = (said(i, true), said(i, false));
                if yes.len() >= self.quorum() {
                    if !no.is_empty() {
                        put_back.push(PutBack {
                            key: batch[i].key.to_owned(),
                            token: batch[i].token.clone(),
                            from: yes[0],
                            to: no,
                        });
                    }
                    Some(true)
                } else if no.len() > self.nodes.len() - self.quorum() {
                    Some(false)
                } else {
                    None
                }
            })
            .collect();
        if !put_back.is_empty() {
            self.put_back(put_back, self.node_timeout(shortest)).await;
        }
        Ok(renewed)
    }

    /// Redlock never queues: nothing to leave.
    async fn leave(&self, _key: &str, _waiter: &str) -> Result<(), LockError> {
        Ok(())
    }

    /// The holder as a majority of nodes say: the token a majority holds `key` with, with the
    /// largest of those nodes' fences and what remains until fewer than a majority hold it
    /// (the rule [`list_page`](Self::list_page) follows). `None` when no token has a
    /// majority; an error when too many nodes could not be read to tell.
    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        let reads = self.read_everywhere(key).await;
        let held: Vec<&StoredLock> = reads
            .iter()
            .filter_map(|r| r.as_ref().ok()?.as_ref())
            .collect();
        if let Some(info) = agreed(&held, self.quorum()) {
            return Ok(Some(info));
        }
        let unknown = reads.iter().filter(|r| r.is_err()).count();
        match reads.iter().find_map(|r| r.as_ref().err()) {
            // The silent nodes could still make a majority for some token.
            Some(err) if unknown + held.len() >= self.quorum() => Err(error_copy(err)),
            _ => Ok(None),
        }
    }

    /// Releases the acquisition that holds `key` under `fence` on some node. Fences are per
    /// node (each node's clock), so the fence names the acquisition's token on the node that
    /// has it; then every node holding that token releases it under its own fence. True when
    /// a majority released it (a lock held on a minority only is cleaned up, and false).
    async fn force_release(&self, key: &str, fence: u64) -> Result<bool, LockError> {
        let reads = self.read_everywhere(key).await;
        let unknown = reads.iter().filter(|r| r.is_err()).count();
        let first_error = || reads.iter().find_map(|r| r.as_ref().err()).map(error_copy);
        let token = reads.iter().find_map(|read| match read {
            Ok(Some(held)) if held.info.fencing_token == fence => Some(held.token.clone()),
            _ => None,
        });
        let Some(token) = token else {
            // Nobody answering holds it under that fence; the silent nodes could.
            return match first_error() {
                Some(err) if unknown >= self.quorum() => Err(err),
                _ => Ok(false),
            };
        };
        let answers = join_all(self.nodes.iter().zip(&reads).map(|(node, read)| {
            let token = &token;
            async move {
                match read {
                    Ok(Some(held)) if held.token == *token => {
                        within(
                            self.command_timeout,
                            node,
                            node.force_release(key, held.info.fencing_token),
                        )
                        .await
                    }
                    _ => Ok(false),
                }
            }
        }))
        .await;
        let released = answers.iter().filter(|a| matches!(a, Ok(true))).count();
        let failed = answers.iter().filter(|a| a.is_err()).count() + unknown;
        if released >= self.quorum() {
            return Ok(true);
        }
        if released + failed >= self.quorum() {
            let err = answers
                .iter()
                .find_map(|a| a.as_ref().err())
                .map(error_copy)
                .or_else(first_error);
            if let Some(err) = err {
                return Err(err);
            }
        }
        Ok(false)
    }

    /// A listing page: the nodes are scanned one after the other. A lock is listed when a
    /// majority of nodes hold its key with the same token, once, from the first node (in the
    /// order given) that was scanned to the end and holds it. Its fence is the largest of
    /// those nodes', its lease what remains until fewer than a majority hold it. A node that
    /// cannot be scanned is passed over; when more than a minority cannot, the listing ends
    /// with an error.
    async fn list_page(&self, at: &mut ListCursor) -> Result<Vec<LockInfo>, LockError> {
        let n = self.nodes.len();
        let quorum = self.quorum();
        if !matches!(at.state, ListState::Redlock { .. }) {
            at.state = ListState::Redlock {
                scanned: vec![false; n],
                failed: 0,
            };
        }
        let i = at.node;
        let Some(node) = self.nodes.get(i) else {
            at.done = true;
            return Ok(Vec::new());
        };
        let page = within(
            self.command_timeout,
            node,
            node.scan_page(at.cursor, &at.pattern),
        )
        .await;
        let ListState::Redlock { scanned, failed } = &mut at.state else {
            return Ok(Vec::new());
        };
        let (next, locks) = match page {
            Ok(page) => page,
            Err(err) => {
                *failed += 1;
                tracing::warn!(%err, "a Redlock node could not be listed; passing it over");
                if *failed > n - quorum {
                    at.done = true;
                    return Err(LockError::backend(
                        BackendErrorKind::Connection,
                        format!(
                            "Redlock quorum unavailable: {failed} of {n} nodes could not be listed ({err})"
                        ),
                    ));
                }
                at.advance(0, n);
                return Ok(Vec::new());
            }
        };
        let keys: Vec<String> = locks.iter().map(|l| l.info.key.clone()).collect();
        let others = join_all(self.nodes.iter().enumerate().map(|(j, other)| {
            let keys = &keys;
            async move {
                if j == i || keys.is_empty() {
                    return None;
                }
                within(self.command_timeout, other, other.read_locks(keys))
                    .await
                    .ok()
            }
        }))
        .await;
        let mut out = Vec::with_capacity(locks.len());
        'locks: for (k, lock) in locks.into_iter().enumerate() {
            let StoredLock { token, mut info } = lock;
            let mut ttls = vec![info.ttl];
            for (j, answer) in others.iter().enumerate() {
                let Some(held) = answer
                    .as_ref()
                    .and_then(|a| a.get(k))
                    .and_then(Option::as_ref)
                else {
                    continue;
                };
                if held.token != token {
                    continue;
                }
                if j < i && scanned[j] {
                    continue 'locks; // listed from node j already
                }
                info.fencing_token = info.fencing_token.max(held.info.fencing_token);
                info.contended |= held.info.contended;
                ttls.push(held.info.ttl);
            }
            if ttls.len() < quorum {
                continue;
            }
            // Held until all but quorum - 1 of them ran out.
            ttls.sort_unstable_by(|a, b| b.cmp(a));
            info.ttl = ttls[quorum - 1];
            out.push(info);
        }
        if next == 0 {
            scanned[i] = true;
        }
        at.advance(next, n);
        Ok(out)
    }

    /// Release notices from every node, on one shared wake-up. Returns once a majority of
    /// nodes subscribed (a lock held on a majority then publishes its release on at least one
    /// of them), or every node answered and at least one subscribed; a late node joins in the
    /// background.
    async fn subscribe(&self, key: &str, waiter: &str) -> Result<Wakeups, LockError> {
        let notify = Arc::new(Notify::new());
        let live: Arc<Mutex<Vec<Wakeups>>> = Arc::default();
        let mut answers = self.on_every_node(|node, _| {
            let (key, waiter, notify) = (key.to_owned(), waiter.to_owned(), notify.clone());
            let live = Arc::downgrade(&live);
            async move {
                let wakeups = node.subscribe_shared(&key, &waiter, notify).await?;
                if let Some(live) = live.upgrade() {
                    live.lock().unwrap_or_else(|p| p.into_inner()).push(wakeups);
                }
                Ok::<(), LockError>(())
            }
        });
        let (mut subscribed, mut first_error) = (0, None);
        while let Some(answer) = answers.recv().await {
            match answer {
                Ok(()) => subscribed += 1,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
            if subscribed >= self.quorum() {
                break;
            }
        }
        if subscribed == 0 {
            let detail = first_error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!("no Redlock node accepted a subscription{detail}"),
            ));
        }
        Ok(Wakeups::new(notify, live))
    }
}

/// `op` on `node`, or a timeout error after `timeout`.
async fn within<T>(
    timeout: Duration,
    node: &RedisBackend,
    op: impl Future<Output = Result<T, LockError>>,
) -> Result<T, LockError> {
    tokio::time::timeout(timeout, op).await.unwrap_or_else(|_| {
        Err(LockError::backend(
            BackendErrorKind::Timeout,
            format!("no answer within {timeout:?} (at {})", node.url()),
        ))
    })
}

/// A lease to put back where it was lost (see [`RedlockBackend::put_back`]).
struct PutBack {
    key: String,
    token: Token,
    /// A node that renewed it, to read its value from.
    from: usize,
    /// The nodes that answered they do not hold it.
    to: Vec<usize>,
}

/// An acquire's arguments, owned by the per-node tasks.
struct OwnedAcquire {
    key: String,
    user_key: String,
    token: Token,
    owner: String,
    ttl: Duration,
    /// Whether the caller will wait (then a release publishes a notice for it).
    waits: bool,
}

impl From<&AcquireArgs<'_>> for OwnedAcquire {
    fn from(args: &AcquireArgs<'_>) -> Self {
        Self {
            key: args.key.to_owned(),
            user_key: args.user_key.to_owned(),
            token: args.token.clone(),
            owner: args.owner.to_owned(),
            ttl: args.ttl,
            waits: args.waiter.is_some(),
        }
    }
}

impl OwnedAcquire {
    fn args(&self) -> AcquireArgs<'_> {
        AcquireArgs {
            key: &self.key,
            user_key: &self.user_key,
            token: &self.token,
            owner: &self.owner,
            ttl: self.ttl,
            // Redlock does not queue; a waiting caller only asks for notices.
            waiter: self.waits.then_some("*"),
        }
    }
}

/// What became of an acquire: the per-node tasks release what they may have set unless the
/// lock is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pending,
    Keep,
    GiveBack,
}

/// Gives back unless told to keep, also when the acquire is dropped half-way.
struct VerdictOnDrop(watch::Sender<Verdict>);

impl VerdictOnDrop {
    fn keep(self) {
        self.0.send_replace(Verdict::Keep);
    }
}

impl Drop for VerdictOnDrop {
    fn drop(&mut self) {
        self.0.send_if_modified(|v| {
            let pending = *v == Verdict::Pending;
            if pending {
                *v = Verdict::GiveBack;
            }
            pending
        });
    }
}

/// Tells the per-node tasks to release, and waits (for at most `per_node`) for every node to
/// have answered and, if it granted the lock, to have it released again: the nodes that answer
/// in time are clean when the acquire returns; a silent one is released in the background.
async fn give_back(verdict: VerdictOnDrop, tasks: &mut [JoinHandle<()>], per_node: Duration) {
    drop(verdict);
    let _ = tokio::time::timeout(per_node, join_all(tasks.iter_mut())).await;
}

type NodeAnswer = Option<Result<(Attempt, u64, u64), LockError>>;

/// One node's part of an acquire.
struct NodeAcquire {
    index: usize,
    node: Arc<RedisBackend>,
    boot_key: Arc<str>,
    request: Arc<OwnedAcquire>,
    answer_within: Duration,
    release_within: Duration,
    answers: mpsc::UnboundedSender<(usize, NodeAnswer)>,
    verdict: watch::Receiver<Verdict>,
}

/// Asks one node (`None`: no answer in time), reports the answer, and releases the node again
/// if it may hold the lock and the acquire gave it back. The release follows the acquire on
/// the same connection, so a late acquire cannot land after it.
async fn acquire_on_node(mut task: NodeAcquire) {
    let answer = tokio::time::timeout(
        task.answer_within,
        task.node
            .acquire_with_boot(&task.request.args(), &task.boot_key),
    )
    .await
    .ok();
    let may_hold = !matches!(
        answer,
        Some(Ok((Attempt::Busy { .. }, _, _)) | Err(LockError::KeyConflict { .. }))
    );
    let _ = task.answers.send((task.index, answer));
    if !may_hold {
        return;
    }
    let give_back = task
        .verdict
        .wait_for(|v| *v != Verdict::Pending)
        .await
        .is_ok_and(|v| *v == Verdict::GiveBack);
    if give_back {
        let request = &task.request;
        let released = within(
            task.release_within,
            &task.node,
            task.node.release(&request.key, &request.token),
        )
        .await;
        if let Err(err) = released {
            tracing::debug!(%err, "giving back a Redlock node failed; the lease will run out");
        }
    }
}

/// A node's error again, for an answer made of several nodes' answers.
fn error_copy(err: &LockError) -> LockError {
    match err {
        LockError::Backend { kind, message, .. } => LockError::backend(*kind, message.clone()),
        other => LockError::backend(BackendErrorKind::Server, other.to_string()),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The least a node is given to answer a renewal, however short the lease it sets.
const RENEW_FLOOR: Duration = Duration::from_millis(50);

/// What a majority of nodes say of one key, from what each node that holds it stores: the
/// token at least `quorum` of them hold, with the largest of their fences, `contended` if any
/// says so, and the lease until all but `quorum - 1` of them ran out.
fn agreed(held: &[&StoredLock], quorum: usize) -> Option<LockInfo> {
    let winner = held
        .iter()
        .find(|h| held.iter().filter(|o| o.token == h.token).count() >= quorum)?;
    let same: Vec<&&StoredLock> = held.iter().filter(|o| o.token == winner.token).collect();
    let mut info = winner.info.clone();
    info.fencing_token = same.iter().map(|h| h.info.fencing_token).max().unwrap_or(0);
    info.contended = same.iter().any(|h| h.info.contended);
    let mut ttls: Vec<Option<Duration>> = same.iter().map(|h| h.info.ttl).collect();
    ttls.sort_unstable_by(|a, b| b.cmp(a));
    info.ttl = ttls[quorum - 1];
    Some(info)
}
