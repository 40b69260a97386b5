//! Long response streams (server-sent events, chunked vitals, big downloads) under continuous
//! validation.
//!
//! Most responses finish in milliseconds, so registering every one would cost the hot path for
//! nothing: a response body registers itself only once it has been streaming for
//! [`STREAM_AFTER`]. From then on, when its session ends, the body fails with an error, which
//! makes hyper reset the HTTP/2 stream (or close the HTTP/1.1 connection) at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::{LiveConnections, Opened};
use crate::body::{Body, BoxError};

/// A response still streaming after this long is registered as a live connection.
pub const STREAM_AFTER: Duration = Duration::from_secs(1);

/// Bodies with a known length up to this size are never wrapped: they end on their own.
const SMALL_BODY: u64 = 1024 * 1024;

type Watcher = Pin<Box<dyn Future<Output = String> + Send>>;

/// A response body that ends with an error when its session ends.
pub struct Revocable {
    inner: Body,
    /// Sleeps [`STREAM_AFTER`], registers, then resolves with the reason to close.
    /// (A `Mutex` only to make the body `Sync`; it is never contended.)
    watcher: Mutex<Watcher>,
    activity: Arc<AtomicU64>,
}

impl Revocable {
    /// Whether `body` may stream for long: not empty and not a small body of known length.
    pub fn may_last(body: &Body) -> bool {
        !body.is_end_stream() && body.size_hint().exact().is_none_or(|n| n > SMALL_BODY)
    }

    /// Wraps a body for which [`Revocable::may_last`] holds.
    pub fn wrap(inner: Body, registry: &Arc<LiveConnections>, opened: Opened) -> Body {
        let activity = Arc::new(AtomicU64::new(crate::state::unix_now()));
        let registry = Arc::clone(registry);
        let shared_activity = Arc::clone(&activity);
        let watcher: Watcher = Box::pin(async move {
            tokio::time::sleep(STREAM_AFTER).await;
            let mut guard = registry.register_with(opened, shared_activity);
            loop {
                if let Some(reason) = guard.closed.borrow_and_update().clone() {
                    return reason;
                }
                if guard.closed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        });
        http_body_util::BodyExt::boxed(Revocable {
            inner,
            watcher: Mutex::new(watcher),
            activity,
        })
    }
}

/// The error a revoked stream ends with.
#[derive(Debug, thiserror::Error)]
#[error("stream closed: {0}")]
pub struct StreamRevoked(pub String);

impl http_body::Body for Revocable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let revoked = match this.watcher.get_mut() {
            Ok(watcher) => watcher.as_mut().poll(cx),
            Err(poisoned) => poisoned.into_inner().as_mut().poll(cx),
        };
        if let Poll::Ready(reason) = revoked {
            return Poll::Ready(Some(Err(Box::new(StreamRevoked(reason)))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if frame.is_data() {
                this.activity
                    .store(crate::state::unix_now(), Ordering::Relaxed);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
