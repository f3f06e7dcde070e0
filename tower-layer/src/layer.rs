//! [`LockLayer`]: configuration shared by every [`LockService`] it builds.

use std::sync::Arc;
use std::time::Duration;

use distlock::LockClient;
use http::Response;
use tower::Layer;

use crate::metrics::{LayerMetrics, Outcome};
use crate::{LockService, Protocol, Rejection};

/// The default cap on a request-derived key, in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 128;

type Responder = dyn Fn(&Rejection, Protocol) -> Response<String> + Send + Sync;
type Normalizer = dyn Fn(&str) -> Result<String, &'static str> + Send + Sync;

/// A tower [`Layer`] that runs each request holding the distributed lock of its key.
///
/// The key comes from a [`KeyExtractor`](crate::KeyExtractor); requests without one pass
/// through unlocked. The lock is held while the inner service's future runs (renewed by the
/// client's watchdog) and released when the response is ready, or at once when the response
/// future is dropped (client gone, a timeout above).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::post};
/// use distlock_tower::{HeaderKey, LockLayer};
///
/// let locks = distlock::LockClient::memory();
/// let app: Router = Router::new()
///     .route("/pay", post(|| async { "paid" }))
///     .layer(
///         LockLayer::new(locks, HeaderKey::new("x-account-id"))
///             .namespace("payments:")
///             .ttl(Duration::from_secs(10))
///             .wait(Duration::from_millis(200)),
///     );
/// ```
pub struct LockLayer<K> {
    config: Arc<Config<K>>,
}

#[derive(Clone)]
pub(crate) struct Config<K> {
    pub(crate) client: LockClient,
    pub(crate) extractor: K,
    pub(crate) ttl: Option<Duration>,
    pub(crate) wait: Duration,
    pub(crate) namespace: String,
    pub(crate) max_key_len: usize,
    pub(crate) hold_until_body_sent: bool,
    pub(crate) fail_open: bool,
    pub(crate) cancel_on_lost: bool,
    pub(crate) responder: Option<Arc<Responder>>,
    pub(crate) normalizer: Option<Arc<Normalizer>>,
    pub(crate) metrics: LayerMetrics,
}

impl<K> Clone for LockLayer<K> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<K> std::fmt::Debug for LockLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("LockLayer")
            .field("client", &c.client)
            .field("ttl", &c.ttl)
            .field("wait", &c.wait)
            .field("namespace", &c.namespace)
            .field("max_key_len", &c.max_key_len)
            .field("hold_until_body_sent", &c.hold_until_body_sent)
            .field("fail_open", &c.fail_open)
            .field("cancel_on_lost", &c.cancel_on_lost)
            .field("normalizes_keys", &c.normalizer.is_some())
            .finish_non_exhaustive()
    }
}

impl<K> LockLayer<K> {
    /// Locks each request on the key `extractor` gives, through `client`.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = distlock_tower::LockLayer::new(
    ///     distlock::LockClient::memory(),
    ///     distlock_tower::HeaderKey::new("x-account-id"),
    /// );
    /// ```
    pub fn new(client: LockClient, extractor: K) -> Self {
        Self {
            config: Arc::new(Config {
                client,
                extractor,
                ttl: None,
                wait: Duration::ZERO,
                namespace: String::new(),
                max_key_len: DEFAULT_MAX_KEY_LEN,
                hold_until_body_sent: false,
                fail_open: false,
                cancel_on_lost: true,
                responder: None,
                normalizer: None,
                metrics: LayerMetrics::default(),
            }),
        }
    }
}

impl<K: Clone> LockLayer<K> {
    fn with(mut self, change: impl FnOnce(&mut Config<K>)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The lease (default: the client's default TTL).
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.ttl(std::time::Duration::from_secs(5));
    /// ```
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.ttl = Some(ttl))
    }

    /// How long a request waits for a busy key (default zero: answered busy at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.wait(std::time::Duration::from_millis(250));
    /// ```
    pub fn wait(self, wait: Duration) -> Self {
        self.with(|c| c.wait = wait)
    }

    /// Text put before every extracted key (default empty), e.g. `"payments:"`, so that
    /// different routes or services keep separate locks. Give one whenever the layer shares
    /// its client with other code: without it a request can name any lock of the client
    /// (an application's job lock, its `leader:<name>` election) and hold it for as long as
    /// the request runs. The namespace is also the metrics key label of the layer's locks.
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.namespace("payments:");
    /// ```
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.with(|c| c.namespace = namespace)
    }

    /// The longest key accepted from a request, in bytes (default
    /// [`DEFAULT_MAX_KEY_LEN`] = 128). Longer keys, keys with control characters or
    /// whitespace, keys with invisible or formatting characters (Unicode format characters
    /// such as U+200B ZERO WIDTH SPACE, the BOM and bidi controls, and the other
    /// default-ignorable code points), and keys with `{ } * ? [ ] \` or `..` (Cluster hash
    /// tags, globs, attempts to climb out of the namespace) are refused with
    /// [`Rejection::InvalidKey`] before anything reaches the lock backend. The check applies
    /// to the key after [`normalize_key`](Self::normalize_key).
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.max_key_len(64);
    /// ```
    pub fn max_key_len(self, max: usize) -> Self {
        self.with(|c| c.max_key_len = max)
    }

    /// Keep the lock until the response body has been sent, not just until the response
    /// head is ready (default false). For streaming responses whose body is the work.
    ///
    /// With [`cancel_on_lost`](Self::cancel_on_lost) (the default), a lock lost while the body
    /// is being sent ends the body at once, also when it waits on a slow stream, and no frame
    /// the inner body makes after that is sent: with a [`distlock::LockError::Lost`] error
    /// (HTTP clients see the response cut short), or for gRPC with trailers carrying the
    /// [`Rejection::Lost`] answer's `grpc-status` (ABORTED). See [`LockBody`](crate::LockBody)
    /// for its error type.
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.hold_until_body_sent(true);
    /// ```
    pub fn hold_until_body_sent(self, hold: bool) -> Self {
        self.with(|c| c.hold_until_body_sent = hold)
    }

    /// When the lock backend fails, run the request without a lock instead of answering
    /// 503 / UNAVAILABLE (default false: fail closed).
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.fail_open(true);
    /// ```
    pub fn fail_open(self, open: bool) -> Self {
        self.with(|c| c.fail_open = open)
    }

    /// Whether a lock lost mid-request stops the request (default true: the inner future is
    /// dropped and the client gets [`Rejection::Lost`]; with
    /// [`hold_until_body_sent`](Self::hold_until_body_sent), a body being sent ends early);
    /// false lets it finish.
    ///
    /// # Examples
    ///
    /// ```
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.cancel_on_lost(false);
    /// ```
    pub fn cancel_on_lost(self, cancel: bool) -> Self {
        self.with(|c| c.cancel_on_lost = cancel)
    }

    /// Maps each key taken from a request to the key that is locked, or refuses the request
    /// (`Err(reason)`: [`Rejection::InvalidKey`], `400` / INVALID_ARGUMENT, with `reason` in
    /// the answer). Runs after the extractor and before the key check (see
    /// [`max_key_len`](Self::max_key_len)), which then applies to what it returns.
    ///
    /// The lock must be taken on the value the handler works on, or two spellings of one
    /// account run at once: make `normalize` give every spelling the handler takes for the
    /// same value the same key, the way the handler reads it. For a handler taking
    /// `Path<u64>`, `042` and `42` are one account, and so are fullwidth `４２` if you fold
    /// Unicode compatibility forms (NFKC, e.g. with the `unicode-normalization` crate).
    ///
    /// # Examples
    ///
    /// ```
    /// use unicode_normalization::UnicodeNormalization;
    ///
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::PathParam::new("id"));
    /// // `/accounts/{id}`: "42", "042", "４２" and "０４２" all lock account 42.
    /// let layer = layer.normalize_key(|raw: &str| {
    ///     let folded: String = raw.nfkc().collect();
    ///     let id: u64 = folded.parse().map_err(|_| "an account id is a number")?;
    ///     Ok(id.to_string())
    /// });
    /// ```
    pub fn normalize_key<F>(self, normalize: F) -> Self
    where
        F: Fn(&str) -> Result<String, &'static str> + Send + Sync + 'static,
    {
        self.with(|c| c.normalizer = Some(Arc::new(normalize)))
    }

    /// Replaces the default answers ([`Rejection::http_response`],
    /// [`Rejection::grpc_response`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::{Protocol, Rejection};
    /// # let layer = distlock_tower::LockLayer::new(distlock::LockClient::memory(), distlock_tower::HeaderKey::new("k"));
    /// let layer = layer.rejection(|rejection: &Rejection, protocol: Protocol| match (rejection, protocol) {
    ///     (Rejection::Busy { .. }, Protocol::Http) => http::Response::builder()
    ///         .status(409)
    ///         .body("try again later".to_owned())
    ///         .unwrap(),
    ///     (_, Protocol::Http) => rejection.http_response(),
    ///     (_, _) => rejection.grpc_response(),
    /// });
    /// ```
    pub fn rejection<F>(self, responder: F) -> Self
    where
        F: Fn(&Rejection, Protocol) -> Response<String> + Send + Sync + 'static,
    {
        self.with(|c| c.responder = Some(Arc::new(responder)))
    }
}

impl<K> Config<K> {
    /// Counts what became of a request (feature `metrics`).
    /// The key label of the runtime's metrics for this layer's locks: the namespace (without
    /// a trailing `:`), or `request` without one; never text from the request.
    pub(crate) fn metrics_label(&self) -> std::borrow::Cow<'static, str> {
        match self.namespace.trim_end_matches(':') {
            "" => std::borrow::Cow::Borrowed("request"),
            namespace => std::borrow::Cow::Owned(namespace.to_owned()),
        }
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        self.metrics.count(&self.namespace, outcome);
    }

    /// The key to lock for the key taken from a request: normalised, then checked.
    pub(crate) fn key_for(&self, raw: String) -> Result<String, &'static str> {
        let key = match &self.normalizer {
            Some(normalize) => normalize(&raw)?,
            None => raw,
        };
        crate::key::check(&key, self.max_key_len)?;
        Ok(key)
    }

    pub(crate) fn answer(&self, rejection: &Rejection, protocol: Protocol) -> Response<String> {
        match (&self.responder, protocol) {
            (Some(responder), _) => responder(rejection, protocol),
            (None, Protocol::Grpc) => rejection.grpc_response(),
            (None, _) => rejection.http_response(),
        }
    }
}

impl<S, K> Layer<S> for LockLayer<K> {
    type Service = LockService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        LockService::new(inner, self.config.clone())
    }
}
