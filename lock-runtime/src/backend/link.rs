//! The connection to one Redis server: a multiplexed, auto-reconnecting connection manager,
//! replaced when it breaks for good, and the rule every command on it follows (bounded by the
//! command timeout, tried again after a short, growing pause while its connection is
//! dropped).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{BackendErrorKind, LockError};

/// The first pause before trying a dropped connection again; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(2);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(50);

pub(crate) struct Link {
    /// Makes the pub/sub connection for release notices and replaces a broken manager;
    /// `None` for a client built over a bare [`ConnectionManager`].
    client: Option<redis::Client>,
    config: ConnectionManagerConfig,
    /// Replaced when it broke beyond repair (see [`Link::on_conn`]).
    conn: std::sync::RwLock<ConnectionManager>,
    url: String,
    command_timeout: Duration,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(
        client: Option<redis::Client>,
        config: ConnectionManagerConfig,
        conn: ConnectionManager,
        url: String,
        command_timeout: Duration,
    ) -> Self {
        Self {
            client,
            config,
            conn: std::sync::RwLock::new(conn),
            url,
            command_timeout,
        }
    }

    /// The server's URL, password redacted.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn client(&self) -> Option<&redis::Client> {
        self.client.as_ref()
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `op` on the connection, within the command timeout in all:
    /// - again, after a short pause, whenever the connection was found dropped (killed by the
    ///   server or a proxy, or its driver task died with the runtime it was made on): the
    ///   manager reconnects meanwhile. Calls out together on one connection all fail when it
    ///   drops and may find it still dropped on their next try, so a single retry is not
    ///   enough, and a release that gives up leaves its lock held until the lease runs out;
    /// - again on a new connection manager when this one broke for good: a reconnect begun on
    ///   a runtime that has since shut down panics whoever polls it next.
    ///
    /// Every operation is safe to repeat: the scripts are idempotent for their own token.
    pub(crate) async fn on_conn<T, F, Fut>(&self, op: F) -> Result<T, LockError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>>,
    {
        self.on_conn_tracked(op).await.map(|(answer, _)| answer)
    }

    /// [`on_conn`](Self::on_conn), also telling whether `op` was sent more than once: then
    /// the copy that answered may have found the server changed by an earlier copy (whose
    /// answer was lost with its connection) and by whoever came after it.
    pub(crate) async fn on_conn_tracked<T, F, Fut>(&self, op: F) -> Result<(T, bool), LockError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>>,
    {
        use futures_util::FutureExt;
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        let attempts = async {
            let mut pause = RETRY_PAUSE;
            let mut again = false;
            loop {
                match std::panic::AssertUnwindSafe(op(self.conn()))
                    .catch_unwind()
                    .await
                {
                    Ok(Err(err)) if err.is_connection_dropped() => {
                        if tokio::time::Instant::now() + pause >= deadline {
                            return Err(err);
                        }
                        tracing::debug!(url = %self.url, %err, "the connection dropped; trying again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_RETRY_PAUSE);
                        again = true;
                    }
                    Ok(done) => return done.map(|answer| (answer, again)),
                    Err(_) => {
                        let Some(client) = &self.client else {
                            tracing::warn!(url = %self.url, "the connection broke for good; no redis::Client to make a new one");
                            return Err(LockError::backend(
                                BackendErrorKind::Connection,
                                "the application's ConnectionManager broke (its runtime shut down)",
                            ));
                        };
                        tracing::warn!(url = %self.url, "the connection broke for good; making a new one");
                        let fresh = crate::background::enter(|| {
                            ConnectionManager::new_lazy_with_config(
                                client.clone(),
                                self.config.clone(),
                            )
                        });
                        match fresh {
                            Ok(fresh) => {
                                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                            }
                            Err(err) => return Err(LockError::from_redis(err)),
                        }
                        again = true;
                    }
                }
            }
        };
        tokio::time::timeout(self.command_timeout, attempts)
            .await
            .unwrap_or_else(|_| {
                Err(LockError::backend(
                    BackendErrorKind::Timeout,
                    format!(
                        "no answer within {:?} (at {})",
                        self.command_timeout, self.url
                    ),
                ))
            })
    }
}
