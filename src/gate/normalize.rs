//! Stage 2, normalize: one canonical path used for both route matching and forwarding.
//!
//! Path-confusion bypasses happen when the proxy's policy sees one path and the backend
//! another (`/public/..%2fadmin`, `/admin;x`, `%252e%252e`). So this stage produces exactly one
//! string that both the route table and the upstream request use, and rejects with 400 whatever
//! two servers could reasonably read differently, instead of guessing.
//!
//! Rules: percent-encoded unreserved characters are decoded, other escapes are kept with
//! upper-case hex; `.` and `..` segments are resolved (`..` above the root is an error); empty
//! segments (`//`) collapse; a trailing slash is kept. Rejected: encoded `/` or `\`, any
//! backslash, NUL and other control characters, `;` path parameters, `%25` followed by hex
//! (double encoding), malformed escapes, escapes that decode to invalid or overlong UTF-8, raw
//! non-ASCII bytes, and anything that does not start with `/`.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (e.g. `*`).
    #[error("path must start with /")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// `%2F` would let the backend see a different segment structure.
    #[error("encoded slash")]
    EncodedSlash,
    /// `\` or `%5C`: some servers treat it as a separator.
    #[error("backslash")]
    Backslash,
    /// NUL or another control character.
    #[error("control character")]
    ControlCharacter,
    /// `;` path parameters are read differently by different servers.
    #[error("path parameter (;)")]
    PathParameter,
    /// `%25XX`: a backend that decodes twice would see something else.
    #[error("double percent-encoding")]
    DoubleEncoding,
    /// Escapes decode to invalid (or overlong) UTF-8, or raw non-ASCII.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// `..` would climb above the root.
    #[error("dot-segment above root")]
    AboveRoot,
    /// Spelled with other letter case or a trailing slash, the path reaches another route
    /// (`route/variants.rs`): a backend that ignores the difference would serve that one.
    #[error("another route matches this path if letter case, a trailing slash or the dots and spaces ending a segment are ignored")]
    RouteVariant,
}

/// Returns the canonical form of `raw` (the path part of a request target, without query).
///
/// Borrowed when the path is already canonical, which is the common case on the hot path.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(raw.as_bytes())?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// Cheap check for paths that need no work: no escapes, no dot or empty segments, nothing odd.
fn is_canonical(bytes: &[u8]) -> bool {
    let mut previous = b'/';
    for (index, &byte) in bytes.iter().enumerate() {
        let fine = match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => true,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' => {
                true
            }
            b'/' => index == 0 || previous != b'/',
            b'.' => previous != b'/',
            _ => false,
        };
        if !fine {
            return false;
        }
        previous = byte;
    }
    true
}

/// Decodes unreserved escapes, validates the rest, and returns the path with only `/` as
/// structure (escapes for reserved characters kept in upper-case hex).
fn decode(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut raw_value = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'%' => {
                let value = hex_pair(bytes, index + 1).ok_or(PathError::BadEscape)?;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    b'%' if hex_pair(bytes, index + 3).is_some() => {
                        return Err(PathError::DoubleEncoding)
                    }
                    b if is_unreserved(b) => out.push(char::from(b)),
                    b => {
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xf)]));
                    }
                }
                raw_value.push(value);
                index += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => return Err(PathError::InvalidUtf8),
            b'#' | b'?' | b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^' | b'['
            | b']' => return Err(PathError::BadEscape),
            b => {
                out.push(char::from(b));
                raw_value.push(b);
                index += 1;
            }
        }
    }
    std::str::from_utf8(&raw_value).map_err(|_| PathError::InvalidUtf8)?;
    // Decoding can *create* a double encoding (`%25%41` → `%25A`+`1`...): check the result too,
    // or a backend that decodes twice would see what the first check refused.
    let decoded = out.as_bytes();
    if (0..decoded.len())
        .any(|i| decoded[i..].starts_with(b"%25") && hex_pair(decoded, i + 3).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_pair(bytes: &[u8], at: usize) -> Option<u8> {
    let high = (*bytes.get(at)? as char).to_digit(16)?;
    let low = (*bytes.get(at + 1)? as char).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 on segments, except that climbing above the root is an error and empty
/// segments collapse.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                stack.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            other => stack.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw)
            .map(|c| c.into_owned())
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn decoding_cannot_create_a_double_encoding() {
        // Found by fuzzing: `%25` followed by an escape of a hex digit.
        for raw in [
            "/%25%42AT",
            "/%25%341",
            "/a%25%41%41",
            "/%25ATTTT/__%25%42AT5AT",
        ] {
            assert_eq!(normalize(raw), Err(PathError::DoubleEncoding), "{raw}");
        }
        assert_eq!(ok("/%25%47G"), "/%25GG");
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/%2e%2e/c", "/c"),
            ("/a/%2E/c", "/a/c"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/admin.", "/admin."),
            ("/a/...", "/a/..."),
            ("/Patients/X", "/Patients/X"),
        ];
        for (raw, want) in cases {
            assert_eq!(ok(raw), want, "{raw}");
        }
    }

    #[test]
    fn ambiguous_forms_are_rejected() {
        let cases = [
            ("*", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::ControlCharacter),
            ("/a;jsessionid=1", PathError::PathParameter),
            ("/%252e%252e/admin", PathError::DoubleEncoding),
            ("/%zz", PathError::BadEscape),
            ("/%4", PathError::BadEscape),
            ("/%c0%ae%c0%ae/", PathError::InvalidUtf8),
            ("/%ff", PathError::InvalidUtf8),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/etc/passwd", PathError::AboveRoot),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).map(|c| c.into_owned()), Err(want), "{raw}");
        }
    }

    #[test]
    fn normalizing_is_idempotent_and_never_leaves_dot_segments() {
        for raw in [
            "/a/./b/../c//d/",
            "/%7euser/%2e/x",
            "/x/%41%42/..%2e/y",
            "/a/b/c/../../d",
        ] {
            if let Ok(once) = normalize(raw) {
                let twice = ok(&once);
                assert_eq!(once, twice, "{raw}");
                assert!(
                    !once.split('/').any(|s| s == ".." || s == "."),
                    "{raw} -> {once}"
                );
            }
        }
    }
}
