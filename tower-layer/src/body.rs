//! The response body: the service's own, or the layer's short message.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use distlock::LockGuard;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of responses passing through a [`LockService`](crate::LockService): the
    /// inner service's body (which, with
    /// [`hold_until_body_sent`](crate::LockLayer::hold_until_body_sent), keeps the lock until
    /// its last frame), or the text of a rejection.
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
            guard: Option<LockGuard>,
        },
        Message {
            data: Option<Bytes>,
        },
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
            kind: Kind::Inner { body, guard: None },
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

    pub(crate) fn holding(body: B, guard: LockGuard) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                guard: Some(guard),
            },
        }
    }
}

impl<B> std::fmt::Debug for LockBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { guard, .. } => f
                .debug_struct("LockBody::Inner")
                .field("holds_lock", &guard.is_some())
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
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            Proj::Inner { mut body, guard } => {
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) || body.is_end_stream() {
                    // The body is done (or failed): the lock is released in the background.
                    // (Dropping the body before its end releases it too.)
                    guard.take();
                }
                Poll::Ready(frame)
            }
            Proj::Message { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Message { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Message { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
