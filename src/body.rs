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

/// Whether `frame`, just read from `body`, is its last. A body that wraps another must not
/// wait for a final `None` to see the end: with a `Content-Length`, hyper stops polling after
/// the last byte, and after trailers (always the last frame) it stops polling and drops the
/// body.
pub fn is_last_frame<B: http_body::Body>(frame: &http_body::Frame<B::Data>, body: &B) -> bool {
    frame.is_trailers() || body.is_end_stream()
}

/// A body that fails when its sender pauses longer than `limit` between two frames: a
/// slow-body (slowloris) client cannot hold a connection to the backend, and a backend that
/// hangs in the middle of a response cannot hold the client's. Only the sender's pauses count:
/// the clock runs while the body has nothing to give, not while its reader is not asking.
pub struct IdleTimeout<B> {
    inner: B,
    limit: std::time::Duration,
    /// Made when the body first has nothing to give (most bodies never do: no timer for them).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The timer runs for the current pause (reset when a frame arrives).
    armed: bool,
    idle: fn() -> BoxError,
}

/// The error a too-slow request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body paused longer than the body read timeout")]
pub struct BodyIdle;

/// The error a backend's stalled response body ends with.
#[derive(Debug, thiserror::Error)]
#[error("backend sent nothing more of its response for upstream_idle_timeout")]
pub struct UpstreamIdle;

impl<B> IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin + Send + Sync + 'static,
{
    /// Wraps a request body: fails with [`BodyIdle`].
    pub fn wrap(inner: B, limit: std::time::Duration) -> Body {
        Self::with(inner, limit, || Box::new(BodyIdle))
    }

    /// Wraps a backend's response body (in the same allocation as the body it makes):
    /// fails with [`UpstreamIdle`].
    pub fn wrap_upstream(inner: B, limit: std::time::Duration) -> Body {
        Self::with(inner, limit, || Box::new(UpstreamIdle))
    }

    fn with(inner: B, limit: std::time::Duration, idle: fn() -> BoxError) -> Body {
        IdleTimeout {
            inner,
            limit,
            timer: None,
            armed: false,
            idle,
        }
        .boxed()
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
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
                this.armed = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if !this.armed {
                    timer.as_mut().reset(tokio::time::Instant::now() + limit);
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err((this.idle)()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
