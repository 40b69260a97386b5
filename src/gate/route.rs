//! Stage 3, route: the compiled route table (host + path pattern + method) → [`RouteMatch`].
//!
//! Precedence is "most specific wins", decided once at load by sorting, so lookup is a plain
//! first-match scan: exact host before `*.suffix` before any host; then, segment by segment,
//! a literal before a `{param}` before the end of the pattern before `**`; then a route that
//! lists methods before one that takes all; then file order. Anything unmatched is a 404 and
//! the backend is never contacted (default deny). A path whose spelling variant (other letter
//! case, a trailing slash) would reach a different route is ambiguous (`route/variants.rs`).

use std::cmp::Ordering;
use std::sync::Arc;

use http::Method;

use crate::audit::Text;
use crate::config::RouteConfig;

/// Host part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// No `host` key: any host.
    Any,
    /// `portal.example.org` (stored lower-case).
    Exact(String),
    /// `*.example.org`, stored as `.example.org`: one or more labels before the suffix.
    Suffix(String),
}

/// Path part of a route: `/patients/{patient_id}/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(Text),
    Rest,
}

/// A matched route with the captured path parameters.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The route's configuration.
    pub route: Arc<RouteConfig>,
    /// `{name}` captures, in pattern order (shared text: the audit records reuse them).
    pub params: Vec<(Text, Text)>,
}

mod variants;

/// All routes, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<RouteConfig>>,
    /// Some route has an upper-case letter or a trailing slash: every path gets the variant
    /// check (`variants.rs`), not only paths spelled so.
    variant_spellings: bool,
}

// === impl HostPattern ===

impl HostPattern {
    /// Parses `example.org` or `*.example.org`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "`{text}` must be a host name like portal.example.org or *.example.org (no port)"
            ));
        }
        Ok(if wildcard {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    /// `host` must already be lower-case and without port.
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(name) => host == name,
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            HostPattern::Exact(_) => 2,
            HostPattern::Suffix(_) => 1,
            HostPattern::Any => 0,
        }
    }
}

// === impl PathPattern ===

impl PathPattern {
    /// The pattern `/`.
    pub fn root() -> PathPattern {
        PathPattern {
            segments: Vec::new(),
        }
    }

    /// Parses `/a/{param}/**`. Literal segments must already be canonical (see normalize).
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| format!("path `{text}` must start with /"))?;
        let mut segments = Vec::new();
        if body.is_empty() {
            return Ok(PathPattern { segments });
        }
        let parts: Vec<&str> = body.split('/').collect();
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            let segment = if *part == "**" {
                if !last {
                    return Err(format!(
                        "path `{text}`: ** is only allowed as the last segment"
                    ));
                }
                Segment::Rest
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "path `{text}`: `{{{name}}}` is not a valid parameter name"
                    ));
                }
                if segments.iter().any(|s| *s == Segment::Param(name.into())) {
                    return Err(format!("path `{text}`: parameter `{name}` appears twice"));
                }
                Segment::Param(name.into())
            } else {
                if part.is_empty() && !last {
                    return Err(format!("path `{text}` has an empty segment (//)"));
                }
                match super::normalize::normalize(&format!("/{part}")) {
                    Ok(canonical) if canonical == format!("/{part}") && !part.contains(['*', '{', '}']) => {}
                    _ => return Err(format!("path `{text}`: segment `{part}` is not canonical (no ., .., ;, %2F, *, braces)")),
                }
                Segment::Literal((*part).to_string())
            };
            segments.push(segment);
        }
        Ok(PathPattern { segments })
    }

    /// A concrete path this pattern matches (parameters become `1`), for load-time checks.
    pub fn sample(&self) -> String {
        let mut path = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => path.push_str(&format!("/{literal}")),
                Segment::Param(_) => path.push_str("/1"),
                Segment::Rest => path.push_str("/x"),
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }

    /// Names of the `{param}` segments.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(&**name),
            _ => None,
        })
    }

    /// Matches a canonical path, capturing parameters into `params`.
    fn matches(&self, path: &str, params: &mut Vec<(Text, Text)>) -> bool {
        match_segments(&self.segments, path, params, |literal, part| {
            literal == part
        })
    }

    fn rank_at(&self, index: usize) -> u8 {
        match self.segments.get(index) {
            Some(Segment::Literal(_)) => 3,
            Some(Segment::Param(_)) => 2,
            None => 1,
            Some(Segment::Rest) => 0,
        }
    }

    /// Orders more specific patterns first.
    fn specificity(&self, other: &PathPattern) -> Ordering {
        let longest = self.segments.len().max(other.segments.len());
        for index in 0..=longest {
            let order = other.rank_at(index).cmp(&self.rank_at(index));
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    }
}

/// Matches canonical `path` against `segments`, literals compared by `same`, capturing
/// parameters into `params` (shared by exact matching and the spelling-variant check).
fn match_segments(
    segments: &[Segment],
    path: &str,
    params: &mut Vec<(Text, Text)>,
    same: impl Fn(&str, &str) -> bool,
) -> bool {
    // Only canonical paths reach here, but a path without its leading `/` (or empty) must not
    // match, let alone panic.
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = (!body.is_empty()).then(|| body.split('/'));
    for segment in segments {
        if *segment == Segment::Rest {
            return true;
        }
        let Some(part) = parts.as_mut().and_then(|p| p.next()) else {
            return false;
        };
        match segment {
            Segment::Literal(literal) if same(literal, part) => {}
            Segment::Param(name) if !part.is_empty() => {
                params.push((Arc::clone(name), Text::from(part)))
            }
            _ => return false,
        }
    }
    parts.is_none_or(|mut rest| rest.next().is_none())
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles routes into precedence order (stable: equal specificity keeps file order).
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut routes: Vec<Arc<RouteConfig>> = routes.iter().cloned().map(Arc::new).collect();
        routes.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then_with(|| a.path.specificity(&b.path))
                .then_with(|| b.methods.is_some().cmp(&a.methods.is_some()))
        });
        let variant_spellings = routes.iter().any(|r| r.path.has_variant_spelling());
        RouteTable {
            routes,
            variant_spellings,
        }
    }

    /// The most specific route for a lower-case `host` (no port), canonical `path` and method.
    pub fn lookup(&self, host: &str, path: &str, method: &Method) -> Option<RouteMatch> {
        self.first(host, method, |pattern, params| {
            pattern.matches(path, params)
        })
    }

    /// The first route, in precedence order, for `host` and `method` whose path pattern
    /// `path_matches` accepts (capturing into the given parameters).
    fn first(
        &self,
        host: &str,
        method: &Method,
        path_matches: impl Fn(&PathPattern, &mut Vec<(Text, Text)>) -> bool,
    ) -> Option<RouteMatch> {
        let mut params = Vec::new();
        for route in &self.routes {
            params.clear();
            let method_ok = route.methods.as_ref().is_none_or(|m| m.contains(method));
            if method_ok && route.host.matches(host) && path_matches(&route.path, &mut params) {
                return Some(RouteMatch {
                    route: Arc::clone(route),
                    params,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
