//! What the layer answers instead of running the service: busy, bad key, backend down, lost.

use std::fmt;
use std::time::Duration;

use distlock::LockError;
use http::{HeaderValue, Request, Response, StatusCode, header};

/// Why a request did not run (or did not finish) under its lock.
///
/// The default answers are [`Rejection::http_response`] and [`Rejection::grpc_response`];
/// replace them with [`LockLayer::rejection`](crate::LockLayer::rejection).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use distlock_tower::Rejection;
///
/// let busy = Rejection::Busy { key: "acct:7".into(), retry_after: Some(Duration::from_millis(1500)) };
/// let response = busy.http_response();
/// assert_eq!(response.status(), 423);
/// assert_eq!(response.headers()["retry-after"], "2");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// Another request holds the key's lock.
    Busy {
        /// The key (without the layer's namespace).
        key: String,
        /// How long the holder's lease still runs, when known.
        retry_after: Option<Duration>,
    },
    /// The key taken from the request is not acceptable (too long, control characters, ...).
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The lock backend failed (unreachable, timed out, ...).
    Unavailable {
        /// The backend error.
        error: LockError,
    },
    /// The lock was lost while the request ran; the request was stopped.
    Lost {
        /// The key (without the layer's namespace).
        key: String,
    },
}

/// Which protocol a request speaks, to answer in kind.
///
/// # Examples
///
/// ```
/// use distlock_tower::Protocol;
/// let req = http::Request::post("/svc/M").header("content-type", "application/grpc+proto").body(()).unwrap();
/// assert_eq!(Protocol::of(&req), Protocol::Grpc);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// gRPC (`content-type: application/grpc...`).
    Grpc,
}

impl Protocol {
    /// gRPC when the request's content type is `application/grpc` or a variant of it.
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::Protocol;
    /// assert_eq!(Protocol::of(&http::Request::get("/").body(()).unwrap()), Protocol::Http);
    /// ```
    pub fn of<B>(req: &Request<B>) -> Self {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc { Self::Grpc } else { Self::Http }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { key, .. } => write!(f, "`{key}` is locked by another request"),
            Self::InvalidKey { reason } => write!(f, "bad lock key: {reason}"),
            Self::Unavailable { error } => write!(f, "locking unavailable: {error}"),
            Self::Lost { key } => {
                write!(f, "the lock on `{key}` was lost; the request was stopped")
            }
        }
    }
}

impl Rejection {
    /// The HTTP status of the default answer: 423, 400, 503, 503.
    ///
    /// # Examples
    ///
    /// ```
    /// let lost = distlock_tower::Rejection::Lost { key: "k".into() };
    /// assert_eq!(lost.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Busy { .. } => StatusCode::LOCKED,
            Self::InvalidKey { .. } => StatusCode::BAD_REQUEST,
            Self::Unavailable { .. } | Self::Lost { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code of the default answer: ABORTED (10), INVALID_ARGUMENT (3),
    /// UNAVAILABLE (14), ABORTED (10).
    ///
    /// # Examples
    ///
    /// ```
    /// let busy = distlock_tower::Rejection::Busy { key: "k".into(), retry_after: None };
    /// assert_eq!(busy.grpc_code(), 10);
    /// ```
    pub fn grpc_code(&self) -> u8 {
        match self {
            Self::Busy { .. } | Self::Lost { .. } => 10,
            Self::InvalidKey { .. } => 3,
            Self::Unavailable { .. } => 14,
        }
    }

    /// Whole seconds to wait before retrying, rounded up (at least 1).
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Busy { retry_after, .. } => Some(
                retry_after
                    .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                    .unwrap_or(1)
                    .max(1),
            ),
            _ => None,
        }
    }

    /// The default HTTP answer: the status of [`http_status`](Self::http_status), a
    /// `Retry-After` header when busy, and a one-line text body.
    ///
    /// # Examples
    ///
    /// ```
    /// let bad = distlock_tower::Rejection::InvalidKey { reason: "the lock key is too long" };
    /// assert_eq!(bad.http_response().status(), 400);
    /// ```
    pub fn http_response(&self) -> Response<String> {
        let mut response = Response::new(format!("{self}\n"));
        *response.status_mut() = self.http_status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// The default gRPC answer: a trailers-only response (HTTP 200, no body) whose
    /// `grpc-status` is [`grpc_code`](Self::grpc_code) and whose `grpc-message` says why.
    ///
    /// # Examples
    ///
    /// ```
    /// let busy = distlock_tower::Rejection::Busy { key: "k".into(), retry_after: None };
    /// let response = busy.grpc_response();
    /// assert_eq!(response.headers()["grpc-status"], "10");
    /// ```
    pub fn grpc_response(&self) -> Response<String> {
        let mut response = Response::new(String::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_code())),
        );
        let mut message = self.to_string();
        if let Some(secs) = self.retry_after_secs() {
            message.push_str(&format!(" (retry after {secs}s)"));
        }
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
        response
    }
}

/// gRPC's percent-encoding for `grpc-message`: printable ASCII except `%` passes as is.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        let busy = |ms| Rejection::Busy {
            key: "k".into(),
            retry_after: Some(Duration::from_millis(ms)),
        };
        assert_eq!(busy(1).retry_after_secs(), Some(1));
        assert_eq!(busy(1000).retry_after_secs(), Some(1));
        assert_eq!(busy(1001).retry_after_secs(), Some(2));
        assert_eq!(busy(0).retry_after_secs(), Some(1));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% ü"), "50%25 %C3%BC");
    }
}
