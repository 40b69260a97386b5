//! Spelling variants of a path: the same path with other letter case, with or without a
//! trailing slash, or with dots and spaces at the end of a segment. Wardgate matches routes
//! exactly, but many backends do not (IIS and ASP.NET ignore case, and Windows drops a name's
//! trailing dots and spaces; most frameworks treat `/a/` as `/a`). So `/Admin/users` or
//! `/admin./users` could reach a permissive catch-all in Wardgate and the `/admin/**` handler
//! in the backend. A request whose variant would reach a different route is ambiguous and
//! refused (400), and two routes that differ only in case or a trailing slash are a config
//! error.

use std::sync::Arc;

use http::Method;

use super::{PathPattern, RouteMatch, RouteTable, Segment};
use crate::audit::Text;
use crate::config::RouteConfig;

impl PathPattern {
    /// Whether a route table of these patterns needs the variant check for every path (not
    /// only for paths with upper-case letters or a trailing slash).
    pub(super) fn has_variant_spelling(&self) -> bool {
        self.segments.iter().any(|segment| match segment {
            Segment::Literal(literal) => {
                literal.is_empty() || literal.bytes().any(|b| b.is_ascii_uppercase())
            }
            _ => false,
        })
    }

    /// The segments with a trailing empty literal (`/a/`) dropped.
    fn loose_segments(&self) -> &[Segment] {
        match self.segments.split_last() {
            Some((Segment::Literal(last), rest)) if last.is_empty() => rest,
            _ => &self.segments,
        }
    }

    /// Whether the two patterns match the same paths once letter case and a trailing slash
    /// are ignored (parameter names do not matter either).
    pub fn spelled_alike(&self, other: &PathPattern) -> bool {
        let (mine, theirs) = (self.loose_segments(), other.loose_segments());
        mine.len() == theirs.len()
            && mine.iter().zip(theirs).all(|pair| match pair {
                (Segment::Literal(a), Segment::Literal(b)) => a.eq_ignore_ascii_case(b),
                (Segment::Param(_), Segment::Param(_)) | (Segment::Rest, Segment::Rest) => true,
                _ => false,
            })
    }

    /// Matches a canonical path ignoring letter case, a trailing slash and the dots and
    /// spaces that end a segment, capturing parameters into `params`.
    fn matches_loosely(&self, path: &str, params: &mut Vec<(Text, Text)>) -> bool {
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        super::match_segments(self.loose_segments(), path, params, |literal, part| {
            literal.eq_ignore_ascii_case(windows_trimmed(part))
        })
    }
}

/// A path segment as Windows names it: without the dots and spaces (`%20` in a canonical
/// path) that end it.
fn windows_trimmed(segment: &str) -> &str {
    let mut trimmed = segment;
    loop {
        let shorter = trimmed
            .strip_suffix('.')
            .or_else(|| trimmed.strip_suffix("%20"));
        match shorter {
            Some(shorter) => trimmed = shorter,
            None => return trimmed,
        }
    }
}

/// Whether some segment of `path` ends with a dot or a space (on every request: one pass
/// over the bytes, looking behind each `/` and the end).
fn has_windows_trimmable_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    let trimmable = |end: usize| {
        let segment = &bytes[..end];
        segment.ends_with(b".") || segment.ends_with(b"%20")
    };
    trimmable(bytes.len())
        || bytes
            .iter()
            .enumerate()
            .any(|(at, &byte)| byte == b'/' && trimmable(at))
}

impl RouteTable {
    /// The route a spelling variant of `path` reaches, with what it captures, when the
    /// request would be treated differently there than by `matched` (the route `path` itself
    /// reaches): the request is then ambiguous. Paths in lower case without a trailing slash
    /// skip the scan unless some route is spelled otherwise.
    pub fn variant_route(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        matched: &RouteMatch,
    ) -> Option<RouteMatch> {
        let plain = !path.bytes().any(|b| b.is_ascii_uppercase())
            && (path.len() == 1 || !path.ends_with('/'))
            && !has_windows_trimmable_segment(path);
        if plain && !self.variant_spellings {
            return None;
        }
        let loose = self.first(host, method, |pattern, params| {
            pattern.matches_loosely(path, params)
        })?;
        let harmless = Arc::ptr_eq(&loose.route, &matched.route)
            || (same_treatment(&loose.route, &matched.route) && loose.params == matched.params);
        (!harmless).then_some(loose)
    }
}

/// Whether a request is handled alike under either route (same backend, authentication,
/// policy, audit and limits): then which of the two a backend picks does not matter.
fn same_treatment(a: &RouteConfig, b: &RouteConfig) -> bool {
    a.upstream == b.upstream
        && a.public == b.public
        && a.phi == b.phi
        && a.max_body == b.max_body
        && a.audit == b.audit
        && a.policy == b.policy
        && a.max_auth_age == b.max_auth_age
        && a.break_glass == b.break_glass
}

#[cfg(test)]
mod tests {
    use super::super::tests::route;
    use super::*;

    /// A route that, unlike the public catch-alls below, needs a signed-in caller.
    fn guarded(
        name: &str,
        host: Option<&str>,
        path: &str,
        methods: Option<&[&str]>,
    ) -> RouteConfig {
        RouteConfig {
            public: false,
            ..route(name, host, path, methods)
        }
    }

    /// The route a request is refused for as a spelling variant of (none: it passes).
    fn refused_at(table: &RouteTable, host: &str, path: &str, method: Method) -> Option<String> {
        let matched = table.lookup(host, path, &method)?;
        table
            .variant_route(host, path, &method, &matched)
            .map(|other| other.route.name.to_string())
    }

    fn refused(table: &RouteTable, path: &str) -> Option<String> {
        refused_at(table, "h", path, Method::GET)
    }

    #[test]
    fn trimmable_segments_are_found_before_each_slash_and_at_the_end() {
        // The substring searches it replaced, as the reference.
        let reference = |path: &str| {
            path.ends_with('.')
                || path.ends_with("%20")
                || path.contains("./")
                || path.contains("%20/")
        };
        for path in [
            "/",
            "/a",
            "/a.",
            "/a./b",
            "/a%20",
            "/a%20/b",
            "/a%2",
            "/a%2/b",
            "/.",
            "./",
            "/a/b.c",
            "/a/b.c/",
            "/a/%20",
            "%20",
            ".",
            "",
            "/a..b/",
            "/x%20y/z",
            "/a/b%20c.",
        ] {
            assert_eq!(
                has_windows_trimmable_segment(path),
                reference(path),
                "{path}"
            );
        }
    }

    /// `/Admin` would reach the catch-all here and the admin handler of a backend that ignores
    /// case; `/admin/` likewise for the exact `/admin` route.
    #[test]
    fn a_variant_reaching_another_route_is_refused() {
        let table = RouteTable::new(&[
            route("catch-all", None, "/**", None),
            guarded("admin", None, "/admin/**", None),
            guarded("login", None, "/login", None),
            guarded("patients", None, "/patients/{id}/**", None),
            guarded("me", None, "/patients/me/**", None),
        ]);
        for (path, other) in [
            ("/Admin/users", "admin"),
            ("/ADMIN", "admin"),
            ("/login/", "login"),
            ("/LOGIN", "login"),
            ("/patients/ME/records", "me"),
            // Windows drops the dots and spaces that end a name.
            ("/admin./users", "admin"),
            ("/admin%20/users", "admin"),
            ("/Admin.%20./users", "admin"),
            ("/login.", "login"),
        ] {
            assert_eq!(refused(&table, path).as_deref(), Some(other), "{path}");
        }
        for fine in [
            "/admin/Users",
            "/admin/x/",
            "/patients/AB12/records",
            "/Other/Path/",
            "/",
            "/login",
            "/readme.",
            "/admin/users.",
        ] {
            assert_eq!(refused(&table, fine), None, "{fine}");
        }
    }

    /// A route spelled in upper case (or with a trailing slash) makes every path worth checking.
    #[test]
    fn routes_spelled_otherwise_are_checked_against_plain_paths() {
        let table = RouteTable::new(&[
            route("catch-all", None, "/**", None),
            guarded("reports", None, "/Reports/**", None),
            guarded("exact", None, "/a/", None),
        ]);
        assert_eq!(refused(&table, "/reports/1").as_deref(), Some("reports"));
        assert_eq!(refused(&table, "/a").as_deref(), Some("exact"));
        assert_eq!(refused(&table, "/Reports/1"), None);
        assert_eq!(refused(&table, "/b"), None);
    }

    #[test]
    fn spelled_alike_ignores_case_trailing_slash_and_parameter_names() {
        let parse = |p: &str| PathPattern::parse(p).expect("pattern");
        assert!(parse("/Admin/**").spelled_alike(&parse("/admin/**")));
        assert!(parse("/a/").spelled_alike(&parse("/a")));
        assert!(parse("/p/{a}").spelled_alike(&parse("/p/{b}")));
        assert!(!parse("/a/**").spelled_alike(&parse("/a")));
        assert!(!parse("/p/{a}").spelled_alike(&parse("/p/x")));
    }

    /// Routes that treat a request alike (here: the same upstream, no policy, both public)
    /// make a variant harmless; the refused variant carries what the other route captures.
    #[test]
    fn variants_handled_alike_pass_and_refusals_carry_the_other_capture() {
        let table = RouteTable::new(&[
            route("page", None, "/portal", None),
            route("pages", None, "/portal/**", None),
            route("catch-all", None, "/**", None),
            route("records", None, "/patients/{patient_id}/records", None),
        ]);
        assert_eq!(refused(&table, "/portal/"), None);
        let records = RouteConfig {
            phi: true,
            ..guarded("records", None, "/patients/{patient_id}/records", None)
        };
        let table = RouteTable::new(&[route("catch-all", None, "/**", None), records]);
        let matched = table
            .lookup("h", "/PATIENTS/7/records", &Method::GET)
            .expect("catch-all");
        let other = table
            .variant_route("h", "/PATIENTS/7/records", &Method::GET, &matched)
            .expect("ambiguous");
        assert_eq!(&*other.route.name, "records");
        assert_eq!(
            other.params,
            vec![(Text::from("patient_id"), Text::from("7"))]
        );
    }

    /// Host patterns and method lists take part as in the exact match.
    #[test]
    fn hosts_and_methods_count_as_in_the_exact_match() {
        let table = RouteTable::new(&[
            route("catch-all", None, "/**", None),
            guarded("admin", Some("admin.example.org"), "/admin/**", None),
            guarded("upload", None, "/upload/**", Some(&["POST"])),
        ]);
        assert_eq!(
            refused_at(&table, "admin.example.org", "/Admin", Method::GET).as_deref(),
            Some("admin")
        );
        assert_eq!(refused_at(&table, "other.org", "/Admin", Method::GET), None);
        assert_eq!(
            refused_at(&table, "h", "/UPLOAD/x", Method::POST).as_deref(),
            Some("upload")
        );
        assert_eq!(refused_at(&table, "h", "/UPLOAD/x", Method::GET), None);
    }
}
