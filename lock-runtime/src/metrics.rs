//! Metrics (feature `metrics`): what the locks of a process do, through the
//! [`metrics`](https://docs.rs/metrics) facade, for whichever recorder (exporter) the
//! application installs: Prometheus, StatsD, OpenTelemetry, ...
//!
//! Without the feature nothing is recorded and the `metrics` crate is not compiled in.
//!
//! # The metrics
//!
//! | name | type | unit | labels | what |
//! |---|---|---|---|---|
//! | `distlock_acquire_duration_seconds` | histogram | seconds | `key_label`, `deployment`, `outcome` = `acquired` \| `busy` \| `error` | one acquire command: from sending it to its answer (a waiting request sends several) |
//! | `distlock_wait_duration_seconds` | histogram | seconds | `key_label`, `deployment`, `outcome` = `acquired` \| `busy` | one request: from being awaited until it held the lock or gave up busy |
//! | `distlock_hold_duration_seconds` | histogram | seconds | `key_label`, `deployment`, `outcome` = `released` \| `lost` | one hold: from the acquire's answer until released (or let go by a dropped guard) or lost |
//! | `distlock_acquired_total` | counter | locks | `key_label`, `deployment` | requests that got the lock |
//! | `distlock_busy_total` | counter | requests | `key_label`, `deployment` | requests that gave up: the lock stayed held for their whole wait ([`LockError::Busy`](crate::LockError::Busy)) |
//! | `distlock_acquire_errors_total` | counter | requests | `key_label`, `deployment` | requests that failed otherwise (backend errors, timeouts, a key holding foreign data) |
//! | `distlock_released_total` | counter | locks | `key_label`, `deployment` | holds that ended by the holder letting go (released, dropped, kept for `min_hold`) |
//! | `distlock_lost_total` | counter | locks | `key_label`, `deployment` | holds that ended lost: another holder or none found, the lease ran out, `max_hold` reached |
//! | `distlock_renewal_failures_total` | counter | renewals | `key_label`, `deployment` | watchdog renewals of one lock that got no usable answer (retried until the lease deadline; a renewal that finds the lock gone counts as lost instead) |
//! | `distlock_held` | gauge | locks | `key_label`, `deployment` | locks held by this process now |
//! | `distlock_waiting` | gauge | requests | `key_label`, `deployment` | requests waiting now for a lock held by someone else (behind a local holder or a remote one) |
//!
//! `deployment` is `redis`, `sentinel`, `redlock`, `cluster` or `memory`. Durations are
//! recorded in seconds (`f64`), counts as integers. The `distlock-tower` layer adds its own
//! (`distlock_tower_requests_total`, see its crate docs).
//!
//! # The key label
//!
//! A raw key (`order:8841`, `invoice:2024-11:17`) must never become a label value: every
//! distinct value is a time series of its own, and an exporter keeps them all. Locks are
//! therefore labelled by a *key label* of bounded cardinality:
//!
//! - by default, the part of the key before its first `:` (`order:8841` → `order`), or
//!   `other` for a key without `:`. Keys named `<kind>:<id>`, the convention of this crate's
//!   examples and of the tower layer's namespaces, are then labelled by kind: what a dashboard
//!   wants, without the ids. A constant label would be as safe but says nothing; see
//!   [`default_key_label`];
//! - or by a function of yours,
//!   [`LockClientBuilder::metrics_key_label`](crate::LockClientBuilder::metrics_key_label).
//!
//! Whatever the function, one client reports at most [`MAX_KEY_LABELS`] distinct key labels;
//! keys whose label would be a new one past that are reported as `other`.
//!
//! # Installing a recorder
//!
//! Install the recorder before building the [`LockClient`](crate::LockClient): a client
//! registers its metrics with the recorder installed when it first meets a key label, and
//! keeps what it registered (with no recorder, nothing: recording then costs a branch).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! // metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?; first
//! let client = distlock::LockClient::memory();
//! let guard = client.lock("invoice:42").await?; // distlock_acquired_total{key_label="invoice",..} += 1
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

/// The most key labels one client reports; past that, new ones are reported as [`OTHER`].
///
/// # Examples
///
/// ```
/// assert_eq!(distlock::metrics::MAX_KEY_LABELS, 128);
/// ```
pub const MAX_KEY_LABELS: usize = 128;

/// The label of keys that have no label of their own (see the [module docs](self)).
///
/// # Examples
///
/// ```
/// use distlock::metrics::{OTHER, default_key_label};
/// assert_eq!(default_key_label("no-colon"), OTHER);
/// ```
pub const OTHER: &str = "other";

/// The default key label: the part of `key` before its first `:`, or [`OTHER`] for a key
/// without one (or with nothing before it).
///
/// # Examples
///
/// ```
/// use distlock::metrics::default_key_label;
/// assert_eq!(default_key_label("order:8841"), "order");
/// assert_eq!(default_key_label("payments:acct:7"), "payments");
/// assert_eq!(default_key_label("nightly-report"), "other");
/// ```
pub fn default_key_label(key: &str) -> &str {
    match key.split_once(':') {
        Some((kind, _)) if !kind.is_empty() => kind,
        _ => OTHER,
    }
}

/// Maps a key (without the client's prefix) to its label.
pub(crate) type KeyLabeller = dyn Fn(&str) -> Cow<'static, str> + Send + Sync;

#[cfg(feature = "metrics")]
pub(crate) use self::enabled::{Answer, LockMetrics, Metrics};

#[cfg(not(feature = "metrics"))]
pub(crate) use self::disabled::{Answer, LockMetrics, Metrics};

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use ::metrics::{Counter, Gauge, Histogram, Label, Unit};
    use tokio::time::Instant;

    use super::{KeyLabeller, MAX_KEY_LABELS, OTHER, default_key_label};

    /// One client's metrics: its deployment kind, its key labeller, and the handles it
    /// registered, by key label.
    pub(crate) struct Metrics {
        deployment: &'static str,
        labeller: Option<Arc<KeyLabeller>>,
        by_label: Mutex<HashMap<Box<str>, LockMetrics>>,
    }

    impl std::fmt::Debug for Metrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Metrics")
                .field("deployment", &self.deployment)
                .field("custom_key_label", &self.labeller.is_some())
                .finish_non_exhaustive()
        }
    }

    impl Metrics {
        pub(crate) fn new(deployment: &'static str, labeller: Option<Arc<KeyLabeller>>) -> Self {
            Self {
                deployment,
                labeller,
                by_label: Mutex::default(),
            }
        }

        /// The metrics of locks on `key`: registered the first time its label is met.
        pub(crate) fn for_key(&self, key: &str) -> LockMetrics {
            match &self.labeller {
                Some(labeller) => self.for_label(&labeller(key)),
                None => self.for_label(default_key_label(key)),
            }
        }

        /// The metrics of locks labelled `label`: registered the first time it is met.
        pub(crate) fn for_label(&self, label: &str) -> LockMetrics {
            let mut by_label = self.by_label.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = by_label.get(label) {
                return found.clone();
            }
            let label = if by_label.len() >= MAX_KEY_LABELS {
                if let Some(other) = by_label.get(OTHER) {
                    return other.clone();
                }
                OTHER
            } else {
                label
            };
            let registered = LockMetrics(Some(Arc::new(Handles::register(label, self.deployment))));
            by_label.insert(label.into(), registered.clone());
            registered
        }
    }

    /// The handles of one key label (`None`: nothing to record, e.g. a lease made in a unit
    /// test).
    #[derive(Clone, Default)]
    pub(crate) struct LockMetrics(Option<Arc<Handles>>);

    impl std::fmt::Debug for LockMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LockMetrics")
        }
    }

    struct Handles {
        acquire_acquired: Histogram,
        acquire_busy: Histogram,
        acquire_error: Histogram,
        wait_acquired: Histogram,
        wait_busy: Histogram,
        hold_released: Histogram,
        hold_lost: Histogram,
        acquired: Counter,
        busy: Counter,
        acquire_errors: Counter,
        released: Counter,
        lost: Counter,
        renewal_failures: Counter,
        held: Gauge,
        waiting: Gauge,
    }

    const ACQUIRE: &str = "distlock_acquire_duration_seconds";
    const WAIT: &str = "distlock_wait_duration_seconds";
    const HOLD: &str = "distlock_hold_duration_seconds";
    const ACQUIRED: &str = "distlock_acquired_total";
    const BUSY: &str = "distlock_busy_total";
    const ACQUIRE_ERRORS: &str = "distlock_acquire_errors_total";
    const RELEASED: &str = "distlock_released_total";
    const LOST: &str = "distlock_lost_total";
    const RENEWAL_FAILURES: &str = "distlock_renewal_failures_total";
    const HELD: &str = "distlock_held";
    const WAITING: &str = "distlock_waiting";

    fn describe() {
        use ::metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_histogram!(
            ACQUIRE,
            Unit::Seconds,
            "One acquire command, from sending it to its answer."
        );
        describe_histogram!(
            WAIT,
            Unit::Seconds,
            "One lock request, from being awaited until it held the lock or gave up."
        );
        describe_histogram!(
            HOLD,
            Unit::Seconds,
            "One hold, from acquired until released or lost."
        );
        describe_counter!(ACQUIRED, Unit::Count, "Lock requests that got the lock.");
        describe_counter!(BUSY, Unit::Count, "Lock requests that gave up busy.");
        describe_counter!(
            ACQUIRE_ERRORS,
            Unit::Count,
            "Lock requests that failed with an error."
        );
        describe_counter!(RELEASED, Unit::Count, "Holds the holder let go.");
        describe_counter!(LOST, Unit::Count, "Holds that ended lost.");
        describe_counter!(
            RENEWAL_FAILURES,
            Unit::Count,
            "Renewals of one lock that got no usable answer."
        );
        describe_gauge!(HELD, Unit::Count, "Locks held by this process.");
        describe_gauge!(
            WAITING,
            Unit::Count,
            "Lock requests waiting for a lock held elsewhere."
        );
    }

    impl Handles {
        fn register(key_label: &str, deployment: &'static str) -> Self {
            describe();
            let labels = [
                Label::new("key_label", key_label.to_owned()),
                Label::new("deployment", deployment),
            ];
            let with = |outcome: &'static str| {
                let mut all = labels.to_vec();
                all.push(Label::new("outcome", outcome));
                all
            };
            Self {
                acquire_acquired: ::metrics::histogram!(ACQUIRE, with("acquired")),
                acquire_busy: ::metrics::histogram!(ACQUIRE, with("busy")),
                acquire_error: ::metrics::histogram!(ACQUIRE, with("error")),
                wait_acquired: ::metrics::histogram!(WAIT, with("acquired")),
                wait_busy: ::metrics::histogram!(WAIT, with("busy")),
                hold_released: ::metrics::histogram!(HOLD, with("released")),
                hold_lost: ::metrics::histogram!(HOLD, with("lost")),
                acquired: ::metrics::counter!(ACQUIRED, labels.to_vec()),
                busy: ::metrics::counter!(BUSY, labels.to_vec()),
                acquire_errors: ::metrics::counter!(ACQUIRE_ERRORS, labels.to_vec()),
                released: ::metrics::counter!(RELEASED, labels.to_vec()),
                lost: ::metrics::counter!(LOST, labels.to_vec()),
                renewal_failures: ::metrics::counter!(RENEWAL_FAILURES, labels.to_vec()),
                held: ::metrics::gauge!(HELD, labels.to_vec()),
                waiting: ::metrics::gauge!(WAITING, labels.to_vec()),
            }
        }
    }

    /// What one acquire command got back.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Answer {
        Acquired,
        Busy,
        Error,
    }

    impl LockMetrics {
        fn with(&self, record: impl FnOnce(&Handles)) {
            if let Some(handles) = &self.0 {
                record(handles);
            }
        }

        /// Clocks are read only when there is something to record, as below.
        pub(crate) fn answered(&self, sent: Instant, answer: Answer) {
            self.with(|h| {
                let took = sent.elapsed();
                match answer {
                    Answer::Acquired => h.acquire_acquired.record(took),
                    Answer::Busy => h.acquire_busy.record(took),
                    Answer::Error => h.acquire_error.record(took),
                }
            });
        }

        pub(crate) fn acquired(&self, started: Instant) {
            self.with(|h| {
                h.wait_acquired.record(started.elapsed());
                h.acquired.increment(1);
                h.held.increment(1.0);
            });
        }

        pub(crate) fn busy(&self, started: Instant) {
            self.with(|h| {
                h.wait_busy.record(started.elapsed());
                h.busy.increment(1);
            });
        }

        pub(crate) fn failed(&self) {
            self.with(|h| h.acquire_errors.increment(1));
        }

        pub(crate) fn waiting(&self, started: bool) {
            self.with(|h| {
                if started {
                    h.waiting.increment(1.0);
                } else {
                    h.waiting.decrement(1.0);
                }
            });
        }

        pub(crate) fn released(&self, since: Instant) {
            self.with(|h| {
                h.hold_released.record(since.elapsed());
                h.released.increment(1);
                h.held.decrement(1.0);
            });
        }

        pub(crate) fn lost(&self, since: Instant) {
            self.with(|h| {
                h.hold_lost.record(since.elapsed());
                h.lost.increment(1);
                h.held.decrement(1.0);
            });
        }

        pub(crate) fn renewal_failed(&self) {
            self.with(|h| h.renewal_failures.increment(1));
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::KeyLabeller;

    /// Without the `metrics` feature: nothing to register, nothing to record.
    #[derive(Debug)]
    pub(crate) struct Metrics;

    impl Metrics {
        pub(crate) fn new(_deployment: &'static str, _labeller: Option<Arc<KeyLabeller>>) -> Self {
            Self
        }

        pub(crate) fn for_key(&self, _key: &str) -> LockMetrics {
            LockMetrics
        }

        pub(crate) fn for_label(&self, _label: &str) -> LockMetrics {
            LockMetrics
        }
    }

    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Answer {
        Acquired,
        Busy,
        Error,
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct LockMetrics;

    impl LockMetrics {
        pub(crate) fn answered(&self, _sent: Instant, _answer: Answer) {}
        pub(crate) fn acquired(&self, _started: Instant) {}
        pub(crate) fn busy(&self, _started: Instant) {}
        pub(crate) fn failed(&self) {}
        pub(crate) fn waiting(&self, _started: bool) {}
        pub(crate) fn released(&self, _since: Instant) {}
        pub(crate) fn lost(&self, _since: Instant) {}
        pub(crate) fn renewal_failed(&self) {}
    }
}
