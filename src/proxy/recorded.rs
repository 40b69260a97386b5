//! The response body of a PHI access, counted as it streams, with the completion audit
//! record written when it ends (or when the client goes away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::audit::{AuditRecord, Auditor};
use crate::body::{Body, BoxError};

/// Streams `inner` and writes `record` (with status, bytes and latency) once it is over.
pub struct RecordedBody {
    inner: Body,
    bytes: u64,
    pending: Option<(Arc<Auditor>, AuditRecord, Instant)>,
}

impl RecordedBody {
    /// Wraps a response body; `record` already holds the request's fields and status.
    pub fn new(
        inner: Body,
        auditor: Arc<Auditor>,
        record: AuditRecord,
        started: Instant,
    ) -> RecordedBody {
        RecordedBody {
            inner,
            bytes: 0,
            pending: Some((auditor, record, started)),
        }
    }

    fn finish(&mut self, outcome: &str) {
        if let Some((auditor, mut record, started)) = self.pending.take() {
            record.bytes = Some(self.bytes);
            record.latency_ms = Some(crate::audit::open::millis(started));
            if outcome != "complete" {
                record.reason = Some(outcome.to_string().into());
            }
            auditor.submit_kept(record);
        }
    }
}

impl HttpBody for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if crate::body::is_last_frame(frame, &this.inner) {
                    this.finish("complete");
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish("response body failed"),
            Poll::Ready(None) => this.finish("complete"),
            Poll::Pending => {}
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

impl Drop for RecordedBody {
    fn drop(&mut self) {
        let outcome = match &self.pending {
            _ if self.inner.is_end_stream() => "complete",
            Some((auditor, _, _)) => auditor.ended_early(
                "client closed before the response ended",
                "cut off at shutdown before the response ended",
            ),
            None => return,
        };
        self.finish(outcome);
    }
}
