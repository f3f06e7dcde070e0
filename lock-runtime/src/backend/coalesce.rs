//! Coalescing: the acquires and releases waiting on one Redis connection go to the server
//! together, as one script call.
//!
//! Every acquire and release on a server joins one queue. A task on the library's background
//! runtime takes what is queued, up to [`MAX_BATCH`] operations, and sends it as one call of
//! the batch script, which runs each operation's own script in turn (`scripts/batch.lua`).
//! Up to [`IN_FLIGHT`] calls are out at once, so the server works on one call while the
//! client reads the answer to the last and writes the next. An operation that finds fewer
//! calls out goes at once, so a lone caller waits no longer than before. Under load many
//! locks share one script set-up, one write and one reply.
//!
//! Order: operations are sent in the order they were queued, but a call that must fall back
//! to `EVAL` or be sent again on a new connection may land after a later call. That is
//! harmless for operations that are concurrent anyway; operations of one lock that follow one
//! another are sent only after the one before was answered. The one exception is the release
//! of an acquire whose caller went away (dropped, or timed out) before the answer: sent at
//! once, it could land before the acquire. So the coalescer itself releases such an acquire,
//! in a later call once its call is answered, unless the answer says it was busy: the
//! release never lands before its acquire (should that release itself fail, the lock lasts
//! until its lease runs out). This rests on one rule for callers: a token whose acquire was
//! given up is never sent in another acquire (that one could be answered "acquired" as a
//! replay, then released by the copy owed for the first). A request that fails gives its
//! token up for good; Sentinel sends an operation again only to a new primary on another
//! server, where the owed release cannot reach.
//!
//! Each operation keeps its own outcome: the batch script runs each under `pcall`, and the
//! reply is read without turning one operation's error entry into an error for all.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::deployment::Attempt;
use super::link::Link;
use super::script::{BATCH, handoff_args, parse_attempt};
use crate::{BackendErrorKind, LockError};

/// The most operations one call carries: each costs the server a few microseconds, so a
/// call stays well under a millisecond and other clients are not held up behind it. With
/// [`IN_FLIGHT`] calls out, 64 operations are on their way at once: the best of the sizes
/// measured for 64 tasks on distinct keys (BENCHMARKS.md, "What this round's changes
/// bought"), where 1 × 64 left the server idle a quarter of the time between calls.
const MAX_BATCH: usize = 16;

/// How many calls may be out at once (see the [module docs](self) for what this means for
/// order).
const IN_FLIGHT: usize = 4;

/// One operation, with what its script needs (owned: it waits in the queue).
#[derive(Debug)]
pub(crate) enum Op {
    /// `acquire.lua`'s ARGV: token, lease in ms, owner info, waiter (`""`: do not queue).
    Acquire {
        key: String,
        token: String,
        ttl_ms: String,
        owner: String,
        waiter: String,
    },
    /// `release.lua` with the token (the tombstone, reservation and publish arguments are
    /// the same for every release).
    Release { key: String, token: String },
}

/// One operation's own answer: what its script alone would have answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) value: redis::Value,
    /// The call carrying it was sent more than once (its connection dropped before an
    /// answer): the copy that answered may have found the server changed by an earlier copy.
    pub(crate) sent_again: bool,
}

struct Queued {
    op: Op,
    answer: oneshot::Sender<Result<Answer, LockError>>,
}

/// The queue of one connection's acquires and releases; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Queued>,
    url: String,
    command_timeout: Duration,
}

impl Coalescer {
    /// Starts the sending task; it ends when the coalescer is dropped.
    pub(crate) fn new(link: Arc<Link>) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        let (url, command_timeout) = (link.url().to_owned(), link.command_timeout());
        crate::background::spawn(send_batches(link, queued));
        Self {
            queue,
            url,
            command_timeout,
        }
    }

    /// Sends `op` with the next call and returns its own answer: what its script alone would
    /// have answered. Bounded by the command timeout, waiting in the queue included.
    ///
    /// Cancel safety: an acquire dropped before its call was sent is not sent; once sent,
    /// it may land (as any command may).
    pub(crate) async fn call(&self, op: Op) -> Result<Answer, LockError> {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Queued { op, answer }).is_err() {
            return Err(LockError::backend(
                BackendErrorKind::Connection,
                format!("the connection's sender is gone (at {})", self.url),
            ));
        }
        match tokio::time::timeout(self.command_timeout, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(LockError::backend(
                BackendErrorKind::Connection,
                format!(
                    "the call carrying this command was dropped (at {})",
                    self.url
                ),
            )),
            Err(_) => Err(LockError::backend(
                BackendErrorKind::Timeout,
                format!(
                    "no answer within {:?} (at {})",
                    self.command_timeout, self.url
                ),
            )),
        }
    }
}

/// The sending task: takes what is queued while fewer than [`IN_FLIGHT`] calls are out.
async fn send_batches(link: Arc<Link>, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut calls = FuturesUnordered::new();
    let mut next: Option<Queued> = None;
    // Releases of acquires whose callers went away, sent before anything queued after.
    let mut orphans: Vec<Queued> = Vec::new();
    let mut open = true;
    loop {
        if calls.len() < IN_FLIGHT {
            let take = orphans.len().min(MAX_BATCH);
            let mut batch: Vec<Queued> = orphans.drain(..take).collect();
            batch.extend(next.take());
            while batch.len() < MAX_BATCH {
                match queued.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            // An acquire whose caller already gave up is not sent at all.
            batch.retain(|q| !(matches!(q.op, Op::Acquire { .. }) && q.answer.is_closed()));
            if !batch.is_empty() {
                calls.push(send(link.clone(), batch));
                continue;
            }
        }
        if !open && calls.is_empty() && orphans.is_empty() {
            return;
        }
        tokio::select! {
            // Polled first, so that a call just pushed is sent before anything else happens.
            biased;
            Some(released) = calls.next(), if !calls.is_empty() => orphans.extend(released),
            q = queued.recv(), if open && calls.len() < IN_FLIGHT => match q {
                Some(q) => next = Some(q),
                None => open = false,
            },
        }
    }
}

/// One call of the batch script for `batch`; each operation gets its own answer, or a copy
/// of the call's error. Returns the releases owed for acquires whose callers went away
/// before the answer and that acquired (or may have).
async fn send(link: Arc<Link>, batch: Vec<Queued>) -> Vec<Queued> {
    let shared = handoff_args(None);
    let keys: Vec<&str> = batch
        .iter()
        .map(|q| match &q.op {
            Op::Acquire { key, .. } | Op::Release { key, .. } => key.as_str(),
        })
        .collect();
    // The release arguments every release shares, then each operation's own (batch.lua).
    let mut args: Vec<&str> = shared.iter().map(String::as_str).collect();
    for q in &batch {
        match &q.op {
            Op::Acquire {
                token,
                ttl_ms,
                owner,
                waiter,
                ..
            } => args.extend(["A", token, ttl_ms, owner, waiter]),
            Op::Release { token, .. } => args.extend(["R", token]),
        }
    }
    let (keys, args) = (&keys, &args);
    let answers: Result<(Vec<redis::Value>, bool), LockError> = link
        .on_conn_tracked(|mut conn| async move {
            match BATCH.call_raw(&mut conn, keys, args).await? {
                redis::Value::Array(answers) => Ok(answers),
                other => Err(LockError::backend(
                    BackendErrorKind::Server,
                    format!("the batch script answered {other:?}"),
                )),
            }
        })
        .await;
    let answers: Vec<Result<Answer, LockError>> = match answers {
        Ok((answers, sent_again)) if answers.len() == batch.len() => answers
            .into_iter()
            .map(|value| Ok(Answer { value, sent_again }))
            .collect(),
        Ok((answers, _)) => {
            let message = format!(
                "the batch script answered {} times for {} operations",
                answers.len(),
                batch.len()
            );
            (0..batch.len())
                .map(|_| Err(LockError::backend(BackendErrorKind::Server, &message)))
                .collect()
        }
        Err(err) => (0..batch.len()).map(|_| Err(copy(&err))).collect(),
    };
    let mut owed = Vec::new();
    for (q, answer) in batch.into_iter().zip(answers) {
        let Queued { op, answer: to } = q;
        if let Err(unread) = to.send(answer)
            && let Some(release) = owed_release(op, &unread)
        {
            owed.push(release);
        }
    }
    owed
}

/// The release owed for `op` when its caller went away before `answer`: an acquire that did
/// not plainly answer "busy" (it acquired, or its call or script failed and it may have).
/// Nobody waits for the release's answer.
fn owed_release(op: Op, answer: &Result<Answer, LockError>) -> Option<Queued> {
    let Op::Acquire { key, token, .. } = op else {
        return None;
    };
    // Owed unless the answer says plainly that it did not acquire: a release by token of a
    // lock it does not hold changes nothing.
    let busy = match answer {
        Ok(Answer {
            value: redis::Value::Array(reply),
            ..
        }) => matches!(parse_attempt(reply, &key), Ok(Attempt::Busy { .. })),
        Ok(_) | Err(_) => false,
    };
    if busy {
        return None;
    }
    tracing::debug!(%key, "an acquire's caller went away before its answer; releasing it");
    let (answer, _nobody) = oneshot::channel();
    Some(Queued {
        op: Op::Release { key, token },
        answer,
    })
}

/// The same failure for another operation of the call (kind and message; the source stays
/// with the first).
fn copy(err: &LockError) -> LockError {
    match err {
        LockError::Backend { kind, message, .. } => LockError::backend(*kind, message.clone()),
        other => LockError::backend(BackendErrorKind::Server, other.to_string()),
    }
}
