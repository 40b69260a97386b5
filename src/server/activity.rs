//! What a client connection is doing, and the HTTP/1 client stream that depends on it: the
//! header-read deadline, and the hand-over of a parked connection (`park.rs`).
//!
//! hyper's own `header_read_timeout` starts whenever hyper waits for a request head, which
//! includes every idle keep-alive connection: it closed each of them `header_read_timeout`
//! (10 s) after its last response, whatever `keepalive_timeout` said, and clients paid a new TLS
//! handshake for it. [`Http1Stream`] starts the clock when the first bytes of a request head
//! arrive instead (or when the connection opens, for its first request), so a slow head
//! (slowloris) is still cut after `header_read_timeout` while an idle connection lives for
//! `keepalive_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Requests begun and in flight on a connection, and when the last one ended.
pub struct Activity {
    started: Instant,
    begun: AtomicU64,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    upgraded: AtomicBool,
    /// Set while an idle HTTP/1 connection is being parked (`park.rs`).
    parking: AtomicBool,
    /// hyper began to shut the stream down for real (not as part of parking).
    shutdown_begun: AtomicBool,
    /// Writes to the client so far (HTTP/1): a park that saw hyper write had not found it idle.
    writes: AtomicU64,
    /// Response bodies hyper has not asked for more since they last gave it data (or since
    /// they were made): their client has yet to take it. A body waiting on its backend is
    /// not counted: a quiet stream is not a stalled client.
    awaiting_client: AtomicUsize,
    /// How many times hyper has asked a response body for more: while bodies await their
    /// client, this not moving for `send_timeout` means the client stopped reading (a full
    /// TCP window, or an HTTP/2 flow-control window it never opens).
    asked: AtomicU64,
}

impl Activity {
    /// A connection that has served nothing yet.
    pub fn new() -> Activity {
        Activity {
            started: Instant::now(),
            begun: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            shutdown_begun: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            awaiting_client: AtomicUsize::new(0),
            asked: AtomicU64::new(0),
        }
    }

    /// Whether some response is waiting for the client to take more of it, and how often
    /// hyper has asked response bodies for more so far (see [`StallWatch`]).
    pub fn sending(&self) -> (bool, u64) {
        (
            self.awaiting_client.load(Ordering::Relaxed) > 0,
            self.asked.load(Ordering::Relaxed),
        )
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request head was read and handed to the gate. The request counts as in flight until
    /// the returned guard is dropped: with the response body once hyper has sent or dropped
    /// all of it, or with the gate's future if the request is abandoned.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The connection now carries another protocol (WebSocket): no more request heads.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Requests begun on the connection so far.
    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// Whether the connection may be parked: hyper, serving it since `begun_before` requests,
    /// has served one itself (before that, a new hyper connection counts as busy and would
    /// close instead, and on a connection's first one the header-read deadline runs, which a
    /// parked connection would not enforce), and it carries no other protocol.
    pub fn may_park(&self, begun_before: u64) -> bool {
        self.begun() > begun_before && !self.upgraded.load(Ordering::Relaxed)
    }

    /// Marks the connection as being parked (or no longer).
    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// Whether hyper's shutdown must leave the stream open: the connection is being parked,
    /// and hyper had not already begun a real shutdown (which is then carried on).
    pub fn shutdown_parks(&self) -> bool {
        if self.parking.load(Ordering::Relaxed) && !self.shutdown_begun.load(Ordering::Relaxed) {
            return true;
        }
        self.shutdown_begun.store(true, Ordering::Relaxed);
        false
    }

    /// Whether hyper began a real shutdown of the stream.
    pub fn shutdown_begun(&self) -> bool {
        self.shutdown_begun.load(Ordering::Relaxed)
    }

    /// Something was written to the client. Only the connection's stream calls it, so a
    /// plain load and store suffice.
    pub fn wrote(&self) {
        let writes = self.writes.load(Ordering::Relaxed);
        self.writes.store(writes.wrapping_add(1), Ordering::Relaxed);
    }

    /// Writes to the client so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// How long the connection has had no request in flight.
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// One request in flight on a connection; ends it when dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that keeps its request in flight while it streams: a body still being sent
/// long after the gate answered keeps the connection busy, neither parked nor closed as idle.
/// It also tells the connection whether the client is taking the response (see
/// [`Activity::sending`]).
pub struct AnsweringBody<B> {
    body: B,
    in_flight: InFlight,
    /// Gave hyper data (or was just made) and has not been asked for more since.
    awaiting_client: bool,
}

impl<B> AnsweringBody<B> {
    /// `body`, keeping `in_flight` until it is dropped.
    pub fn new(body: B, in_flight: InFlight) -> AnsweringBody<B> {
        in_flight.0.awaiting_client.fetch_add(1, Ordering::Relaxed);
        AnsweringBody {
            body,
            in_flight,
            awaiting_client: true,
        }
    }

    fn set_awaiting_client(&mut self, awaiting: bool) {
        if awaiting != self.awaiting_client {
            self.awaiting_client = awaiting;
            let counter = &self.in_flight.0.awaiting_client;
            if awaiting {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B> Drop for AnsweringBody<B> {
    fn drop(&mut self) {
        self.set_awaiting_client(false);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for AnsweringBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let asked = &this.in_flight.0.asked;
        asked.store(
            asked.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        // Data handed over: hyper asks again once the client has taken it. Pending: the
        // backend has nothing yet. The end: nothing more to take.
        this.set_awaiting_client(matches!(polled, Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Watches, from the connection's timer, whether its client keeps taking what it is sent.
pub struct StallWatch {
    asked: u64,
    since: tokio::time::Instant,
}

impl StallWatch {
    /// Starts watching `activity`.
    pub fn new(activity: &Activity) -> StallWatch {
        StallWatch {
            asked: activity.sending().1,
            since: tokio::time::Instant::now(),
        }
    }

    /// How long a response has waited for the client without hyper asking any response body
    /// for more (zero when nothing waits for the client, or when hyper asked since the last look).
    pub fn stalled_for(&mut self, activity: &Activity) -> Duration {
        let (awaiting, asked) = activity.sending();
        if !awaiting || asked != self.asked {
            self.asked = asked;
            self.since = tokio::time::Instant::now();
            return Duration::ZERO;
        }
        self.since.elapsed()
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

/// The client stream of an HTTP/1 connection, as hyper sees it. It does three jobs:
/// - It fails reads once a request head has taken longer than `header_read_timeout` to arrive.
/// - While the connection is being parked (`park.rs`), it turns hyper's shutdown into a flush,
///   so the stream stays open for the next hyper connection.
/// - It yields first the bytes a parked hyper connection had read and not used.
///
/// It also counts writes, which tells a park that hyper had work left.
pub struct Http1Stream<S> {
    inner: S,
    activity: Arc<Activity>,
    deadline: Deadline,
    /// Read before anything more from `inner`.
    unread: Bytes,
}

/// The one timer of a connection, reset for each request head rather than made anew.
struct Deadline {
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// While the clock runs (a head is awaited and has started to arrive; for the first
    /// request, since the connection opened): the number of requests begun when it started.
    /// When that number moves on, the head arrived. A timer that stopped running may still
    /// fire once later; that wake-up is harmless.
    running_since: Option<u64>,
}

impl<S> Http1Stream<S> {
    /// Wraps `inner`, with the head clock (`limit`) already running for the first request.
    pub fn new(inner: S, activity: Arc<Activity>, limit: Duration) -> Http1Stream<S> {
        Http1Stream {
            inner,
            activity,
            deadline: Deadline {
                limit,
                timer: Box::pin(tokio::time::sleep(limit)),
                running_since: Some(0),
            },
            unread: Bytes::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Bytes to be read before anything more from the stream: what a parked hyper connection
    /// had read and not used.
    pub fn unread(&mut self, bytes: Bytes) {
        self.unread = bytes;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Http1Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let polled = if this.unread.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let count = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..count]);
            this.unread.advance(count);
            Poll::Ready(Ok(()))
        };
        let (activity, deadline) = (&this.activity, &mut this.deadline);
        let begun = activity.begun.load(Ordering::Relaxed);
        let upgraded = activity.upgraded.load(Ordering::Relaxed);
        if upgraded || deadline.running_since.is_some_and(|at| at != begun) {
            deadline.running_since = None;
        }
        let arrived = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > filled_before;
        let between_requests = activity.in_flight.load(Ordering::Relaxed) == 0 && !upgraded;
        if arrived && between_requests && deadline.running_since.is_none() {
            let until = tokio::time::Instant::now() + deadline.limit;
            deadline.timer.as_mut().reset(until);
            deadline.running_since = Some(begun);
        }
        if deadline.running_since.is_some() && deadline.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received within header_read_timeout",
            )));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Http1Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.wrote();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.wrote();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.shutdown_parks() {
            // Flushed, and left open for the next hyper connection.
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_in_flight_until_its_guard_drops() {
        let activity = Arc::new(Activity::new());
        assert!(!activity.may_park(0), "nothing served yet");
        let in_flight = activity.begin();
        let body = AnsweringBody::new(http_body_util::Empty::<bytes::Bytes>::new(), in_flight);
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(body);
        std::thread::sleep(Duration::from_millis(20));
        assert!(activity.idle_for() >= Duration::from_millis(20));
        assert!(activity.may_park(0));
        assert!(!activity.may_park(1), "nothing served since");
        activity.upgraded();
        assert!(
            !activity.may_park(0),
            "an upgraded connection is never parked"
        );
    }

    #[test]
    fn a_shutdown_hyper_began_itself_is_carried_on_when_parking_starts() {
        let parking_first = Activity::new();
        parking_first.set_parking(true);
        assert!(parking_first.shutdown_parks());
        assert!(!parking_first.shutdown_begun());

        let closing_first = Activity::new();
        assert!(!closing_first.shutdown_parks());
        closing_first.set_parking(true);
        assert!(!closing_first.shutdown_parks());
        assert!(closing_first.shutdown_begun());
    }
}
