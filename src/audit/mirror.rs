//! An optional second copy of the audit stream for a SIEM: standard output, or RFC 5424
//! syslog over TCP (octet-counted frames, facility "log audit").
//!
//! The files stay the record of truth; the mirror is best effort, fed through a bounded queue
//! by the writer after each durable write, so a slow or absent collector never slows the
//! audit trail. Lines it could not deliver are counted (`wardgate_audit_mirror_dropped_total`)
//! and logged.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

/// Where the copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTarget {
    /// One JSON line per record on standard output.
    Stdout,
    /// RFC 5424 over TCP to `host:port`.
    Syslog(String),
}

impl MirrorTarget {
    /// Parses `stdout` or `syslog+tcp://host:port`.
    pub fn parse(text: &str) -> Option<MirrorTarget> {
        match text {
            "stdout" => Some(MirrorTarget::Stdout),
            other => other
                .strip_prefix("syslog+tcp://")
                .filter(|addr| addr.contains(':'))
                .map(|addr| MirrorTarget::Syslog(addr.to_string())),
        }
    }
}

/// Starts the mirror thread; the writer sends each written batch.
pub fn start(target: MirrorTarget, replica: String) -> SyncSender<Vec<u8>> {
    let (sender, batches) = sync_channel::<Vec<u8>>(1024);
    let _ = std::thread::Builder::new()
        .name("wardgate-audit-mirror".into())
        .spawn(move || {
            let mut connection: Option<TcpStream> = None;
            let mut retry_after = Instant::now();
            for batch in batches {
                for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let delivered = match &target {
                        MirrorTarget::Stdout => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(line)
                                .and_then(|()| out.write_all(b"\n"))
                                .is_ok()
                        }
                        MirrorTarget::Syslog(addr) => {
                            if connection.is_none() && Instant::now() >= retry_after {
                                // A host name is resolved at every connection attempt (a
                                // SIEM's address may move); each address is tried in turn.
                                connection = addr.as_str().to_socket_addrs().ok().and_then(|all| {
                                    all.into_iter().find_map(|a| {
                                        TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()
                                    })
                                });
                                if connection.is_none() {
                                    retry_after = Instant::now() + Duration::from_secs(5);
                                }
                            }
                            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                            let message = format!(
                                "<110>1 {ts} {replica} wardgate - audit - {}",
                                String::from_utf8_lossy(line)
                            );
                            let frame = format!("{} {message}", message.len());
                            match connection.as_mut().map(|c| c.write_all(frame.as_bytes())) {
                                Some(Ok(())) => true,
                                _ => {
                                    connection = None;
                                    false
                                }
                            }
                        }
                    };
                    if !delivered {
                        metrics::counter!("wardgate_audit_mirror_dropped_total").increment(1);
                        tracing::warn!(
                            "audit mirror could not deliver a record (the audit file has it)"
                        );
                    }
                }
            }
        });
    sender
}
