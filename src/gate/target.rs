//! The request target as Wardgate reads it: one host and one canonical path.
//!
//! HTTP/1.1 carries the host in `Host` (and sometimes an absolute-form target), HTTP/2 in
//! `:authority` (and sometimes a `Host` header too). When two of these disagree the request is
//! ambiguous and refused, so policy never matches one host while the backend serves another.

use http::header::HOST;
use http::{Method, Request};

use super::error::GateError;
use super::normalize::normalize;
use crate::audit::record::Text;

/// Host and canonical path of one request.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// Host as sent, with port if any (forwarded as `Host` and `X-Forwarded-Host`).
    pub authority: String,
    /// Lower-case host without port, used for route matching (shared with audit records).
    pub host: Text,
    /// Canonical path (see `normalize`): matched and forwarded (shared with audit records).
    pub path: Text,
    /// Query string as sent, without `?`.
    pub query: Option<String>,
}

impl RequestTarget {
    /// The first value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(self.query.as_deref()?)
            .ok()?
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Reads and checks the target of `req`.
    pub fn from_request<B>(req: &Request<B>) -> Result<RequestTarget, GateError> {
        // Methods are case-sensitive (RFC 9110 §9.1): `delete` is not `DELETE` to route and
        // policy method lists (written upper case), but some backend frameworks upper-case it.
        // Refused rather than guessed at.
        if req
            .method()
            .as_str()
            .bytes()
            .any(|b| b.is_ascii_lowercase())
        {
            return Err(GateError::BadRequest("method is not upper case"));
        }
        // CONNECT asks for a tunnel to an authority, not a resource: hyper's client would send
        // the upstream's own address as its target, not the path that was routed. TRACE echoes
        // the request, Wardgate's identity headers and assertion included, back to the client.
        if req.method() == Method::CONNECT {
            return Err(GateError::MethodNotAllowed("CONNECT"));
        }
        if req.method() == Method::TRACE {
            return Err(GateError::MethodNotAllowed("TRACE"));
        }
        let mut host_headers = req.headers().get_all(HOST).iter();
        let header = host_headers.next();
        if host_headers.next().is_some() {
            return Err(GateError::BadRequest("duplicate Host header"));
        }
        let header = header
            .map(|value| {
                value
                    .to_str()
                    .map_err(|_| GateError::BadRequest("Host is not ASCII"))
            })
            .transpose()?;
        let authority = match (req.uri().authority().map(|a| a.as_str()), header) {
            (Some(uri), Some(header)) if !uri.eq_ignore_ascii_case(header) => {
                return Err(GateError::BadRequest(
                    "Host does not match the request target",
                ))
            }
            (Some(uri), _) => uri,
            (None, Some(header)) => header,
            (None, None) => return Err(GateError::BadRequest("missing Host")),
        };
        if authority.contains('@') {
            return Err(GateError::BadRequest("userinfo in authority"));
        }
        let host = host_without_port(authority)?;
        let path = Text::from(&*normalize(req.uri().path())?);
        Ok(RequestTarget {
            authority: authority.to_string(),
            host,
            path,
            query: req.uri().query().map(str::to_string),
        })
    }

    /// Path and query as forwarded upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{}", self.path, query),
            None => self.path.to_string(),
        }
    }
}

/// The host of `authority` (`host[:port]`), after checking that whatever follows the host is
/// a port: the whole authority is forwarded as `Host` and `X-Forwarded-Host`, so nothing but
/// the host that routing saw and a port may ride along (`a.org:x/evil`, `[::1]junk`).
fn host_without_port(authority: &str) -> Result<Text, GateError> {
    let host_end = if authority.starts_with('[') {
        authority
            .find(']')
            .ok_or(GateError::BadRequest("bad IPv6 host"))?
            + 1
    } else {
        authority
            .bytes()
            .position(|b| b == b':')
            .unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    let port_valid = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits
                    .parse::<u32>()
                    .map_or(digits.is_empty(), |n| n <= 65_535)
        });
    if !port_valid {
        return Err(GateError::BadRequest("invalid port"));
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    if !valid {
        return Err(GateError::BadRequest("invalid host"));
    }
    // `a.org.` and `a..org` name `a.org` to DNS but not to every backend's virtual-host table,
    // and the authority is forwarded as sent: refused rather than routed as one host and
    // served as another.
    let empty_label = host.as_bytes().windows(2).any(|pair| pair == b"..");
    if host.ends_with('.') || empty_label || host.starts_with('.') {
        return Err(GateError::BadRequest("empty label in host"));
    }
    // Most clients send the host in lower case already: then it is copied once, not twice.
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Text::from(host.to_ascii_lowercase())
    } else {
        Text::from(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str, hosts: &[&str]) -> Result<RequestTarget, GateError> {
        let mut builder = Request::builder().uri(uri);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        RequestTarget::from_request(&builder.body(()).expect("request"))
    }

    #[test]
    fn host_comes_from_one_unambiguous_place() {
        let ok = target("/a", &["Portal.Example.org:8443"]).expect("ok");
        assert_eq!(
            (&*ok.host, ok.authority.as_str()),
            ("portal.example.org", "Portal.Example.org:8443")
        );
        assert_eq!(
            target("https://a.org/x", &[]).expect("abs").host.as_ref(),
            "a.org"
        );
        assert_eq!(
            target("/a", &["[::1]:8443"]).expect("v6").host.as_ref(),
            "[::1]"
        );
        // Empty labels: one name to DNS, maybe two to a backend's virtual hosts.
        for empty_label in ["a.org.", "a.org..", "a..org", ".a.org", "a.org.:443"] {
            assert!(target("/a", &[empty_label]).is_err(), "{empty_label}");
        }
        assert!(target("/a", &[]).is_err());
        assert!(target("/a", &["a.org", "b.org"]).is_err());
        assert!(target("https://a.org/x", &["b.org"]).is_err());
        assert!(target("/a", &["a b"]).is_err());
    }

    #[test]
    fn only_a_port_may_follow_the_host() {
        for good in [
            "a.org",
            "a.org:8443",
            "a.org:",
            "[::1]",
            "[::1]:443",
            "a.org:65535",
        ] {
            assert!(target("/a", &[good]).is_ok(), "{good}");
        }
        for bad in [
            "a.org:x",
            "a.org:443/evil",
            "a.org:443:1",
            "a.org:65536",
            "a.org:000443",
            "[::1]junk",
            "[::1]:x",
        ] {
            assert!(target("/a", &[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_must_be_upper_case() {
        let request = |method: &str| {
            let req = Request::builder()
                .method(method)
                .uri("/a")
                .header(HOST, "a.org")
                .body(())
                .expect("request");
            RequestTarget::from_request(&req)
        };
        assert!(request("DELETE").is_ok());
        assert!(request("M-SEARCH").is_ok());
        assert!(request("delete").is_err());
        assert!(request("Get").is_err());
        for never_forwarded in ["CONNECT", "TRACE"] {
            assert!(matches!(
                request(never_forwarded),
                Err(GateError::MethodNotAllowed(_))
            ));
        }
    }
}
