//! [`Locked`]: the lock a request holds, for an axum handler.

use distlock::HeldLock;

/// The lock the request holds, as an axum extractor: key, fencing token, remaining lease,
/// `extend`. [`LockLayer`](crate::LockLayer) puts a [`HeldLock`] in every locked request's
/// extensions (for plain tower and tonic handlers: `req.extensions().get::<HeldLock>()`),
/// and [`distlock::current`] answers inside the handler too.
///
/// A handler behind the layer takes `Locked` and passes the fence along with its writes; one
/// that may also run unlocked (a request without a key, or [`fail_open`]) takes
/// `Option<Locked>`. Taking `Locked` in a request that holds no lock answers
/// `500 Internal Server Error` (the route is not behind the layer).
///
/// [`fail_open`]: crate::LockLayer::fail_open
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::post};
/// use distlock_tower::{LockLayer, Locked, PathParam};
///
/// async fn pay(Locked(lock): Locked) -> String {
///     // A store that remembers the largest fence it saw refuses a stale holder's write.
///     format!("paid under fence {}", lock.fencing_token())
/// }
///
/// let app: Router = Router::new()
///     .route("/accounts/{id}/payments", post(pay))
///     .route_layer(LockLayer::new(distlock::LockClient::memory(), PathParam::new("id")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked(pub HeldLock);

/// The answer to a handler that takes [`Locked`] in a request that holds no lock: a
/// misconfiguration (the route is not behind [`LockLayer`](crate::LockLayer)), so `500`.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// let response = distlock_tower::NotLocked.into_response();
/// assert_eq!(response.status(), 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLocked;

impl std::fmt::Display for NotLocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the handler expects a lock held by distlock_tower::LockLayer, and the request holds none")
    }
}

impl std::error::Error for NotLocked {}

impl axum::response::IntoResponse for NotLocked {
    fn into_response(self) -> axum::response::Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Locked {
    type Rejection = NotLocked;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<HeldLock>()
            .cloned()
            .map(Locked)
            .ok_or(NotLocked)
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Locked {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<HeldLock>().cloned().map(Locked))
    }
}
