//! A backend response's body that gives its connection back to the pool when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::{Inner, Origin};
use crate::body::Body;

/// Where a connection goes back to once its response is read.
pub(super) struct Home {
    pool: Arc<Inner>,
    origin: Origin,
    sender: SendRequest<Body>,
}

impl Home {
    pub(super) fn new(pool: Arc<Inner>, origin: Origin, sender: SendRequest<Body>) -> Home {
        Home {
            pool,
            origin,
            sender,
        }
    }

    /// Back to the pool once hyper can take the next request on it: at once, usually; when
    /// the request body is still being sent (a backend that answered before reading it all),
    /// from a task that waits for it, so the pool never hands out a busy connection.
    fn go(mut self) {
        if self.sender.is_ready() {
            return self.pool.check_in(self.origin, self.sender);
        }
        if self.sender.is_closed() {
            return;
        }
        tokio::spawn(async move {
            if self.sender.ready().await.is_ok() {
                self.pool.check_in(self.origin, self.sender);
            }
        });
    }
}

/// The body of a backend's response. Read to its end, it returns its connection to the pool;
/// dropped before, the connection closes with it (hyper cannot reuse a connection with an
/// unread response on it).
pub struct UpstreamBody {
    inner: Incoming,
    home: Option<Home>,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, home: Option<Home>) -> UpstreamBody {
        let mut body = UpstreamBody { inner, home };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(home) = self.home.take() {
            home.go();
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(frame))) if crate::body::is_last_frame(frame, &self.inner) => {
                self.release()
            }
            // A failed body leaves the connection unusable: it closes with its sender.
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
