//! Route precedence, captures and pattern parsing.

use super::*;

pub(super) fn route(
    name: &str,
    host: Option<&str>,
    path: &str,
    methods: Option<&[&str]>,
) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        host: host.map_or(HostPattern::Any, |h| HostPattern::parse(h).expect("host")),
        path: PathPattern::parse(path).expect("path"),
        methods: methods.map(|m| {
            m.iter()
                .map(|m| Method::from_bytes(m.as_bytes()).expect("m"))
                .collect()
        }),
        upstream: "u".into(),
        public: true,
        phi: false,
        max_body: 0,
        audit: crate::config::AuditMode::Batched,
        policy: crate::authz::policy::Policy::default(),
        max_auth_age: None,
        break_glass: false,
    }
}

fn name_of(table: &RouteTable, host: &str, path: &str, method: Method) -> Option<String> {
    table
        .lookup(host, path, &method)
        .map(|m| m.route.name.to_string())
}

#[test]
fn most_specific_route_wins_regardless_of_file_order() {
    let table = RouteTable::new(&[
        route("catch-all", None, "/**", None),
        route("patients", None, "/patients/{id}/**", None),
        route("patient-notes", None, "/patients/{id}/notes", None),
        route("patients-me", None, "/patients/me/**", None),
        route("portal", Some("portal.example.org"), "/**", None),
        route("wild", Some("*.example.org"), "/**", None),
        route("post-only", None, "/patients/{id}/upload", Some(&["POST"])),
    ]);
    assert_eq!(
        name_of(&table, "x.org", "/", Method::GET).as_deref(),
        Some("catch-all")
    );
    assert_eq!(
        name_of(&table, "x.org", "/patients/7/a", Method::GET).as_deref(),
        Some("patients")
    );
    assert_eq!(
        name_of(&table, "x.org", "/patients/7/notes", Method::GET).as_deref(),
        Some("patient-notes")
    );
    assert_eq!(
        name_of(&table, "x.org", "/patients/me/x", Method::GET).as_deref(),
        Some("patients-me")
    );
    assert_eq!(
        name_of(&table, "portal.example.org", "/patients/7", Method::GET).as_deref(),
        Some("portal")
    );
    assert_eq!(
        name_of(&table, "a.b.example.org", "/", Method::GET).as_deref(),
        Some("wild")
    );
    assert_eq!(
        name_of(&table, "example.org", "/", Method::GET).as_deref(),
        Some("catch-all")
    );
    assert_eq!(
        name_of(&table, "x.org", "/patients/7/upload", Method::POST).as_deref(),
        Some("post-only")
    );
    assert_eq!(
        name_of(&table, "x.org", "/patients/7/upload", Method::GET).as_deref(),
        Some("patients")
    );
}

#[test]
fn params_are_captured_and_segments_must_match_exactly() {
    let table = RouteTable::new(&[route(
        "p",
        None,
        "/api/patients/{patient_id}/records",
        Some(&["GET"]),
    )]);
    let hit = table
        .lookup("h", "/api/patients/42/records", &Method::GET)
        .expect("match");
    assert_eq!(
        hit.params,
        vec![(Text::from("patient_id"), Text::from("42"))]
    );
    for miss in [
        "/api/patients/42/records/",
        "/api/patients//records",
        "/api/patients/42",
        "/API/patients/42/records",
    ] {
        assert!(table.lookup("h", miss, &Method::GET).is_none(), "{miss}");
    }
    assert!(table
        .lookup("h", "/api/patients/42/records", &Method::DELETE)
        .is_none());
}

#[test]
fn double_star_matches_zero_or_more_segments() {
    let table = RouteTable::new(&[route("a", None, "/a/**", None)]);
    for hit in ["/a", "/a/", "/a/b", "/a/b/c/"] {
        assert!(table.lookup("h", hit, &Method::GET).is_some(), "{hit}");
    }
    assert!(table.lookup("h", "/ab", &Method::GET).is_none());
    assert!(table.lookup("h", "/", &Method::GET).is_none());
}

#[test]
fn bad_patterns_are_refused() {
    for bad in [
        "a", "/a/**/b", "/{1x}", "/{a}/{a}", "/a/../b", "/a;b", "/a%2fb", "/a//b", "/a*",
    ] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
    for bad in ["", "*.", "a:80", "*", "a_b.org", "*.*.org"] {
        assert!(HostPattern::parse(bad).is_err(), "{bad}");
    }
}
