//! Writes an audit record as its JSON line, byte for byte what `serde_json` writes for the
//! derived `Serialize` (same field order, absent fields left out, same escapes), so readers,
//! `wardgate audit verify` and every hash already in a chain see no difference.
//!
//! Written by hand because `serde_json`'s string escaping, which checks and copies one byte at
//! a time, was the largest cost of the audit writer thread under load (two records per PHI
//! request). Here runs of bytes that need no escape are copied at once. A property test
//! checks the output against `serde_json::to_vec` on arbitrary records.

use std::io::Write;

use super::record::AuditRecord;

/// Appends `record` as one JSON object, without the newline.
pub fn write(out: &mut Vec<u8>, record: &AuditRecord) {
    out.push(b'{');
    let mut fields = Fields { out, first: true };
    fields.string("ts", Some(&record.ts));
    fields.number("seq", Some(record.seq));
    fields.string("prev", Some(&record.prev));
    fields.string("event", Some(&record.event));
    fields.string("request_id", record.request_id.as_deref());
    fields.string("user", record.user.as_deref());
    if let Some(roles) = &record.roles {
        fields.name("roles");
        fields.out.push(b'[');
        for (i, role) in roles.iter().enumerate() {
            if i > 0 {
                fields.out.push(b',');
            }
            quoted(fields.out, role);
        }
        fields.out.push(b']');
    }
    fields.string("session", record.session.as_deref());
    fields.string("src_ip", record.src_ip.as_deref());
    fields.string("client_cert", record.client_cert.as_deref());
    fields.string("method", record.method.as_deref());
    fields.string("host", record.host.as_deref());
    fields.string("path", record.path.as_deref());
    fields.string("route", record.route.as_deref());
    fields.string("patient_id", record.patient_id.as_deref());
    fields.string("decision", record.decision.as_deref());
    fields.string("rule", record.rule.as_deref());
    fields.string("reason", record.reason.as_deref());
    fields.number("status", record.status.map(u64::from));
    fields.number("bytes", record.bytes);
    if let Some(latency) = record.latency_ms {
        fields.name("latency_ms");
        // serde_json's own float formatting (ryu; non-finite values become null).
        let _ = serde_json::to_writer(&mut *fields.out, &latency);
    }
    fields.string("break_glass", record.break_glass.as_deref());
    fields.string("replica", record.replica.as_deref());
    fields.string("signature", record.signature.as_deref());
    out.push(b'}');
}

/// The fields written so far (for the commas between them).
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.name(name);
            quoted(self.out, value);
        }
    }

    fn number(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.name(name);
            let _ = write!(self.out, "{value}");
        }
    }
}

/// `value` as a JSON string with serde_json's escapes: `\"`, `\\`, the short forms for
/// backspace, form feed, newline, carriage return and tab, and `\u00XX` (lower-case hex) for
/// the other control characters. Everything else, including non-ASCII UTF-8, is copied.
fn quoted(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // Nearly every value (times, hashes, ids, paths, names) needs no escape: one check over
    // all bytes (a fold without early exit, which the compiler turns into vector code), then
    // one copy.
    let needs_escape = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
    if !bytes
        .iter()
        .fold(false, |any, &byte| any | needs_escape(byte))
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Control characters, quotes, backslashes, DEL and non-ASCII, mixed with plain text.
        proptest::string::string_regex("[a-z0-9 \"\\\\\\x00-\\x1f\\x7fé€/𝄞]{0,24}")
            .expect("valid regex")
    }

    fn record() -> impl Strategy<Value = AuditRecord> {
        let strings = proptest::collection::vec(proptest::option::of(text()), 18);
        let numbers = (
            any::<u64>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(0.1),
                Just(12.345)
            ]),
        );
        let roles = proptest::option::of(proptest::collection::vec(text(), 0..3));
        let t = |value: &Option<String>| value.as_deref().map(super::super::record::Text::from);
        (text(), text(), text(), strings, numbers, roles).prop_map(
            move |(ts, prev, event, s, (seq, status, bytes, latency_ms), roles)| AuditRecord {
                ts: ts.into(),
                seq,
                prev,
                event: event.into(),
                request_id: t(&s[0]),
                user: t(&s[1]),
                roles: roles.map(Into::into),
                session: t(&s[2]),
                src_ip: t(&s[3]),
                client_cert: t(&s[4]),
                method: t(&s[5]),
                host: t(&s[6]),
                path: t(&s[7]),
                route: t(&s[8]),
                patient_id: t(&s[9]),
                decision: s[10].clone().map(Into::into),
                rule: t(&s[11]),
                reason: s[12].clone().map(Into::into),
                status,
                bytes,
                latency_ms,
                break_glass: t(&s[13]),
                replica: t(&s[14]),
                work_hours: t(&s[15]),
                signature: s[16].clone(),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Byte-identical to serde_json: chains written before and after this code verify alike.
        #[test]
        fn same_bytes_as_serde_json(record in record()) {
            let mut ours = Vec::new();
            write(&mut ours, &record);
            let theirs = serde_json::to_vec(&record).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    #[test]
    fn every_control_character_is_escaped() {
        let all: String = (0u8..0x20).map(char::from).collect();
        let mut ours = Vec::new();
        quoted(&mut ours, &all);
        let theirs = serde_json::to_vec(&all).unwrap_or_default();
        assert_eq!(ours, theirs);
        assert!(ours[1..ours.len() - 1].iter().all(|b| *b >= 0x20));
    }
}
