//! `config check` and `serve` report every config error as FILE:LINE: FIELD: message, exit 2,
//! and never start half-configured.

use crate::support::run_cli;

fn check(toml: &str) -> (i32, String, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).expect("write");
    let (code, out, err) = run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    (code, out, err, path, dir)
}

const VALID: &str = r#"
[listen]
addr = "127.0.0.1:8443"

[upstreams.ehr]
targets = ["http://127.0.0.1:9000"]

[[routes]]
name = "records"
path = "/patients/{patient_id}/**"
upstream = "ehr"
phi = true
allow = [{ roles = ["clinician"] }]
"#;

#[test]
fn valid_config_passes() {
    let (code, out, err, _, _dir) = check(VALID);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (1 routes, 1 upstreams)"), "{out}");
}

#[test]
fn the_shipped_default_config_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) = run_cli(&["config", "check", "config/wardgate.toml"], root);
    assert_eq!(code, 0, "{err}");
    for example in std::fs::read_dir(root.join("config/examples")).expect("examples") {
        let path = example.expect("entry").path();
        // Examples name certificate files of a real deployment; everything else must be valid.
        let (_, _, err) = run_cli(&["config", "check", path.to_str().expect("path")], root);
        for line in err.lines() {
            assert!(
                line.contains("` does not exist"),
                "{}: {line}",
                path.display()
            );
        }
    }
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let (code, _, err, path, _dir) =
        check(&VALID.replace("phi = true", "phi = true\nphi_level = 3"));
    assert_eq!(code, 2);
    let expected = format!(
        "{}:13: routes[0].phi_level: unknown field `phi_level`",
        path.display()
    );
    assert!(err.starts_with(&expected), "got: {err}");
}

#[test]
fn bad_duration_names_its_line() {
    let (code, _, err, path, _dir) = check(&format!(
        "[proxy]\nconnect_timeout = \"5 minutes\"\n{VALID}"
    ));
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!("{}:2: proxy.connect_timeout: ", path.display())),
        "got: {err}"
    );
    assert!(err.contains("unknown unit"), "{err}");
}

#[test]
fn every_validation_error_is_reported_at_once() {
    let toml = format!(
        "{}\n[[routes]]\nname = \"records\"\npath = \"/a/../b\"\nupstream = \"nope\"\nmethods = [\"G ET\"]\n",
        VALID.replace("addr = \"127.0.0.1:8443\"", "addr = \"127.0.0.1:8443\"\ntls = { cert = \"missing.pem\", key = \"missing.key\" }")
    );
    let (code, _, err, path, _dir) = check(&toml);
    assert_eq!(code, 2);
    let file = path.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        format!("{file}:4: listen.tls.cert: file `"),
        format!("{file}:4: listen.tls.key: file `"),
        format!("{file}:17: routes[1].name: route name `records` must be non-empty and unique"),
        format!("{file}:18: routes[1].path: "),
        format!("{file}:19: routes[1].upstream: unknown upstream `nope`"),
        format!("{file}:20: routes[1].methods: "),
    ];
    for want in &expect {
        assert!(
            lines.iter().any(|line| line.starts_with(want.as_str())),
            "missing {want}\ngot:\n{err}"
        );
    }
}

#[test]
fn phi_route_cannot_be_public_and_https_upstream_needs_a_ca() {
    let toml = VALID
        .replace("phi = true", "phi = true\npublic = true")
        .replace("http://127.0.0.1:9000", "https://127.0.0.1:9000");
    let (code, _, err, path, _dir) = check(&toml);
    assert_eq!(code, 2);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:6: upstreams.ehr.targets: https targets need `ca_file`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:12: routes[0].phi: a route serving patient data cannot be public"
        )),
        "{err}"
    );
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        VALID.replace("upstream = \"ehr\"", "upstream = \"missing\""),
    )
    .expect("write");
    let (code, out, err) = run_cli(
        &["serve", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(!out.contains("wardgate ready"));
    assert!(
        err.contains(":11: routes[0].upstream: unknown upstream `missing`"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["config", "check", "/nonexistent/w.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.starts_with("/nonexistent/w.toml:0: (file): cannot read config file"),
        "{err}"
    );
}

#[test]
fn secret_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    // In the config: the admin token file is refused with its line.
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "an-admin-token-long-enough\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = dir.path().join("wardgate.toml");
    let toml = VALID.replace(
        "[upstreams.ehr]",
        "[admin]\ntoken_file = \"admin.token\"\n\n[upstreams.ehr]",
    );
    std::fs::write(&path, &toml).expect("write");
    let (code, out, err) = run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("wardgate.toml:6: admin.token_file:") && err.contains("chmod 600"),
        "{err}"
    );
    // In the data directory: a world-readable key stops the proxy before it serves.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let key = data.join("session-keys.toml");
    std::fs::write(&key, "[[keys]]\nkid = \"k1\"\nsecret = \"AAAA\"\n").expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let toml = toml.replace("127.0.0.1:8443", "127.0.0.1:0");
    std::fs::write(&path, toml).expect("write");
    let (code, out, err) = run_cli(
        &["serve", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("session-keys.toml") && err.contains("others can read it"),
        "{err}"
    );
}

#[test]
fn root_is_refused_on_a_public_address_without_allow_root() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, VALID.replace("127.0.0.1:8443", "0.0.0.0:0")).expect("write");
    let (code, out, err) = run_cli(
        &["serve", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("refusing to run as root on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("--allow-root"), "{err}");
}

/// Two routes that differ only in letter case, a trailing slash or a parameter's name match
/// the same requests as far as a lenient backend is concerned: a config error at the second.
#[test]
fn routes_spelled_alike_are_ambiguous() {
    let twin = "\n[[routes]]\nname = \"records-again\"\npath = \"/Patients/{id}/**\"\nupstream = \"ehr\"\npublic = true\n";
    let (code, _, err, path, _dir) = check(&format!("{VALID}{twin}"));
    assert_eq!(code, 2, "{err}");
    let expected = format!(
        "{}:17: routes[1].path: ambiguous: route `records`",
        path.display()
    );
    assert!(err.starts_with(&expected), "got: {err}");
}

/// A Redis URL that does not parse is not echoed when it may hold a password (the message goes
/// to the log, and on reload into the audit trail); an overlong command timeout is refused.
#[test]
fn a_bad_redis_url_never_echoes_its_password() {
    let state = "[state]\nbackend = \"redis\"\nurl = \"redis://nurse:pa ss#word@db:6379\"\n";
    let (code, _, err, _, _dir) = check(&format!("{state}{VALID}"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("state.url"), "{err}");
    assert!(!err.contains("ss#word"), "the password was printed: {err}");
    let slow =
        "[state]\nbackend = \"redis\"\nurl = \"redis://db:6379\"\ncommand_timeout = \"1m\"\n";
    let (code, _, err, _, _dir) = check(&format!("{slow}{VALID}"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("state.command_timeout: must be at most 5s"),
        "{err}"
    );
}

/// Values that parse but would silently disable something: a log level typo (read as a target
/// name, it turned all logging off), no connections allowed, deadlines of zero.
#[test]
fn values_that_would_disable_the_proxy_are_errors() {
    let (code, _, err, path, _dir) = check(&format!(
        "[log]\nlevel = \"inof\"\n\n[limits]\nmax_connections = 0\nsend_timeout = \"0s\"\n{VALID}"
    ));
    assert_eq!(code, 2, "{err}");
    let file = path.display();
    for expected in [
        format!("{file}:2: log.level: `inof` is not a log level"),
        format!("{file}:5: limits.max_connections: must be at least 1"),
        format!("{file}:6: limits.send_timeout: must be longer than 0s"),
    ] {
        assert!(err.contains(&expected), "missing {expected}\n{err}");
    }
    let (code, _, err, _, _dir) =
        check(&format!("[log]\nlevel = \"warn,wardgate=debug\"\n{VALID}"));
    assert_eq!(code, 0, "a filter with targets is valid: {err}");
}

/// `config check` also runs what `serve` checks beyond the file: the certificate and key it
/// names must load, and the admin token must be long enough. A config that passes starts.
#[test]
fn config_check_loads_the_certificate_and_the_admin_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").expect("cert");
    std::fs::write(dir.path().join("key.pem"), "not a key\n").expect("key");
    std::fs::set_permissions(
        dir.path().join("key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(dir.path().join("admin.token"), "short\n").expect("token");
    std::fs::set_permissions(
        dir.path().join("admin.token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let toml = VALID.replace(
        "addr = \"127.0.0.1:8443\"",
        "addr = \"127.0.0.1:8443\"\ntls = { cert = \"cert.pem\", key = \"key.pem\" }\n\n[admin]\ntoken_file = \"admin.token\"",
    );
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, toml).expect("config");
    let (code, _, err) = run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cert.pem"), "{err}");
    assert!(err.contains("at least 16 characters"), "{err}");
}

#[test]
fn user_information_in_a_target_or_the_webhook_is_refused_without_being_echoed() {
    let toml = VALID.replace(
        "http://127.0.0.1:9000",
        "http://svc:hunter22@127.0.0.1:9000",
    ) + "\n[detect]\nwebhook = \"https://siem:hunter22@siem.example/hook\"\n";
    let (code, _, err, path, _dir) = check(&toml);
    assert_eq!(code, 2, "{err}");
    let file = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:6: upstreams.ehr.targets: must not carry user information"
        )),
        "{err}"
    );
    assert!(
        err.contains("detect.webhook: must not carry user information"),
        "{err}"
    );
    assert!(!err.contains("hunter22"), "the password was echoed: {err}");
}
