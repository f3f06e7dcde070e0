//! The response body: the service's own, or the layer's short message.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use distlock::{LockError, LockGuard};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

pin_project! {
    /// The body of responses passing through a [`LockService`](crate::LockService): the
    /// inner service's body (which, with
    /// [`hold_until_body_sent`](crate::LockLayer::hold_until_body_sent), keeps the lock until
    /// its last frame), or the text of a rejection.
    ///
    /// # Errors
    ///
    /// The error type is [`tower::BoxError`], as for tower-http's bodies: either the inner
    /// body's own error, boxed (downcast it to `B::Error`), or, for a body that holds its lock
    /// under [`cancel_on_lost`](crate::LockLayer::cancel_on_lost), a
    /// [`distlock::LockError::Lost`] when the lease was lost while the body was being sent.
    /// The body then ends at once, also when it was waiting on a slow inner stream, and sends
    /// no frame the inner body makes afterwards: HTTP clients see the response cut short
    /// (hyper resets the connection or the HTTP/2 stream). A gRPC response ends instead with
    /// trailers carrying the [`Rejection::Lost`](crate::Rejection::Lost) answer's
    /// `grpc-status` (ABORTED by default), which gRPC clients read as that status.
    ///
    /// ```
    /// use distlock::LockError;
    /// fn lock_was_lost(err: &tower::BoxError) -> bool {
    ///     err.downcast_ref::<LockError>().is_some_and(LockError::is_lost)
    /// }
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::LockBody;
    /// use http_body::Body;
    ///
    /// let body: LockBody<String> = LockBody::message("busy\n");
    /// assert_eq!(body.size_hint().exact(), Some(5));
    /// ```
    pub struct LockBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Proj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
            hold: Option<Hold>,
            // Ended early because the lock was lost.
            cut: bool,
        },
        Message {
            data: Option<Bytes>,
        },
    }
}

/// The lock a body holds until its end, and how it watches for the lock's loss.
struct Hold {
    guard: LockGuard,
    watch: Option<Watch>,
}

/// Resolves when the lease is lost. In a `Mutex` only to keep the body `Sync`; it is only
/// ever reached through `&mut` (`Mutex::get_mut`, no locking).
type Lost = Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>;

struct Watch {
    lost: Lost,
    ending: LostEnding,
}

/// How a body holding a lock ends when the lock is lost.
#[derive(Debug)]
pub(crate) enum LostEnding {
    /// With a [`LockError::Lost`] error (HTTP).
    Error,
    /// With these trailers (gRPC: `grpc-status`, `grpc-message`).
    Trailers(HeaderMap),
}

impl LostEnding {
    /// The end of a gRPC response: the `grpc-*` headers of `answer` (the layer's answer for
    /// [`Rejection::Lost`](crate::Rejection::Lost)) as trailers; an error when it has none.
    pub(crate) fn grpc(answer: &http::Response<String>) -> Self {
        let trailers: HeaderMap = answer
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("grpc-"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if trailers.contains_key("grpc-status") {
            Self::Trailers(trailers)
        } else {
            Self::Error
        }
    }
}

impl Hold {
    /// Whether the lease is lost (registering `cx` to hear of it otherwise); never, when the
    /// layer lets a lost lock finish.
    fn lost(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(watch) = &mut self.watch else {
            return false;
        };
        let lost = watch.lost.get_mut().unwrap_or_else(PoisonError::into_inner);
        lost.as_mut().poll(cx).is_ready() || !self.guard.is_held()
    }

    /// The frame (or error) that ends the body now that the lock is lost.
    fn end(self) -> Result<Frame<Bytes>, BoxError> {
        let key = self.guard.key().to_owned();
        // Dropping the guard releases in the background (a no-op: the lease is gone).
        drop(self.guard);
        tracing::warn!(
            key,
            "the lock was lost while the response body was being sent; ending the body"
        );
        match self.watch.map(|w| w.ending) {
            Some(LostEnding::Trailers(trailers)) => Ok(Frame::trailers(trailers)),
            _ => Err(Box::new(LockError::Lost { key })),
        }
    }
}

impl<B> LockBody<B> {
    /// Wraps the inner service's body.
    ///
    /// # Examples
    ///
    /// ```
    /// let body = distlock_tower::LockBody::inner(String::from("ok"));
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                hold: None,
                cut: false,
            },
        }
    }

    /// A body of the given text.
    ///
    /// # Examples
    ///
    /// ```
    /// let body: distlock_tower::LockBody<String> = distlock_tower::LockBody::message("locked");
    /// ```
    pub fn message(text: impl Into<Bytes>) -> Self {
        let data: Bytes = text.into();
        Self {
            kind: Kind::Message {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner body, holding `guard` until its end. With `on_lost`, a lost lease ends it
    /// early that way; without, the body runs to its end.
    pub(crate) fn holding(body: B, guard: LockGuard, on_lost: Option<LostEnding>) -> Self {
        let watch = on_lost.map(|ending| Watch {
            lost: Mutex::new(Box::pin(guard.lost_owned())),
            ending,
        });
        Self {
            kind: Kind::Inner {
                body,
                hold: Some(Hold { guard, watch }),
                cut: false,
            },
        }
    }
}

impl<B> std::fmt::Debug for LockBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { hold, .. } => f
                .debug_struct("LockBody::Inner")
                .field("holds_lock", &hold.is_some())
                .finish_non_exhaustive(),
            Kind::Message { data } => f
                .debug_struct("LockBody::Message")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for LockBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            Proj::Inner {
                mut body,
                hold,
                cut,
            } => {
                if *cut {
                    return Poll::Ready(None);
                }
                // Checked before the inner body is asked for more, so that a frame made after
                // the loss is never sent; this also registers the waker, so a body waiting on
                // a slow inner stream ends as soon as the loss is known.
                if hold.as_mut().is_some_and(|held| held.lost(cx))
                    && let Some(held) = hold.take()
                {
                    *cut = true;
                    return Poll::Ready(Some(held.end()));
                }
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) || body.is_end_stream() {
                    // The body is done (or failed): the lock is released in the background.
                    // (Dropping the body before its end releases it too.)
                    hold.take();
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Proj::Message { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, cut, .. } => *cut || body.is_end_stream(),
            Kind::Message { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { cut: true, .. } => SizeHint::with_exact(0),
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Message { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An inner body that never has anything to send.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    async fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[test]
    fn bodies_stay_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LockBody<String>>();
    }

    async fn short_lease() -> LockGuard {
        distlock::LockClient::memory()
            .lock("k")
            .ttl(Duration::from_millis(100))
            .watchdog(false)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_lost_lease_ends_a_waiting_body_with_lost() {
        let mut body = LockBody::holding(Stalled, short_lease().await, Some(LostEnding::Error));
        let err = next_frame(&mut body).await.unwrap().unwrap_err();
        let lost = err.downcast_ref::<LockError>().expect("a LockError");
        assert!(lost.is_lost(), "{lost}");
        assert!(body.is_end_stream());
        assert!(next_frame(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_grpc_body_ends_with_the_lost_answers_status() {
        let answer = crate::Rejection::Lost { key: "k".into() }.grpc_response();
        let ending = LostEnding::grpc(&answer);
        let mut body = LockBody::holding(Stalled, short_lease().await, Some(ending));
        let frame = next_frame(&mut body).await.unwrap().unwrap();
        let trailers = frame.into_trailers().expect("trailers");
        assert_eq!(trailers["grpc-status"], "10");
        assert!(next_frame(&mut body).await.is_none());
    }
}
