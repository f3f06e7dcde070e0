//! What a lock tells the outside about itself: `tracing` spans and events, and (feature
//! `metrics`) its [metrics](crate::metrics). The acquire, the lease and the watchdog call in
//! here at the moments that matter; this module knows nothing of them.
//!
//! Spans (names and fields are documented in the crate docs, "Tracing"):
//! - `distlock.acquire` (DEBUG), one per awaited request, entered while it runs;
//! - `distlock.hold` (INFO), one per lock held: opened when acquired, a child of the span
//!   that awaited the request, closed when the hold ends (released or lost); the events about
//!   the hold are emitted inside it;
//! - `distlock.renew` (DEBUG), one per watchdog renewal batch, a root span that follows from
//!   the hold spans of the locks it renews.
//!
//! With no subscriber interested, a span is a disabled handle: nothing is formatted or
//! allocated for it (tracing's callsite filtering), and fields are recorded lazily.

use std::time::Duration;

use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{Level, Span};

use crate::LockError;
use crate::metrics::{Answer, LockMetrics};

/// The `distlock.acquire` span, before its request starts.
pub(crate) fn acquire_span(key: &str, ttl: Duration, wait: Duration) -> Span {
    tracing::debug_span!(
        "distlock.acquire",
        key,
        ttl = ?ttl,
        wait = ?wait,
        attempts = Empty,
        outcome = Empty,
        fence = Empty,
        error = Empty,
    )
}

/// The span a hold span will be the child of: the caller's, if a hold span can be enabled.
pub(crate) fn caller_span() -> Span {
    if tracing::level_enabled!(Level::INFO) {
        Span::current()
    } else {
        Span::none()
    }
}

/// One request for a lock, from being awaited to its outcome: the acquire span's fields,
/// the waiting gauge and the request's metrics. Dropped without an outcome (the request
/// future was dropped), it records `cancelled`.
pub(crate) struct AcquireTrace {
    span: Span,
    caller: Span,
    started: Instant,
    attempts: u64,
    metrics: LockMetrics,
    waiting: bool,
    finished: bool,
}

impl AcquireTrace {
    pub(crate) fn new(span: Span, caller: Span) -> Self {
        Self {
            span,
            caller,
            started: Instant::now(),
            attempts: 0,
            // A unit struct without the `metrics` feature.
            #[allow(clippy::default_constructed_unit_structs)]
            metrics: LockMetrics::default(),
            waiting: false,
            finished: false,
        }
    }

    /// The request's metrics, known once its key is valid.
    pub(crate) fn set_metrics(&mut self, metrics: LockMetrics) {
        self.metrics = metrics;
    }

    /// The request has to wait: the lock is held (here or elsewhere). Once per request.
    pub(crate) fn waiting(&mut self) {
        if !self.waiting {
            self.waiting = true;
            self.metrics.waiting(true);
        }
    }

    /// An acquire command sent at `sent` got `answer` (now).
    pub(crate) fn answered(&mut self, sent: Instant, answer: Answer) {
        self.attempts += 1;
        self.metrics.answered(sent, answer);
    }

    fn finish(&mut self, outcome: &'static str) {
        self.finished = true;
        self.span.record("outcome", outcome);
        self.span.record("attempts", self.attempts);
        if self.waiting {
            self.waiting = false;
            self.metrics.waiting(false);
        }
    }

    /// The lock `key` was acquired with `fence`: the hold begins.
    pub(crate) fn acquired(&mut self, key: &str, fence: u64) -> HoldTrace {
        self.finish("acquired");
        self.span.record("fence", fence);
        self.metrics.acquired(self.started);
        tracing::debug!(key, fence, waited = ?self.started.elapsed(), "lock acquired");
        let span = tracing::info_span!(parent: &self.caller, "distlock.hold", key, fence);
        span.follows_from(&self.span);
        HoldTrace {
            span,
            metrics: self.metrics.clone(),
            since: Some(Instant::now()),
        }
    }

    /// The request ended without the lock: busy for its whole wait, or an error.
    pub(crate) fn failed(&mut self, err: &LockError) {
        if self.finished {
            return;
        }
        match err {
            LockError::Busy { key, retry_after } => {
                self.finish("busy");
                self.metrics.busy(self.started);
                let waited = || self.started.elapsed();
                tracing::debug!(key, retry_after = ?retry_after, waited = ?waited(), "lock busy");
            }
            err => {
                self.finish("error");
                self.span.record("error", tracing::field::display(err));
                self.metrics.failed();
            }
        }
    }
}

impl Drop for AcquireTrace {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("cancelled");
        }
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The holder let go.
    Released,
    /// Another holder or none was found, or the lease ran out.
    Lost,
    /// The lease reached its `max_hold`.
    MaxHold,
}

/// One hold: its span (closed when this is dropped), its metrics, since when it is held
/// (`None`: not traced, e.g. a lease made by a unit test).
#[derive(Debug)]
pub(crate) struct HoldTrace {
    span: Span,
    metrics: LockMetrics,
    since: Option<Instant>,
}

impl Default for HoldTrace {
    fn default() -> Self {
        Self {
            span: Span::none(),
            // A unit struct without the `metrics` feature.
            #[allow(clippy::default_constructed_unit_structs)]
            metrics: LockMetrics::default(),
            since: None,
        }
    }
}

impl HoldTrace {
    /// The hold span (disabled when nobody listens).
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// A renewal of this lock got no usable answer.
    pub(crate) fn renewal_failed(&self) {
        self.metrics.renewal_failed();
    }

    /// The hold of `key` (`fence`) ended: its event inside its span, its metrics; the span
    /// closes here.
    pub(crate) fn end(self, key: &str, fence: u64, ending: Ending) {
        let _inside = self.span.enter();
        // Only read the clock for a subscriber that records the event.
        let held = || self.since.map(|since| since.elapsed());
        match ending {
            Ending::Released => {
                if let Some(since) = self.since {
                    self.metrics.released(since);
                }
                tracing::debug!(key, fence, held = ?held().unwrap_or_default(), "lock released");
            }
            Ending::Lost => {
                if let Some(since) = self.since {
                    self.metrics.lost(since);
                }
                tracing::warn!(key, fence, held = ?held().unwrap_or_default(), "lock lost");
            }
            Ending::MaxHold => {
                if let Some(since) = self.since {
                    self.metrics.lost(since);
                }
                tracing::warn!(key, fence, held = ?held().unwrap_or_default(), "lock held for its maximum (max_hold): ended");
            }
        }
    }
}

/// The `distlock.renew` span of one watchdog batch of `locks` locks (a root span: the
/// watchdog works for every holder); it follows from the hold spans of those locks.
pub(crate) fn renew_span(locks: usize) -> Span {
    tracing::debug_span!(parent: None, "distlock.renew", locks, outcome = Empty)
}
