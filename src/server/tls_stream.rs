//! The client's TLS stream, on rustls's unbuffered API: this stream owns the buffers, so an
//! idle connection can give them back.
//!
//! rustls's buffered `ServerConnection` (what tokio-rustls drives) keeps a zero-filled 4 KiB
//! receive buffer for as long as a connection lives, even while it only waits for the
//! client's next request. With 10,000 idle keep-alive connections that buffer alone was
//! 40 MB, the largest single item of an idle connection (counted by allocation size). Here
//! the same rustls state machine ([`UnbufferedServerConnection`]) is fed from buffers of
//! our own: one for TLS records received, one for decrypted bytes not yet read, one for
//! records to send. A parked connection (`park.rs`) calls
//! [`TlsStream::release_buffers_if_idle`] and keeps none of them; the next request grows them
//! again. An HTTP/2 connection, which cannot be parked, gives them back whenever a read has to
//! wait for the client ([`TlsStream::release_buffers_while_waiting`]).
//!
//! Everything TLS (handshake, record protection, alerts, key updates, tickets) is still
//! rustls's; this file only moves bytes between the socket and rustls, in order.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use turn::{tls_error, Send, Turn};

#[cfg(test)]
mod tests;
mod turn;

/// The first size of the receive buffer, and how much room each read asks for.
const READ_SIZE: usize = 4096;
/// The largest receive buffer: one handshake message (rustls accepts up to 64 KiB) spread
/// over records, or one full record. A client that fills it without completing a message
/// is refused.
const MAX_RECEIVE: usize = 0x1_0000 + 0x4800;
/// The most plaintext one write takes before what it made has gone to the socket: at most
/// this much (plus record overhead) waits in memory for a slow client.
const MAX_WRITE: usize = 0x1_0000;
/// The most plaintext one TLS record carries.
const RECORD: usize = 0x4000;
/// Slices of a vectored write shorter than this are gathered into shared records.
const STAGE_BELOW: usize = 2048;

/// A server-side TLS stream over a TCP connection, after its handshake.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS records received and not yet processed (the vector's spare capacity is room for
    /// the next read, which fills it without zeroing it first).
    incoming: Vec<u8>,
    /// Decrypted bytes that did not fit the read they arrived in: `plaintext[taken..]`.
    plaintext: Vec<u8>,
    taken: usize,
    /// TLS records to send: `outgoing[sent..filled]`.
    outgoing: Vec<u8>,
    sent: usize,
    filled: usize,
    /// Small slices of a write, gathered to be sealed as one record (empty between writes).
    staging: Vec<u8>,
    /// The client sent close_notify: reads give end of stream.
    peer_closed: bool,
    /// We queued close_notify: nothing more may be written.
    write_closed: bool,
    /// The TLS failure that ended the stream: every later read and write returns it. (Boxed:
    /// the stream is allocated whole for every connection, and a failure is rare.)
    failed: Option<Box<rustls::Error>>,
    /// Give the buffers back whenever a read has to wait for the client (see
    /// [`TlsStream::release_buffers_while_waiting`]).
    release_while_waiting: bool,
}

/// Completes the server side of a TLS handshake on `tcp`.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        taken: 0,
        outgoing: Vec::new(),
        sent: 0,
        filled: 0,
        staging: Vec::new(),
        peer_closed: false,
        write_closed: false,
        failed: None,
        release_while_waiting: false,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl TlsStream {
    /// The TCP connection (for waiting on readability while parked).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The protocol ALPN settled on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The client's certificate chain, when it presented one that verified.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Gives back every buffer when nothing is buffered in either direction (no bytes received
    /// and not yet read, nothing left to send) and the client has not closed: then, and only
    /// then, a parked connection can wait for its socket to turn readable without leaving
    /// something undone. Returns whether it did.
    pub fn release_buffers_if_idle(&mut self) -> bool {
        let idle = self.incoming.is_empty()
            && self.taken == self.plaintext.len()
            && self.sent == self.filled
            && !self.peer_closed;
        if idle {
            self.incoming = Vec::new();
            self.plaintext = Vec::new();
            self.taken = 0;
            self.outgoing = Vec::new();
            self.sent = 0;
            self.filled = 0;
            self.staging = Vec::new();
        }
        idle
    }

    /// From now on, a read that finds nothing buffered and has to wait for the socket gives
    /// the buffers back before it waits. For HTTP/2, whose connections cannot be parked (the h2
    /// crate keeps its own state and buffers): an idle HTTP/2 connection then holds no TLS
    /// buffer (4 KiB to receive, and what the last response left to send). Only a read that
    /// would wait does it, so a busy connection, whose next bytes are already there, keeps
    /// its buffers.
    pub fn release_buffers_while_waiting(&mut self) {
        self.release_while_waiting = true;
    }

    /// A read waits for the socket (its waker is registered): with
    /// [`Self::release_buffers_while_waiting`], without the buffers.
    fn wait<T>(&mut self) -> Poll<T> {
        if self.release_while_waiting {
            self.release_buffers_if_idle();
        }
        Poll::Pending
    }

    /// The bytes of buffer this stream holds (allocated, whether in use or not).
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.incoming.capacity()
            + self.plaintext.capacity()
            + self.outgoing.capacity()
            + self.staging.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.turn(Send::Nothing, None)? {
                Turn::Progress => continue,
                Turn::Writable if !self.conn.is_handshaking() => {
                    ready!(self.poll_send(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Turn::NeedInput | Turn::Writable => {
                    // Our flight goes out before we wait for the client's.
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(eof("tls handshake eof")));
                    }
                }
                Turn::Closed => return Poll::Ready(Err(eof("tls handshake eof"))),
            }
        }
    }

    /// Reads from the socket into the receive buffer: the number of bytes read (0 at end of
    /// stream).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let received = self.incoming.len();
        if received == 0 && self.incoming.capacity() > READ_SIZE {
            // Emptied after a large record (an upload): back to the usual size, as rustls's
            // own buffer does.
            self.incoming = Vec::new();
        }
        if self.incoming.capacity() - received < READ_SIZE / 4 {
            if self.incoming.capacity() >= MAX_RECEIVE {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than the receive buffer",
                )));
            }
            let grown = (received + READ_SIZE).min(MAX_RECEIVE);
            self.incoming.reserve_exact(grown - received);
        }
        // Into the spare capacity, with no zeroing first. A short read clears the socket's
        // readiness, so a later `poll_read_ready` tells whether more has come.
        tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.incoming)
    }

    /// Writes queued records to the socket until none are left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.filled {
            let pending = &self.outgoing[self.sent..self.filled];
            let written = ready!(Pin::new(&mut self.tcp).poll_write(cx, pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.all_sent();
        Poll::Ready(Ok(()))
    }

    /// Sends queued records as far as the socket takes them now, without waiting and without
    /// asking to be woken (the read side's way to pass on what rustls queued while reading).
    fn send_now(&mut self) -> io::Result<()> {
        while self.sent < self.filled {
            match self.tcp.try_write(&self.outgoing[self.sent..self.filled]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.sent += written,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        self.all_sent();
        Ok(())
    }

    /// Everything queued has been sent: the send buffer is reused, unless a large write made
    /// it larger than two records (HTTP/2 connections are never parked, so they would keep
    /// it for life).
    fn all_sent(&mut self) {
        self.sent = 0;
        self.filled = 0;
        if self.outgoing.len() > 2 * RECORD + 1024 {
            self.outgoing = Vec::new();
        }
    }

    /// Encrypts `data` (some of it, up to [`MAX_WRITE`]); the records go to the socket as far
    /// as it takes them now. What was sent before must have gone first: that is the
    /// back-pressure a slow client puts on the writer.
    fn poll_encrypt<'d>(
        &mut self,
        cx: &mut Context<'_>,
        data: impl Iterator<Item = &'d [u8]>,
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(self.poll_send(cx))?;
        // Small slices (a response head, a chunk-size line, a small body) are gathered into
        // one record rather than sealed one record each; large ones are encrypted from where
        // they are, in order.
        let mut staged = std::mem::take(&mut self.staging);
        let mut total = 0;
        for slice in data {
            let slice = &slice[..slice.len().min(MAX_WRITE - total)];
            if slice.len() >= STAGE_BELOW {
                self.encrypt_staged(&mut staged)?;
                self.encrypt(slice)?;
            } else {
                if staged.len() + slice.len() > RECORD {
                    self.encrypt_staged(&mut staged)?;
                }
                staged.extend_from_slice(slice);
            }
            total += slice.len();
            if total == MAX_WRITE {
                break;
            }
        }
        self.encrypt_staged(&mut staged)?;
        if staged.capacity() <= READ_SIZE {
            self.staging = staged;
        }
        if let Poll::Ready(Err(err)) = self.poll_send(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(total))
    }

    /// Encrypts and empties `staged`.
    fn encrypt_staged(&mut self, staged: &mut Vec<u8>) -> io::Result<()> {
        if !staged.is_empty() {
            self.encrypt(staged)?;
            staged.clear();
        }
        Ok(())
    }

    /// Encrypts all of `data` into the records to send.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        loop {
            match self.turn(Send::Data(data), None)? {
                Turn::Writable => return Ok(()),
                Turn::Progress => continue,
                Turn::NeedInput => return Err(io::Error::other("TLS write during a handshake")),
                Turn::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                let available = &this.plaintext[this.taken..];
                let len = available.len().min(buf.remaining());
                buf.put_slice(&available[..len]);
                this.taken += len;
                if this.taken == this.plaintext.len() {
                    // Only what did not fit a read waits here: rarely, so not kept.
                    this.plaintext = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match this.turn(Send::Nothing, Some(buf))? {
                Turn::Progress if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Turn::Progress => continue,
                Turn::Closed => return Poll::Ready(Ok(())),
                Turn::NeedInput | Turn::Writable => {
                    // Records rustls queued while reading (a TLS 1.2 renegotiation refusal)
                    // go out as far as the socket takes them now; the read does not wait.
                    this.send_now()?;
                    if this.release_while_waiting
                        && this.incoming.is_empty()
                        && this.tcp.poll_read_ready(cx)?.is_pending()
                    {
                        // Known to wait: no receive buffer is taken for it.
                        return this.wait();
                    }
                    let Poll::Ready(received) = this.poll_receive(cx) else {
                        // Readiness was stale (tokio learns only from a read that it is not).
                        return this.wait();
                    };
                    let received = received?;
                    if received == 0 {
                        return Poll::Ready(Err(eof(
                            "peer closed connection without sending TLS close_notify",
                        )));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, std::iter::once(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_encrypt(cx, bufs.iter().map(|buf| &**buf))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // After a TLS failure only its alert (already queued) goes out.
        if !this.write_closed && this.failed.is_none() {
            while let Turn::Progress = this.turn(Send::CloseNotify, None)? {}
            this.write_closed = true;
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.tcp).poll_shutdown(cx)) {
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

fn eof(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, message)
}
