//! What every handle of one client shares: the deployment, the key prefix and defaults, the
//! watchdog, the local gates and the client's waiter id.
//!
//! [`LockClient`](crate::LockClient), [`LockRequest`](crate::LockRequest) and
//! [`LockGuard`](crate::LockGuard) each hold an `Arc` of it; it knows none of them.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Deployment};
use crate::metrics::{KeyLabeller, Metrics};
use crate::token::{OwnerLabel, waiter_id};
use crate::waiter::Gates;
use crate::watchdog::Watchdog;

#[derive(Debug)]
pub(crate) struct ClientState {
    backend: Arc<Backend>,
    prefix: String,
    default_ttl: Duration,
    command_timeout: Duration,
    watchdog: Watchdog,
    gates: Arc<Gates>,
    /// This client's id in the queues of clients waiting for a lock.
    waiter_id: String,
    metrics: Metrics,
    /// The owner label stored with this client's locks (a request may set its own).
    label: Option<OwnerLabel>,
}

impl ClientState {
    pub(crate) fn new(
        backend: Backend,
        prefix: String,
        default_ttl: Duration,
        command_timeout: Duration,
        key_labeller: Option<Arc<KeyLabeller>>,
    ) -> Self {
        Self {
            metrics: Metrics::new(backend.kind(), key_labeller),
            backend: Arc::new(backend),
            prefix,
            default_ttl,
            command_timeout,
            watchdog: Watchdog::default(),
            gates: Arc::default(),
            waiter_id: waiter_id(),
            label: None,
        }
    }

    /// The same, storing `label` with this client's locks.
    pub(crate) fn with_label(mut self, label: Option<OwnerLabel>) -> Self {
        self.label = label;
        self
    }

    pub(crate) fn label(&self) -> Option<&OwnerLabel> {
        self.label.as_ref()
    }

    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub(crate) fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    pub(crate) fn gates(&self) -> &Arc<Gates> {
        &self.gates
    }

    /// The client's metrics (nothing without the `metrics` feature).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn waiter_id(&self) -> &str {
        &self.waiter_id
    }

    /// The prefix followed by `key`.
    pub(crate) fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}
