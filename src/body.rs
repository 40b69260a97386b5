//! The one body type that flows through the gate, whatever produced it (backend, error page).

use std::future::Future as _;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Errors inside bodies (client disconnects, upstream resets, size limits).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body; never buffered whole by Wardgate.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body that fails with [`BodyIdle`] when the client pauses longer than `limit`
/// between two frames: a slow-body (slowloris) client cannot hold a connection to the backend.
pub struct IdleTimeout {
    inner: Body,
    limit: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error a too-slow request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body paused longer than the body read timeout")]
pub struct BodyIdle;

impl IdleTimeout {
    /// Wraps `inner`.
    pub fn wrap(inner: Body, limit: std::time::Duration) -> Body {
        IdleTimeout {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
        .boxed()
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
