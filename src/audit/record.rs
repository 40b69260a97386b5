//! The audit record: one JSON object per line, fields named as in the external contract.
//!
//! Fields that do not apply are absent rather than null. Nothing secret is ever a field:
//! sessions appear only as a hash, and there is no field that could hold a password, a TOTP
//! code, a token or a cookie.
//!
//! The per-request fields are [`Text`] (`Arc<str>`) rather than `String`: under load, building,
//! cloning and freeing those strings was a measurable share of each PHI request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Text shared between the records of one request (and with the request itself): the two
/// `access` records of a PHI request carry the same user, roles, path and so on, and a clone
/// of an `Arc<str>` is a reference count, not another allocation freed on the writer thread.
pub type Text = Arc<str>;

/// A word from a fixed set (`event`, `decision`): written by the proxy as a `&'static str`, so
/// making and cloning a record does not allocate it; read back from a file as owned text.
pub type Label = std::borrow::Cow<'static, str>;

/// One audit record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// UTC time, RFC 3339 with milliseconds (shared by the two records of an access).
    pub ts: Text,
    /// Sequence number, +1 per record across files.
    pub seq: u64,
    /// Hex SHA-256 of the previous line (64 zeros for the very first).
    pub prev: String,
    /// Event type (`access`, `login`, `denied`, `checkpoint`, ...).
    pub event: Label,
    /// Request id (as answered in `X-Request-Id`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<Text>,
    /// Username.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<Text>,
    /// The user's roles.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub roles: Option<Arc<[String]>>,
    /// SHA-256 of the session id (first 32 hex digits).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session: Option<Text>,
    /// Client address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_ip: Option<Text>,
    /// Verified client-certificate subject.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_cert: Option<Text>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<Text>,
    /// Host.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<Text>,
    /// Canonical path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<Text>,
    /// Route name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub route: Option<Text>,
    /// Patient id bound by the route (`{patient_id}`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub patient_id: Option<Text>,
    /// `allow` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Label>,
    /// The rule that decided.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<Text>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<Label>,
    /// HTTP status answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// Response body bytes sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    /// Time from request to end of response.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ms: Option<f64>,
    /// Break-glass reason, when the access used emergency access.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub break_glass: Option<Text>,
    /// Replica that wrote the record.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replica: Option<Text>,
    /// The user's own working hours (claim `work_hours`), for the detection rules only: never
    /// written to the log.
    #[serde(skip)]
    pub work_hours: Option<Text>,
    /// Checkpoints only: Ed25519 signature (hex) over `prev`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signature: Option<String>,
}

impl AuditRecord {
    /// A record of `event`, time-stamped now.
    pub fn new(event: &'static str) -> AuditRecord {
        AuditRecord {
            ts: now_text(),
            event: Label::Borrowed(event),
            ..AuditRecord::default()
        }
    }
}

/// The current time as a record's `ts`. Records made on one thread within the same millisecond
/// (under load, most of them) share one formatted text instead of formatting it again.
fn now_text() -> Text {
    thread_local! {
        static LAST: std::cell::RefCell<(u128, Option<Text>)> = const { std::cell::RefCell::new((0, None)) };
    }
    let now = std::time::SystemTime::now();
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &last.1 {
            Some(text) if last.0 == millis => Arc::clone(text),
            _ => {
                let text = Text::from(humantime::format_rfc3339_millis(now).to_string());
                *last = (millis, Some(Arc::clone(&text)));
                text
            }
        }
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Hex SHA-256 of a line (without its newline): the next record's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line))
}

/// What the audit trail keeps of a session id: the first 32 hex digits of its SHA-256.
/// Computed once per verified token (`authn::token::VerifiedSession`), not per request.
pub fn session_hash(session_id: &str) -> Text {
    Text::from(hex(&Sha256::digest(session_id.as_bytes())[..16]))
}

/// `prev` of the first record ever.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_hash_is_the_first_half_of_the_sha256_in_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(&*session_hash("abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(&*session_hash("abc"), &line_hash(b"abc")[..32]);
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds_and_move_on() {
        let first = AuditRecord::new("a").ts;
        assert_eq!(first.len(), "2026-12-06T21:52:18.123Z".len(), "{first}");
        assert!(humantime::parse_rfc3339(&first).is_ok(), "{first}");
        std::thread::sleep(std::time::Duration::from_millis(3));
        let later = AuditRecord::new("b").ts;
        assert!(*later > *first, "{later} after {first}");
    }
}
