//! What every handle of one client shares: the deployment, the key prefix and defaults, the
//! watchdog, the local gates and the client's waiter id.
//!
//! [`LockClient`](crate::LockClient), [`LockRequest`](crate::LockRequest) and
//! [`LockGuard`](crate::LockGuard) each hold an `Arc` of it; it knows none of them.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::token::waiter_id;
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
}

impl ClientState {
    pub(crate) fn new(
        backend: Backend,
        prefix: String,
        default_ttl: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            backend: Arc::new(backend),
            prefix,
            default_ttl,
            command_timeout,
            watchdog: Watchdog::default(),
            gates: Arc::default(),
            waiter_id: waiter_id(),
        }
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
