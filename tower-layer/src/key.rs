//! Where a request's lock key comes from, and what a request-derived key may contain.

use http::Request;
use http::header::HeaderName;

/// Picks the lock key for a request; `None` lets the request through unlocked.
///
/// Implemented for closures `Fn(&Req) -> Option<String>`; [`HeaderKey`], [`GrpcMetadata`]
/// and (feature `axum`) [`PathParam`] are ready-made.
///
/// Keys come from untrusted input: the layer maps them through
/// [`LockLayer::normalize_key`](crate::LockLayer::normalize_key), if set, and checks them (see
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

    /// Like [`extract`](Self::extract), but able to refuse a request that names a key that
    /// cannot be used (e.g. one that is not UTF-8): `Err(reason)` is answered with
    /// [`Rejection::InvalidKey`](crate::Rejection::InvalidKey) (`400` / INVALID_ARGUMENT)
    /// instead of running the request, locked or not. The layer calls this one; the default
    /// never refuses.
    ///
    /// # Errors
    ///
    /// The reason, shown to the client.
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::{HeaderKey, KeyExtractor};
    /// use http::{HeaderValue, Request};
    ///
    /// let key = HeaderKey::new("x-job");
    /// let mut req = Request::new(());
    /// req.headers_mut().insert("x-job", HeaderValue::from_bytes(b"\xff").unwrap());
    /// assert!(key.try_extract(&req).is_err());
    /// ```
    fn try_extract(&self, req: &Req) -> Result<Option<String>, &'static str> {
        Ok(self.extract(req))
    }
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

/// A header value that is not UTF-8 is refused rather than locked on a lossy copy.
impl<B> KeyExtractor<Request<B>> for HeaderKey {
    fn extract(&self, req: &Request<B>) -> Option<String> {
        self.try_extract(req).ok().flatten()
    }

    fn try_extract(&self, req: &Request<B>) -> Result<Option<String>, &'static str> {
        let Some(value) = req.headers().get(&self.name) else {
            return Ok(None);
        };
        std::str::from_utf8(value.as_bytes())
            .map(|value| Some(value.to_owned()))
            .map_err(|_| "the lock key is not valid UTF-8")
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
        self.try_extract(req).ok().flatten()
    }

    fn try_extract(&self, req: &Request<B>) -> Result<Option<String>, &'static str> {
        let Some(value) = self.header.try_extract(req)? else {
            return Ok(None);
        };
        Ok(Some(if self.with_method {
            format!("{}:{value}", req.uri().path())
        } else {
            value
        }))
    }
}

/// The key is an axum path parameter, e.g. `id` in `/accounts/{id}/pay`.
///
/// The key is the value axum's own `Path` extractor gives the handler: percent-decoded, so
/// `/accounts/%34%32/pay` locks `42`. A value that is not UTF-8 once decoded is refused
/// (`400`) rather than locked raw. Other spellings the handler would take for the same value
/// (`042` for a `Path<u64>`, fullwidth digits) are yours to fold with
/// [`LockLayer::normalize_key`](crate::LockLayer::normalize_key).
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
        self.try_extract(req).ok().flatten()
    }

    fn try_extract(&self, req: &Request<B>) -> Result<Option<String>, &'static str> {
        use axum::extract::rejection::RawPathParamsRejection;
        use axum::extract::{FromRequestParts, RawPathParams};
        use futures_util::FutureExt;

        // RawPathParams reads the route's parameters from the request extensions, decoded as
        // `Path` decodes them; it needs `Parts`, so give it a copy holding just those.
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.extensions = req.extensions().clone();
        let Some(params) = RawPathParams::from_request_parts(&mut parts, &()).now_or_never() else {
            return Ok(None);
        };
        match params {
            Ok(params) => Ok(params
                .iter()
                .find(|(name, _)| *name == self.name)
                .map(|(_, value)| value.to_owned())),
            Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                Err("the path parameter is not valid UTF-8 once percent-decoded")
            }
            // No route parameters at all (the layer was added with `Router::layer`).
            Err(_) => Ok(None),
        }
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
    if key.chars().any(is_invisible) {
        return Err("the lock key contains invisible or formatting characters (such as U+200B)");
    }
    // Braces pick a Redis Cluster slot (hash tags); glob characters confuse SCAN/KEYS-based
    // tooling; `..` is how path-like keys try to climb out of their namespace.
    if key.contains(['{', '}', '*', '?', '[', ']', '\\']) || key.contains("..") {
        return Err("the lock key contains characters that are not allowed: { } * ? [ ] \\ or ..");
    }
    Ok(())
}

/// Characters that show as nothing, or only steer how text around them shows: Unicode's
/// format characters (general category Cf: zero-width spaces and joiners, bidi controls, the
/// BOM, tags, ...) and the other default-ignorable code points (variation selectors, Hangul
/// fillers, ...). `42` followed by U+200B looks like `42` and must not be another key.
/// (Unicode 15.1; sorted, inclusive.)
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

fn is_invisible(c: char) -> bool {
    !c.is_ascii()
        && INVISIBLE
            .binary_search_by(|&(first, last)| {
                if last < c {
                    std::cmp::Ordering::Less
                } else if first > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::{INVISIBLE, check};

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

    #[test]
    fn invisible_characters_are_refused() {
        for bad in [
            "42\u{200B}",
            "4\u{200D}2",
            "\u{FEFF}42",
            "42\u{2060}",
            "\u{202E}24",
            "4\u{00AD}2",
            "42\u{FE0F}",
            "42\u{E0041}",
            "\u{3164}",
            "4\u{180E}2",
        ] {
            assert!(check(bad, 128).is_err(), "{bad:?}");
        }
        // Visible non-ASCII stays fine, fullwidth digits included (fold them with a hook).
        for ok in ["ünïcode", "\u{FF14}\u{FF12}", "日本", "ø-42", "\u{FFFD}"] {
            assert_eq!(check(ok, 128), Ok(()), "{ok:?}");
        }
        assert!(
            INVISIBLE.windows(2).all(|w| w[0].1 < w[1].0),
            "sorted, no overlaps"
        );
    }
}
