//! Property tests over normalize → route → policy: whatever path tricks a patient tries, an
//! allowed request is always for their own record, and nothing is allowed without a rule.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use http::Method;
use proptest::prelude::*;

use super::policy::{Decision, Facts, Subject};
use crate::config::Config;
use crate::gate::normalize::normalize;
use crate::gate::route::RouteTable;

const CONFIG: &str = r#"
[upstreams.b]
targets = ["http://127.0.0.1:9"]

[[routes]]
name = "records"
path = "/patients/{patient_id}/**"
upstream = "b"
phi = true
allow = [{ roles = ["clinician"], methods = ["GET"] }, { roles = ["patient"], match = { patient_id = "claim:patient_id" } }]
deny = [{ groups = ["suspended"] }]

[[routes]]
name = "notes"
path = "/patients/{patient_id}/notes/{note}"
upstream = "b"
phi = true
allow = [{ roles = ["patient"], match = { patient_id = "claim:patient_id" }, methods = ["GET"] }]
deny = [{ groups = ["suspended"] }]
"#;

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "patients", "Patients", "7", "8", "70", "%37", "%38", "..", ".", "%2e%2e", "%2E", "%2f",
        "%5c", "", ";x", "%25", "%2537", "notes", "1", "a", "%00", "..%2f", "\\", "%c0%ae", "7.",
        "~",
    ])
}

/// Half the paths start like a record path, so allows are common and the property bites.
fn raw_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(segment(), 1..8)).prop_map(|(prefixed, segments)| {
        let prefix = if prefixed { "/patients" } else { "" };
        format!("{prefix}/{}", segments.join("/"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_patient_is_only_ever_allowed_their_own_record(
        path in raw_path(),
        claim in prop::sample::select(vec!["7", "8"]),
        method in prop::sample::select(vec![Method::GET, Method::POST, Method::DELETE]),
        suspended in any::<bool>(),
    ) {
        let config = Config::from_str(CONFIG, Path::new("p.toml"), Path::new("/nonexistent")).expect("config");
        let routes = RouteTable::new(&config.routes);
        let Ok(canonical) = normalize(&path) else { return Ok(()) };
        let Some(matched) = routes.lookup("h", &canonical, &method) else { return Ok(()) };
        let roles = vec!["patient".to_string()];
        let groups = if suspended { vec!["suspended".to_string()] } else { vec![] };
        let claims: BTreeMap<String, String> = [("patient_id".to_string(), claim.to_string())].into();
        let amr = vec!["pwd".to_string(), "otp".to_string()];
        let subject = Subject { user: Some("pat"), roles: &roles, groups: &groups, claims: Some(&claims), amr: &amr, client_cert: None };
        let facts = Facts { method: &method, source: IpAddr::from([127, 0, 0, 1]), params: &matched.params, minute_of_day: 0 };
        if let Decision::Allow { rule } = matched.route.policy.decide(&subject, &facts) {
            let second = canonical.split('/').nth(2).unwrap_or_default();
            prop_assert_eq!(second, claim, "{} -> {} allowed by {}", path, canonical, rule);
            prop_assert!(!suspended, "a deny rule was bypassed");
            prop_assert!(matched.route.policy.allow.iter().any(|r| r.matches(&subject, &facts)));
        }
    }

    #[test]
    fn normalizing_never_panics_is_idempotent_and_leaves_no_dot_segments(path in "/[ -~]{0,40}") {
        normalized_is_canonical(&path)?;
    }

    /// Escape-heavy paths: decoding next to an escape must not create a new escape
    /// (found by the `normalize` fuzz target: `/%25%42A` became `/%25BA`).
    #[test]
    fn escapes_never_decode_into_new_escapes(pieces in prop::collection::vec(escape_piece(), 0..12)) {
        normalized_is_canonical(&format!("/{}", pieces.concat()))?;
    }

    /// Route matching and the spelling-variant check never panic, whatever host and path
    /// reach them (the extra route, spelled with capitals and a trailing slash, makes every
    /// path go through the scan), and a variant reported is always another route.
    #[test]
    fn route_matching_never_panics(
        host in prop_oneof![Just("h".to_string()), "\\PC{0,20}"],
        path in prop_oneof![raw_path(), "\\PC{0,40}"],
    ) {
        let dir = std::env::temp_dir();
        let spelled = "\n[[routes]]\nname = \"reports\"\npath = \"/Reports/{id}/\"\nupstream = \"b\"\npublic = true\n";
        let config = Config::from_str(&format!("{CONFIG}{spelled}"), &dir.join("p.toml"), &dir).expect("config");
        let table = RouteTable::new(&config.routes);
        let path = normalize(&path).map_or(path.clone(), |canonical| canonical.into_owned());
        if let Some(matched) = table.lookup(&host, &path, &Method::GET) {
            if let Some(other) = table.variant_route(&host, &path, &Method::GET, &matched) {
                prop_assert!(!std::sync::Arc::ptr_eq(&other.route, &matched.route), "{path}");
            }
        }
    }
}

fn escape_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "%25",
        "%41",
        "%42",
        "%2e",
        "%2E",
        "%7e",
        "%30",
        "A",
        "B",
        "4",
        "1",
        "/",
        ".",
        "%",
        "%2",
        "%a",
        "%e2%82%ac",
        "_",
    ])
}

fn normalized_is_canonical(path: &str) -> Result<(), TestCaseError> {
    if let Ok(once) = normalize(path) {
        let twice = normalize(&once).map(|c| c.into_owned());
        prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "from {}", path);
        prop_assert!(!once.split('/').any(|s| s == ".." || s == "."));
        prop_assert!(!once.contains("//"));
    }
    Ok(())
}
