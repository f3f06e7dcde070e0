//! [`LockList`]: the held locks under a prefix, as a stream, page by page.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{self, Stream, StreamExt};

use crate::backend::{Backend, Deployment, ListCursor};
use crate::key::validate_key;
use crate::{LockError, LockInfo};

/// The locks held under a prefix, from [`LockClient::list`](crate::LockClient::list): a
/// [`Stream`] of `Result<LockInfo, LockError>`.
///
/// Read page by page with `SCAN` (never `KEYS`): about a thousand keys per step, their values
/// and leases fetched in one round trip, only one page in memory at a time. After an error the
/// stream ends.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), distlock::LockError> {
/// use futures_util::TryStreamExt;
///
/// let client = distlock::LockClient::memory();
/// let _a = client.lock("jobs:a").await?;
/// let _b = client.lock("jobs:b").await?;
/// let _other = client.lock("users:1").await?;
/// let mut keys: Vec<String> = client.list("jobs:").map_ok(|info| info.key).try_collect().await?;
/// keys.sort();
/// assert_eq!(keys, ["jobs:a", "jobs:b"]);
/// # Ok(())
/// # }
/// ```
#[must_use = "a listing does nothing until polled"]
pub struct LockList {
    inner: Pin<Box<dyn Stream<Item = Result<LockInfo, LockError>> + Send>>,
}

impl std::fmt::Debug for LockList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockList").finish_non_exhaustive()
    }
}

impl Stream for LockList {
    type Item = Result<LockInfo, LockError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What the stream carries between pages.
struct Listing {
    backend: Arc<Backend>,
    /// The client's prefix, taken off every key.
    client_prefix: String,
    cursor: ListCursor,
}

impl LockList {
    pub(crate) fn new(backend: Arc<Backend>, client_prefix: &str, prefix: &str) -> Self {
        if !prefix.is_empty()
            && let Err(err) = validate_key(prefix)
        {
            return Self {
                inner: Box::pin(stream::iter([Err(err)])),
            };
        }
        let listing = Listing {
            backend,
            client_prefix: client_prefix.to_owned(),
            cursor: ListCursor::new(format!("{client_prefix}{prefix}")),
        };
        let pages = stream::unfold(Some(listing), |listing| async move {
            let mut listing = listing?;
            if listing.cursor.done {
                return None;
            }
            match listing.backend.list_page(&mut listing.cursor).await {
                Ok(page) => {
                    let prefix_len = listing.client_prefix.len();
                    let page: Vec<_> = page
                        .into_iter()
                        .filter(|info| info.key.starts_with(&listing.cursor.prefix))
                        .map(|mut info| {
                            info.key.drain(..prefix_len);
                            Ok(info)
                        })
                        .collect();
                    Some((page, Some(listing)))
                }
                Err(err) => Some((vec![Err(err)], None)),
            }
        });
        Self {
            inner: Box::pin(pages.flat_map(stream::iter)),
        }
    }
}
