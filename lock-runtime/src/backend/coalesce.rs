//! Coalescing: the acquires and releases waiting on one Redis connection go to the server
//! together, as one script call.
//!
//! Every acquire and release on a server joins one queue. A task on the library's background
//! runtime takes what is queued, up to [`MAX_BATCH`] operations, and sends it as one call of
//! the batch script, which runs each operation's own script in turn (`scripts/batch.lua`).
//! One call is out at a time ([`IN_FLIGHT`]). An operation that finds no call out goes at
//! once, alone, so a lone caller waits no longer than before. Operations that arrive while a
//! call is out wait for the next one, so under load many locks share one script set-up, one
//! write and one reply.
//!
//! Order is kept: operations are sent in the order they were queued, and a call is answered
//! (its `EVAL` fallback and its retry on a dropped connection included) before the next is
//! sent. The release sent for an acquire whose caller went away is queued after that
//! acquire, so it cannot reach the server first and leave the lock behind.
//!
//! Each operation keeps its own outcome: the batch script runs each under `pcall`, and the
//! reply is read without turning one operation's error entry into an error for all.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::link::Link;
use super::script::{BATCH, handoff_args};
use crate::{BackendErrorKind, LockError};

/// The most operations one call carries: each costs the server a few microseconds, so a
/// call stays well under a millisecond and other clients are not held up behind it.
const MAX_BATCH: usize = 64;

/// How many calls may be out at once: one, so that a call is answered, its `EVAL` fallback
/// and its retry on a dropped connection included, before the next is sent. Two calls out
/// could land in either order when the first must fall back, and the release of an abandoned
/// acquire would then find nothing to release.
const IN_FLIGHT: usize = 1;

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

struct Queued {
    op: Op,
    answer: oneshot::Sender<Result<redis::Value, LockError>>,
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
    pub(crate) async fn call(&self, op: Op) -> Result<redis::Value, LockError> {
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
    let mut open = true;
    loop {
        if calls.len() < IN_FLIGHT {
            let mut batch: Vec<Queued> = next.take().into_iter().collect();
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
        if !open && calls.is_empty() {
            return;
        }
        tokio::select! {
            // Polled first, so that a call just pushed is sent before anything else happens.
            biased;
            Some(()) = calls.next(), if !calls.is_empty() => {}
            q = queued.recv(), if open && calls.len() < IN_FLIGHT => match q {
                Some(q) => next = Some(q),
                None => open = false,
            },
        }
    }
}

/// One call of the batch script for `batch`; each operation gets its own answer, or a copy
/// of the call's error.
async fn send(link: Arc<Link>, batch: Vec<Queued>) {
    let [tombstone, reservation, publish] = handoff_args(None);
    let keys: Vec<&str> = batch
        .iter()
        .map(|q| match &q.op {
            Op::Acquire { key, .. } | Op::Release { key, .. } => key.as_str(),
        })
        .collect();
    let args: Vec<&str> = batch
        .iter()
        .flat_map(|q| match &q.op {
            Op::Acquire {
                token,
                ttl_ms,
                owner,
                waiter,
                ..
            } => ["A", token, ttl_ms, owner, waiter],
            Op::Release { token, .. } => ["R", token, &tombstone, &reservation, &publish],
        })
        .collect();
    let (keys, args) = (&keys, &args);
    let answers: Result<Vec<redis::Value>, LockError> = link
        .on_conn(|mut conn| async move {
            match BATCH.call_raw(&mut conn, keys, args).await? {
                redis::Value::Array(answers) => Ok(answers),
                other => Err(LockError::backend(
                    BackendErrorKind::Server,
                    format!("the batch script answered {other:?}"),
                )),
            }
        })
        .await;
    match answers {
        Ok(answers) if answers.len() == batch.len() => {
            for (q, answer) in batch.into_iter().zip(answers) {
                let _ = q.answer.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let message = format!(
                "the batch script answered {} times for {} operations",
                answers.len(),
                batch.len()
            );
            for q in batch {
                let _ = q
                    .answer
                    .send(Err(LockError::backend(BackendErrorKind::Server, &message)));
            }
        }
        Err(err) => {
            for q in batch {
                let _ = q.answer.send(Err(copy(&err)));
            }
        }
    }
}

/// The same failure for another operation of the call (kind and message; the source stays
/// with the first).
fn copy(err: &LockError) -> LockError {
    match err {
        LockError::Backend { kind, message, .. } => LockError::backend(*kind, message.clone()),
        other => LockError::backend(BackendErrorKind::Server, other.to_string()),
    }
}
