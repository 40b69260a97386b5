//! Spelling variants of a path: the same path with other letter case, or with or without a
//! trailing slash. Wardgate matches routes exactly, but many backends do not (IIS and ASP.NET
//! ignore case; most frameworks treat `/a/` as `/a`). So `/Admin/users` could reach a
//! permissive catch-all in Wardgate and the `/admin/**` handler in the backend. A request
//! whose variant would reach a different route is ambiguous and refused (400), and two routes
//! that differ only that way are a config error.

use std::sync::Arc;

use http::Method;

use super::{PathPattern, RouteTable, Segment};
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

    /// Matches a canonical path ignoring letter case and a trailing slash.
    fn matches_loosely(&self, path: &str) -> bool {
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = (!body.is_empty()).then(|| body.split('/'));
        for segment in self.loose_segments() {
            if *segment == Segment::Rest {
                return true;
            }
            let Some(part) = parts.as_mut().and_then(|p| p.next()) else {
                return false;
            };
            match segment {
                Segment::Literal(literal) if literal.eq_ignore_ascii_case(part) => {}
                Segment::Param(_) if !part.is_empty() => {}
                _ => return false,
            }
        }
        parts.is_none_or(|mut rest| rest.next().is_none())
    }
}

impl RouteTable {
    /// The route a spelling variant of `path` reaches, when it is not `matched` (the route
    /// `path` itself reaches): the request is then ambiguous. Paths in lower case without a
    /// trailing slash skip the scan unless some route is spelled otherwise.
    pub fn variant_route(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        matched: &Arc<RouteConfig>,
    ) -> Option<Arc<RouteConfig>> {
        let plain = !path.bytes().any(|b| b.is_ascii_uppercase())
            && (path.len() == 1 || !path.ends_with('/'));
        if plain && !self.variant_spellings {
            return None;
        }
        let loose = self.routes.iter().find(|route| {
            route.methods.as_ref().is_none_or(|m| m.contains(method))
                && route.host.matches(host)
                && route.path.matches_loosely(path)
        })?;
        (!Arc::ptr_eq(loose, matched)).then(|| Arc::clone(loose))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::route;
    use super::*;

    fn refused(table: &RouteTable, path: &str) -> Option<String> {
        let matched = table.lookup("h", path, &Method::GET)?.route;
        table
            .variant_route("h", path, &Method::GET, &matched)
            .map(|other| other.name.to_string())
    }

    /// `/Admin` would reach the catch-all here and the admin handler of a backend that ignores
    /// case; `/admin/` likewise for the exact `/admin` route.
    #[test]
    fn a_variant_reaching_another_route_is_refused() {
        let table = RouteTable::new(&[
            route("catch-all", None, "/**", None),
            route("admin", None, "/admin/**", None),
            route("login", None, "/login", None),
            route("patients", None, "/patients/{id}/**", None),
            route("me", None, "/patients/me/**", None),
        ]);
        for (path, other) in [
            ("/Admin/users", "admin"),
            ("/ADMIN", "admin"),
            ("/login/", "login"),
            ("/LOGIN", "login"),
            ("/patients/ME/records", "me"),
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
        ] {
            assert_eq!(refused(&table, fine), None, "{fine}");
        }
    }

    /// A route spelled in upper case (or with a trailing slash) makes every path worth checking.
    #[test]
    fn routes_spelled_otherwise_are_checked_against_plain_paths() {
        let table = RouteTable::new(&[
            route("catch-all", None, "/**", None),
            route("reports", None, "/Reports/**", None),
            route("exact", None, "/a/", None),
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
}
