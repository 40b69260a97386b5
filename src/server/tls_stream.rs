//! The client's TLS stream, on rustls's unbuffered API: this stream owns the buffers, so an
//! idle connection can give them back.
//!
//! rustls's buffered `ServerConnection` (what tokio-rustls drives) keeps a zero-filled 4 KiB
//! receive buffer for as long as a connection lives, even while it only waits for the
//! client's next request. With 10,000 idle keep-alive connections that buffer alone was
//! 40 MB, the largest single item of an idle connection (counted by allocation size). Here
//! the same rustls state machine ([`UnbufferedServerConnection`]) is fed from buffers of
//! our own: one for TLS records received, one for decrypted bytes not yet read, one for
//! records to send. A parked connection (`park.rs`) calls [`TlsStream::release_buffers`]
//! and keeps none of them; the next request grows them again.
//!
//! Everything TLS (handshake, record protection, alerts, key updates, tickets) is still
//! rustls's; this file only moves bytes between the socket and rustls, in order.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
    /// TLS records received and not yet processed: `incoming[..received]` (the rest of the
    /// vector is room for the next read).
    incoming: Vec<u8>,
    received: usize,
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
    /// The TLS failure that ended the stream: every later read and write returns it.
    failed: Option<rustls::Error>,
}

/// What to do when rustls allows writing.
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// Where one turn of rustls's state machine left the connection.
enum Turn {
    /// Something changed (records decrypted, handshake bytes queued): turn again.
    Progress,
    /// rustls needs more bytes from the client before anything else can happen.
    NeedInput,
    /// The handshake is done and nothing is pending: what was given to send is encrypted.
    Writable,
    /// Both sides have sent close_notify.
    Closed,
}

/// Completes the server side of a TLS handshake on `tcp`.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        received: 0,
        plaintext: Vec::new(),
        taken: 0,
        outgoing: Vec::new(),
        sent: 0,
        filled: 0,
        staging: Vec::new(),
        peer_closed: false,
        write_closed: false,
        failed: None,
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

    /// True when nothing is buffered in either direction: no bytes received and not yet
    /// read, nothing left to send, and the client has not closed. Only then can a connection
    /// wait for its socket to turn readable without leaving something undone.
    pub fn is_idle(&self) -> bool {
        self.received == 0
            && self.taken == self.plaintext.len()
            && self.sent == self.filled
            && !self.peer_closed
    }

    /// Gives back the memory of every buffer that holds nothing (parked connections).
    pub fn release_buffers(&mut self) {
        if self.received == 0 {
            self.incoming = Vec::new();
        }
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
        self.staging = Vec::new();
        if self.sent == self.filled {
            self.outgoing = Vec::new();
            self.sent = 0;
            self.filled = 0;
        }
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

    /// One call into rustls: processes what has been received, and does `send` if rustls
    /// allows writing now. After a TLS failure, every call fails the same way.
    /// Decrypted bytes go straight into `reader` as far as it has room, the rest into
    /// `plaintext`.
    fn turn(&mut self, send: Send<'_>, reader: Option<&mut ReadBuf<'_>>) -> io::Result<Turn> {
        if let Some(err) = &self.failed {
            return Err(tls_error(err.clone()));
        }
        self.turn_rustls(send, reader).map_err(|err| self.fail(err))
    }

    fn turn_rustls(
        &mut self,
        send: Send<'_>,
        mut reader: Option<&mut ReadBuf<'_>>,
    ) -> Result<Turn, rustls::Error> {
        let Self {
            conn,
            incoming,
            received,
            plaintext,
            outgoing,
            filled,
            peer_closed,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } =
            conn.process_tls_records(&mut incoming[..*received]);
        let turn = match state {
            Err(err) => Err(err),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut turn = Ok(Turn::Progress);
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(AppDataRecord {
                            discard: more,
                            payload,
                        }) => {
                            discard += more;
                            let direct = match reader.as_mut() {
                                Some(out) => {
                                    let len = out.remaining().min(payload.len());
                                    out.put_slice(&payload[..len]);
                                    len
                                }
                                None => 0,
                            };
                            plaintext.extend_from_slice(&payload[direct..]);
                        }
                        Err(err) => {
                            turn = Err(err);
                            break;
                        }
                    }
                }
                turn
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                encode(&mut data, outgoing, filled).map(|()| Turn::Progress)
            }
            // The bytes are queued in `outgoing`, ahead of anything written later.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Ok(Turn::Progress)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Turn::NeedInput),
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                Ok(Turn::Progress)
            }
            Ok(ConnectionState::Closed) => {
                *peer_closed = true;
                Ok(Turn::Closed)
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => loop {
                let result = match send {
                    Send::Nothing => break Ok(Turn::Writable),
                    Send::Data(data) => traffic.encrypt(data, &mut outgoing[*filled..]),
                    Send::CloseNotify => traffic.queue_close_notify(&mut outgoing[*filled..]),
                };
                match result {
                    Ok(written) => {
                        *filled += written;
                        break Ok(Turn::Writable);
                    }
                    Err(EncryptError::InsufficientSize(short)) => {
                        outgoing.resize(*filled + short.required_size, 0);
                    }
                    Err(_) => break Err(rustls::Error::EncryptError),
                }
            },
            // Early data is never enabled; anything newer is not understood.
            Ok(_) => Err(rustls::Error::General(
                "unexpected TLS connection state".into(),
            )),
        };
        drop_front(incoming, received, discard);
        turn
    }

    /// A TLS failure ends the stream. The alert rustls made for it, if any, is queued after
    /// whatever was being sent and goes out as far as the socket takes it now; nothing is
    /// processed after it.
    fn fail(&mut self, err: rustls::Error) -> io::Error {
        self.failed = Some(err.clone());
        let status = self
            .conn
            .process_tls_records(&mut self.incoming[..self.received]);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = status.state {
            let _ = encode(&mut alert, &mut self.outgoing, &mut self.filled);
        }
        let _ = self.send_now();
        tls_error(err)
    }

    /// Reads from the socket into the receive buffer: the number of bytes read (0 at end of
    /// stream).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.received == 0 && self.incoming.len() > READ_SIZE {
            // Emptied after a large record (an upload): back to the usual size, as rustls's
            // own buffer does.
            self.incoming = vec![0; READ_SIZE];
        }
        if self.incoming.len() - self.received < READ_SIZE / 4 {
            if self.incoming.len() >= MAX_RECEIVE {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than the receive buffer",
                )));
            }
            let grown = (self.received + READ_SIZE).min(MAX_RECEIVE);
            self.incoming.resize(grown.max(self.incoming.len()), 0);
        }
        let mut room = ReadBuf::new(&mut self.incoming[self.received..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut room))?;
        let read = room.filled().len();
        self.received += read;
        Poll::Ready(Ok(read))
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
            if slice.len() < STAGE_BELOW && staged.len() + slice.len() <= RECORD {
                staged.extend_from_slice(slice);
            } else {
                self.encrypt_staged(&mut staged)?;
                self.encrypt(slice)?;
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
        if data.is_empty() {
            return Ok(());
        }
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
                    if ready!(this.poll_receive(cx))? == 0 {
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

/// Encodes rustls's next handshake or alert record after the `filled` bytes of `outgoing`.
fn encode(
    data: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
    filled: &mut usize,
) -> Result<(), rustls::Error> {
    loop {
        match data.encode(&mut outgoing[*filled..]) {
            Ok(written) => {
                *filled += written;
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(short)) => {
                outgoing.resize(*filled + short.required_size, 0);
            }
            Err(err) => return Err(rustls::Error::General(err.to_string())),
        }
    }
}

/// Removes the first `count` of the `received` bytes of `buffer`.
fn drop_front(buffer: &mut [u8], received: &mut usize, count: usize) {
    if count > 0 {
        buffer.copy_within(count..*received, 0);
        *received -= count;
    }
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn eof(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, message)
}
