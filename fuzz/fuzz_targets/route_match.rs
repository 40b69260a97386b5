//! Route matching never panics on any host, path and method, and a request only ever matches
//! a route whose host and method it satisfies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wardgate::config::Config;
use wardgate::gate::route::RouteTable;

const CONFIG: &str = r#"
[upstreams.u]
targets = ["http://127.0.0.1:9"]

[[routes]]
name = "records"
host = "portal.example.org"
path = "/api/patients/{patient_id}/records/**"
methods = ["GET"]
upstream = "u"
phi = true
allow = [{ roles = ["clinician"] }]

[[routes]]
name = "wild"
host = "*.clinic.example"
path = "/api/{a}/{b}"
upstream = "u"
public = true

[[routes]]
name = "root"
path = "/**"
upstream = "u"
public = true
"#;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let dir = std::env::temp_dir();
        let config = Config::from_str(CONFIG, &dir.join("fuzz.toml"), &dir).expect("config");
        RouteTable::new(&config.routes)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (method, host, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    if let Some(matched) = table().lookup(host, path, &method) {
        if matched.route.name == "records" {
            assert_eq!(host, "portal.example.org");
            assert_eq!(method, http::Method::GET);
        }
    }
});
