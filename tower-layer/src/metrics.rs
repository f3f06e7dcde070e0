//! The layer's metrics (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade; the table is in the crate docs.

/// What became of one request that reached the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ran holding its key's lock.
    Locked,
    /// Had no key: ran unlocked.
    PassedThrough,
    /// The key was busy: answered 423 / ABORTED.
    Busy,
    /// The lock backend failed: answered 503 / UNAVAILABLE.
    Unavailable,
    /// The key was refused: answered 400 / INVALID_ARGUMENT.
    InvalidKey,
    /// The lock backend failed and the layer fails open: ran unlocked.
    FailOpen,
    /// Ran holding its lock, which was lost before the response was ready: stopped, answered
    /// 503 / ABORTED. Counted apart (also counted as `Locked`).
    Lost,
}

#[cfg(feature = "metrics")]
pub(crate) use self::enabled::LayerMetrics;

#[cfg(not(feature = "metrics"))]
pub(crate) use self::disabled::LayerMetrics;

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::OnceLock;

    use ::metrics::{Counter, Label, Unit};

    use super::Outcome;

    const REQUESTS: &str = "distlock_tower_requests_total";
    const LOST: &str = "distlock_tower_lost_total";

    /// One layer's counters, registered with the installed recorder on the layer's first
    /// request.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct LayerMetrics(OnceLock<Counters>);

    #[derive(Clone)]
    struct Counters {
        locked: Counter,
        passed_through: Counter,
        busy: Counter,
        unavailable: Counter,
        invalid_key: Counter,
        fail_open: Counter,
        lost: Counter,
    }

    impl std::fmt::Debug for Counters {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Counters")
        }
    }

    impl Counters {
        fn register(namespace: &str) -> Self {
            ::metrics::describe_counter!(
                REQUESTS,
                Unit::Count,
                "Requests that reached the distlock layer, by what became of them."
            );
            ::metrics::describe_counter!(
                LOST,
                Unit::Count,
                "Requests stopped because their lock was lost."
            );
            let namespace = Label::new("namespace", namespace.to_owned());
            let requests = |outcome: &'static str| {
                ::metrics::counter!(
                    REQUESTS,
                    vec![namespace.clone(), Label::new("outcome", outcome)]
                )
            };
            Self {
                locked: requests("locked"),
                passed_through: requests("passed_through"),
                busy: requests("busy"),
                unavailable: requests("unavailable"),
                invalid_key: requests("invalid_key"),
                fail_open: requests("fail_open"),
                lost: ::metrics::counter!(LOST, vec![namespace.clone()]),
            }
        }
    }

    impl LayerMetrics {
        pub(crate) fn count(&self, namespace: &str, outcome: Outcome) {
            let c = self.0.get_or_init(|| Counters::register(namespace));
            match outcome {
                Outcome::Locked => &c.locked,
                Outcome::PassedThrough => &c.passed_through,
                Outcome::Busy => &c.busy,
                Outcome::Unavailable => &c.unavailable,
                Outcome::InvalidKey => &c.invalid_key,
                Outcome::FailOpen => &c.fail_open,
                Outcome::Lost => &c.lost,
            }
            .increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::Outcome;

    /// Without the `metrics` feature: nothing to count.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct LayerMetrics;

    impl LayerMetrics {
        pub(crate) fn count(&self, _namespace: &str, _outcome: Outcome) {}
    }
}
