//! One turn of rustls's unbuffered state machine for [`TlsStream`]: what it was handed is
//! processed, records it wants sent are queued in order, decrypted bytes are handed on, and a
//! TLS failure is remembered so the stream never feeds rustls again after one.

use std::io;

use rustls::server::ServerConnectionData;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use tokio::io::ReadBuf;

use super::TlsStream;

/// What to do when rustls allows writing.
pub(super) enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// Where one turn of rustls's state machine left the connection.
pub(super) enum Turn {
    /// Something changed (records decrypted, handshake bytes queued): turn again.
    Progress,
    /// rustls needs more bytes from the client before anything else can happen.
    NeedInput,
    /// The handshake is done and nothing is pending: what was given to send is encrypted.
    Writable,
    /// Both sides have sent close_notify.
    Closed,
}

impl TlsStream {
    /// One call into rustls: processes what has been received, and does `send` if rustls
    /// allows writing now. After a TLS failure, every call fails the same way.
    /// Decrypted bytes go straight into `reader` as far as it has room, the rest into
    /// `plaintext`.
    pub(super) fn turn(
        &mut self,
        send: Send<'_>,
        reader: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Turn> {
        if let Some(err) = &self.failed {
            return Err(tls_error((**err).clone()));
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
            plaintext,
            outgoing,
            filled,
            peer_closed,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
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
        incoming.drain(..discard);
        turn
    }

    /// A TLS failure ends the stream. The records rustls queued with it (its alert, after a
    /// key update answer it may have been holding back) are queued after whatever was being
    /// sent and go out as far as the socket takes them now; no input is processed after it.
    /// While rustls has records queued it hands them out before it reads any input, so these
    /// calls never process the failed input again.
    fn fail(&mut self, err: rustls::Error) -> io::Error {
        self.failed = Some(Box::new(err.clone()));
        while self.conn.wants_write() {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let Ok(ConnectionState::EncodeTlsData(mut record)) = status.state else {
                break;
            };
            if encode(&mut record, &mut self.outgoing, &mut self.filled).is_err() {
                break;
            }
        }
        let _ = self.send_now();
        tls_error(err)
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

pub(super) fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}
