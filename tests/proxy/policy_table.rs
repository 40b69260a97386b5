//! Table-driven decisions generated from the shipped example configs: every combination of
//! user, path, method and source network is decided by the real normalizer, route table and
//! policy, and compared with what the example's comments promise.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use http::Method;
use wardgate::authz::policy::{Decision, Facts, Subject};
use wardgate::config::Config;
use wardgate::gate::normalize::normalize;
use wardgate::gate::route::RouteTable;

struct Person {
    name: &'static str,
    roles: Vec<String>,
    groups: Vec<String>,
    claims: BTreeMap<String, String>,
}

fn person(name: &'static str, roles: &[&str], groups: &[&str], patient: Option<&str>) -> Person {
    Person {
        name,
        roles: roles.iter().map(|s| s.to_string()).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        claims: patient
            .map(|p| [("patient_id".to_string(), p.to_string())].into())
            .unwrap_or_default(),
    }
}

/// Loads an example with its certificate paths pointed at empty stand-in files.
fn example(name: &str) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/examples").join(name)).expect("example");
    let stand_in = dir.path().join("certs");
    std::fs::create_dir_all(&stand_in).expect("dir");
    let text = text
        .replace("/etc/wardgate/tls/", &format!("{}/", stand_in.display()))
        .replace(
            "/var/run/secrets/wardgate/",
            &format!("{}/", stand_in.display()),
        );
    for file in [
        "portal.pem",
        "portal.key",
        "ehr.pem",
        "ehr.key",
        "hospital-ca.pem",
        "tls.crt",
        "tls.key",
        "mesh-ca.crt",
    ] {
        std::fs::write(stand_in.join(file), "").expect("stand-in");
    }
    let config = Config::from_str(&text, &dir.path().join(name), dir.path())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (config, dir)
}

/// Decides one request; `None` when no route matches or the path is refused.
fn decide(
    config: &Config,
    routes: &RouteTable,
    who: &Person,
    host: &str,
    method: &Method,
    path: &str,
    source: IpAddr,
) -> Option<bool> {
    let canonical = normalize(path).ok()?;
    let matched = routes.lookup(host, &canonical, method)?;
    if matched.route.public {
        return Some(true);
    }
    let amr = vec!["pwd".to_string(), "otp".to_string()];
    let subject = Subject {
        user: Some(who.name),
        roles: &who.roles,
        groups: &who.groups,
        claims: Some(&who.claims),
        amr: &amr,
        client_cert: None,
    };
    let facts = Facts {
        method,
        source,
        params: &matched.params,
        minute_of_day: 600,
    };
    let _ = config;
    Some(matches!(
        matched.route.policy.decide(&subject, &facts),
        Decision::Allow { .. }
    ))
}

#[test]
fn patient_portal_decisions_match_the_promise() {
    let (config, _dir) = example("portal.toml");
    let routes = RouteTable::new(&config.routes);
    let people = [
        person("pat7", &["patient"], &[], Some("7")),
        person("pat8", &["patient"], &[], Some("8")),
        person("cardio", &["clinician"], &["cardiology"], None),
        person("derm", &["clinician"], &["dermatology"], None),
        person(
            "suspended",
            &["clinician"],
            &["cardiology", "suspended"],
            None,
        ),
        person("nobody", &[], &[], None),
    ];
    let mut cases = 0;
    for who in &people {
        for patient in ["7", "8", "9"] {
            for suffix in ["records", "records/2024", "labs/1", ""] {
                for method in [Method::GET, Method::POST, Method::DELETE] {
                    let path = format!("/api/patients/{patient}/{suffix}");
                    let got = decide(
                        &config,
                        &routes,
                        who,
                        "portal.example.org",
                        &method,
                        &path,
                        IpAddr::from([10, 20, 0, 5]),
                    );
                    let own = who.claims.get("patient_id").map(String::as_str) == Some(patient);
                    let expected = match who.name {
                        "pat7" | "pat8" => own && method == Method::GET,
                        "cardio" => true,
                        _ => false,
                    };
                    assert_eq!(got, Some(expected), "{} {method} {path}", who.name);
                    cases += 1;
                }
            }
        }
        assert_eq!(
            decide(
                &config,
                &routes,
                who,
                "portal.example.org",
                &Method::GET,
                "/static/app.css",
                IpAddr::from([1, 2, 3, 4])
            ),
            Some(true)
        );
        assert_eq!(
            decide(
                &config,
                &routes,
                who,
                "other.example.org",
                &Method::GET,
                "/api/patients/7/records",
                IpAddr::from([1, 2, 3, 4])
            ),
            None,
            "other hosts have no route"
        );
        cases += 2;
    }
    assert!(cases >= 200, "{cases} cases");
}

#[test]
fn ehr_dashboard_decisions_match_the_promise() {
    let (config, _dir) = example("ehr.toml");
    let routes = RouteTable::new(&config.routes);
    let people = [
        person("nurse", &["nurse"], &[], None),
        person("clerk", &["records-clerk"], &[], None),
        person("intern", &["clinician"], &["interns"], None),
        person("patient", &["patient"], &[], Some("7")),
    ];
    let sources: [(IpAddr, bool); 3] = [
        (IpAddr::from([10, 1, 2, 3]), true),
        (IpAddr::from([192, 168, 10, 7]), true),
        (IpAddr::from([203, 0, 113, 9]), false),
    ];
    let mut cases = 0;
    for who in &people {
        for (source, office) in sources {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                for path in ["/", "/patients/7/chart", "/export/all", "/export/7"] {
                    let got = decide(
                        &config,
                        &routes,
                        who,
                        "ehr.hospital.internal",
                        &method,
                        path,
                        source,
                    );
                    let staff = matches!(who.name, "nurse" | "clerk" | "intern");
                    let expected = if path.starts_with("/export") {
                        who.name == "clerk" && source.to_string().starts_with("10.")
                    } else {
                        staff && office && !(who.name == "intern" && method == Method::DELETE)
                    };
                    assert_eq!(
                        got,
                        Some(expected),
                        "{} {method} {path} from {source}",
                        who.name
                    );
                    cases += 1;
                }
            }
        }
    }
    assert!(cases >= 100, "{cases} cases");
}
