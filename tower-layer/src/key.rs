//! Where a request's lock key comes from, and what a request-derived key may contain.

use http::Request;
use http::header::HeaderName;

/// Picks the lock key for a request; `None` lets the request through unlocked.
///
/// Implemented for closures `Fn(&Req) -> Option<String>`; [`HeaderKey`], [`GrpcMetadata`]
/// and (feature `axum`) [`PathParam`] are ready-made.
///
/// Keys come from untrusted input: the layer checks them (see
/// [`LockLayer::max_key_len`](crate::LockLayer::max_key_len)) before anything reaches the
/// lock backend.
///
/// # Examples
///
/// ```
/// use distlock_tower::KeyExtractor;
/// use http::Request;
///
/// let by_query = |req: &Request<()>| {
///     req.uri().query()?.strip_prefix("account=").map(str::to_owned)
/// };
/// let req = Request::get("/pay?account=42").body(()).unwrap();
/// assert_eq!(by_query.extract(&req).as_deref(), Some("42"));
/// ```
pub trait KeyExtractor<Req> {
    /// The key for `req`, if it should be locked.
    fn extract(&self, req: &Req) -> Option<String>;
}

impl<Req, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<String>,
{
    fn extract(&self, req: &Req) -> Option<String> {
        self(req)
    }
}

/// The key is the value of an HTTP header (requests without it pass unlocked).
///
/// # Examples
///
/// ```
/// use distlock_tower::{HeaderKey, KeyExtractor};
/// use http::Request;
///
/// let key = HeaderKey::new("x-account-id");
/// let req = Request::get("/").header("x-account-id", "acct:42").body(()).unwrap();
/// assert_eq!(key.extract(&req).as_deref(), Some("acct:42"));
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Reads the header `name`.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name (a programming error, caught at startup).
    ///
    /// # Examples
    ///
    /// ```
    /// let key = distlock_tower::HeaderKey::new("idempotency-key");
    /// ```
    pub fn new(name: &str) -> Self {
        Self {
            name: HeaderName::try_from(name).expect("a valid HTTP header name"),
        }
    }
}

impl<B> KeyExtractor<Request<B>> for HeaderKey {
    fn extract(&self, req: &Request<B>) -> Option<String> {
        let value = req.headers().get(&self.name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

/// The key is an ASCII gRPC metadata entry (sent as an HTTP/2 header), e.g. `x-account-id`.
///
/// # Examples
///
/// ```
/// use distlock_tower::{GrpcMetadata, KeyExtractor};
/// use http::Request;
///
/// let key = GrpcMetadata::new("x-account-id");
/// let req = Request::post("/payments.Ledger/Debit")
///     .header("content-type", "application/grpc")
///     .header("x-account-id", "7")
///     .body(())
///     .unwrap();
/// assert_eq!(key.extract(&req).as_deref(), Some("7"));
/// ```
#[derive(Debug, Clone)]
pub struct GrpcMetadata {
    header: HeaderKey,
    with_method: bool,
}

impl GrpcMetadata {
    /// Reads the metadata entry `name` (lowercase ASCII, not a `-bin` entry).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid metadata key.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = distlock_tower::GrpcMetadata::new("x-tenant");
    /// ```
    pub fn new(name: &str) -> Self {
        Self {
            header: HeaderKey::new(name),
            with_method: false,
        }
    }

    /// Prefixes the key with the gRPC method path (`/pkg.Service/Method:`), so each method
    /// locks its own keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::{GrpcMetadata, KeyExtractor};
    /// let key = GrpcMetadata::new("x-account-id").per_method();
    /// let req = http::Request::post("/payments.Ledger/Debit").header("x-account-id", "7").body(()).unwrap();
    /// assert_eq!(key.extract(&req).as_deref(), Some("/payments.Ledger/Debit:7"));
    /// ```
    pub fn per_method(mut self) -> Self {
        self.with_method = true;
        self
    }
}

impl<B> KeyExtractor<Request<B>> for GrpcMetadata {
    fn extract(&self, req: &Request<B>) -> Option<String> {
        let value = self.header.extract(req)?;
        if self.with_method {
            Some(format!("{}:{value}", req.uri().path()))
        } else {
            Some(value)
        }
    }
}

/// The key is an axum path parameter, e.g. `id` in `/accounts/{id}/pay`.
///
/// Path parameters are known once a route matched, so add the layer with
/// `Router::route_layer` (with `Router::layer` it sees no parameters, and requests pass
/// unlocked).
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::post};
/// use distlock_tower::{LockLayer, PathParam};
///
/// let app: Router = Router::new()
///     .route("/accounts/{id}/pay", post(|| async { "paid" }))
///     .route_layer(LockLayer::new(distlock::LockClient::memory(), PathParam::new("id")));
/// ```
#[cfg(feature = "axum")]
#[derive(Debug, Clone)]
pub struct PathParam {
    name: String,
}

#[cfg(feature = "axum")]
impl PathParam {
    /// Reads the path parameter `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = distlock_tower::PathParam::new("account");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

#[cfg(feature = "axum")]
impl<B> KeyExtractor<Request<B>> for PathParam {
    fn extract(&self, req: &Request<B>) -> Option<String> {
        use axum::extract::{FromRequestParts, RawPathParams};
        use futures_util::FutureExt;

        // RawPathParams reads the route's parameters from the request extensions; it needs
        // `Parts`, so give it a copy holding just those.
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.extensions = req.extensions().clone();
        let params = RawPathParams::from_request_parts(&mut parts, &())
            .now_or_never()?
            .ok()?;
        params
            .iter()
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value.to_owned())
    }
}

/// Why a request-derived key was refused.
pub(crate) fn check(key: &str, max_len: usize) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("the lock key is empty");
    }
    if key.len() > max_len {
        return Err("the lock key is too long");
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the lock key contains control characters or whitespace");
    }
    // Braces pick a Redis Cluster slot (hash tags); glob characters confuse SCAN/KEYS-based
    // tooling; `..` is how path-like keys try to climb out of their namespace.
    if key.contains(['{', '}', '*', '?', '[', ']', '\\']) || key.contains("..") {
        return Err("the lock key contains characters that are not allowed: { } * ? [ ] \\ or ..");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ordinary_keys_pass_and_hostile_ones_do_not() {
        for ok in [
            "acct:42",
            "orders/7",
            "tenant-a.job_1",
            "user@example.com",
            "ünïcode",
        ] {
            assert_eq!(check(ok, 128), Ok(()), "{ok}");
        }
        let long = "k".repeat(129);
        for bad in [
            "", &long, "a\r\nb", "a b", "{tag}x", "../admin", "a*", "x\u{0}y",
        ] {
            assert!(check(bad, 128).is_err(), "{bad:?}");
        }
    }
}
