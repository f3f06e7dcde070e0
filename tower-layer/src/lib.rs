//! A tower [`Layer`](tower::Layer) that runs each request holding the distributed lock of its
//! key: one request per account, order or job at a time across every instance of a service.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use distlock_tower::{LockLayer, PathParam};
//!
//! let locks = distlock::LockClient::memory(); // LockClient::connect(url).await? on Redis
//! let app: Router = Router::new()
//!     .route("/accounts/{id}/payments", post(|| async { "paid" }))
//!     .route_layer(
//!         LockLayer::new(locks, PathParam::new("id"))
//!             .namespace("payments:")
//!             .ttl(Duration::from_secs(10)),
//!     );
//! ```
//!
//! - The key comes from a [`KeyExtractor`]: a closure `Fn(&Request) -> Option<String>`, an
//!   HTTP header ([`HeaderKey`]), gRPC metadata ([`GrpcMetadata`]) or an axum path parameter
//!   ([`PathParam`]). A request without a key passes through unlocked.
//! - Keys from requests are untrusted: they are length-capped and refused (`400` /
//!   `INVALID_ARGUMENT`) when they hold control characters, whitespace, invisible or
//!   formatting characters (U+200B, ...), Cluster hash-tag braces, globs or `..`, or are not
//!   UTF-8, before anything reaches Redis. A path parameter is the value axum's `Path` gives
//!   the handler (percent-decoded); [`LockLayer::normalize_key`] maps other spellings of one
//!   value (`042`, fullwidth digits) to one key.
//! - Busy keys are answered at once (or after [`LockLayer::wait`]): HTTP `423 Locked` with
//!   `Retry-After`, gRPC a trailers-only response with `grpc-status` ABORTED. A failing lock
//!   backend gives `503` / UNAVAILABLE (or, with [`LockLayer::fail_open`], runs the request
//!   unlocked). A lock lost mid-request stops the request: `503` / ABORTED; lost while a
//!   held body is being sent, it ends the body (an error for HTTP, `grpc-status` ABORTED
//!   trailers for gRPC).
//! - The handler sees the lock it runs under: a [`distlock::HeldLock`] in the request's
//!   extensions (axum: the [`Locked`] extractor), and [`distlock::current`] inside the
//!   handler, so its writes can carry the fencing token.
//! - The layer answers rather than erroring: the inner service's error type is kept, so
//!   axum's `Infallible` services stay infallible.
//! - The lock is released when the response is ready (or when its body has been sent, with
//!   [`LockLayer::hold_until_body_sent`]), and at once when the response future is dropped.
//!
//! # Metrics
//!
//! With the `metrics` feature (which also turns on `distlock/metrics`, the runtime's metrics
//! listed in `distlock::metrics`), each layer counts what became of its requests through the
//! [`metrics`](https://docs.rs/metrics) facade, registered with the recorder installed at
//! its first request:
//!
//! | name | type | unit | labels | what |
//! |---|---|---|---|---|
//! | `distlock_tower_requests_total` | counter | requests | `namespace`, `outcome` | each request once, by `outcome`: `locked` (ran holding its lock), `passed_through` (no key, ran unlocked), `busy` (423 / ABORTED), `unavailable` (backend failed: 503 / UNAVAILABLE), `invalid_key` (400 / INVALID_ARGUMENT), `fail_open` (backend failed, ran unlocked with [`LockLayer::fail_open`]) |
//! | `distlock_tower_lost_total` | counter | requests | `namespace` | `locked` requests stopped because the lock was lost before the response was ready (503 / ABORTED) |
//!
//! `namespace` is the layer's [`LockLayer::namespace`] (bounded: it is configuration, never
//! a request's key). The statuses are those of the default answers; a custom
//! [`LockLayer::rejection`] changes the answer, not the outcome.

mod body;
mod future;
#[cfg(feature = "axum")]
mod held;
mod key;
mod layer;
mod metrics;
mod response;
mod service;

pub use body::LockBody;
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub use held::{Locked, NotLocked};
#[cfg(feature = "axum")]
pub use key::PathParam;
pub use key::{GrpcMetadata, HeaderKey, KeyExtractor};
pub use layer::{DEFAULT_MAX_KEY_LEN, LockLayer};
pub use response::{Protocol, Rejection};
pub use service::LockService;
