//! [`LockService`]: locks, calls the inner service, releases.

use std::sync::Arc;
use std::task::{Context, Poll};

use distlock::LockError;
use http::{Request, Response};
use tower::Service;

use crate::body::{LockBody, LostEnding};
use crate::future::ResponseFuture;
use crate::key::KeyExtractor;
use crate::layer::Config;
use crate::metrics::Outcome;
use crate::{Protocol, Rejection};

/// The service made by [`LockLayer`](crate::LockLayer): runs the inner service while holding
/// the request key's lock.
///
/// # Examples
///
/// ```
/// use tower::{Layer, ServiceExt, service_fn};
/// use distlock_tower::{HeaderKey, LockLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
/// });
/// let service = LockLayer::new(distlock::LockClient::memory(), HeaderKey::new("x-job"))
///     .layer(inner);
/// let req = http::Request::post("/").header("x-job", "nightly").body(String::new()).unwrap();
/// let response = service.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
pub struct LockService<S, K> {
    inner: S,
    config: Arc<Config<K>>,
}

impl<S, K> LockService<S, K> {
    pub(crate) fn new(inner: S, config: Arc<Config<K>>) -> Self {
        Self { inner, config }
    }
}

impl<S: Clone, K> Clone for LockService<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K> std::fmt::Debug for LockService<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for LockService<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    K: KeyExtractor<Request<ReqBody>> + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<LockBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let protocol = Protocol::of(&req);
        let refuse = |reason| {
            self.config.count(Outcome::InvalidKey);
            let answer = self
                .config
                .answer(&Rejection::InvalidKey { reason }, protocol);
            ResponseFuture::answered(answer)
        };
        let key = match self.config.extractor.try_extract(&req) {
            Ok(Some(key)) => key,
            Ok(None) => {
                self.config.count(Outcome::PassedThrough);
                return ResponseFuture::passthrough(self.inner.call(req));
            }
            Err(reason) => return refuse(reason),
        };
        let key = match self.config.key_for(key) {
            Ok(key) => key,
            Err(reason) => return refuse(reason),
        };
        // The inner service was made ready by `poll_ready`: hand that one to the future and
        // keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::locked(Box::pin(run_locked(
            self.config.clone(),
            inner,
            req,
            key,
            protocol,
        )))
    }
}

async fn run_locked<S, K, ReqBody, ResBody>(
    config: Arc<Config<K>>,
    mut inner: S,
    mut req: Request<ReqBody>,
    key: String,
    protocol: Protocol,
) -> Result<Response<LockBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let reject =
        |rejection: Rejection| Ok(crate::future::message(config.answer(&rejection, protocol)));
    let mut request = config
        .client
        .lock(format!("{}{key}", config.namespace))
        .wait(config.wait)
        // The key comes from the request: its text never becomes a metrics label.
        .metrics_label(config.metrics_label());
    if let Some(ttl) = config.ttl {
        request = request.ttl(ttl);
    }
    let guard = match request.await {
        Ok(guard) => guard,
        Err(LockError::Busy { retry_after, .. }) => {
            config.count(Outcome::Busy);
            return reject(Rejection::Busy { key, retry_after });
        }
        Err(LockError::InvalidKey { reason, .. }) => {
            config.count(Outcome::InvalidKey);
            return reject(Rejection::InvalidKey { reason });
        }
        Err(error) if config.fail_open && error.is_backend() => {
            config.count(Outcome::FailOpen);
            tracing::warn!(%error, "lock backend failed; running the request unlocked (fail-open)");
            let response = inner.call(req).await?;
            return Ok(response.map(LockBody::inner));
        }
        Err(error) => {
            config.count(Outcome::Unavailable);
            return reject(Rejection::Unavailable { error });
        }
    };
    config.count(Outcome::Locked);
    // The handler sees the lock: in the request's extensions, and as `distlock::current()`.
    let held = guard.held_lock();
    req.extensions_mut().insert(held.clone());
    let call = held.scope(async move { inner.call(req).await });
    let response = if config.cancel_on_lost {
        let lost = guard.lost_owned();
        tokio::select! {
            biased;
            response = call => response?,
            () = lost => {
                config.count(Outcome::Lost);
                drop(guard);
                return reject(Rejection::Lost { key });
            }
        }
    } else {
        call.await?
    };
    if config.cancel_on_lost && !guard.is_held() {
        // Lost while the handler's last step ran (no await point to stop it at): its answer
        // cannot claim it ran alone.
        config.count(Outcome::Lost);
        drop(guard);
        return reject(Rejection::Lost { key });
    }
    if config.hold_until_body_sent {
        let on_lost = config.cancel_on_lost.then(|| match protocol {
            Protocol::Grpc => LostEnding::grpc(&config.answer(&Rejection::Lost { key }, protocol)),
            _ => LostEnding::Error,
        });
        return Ok(response.map(|body| LockBody::holding(body, guard, on_lost)));
    }
    match guard.release().await {
        Err(LockError::Lost { .. }) if config.cancel_on_lost => {
            // The lock was gone by the time the handler answered.
            config.count(Outcome::Lost);
            return reject(Rejection::Lost { key });
        }
        Err(error) => tracing::debug!(%error, key, "releasing a request's lock failed"),
        Ok(()) => {}
    }
    Ok(response.map(LockBody::inner))
}
