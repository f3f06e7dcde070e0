//! [`ResponseFuture`]: the future of a [`LockService`](crate::LockService) call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::LockBody;

type Locked<B, E> = Pin<Box<dyn Future<Output = Result<Response<LockBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`LockService`](crate::LockService).
    ///
    /// A request without a key is the inner future as it is; a locked request is the
    /// acquire, the inner call and the release in one boxed future, dropped (and the lock
    /// released in the background) if this future is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use distlock_tower::ResponseFuture;
    /// fn is_a_future<F: std::future::Future>(_: &F) {}
    /// let answered: ResponseFuture<std::future::Ready<Result<http::Response<String>, ()>>, String, ()> =
    ///     ResponseFuture::answered(http::Response::new("busy".to_owned()));
    /// is_a_future(&answered);
    /// ```
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Passthrough { #[pin] future: F },
        Locked { future: Locked<B, E> },
        Answered { response: Option<Response<LockBody<B>>> },
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "passthrough",
            State::Locked { .. } => "locked",
            State::Answered { .. } => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            state: State::Passthrough { future },
        }
    }

    pub(crate) fn locked(future: Locked<B, E>) -> Self {
        Self {
            state: State::Locked { future },
        }
    }

    /// A future that answers at once with `response` (a rejection).
    ///
    /// # Examples
    ///
    /// ```
    /// # use distlock_tower::ResponseFuture;
    /// let f: ResponseFuture<std::future::Ready<Result<http::Response<String>, ()>>, String, ()> =
    ///     ResponseFuture::answered(http::Response::new(String::new()));
    /// ```
    pub fn answered(response: Response<String>) -> Self {
        Self {
            state: State::Answered {
                response: Some(message(response)),
            },
        }
    }
}

pub(crate) fn message<B>(response: Response<String>) -> Response<LockBody<B>> {
    response.map(LockBody::message)
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LockBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(LockBody::inner))),
            StateProj::Locked { future } => future.as_mut().poll(cx),
            StateProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}
