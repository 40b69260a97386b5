//! Least privilege end to end: patients reach only their own records by any path trick,
//! deny rules win, refusals say nothing about policy, the backend can verify who is calling,
//! step-up, and `wardgate policy check`.

use std::time::Duration;

use crate::support::auth::{self, add_user, code, next_code, token};
use crate::support::{config, raw, write_config, Backend, Wardgate};

#[tokio::test]
async fn a_patient_reads_only_their_own_record_by_any_path() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let doc = add_user(&path, "doc", &["--role", "clinician"], true);
    let sus = add_user(
        &path,
        "sus",
        &["--role", "clinician", "--group", "suspended"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    let pat_token = token(&proxy, &pat, &code(&pat)).await;

    let own = client
        .get(proxy.url("/patients/7/records?patient_id=8"))
        .bearer_auth(&pat_token)
        .send()
        .await
        .expect("send");
    assert_eq!(own.status(), 200);
    assert_eq!(
        backend.last().path_and_query,
        "/patients/7/records?patient_id=8"
    );
    for other in [
        "/patients/8/records",
        "/patients/8/records/",
        "/patients/8",
        "/patients/70/records",
        "/patients/7x/records",
    ] {
        let response = client
            .get(proxy.url(other))
            .bearer_auth(&pat_token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 403, "{other}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            body.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["error".to_string(), "request_id".to_string()])
        );
        assert_eq!(body["error"], "forbidden");
    }
    // Raw path tricks: each is canonicalized to another patient (403) or refused (400).
    let ca = proxy.dev_cert();
    for (trick, expected) in [
        ("/patients/7/../8/records", 403),
        ("/patients/%38/records", 403),
        ("/patients/7/%2e%2e/8/records", 403),
        ("/patients//8/records", 403),
        ("/patients/7%2f..%2f8/records", 400),
        ("/patients/7;/../8/records", 400),
        ("/patients/%257/records", 403),
        ("/Patients/8/records", 404),
    ] {
        let request = format!("GET {trick} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {pat_token}\r\nConnection: close\r\n\r\n");
        let response = raw::send(proxy.public, &ca, request.as_bytes()).await;
        assert_eq!(raw::status(&response), expected, "{trick}: {response}");
    }
    assert_eq!(
        backend.seen().len(),
        1,
        "only the patient's own record was forwarded: {:?}",
        backend.paths()
    );

    let doc_token = token(&proxy, &doc, &code(&doc)).await;
    assert_eq!(
        client
            .get(proxy.url("/patients/8/records"))
            .bearer_auth(&doc_token)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let sus_token = token(&proxy, &sus, &code(&sus)).await;
    assert_eq!(
        client
            .get(proxy.url("/patients/8/records"))
            .bearer_auth(&sus_token)
            .send()
            .await
            .expect("send")
            .status(),
        403,
        "deny wins over allow"
    );
    assert!(proxy.wait_for_log(
        "denied by rule patient-records/suspended",
        Duration::from_secs(2)
    ));
}

#[tokio::test]
async fn the_backend_can_verify_who_is_calling() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let doc = add_user(
        &path,
        "doc",
        &["--role", "clinician", "--group", "cardiology"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    let token = token(&proxy, &doc, &code(&doc)).await;
    let response = client
        .get(proxy.url("/patients/3/records"))
        .bearer_auth(&token)
        .header("X-Wardgate-Assertion", "forged")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let assertion = backend.last().headers["x-wardgate-assertion"]
        .to_str()
        .expect("assertion")
        .to_string();
    assert_ne!(assertion, "forged");
    let jwks: jsonwebtoken::jwk::JwkSet = client
        .get(proxy.url("/.wardgate/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["b"]);
    validation.set_issuer(&[format!("https://127.0.0.1:{}", proxy.public.port())]);
    let verified = jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation)
        .expect("assertion verifies");
    assert_eq!(verified.claims["sub"], "doc");
    assert_eq!(verified.claims["roles"], serde_json::json!(["clinician"]));
    assert!(
        verified.claims["exp"].as_u64().expect("exp")
            - verified.claims["iat"].as_u64().expect("iat")
            <= 60
    );
    validation.set_audience(&["another-backend"]);
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation).is_err(),
        "wrong audience must fail"
    );
    // The same assertion is reused for the next request of the same session and upstream.
    client
        .get(proxy.url("/patients/4/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        backend.last().headers["x-wardgate-assertion"]
            .to_str()
            .expect("a"),
        assertion
    );
}

#[tokio::test]
async fn old_sessions_must_step_up_on_routes_with_max_auth_age() {
    let backend = Backend::start().await;
    let extra = "\n[[routes]]\nname = \"export\"\npath = \"/export/**\"\nupstream = \"b\"\nmax_auth_age = \"1s\"\nallow = [{ roles = [\"clinician\"] }]\n";
    let (dir, path) = write_config(&config(backend.addr, extra));
    let doc = add_user(&path, "doc", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    let token = token(&proxy, &doc, &code(&doc)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = client
        .get(proxy.url("/export/all"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(stale.status(), 401);
    assert_eq!(
        stale.headers()["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", max_age=1"
    );
    assert_eq!(
        client
            .get(proxy.url("/private/ok"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        200,
        "other routes unaffected"
    );
    let step_up = client
        .post(proxy.url("/.wardgate/api/step-up"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "totp": next_code(&doc) }))
        .send()
        .await
        .expect("step-up");
    assert_eq!(step_up.status(), 200);
    assert_eq!(
        client
            .get(proxy.url("/export/all"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

#[test]
fn policy_check_prints_the_decision() {
    let (dir, path) = write_config(&config("127.0.0.1:9".parse().expect("addr"), ""));
    add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        false,
    );
    let config = path.to_str().expect("path");
    let run = |args: &[&str]| {
        let mut all = vec!["policy", "check", "--config", config];
        all.extend_from_slice(args);
        crate::support::run_cli(&all, dir.path())
    };
    let (status, out, _) = run(&["--user", "pat", "GET", "/patients/7/records"]);
    assert_eq!(
        (status, out.lines().next()),
        (0, Some("allow patient-records patient-records/allow[1]"))
    );
    let (status, out, _) = run(&[
        "--user",
        "pat",
        "GET",
        "https://127.0.0.1/patients/8/records",
    ]);
    assert_eq!(
        (status, out.lines().next()),
        (1, Some("deny patient-records no allow rule matches"))
    );
    let (status, out, _) = run(&[
        "--user",
        "pat",
        "--claim",
        "patient_id=8",
        "GET",
        "/patients/8/records",
    ]);
    assert_eq!(status, 0, "{out}");
    let (status, out, _) = run(&["--user", "pat", "GET", "/nowhere"]);
    assert_eq!((status, out.lines().next()), (1, Some("deny - no route")));
    let (status, out, _) = run(&["--user", "pat", "GET", "/pub/x"]);
    assert_eq!(
        (status, out.lines().next()),
        (0, Some("allow public public"))
    );
    let _ = auth::PASSWORD;
}

#[test]
fn policy_mistakes_are_config_errors_with_lines() {
    let toml = "[upstreams.b]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nname = \"open\"\npath = \"/a/**\"\nupstream = \"b\"\n\n[[routes]]\nname = \"bad\"\npath = \"/p/{id}/**\"\nupstream = \"b\"\nallow = [{ roles = [\"x\"], match = { patient_id = \"claim:patient_id\" } }, { match = { id = \"patient_id\" } }, {}]\n";
    let (dir, path) = write_config(toml);
    let (status, _, err) = crate::support::run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(status, 2);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:5: routes[0].allow: protected route `open` has no allow rule"),
        format!(
            "{file}:13: routes[1].allow[0].match: the route path has no {{patient_id}} parameter"
        ),
        format!("{file}:13: routes[1].allow[1].match: `patient_id` must be \"claim:NAME\""),
        format!("{file}:13: routes[1].allow[2]: a rule must name who it is for"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "missing {expected}\n{err}"
        );
    }
}

const PSYCH: &str = "\n[break_glass]\nduration = \"2s\"\n\n[[routes]]\nname = \"psych-notes\"\npath = \"/psych/{patient_id}/**\"\nupstream = \"b\"\nphi = true\nbreak_glass = true\nallow = [{ groups = [\"psychiatry\"] }]\ndeny = [{ name = \"suspended\", groups = [\"suspended\"] }]\n";

#[tokio::test]
async fn break_glass_opens_a_marked_time_boxed_grant_bound_to_the_session() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, PSYCH));
    let doc = add_user(&path, "doc", &["--role", "clinician"], true);
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=5"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    let doc_token = token(&proxy, &doc, &code(&doc)).await;
    assert_eq!(
        client
            .get(proxy.url("/psych/5/notes"))
            .bearer_auth(&doc_token)
            .send()
            .await
            .expect("send")
            .status(),
        403
    );

    let open = |token: String, reason: &'static str| {
        client
            .post(proxy.url("/.wardgate/api/break-glass"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "route": "psych-notes", "reason": reason }))
            .send()
    };
    assert_eq!(
        open(doc_token.clone(), "urgent")
            .await
            .expect("send")
            .status(),
        403,
        "a reason is required"
    );
    let pat_token = token(&proxy, &pat, &code(&pat)).await;
    assert_eq!(
        open(pat_token, "I want to see them please")
            .await
            .expect("send")
            .status(),
        403,
        "patients have no break-glass role"
    );
    let granted = open(
        doc_token.clone(),
        "Patient unconscious in ER, suicide risk assessment needed",
    )
    .await
    .expect("send");
    assert_eq!(granted.status(), 200);
    let body: serde_json::Value = granted.json().await.expect("json");
    assert!(body["expires_at"].as_u64().is_some());

    let response = client
        .get(proxy.url("/psych/5/notes"))
        .bearer_auth(&doc_token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(backend.last().headers["x-wardgate-break-glass"], "1");
    let assertion = backend.last().headers["x-wardgate-assertion"]
        .to_str()
        .expect("assertion")
        .to_string();
    let payload = assertion.split('.').nth(1).expect("payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        claims["break_glass"], true,
        "the signed assertion carries the break-glass flag"
    );
    // The grant belongs to that session only.
    let other_session = token(&proxy, &doc, &next_code(&doc)).await;
    assert_eq!(
        client
            .get(proxy.url("/psych/5/notes"))
            .bearer_auth(&other_session)
            .send()
            .await
            .expect("send")
            .status(),
        403
    );
    assert!(proxy.wait_for_log(
        "ALERT: break-glass emergency access opened",
        Duration::from_secs(2)
    ));
    // And it expires.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        client
            .get(proxy.url("/psych/5/notes"))
            .bearer_auth(&doc_token)
            .send()
            .await
            .expect("send")
            .status(),
        403
    );

    let audit: String = std::fs::read_dir(proxy.dir.path().join("data/audit"))
        .expect("audit dir")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(audit
        .lines()
        .any(|l| l.contains("\"event\":\"alert\"") && l.contains("psych-notes")));
    assert!(audit.lines().any(|l| l.contains("\"event\":\"access\"")
        && l.contains("\"break_glass\":\"Patient unconscious")));
}

#[tokio::test]
async fn rules_can_be_limited_to_hours_of_the_day() {
    let backend = Backend::start().await;
    let minute = (auth::now() % 86_400) / 60;
    let window = |from: u64, to: u64| {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            (from / 60) % 24,
            from % 60,
            (to / 60) % 24,
            to % 60
        )
    };
    let open_now = window(minute + 1440 - 60, minute + 60);
    let closed_now = window(minute + 120, minute + 240);
    let extra = format!(
        "\n[[routes]]\nname = \"day\"\npath = \"/day\"\nupstream = \"b\"\nallow = [{{ authenticated = true, hours = \"{open_now}\" }}]\n\n[[routes]]\nname = \"night\"\npath = \"/night\"\nupstream = \"b\"\nallow = [{{ authenticated = true, hours = \"{closed_now}\" }}]\n"
    );
    let (dir, path) = write_config(&config(backend.addr, &extra));
    let doc = add_user(&path, "doc", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &doc, &code(&doc)).await;
    let client = proxy.client();
    assert_eq!(
        client
            .get(proxy.url("/day"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(proxy.url("/night"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        403
    );
}

#[test]
fn dead_rules_and_unprotected_phi_paths_are_warned_about_and_routes_explained() {
    let toml = "[upstreams.b]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nname = \"records\"\npath = \"/p/{patient_id}/**\"\nmethods = [\"GET\"]\nupstream = \"b\"\nphi = true\nallow = [{ roles = [\"nurse\"], methods = [\"GET\"] }, { roles = [\"clinician\"] }]\ndeny = [{ roles = [\"nurse\", \"intern\"] }]\n\n[[routes]]\nname = \"catch-all\"\npath = \"/**\"\nupstream = \"b\"\nallow = [{ authenticated = true }]\n";
    let (dir, path) = write_config(toml);
    let file = path.to_str().expect("path");
    let (status, _, err) = crate::support::run_cli(&["config", "check", file], dir.path());
    assert_eq!(status, 0, "{err}");
    assert!(err.contains(&format!("warning: {file}:10: routes[0].allow[0]: can never apply: records/deny[0] refuses everyone it admits")), "{err}");
    assert!(!err.contains("routes[0].allow[1]"), "{err}");
    assert!(
        err.contains(&format!(
            "warning: {file}:13: routes[1].phi: serves HEAD /p/1/x, a path of PHI route `records`"
        )),
        "{err}"
    );
    let (status, out, _) = crate::support::run_cli(
        &["policy", "explain", "--config", file, "records"],
        dir.path(),
    );
    assert_eq!(status, 0);
    assert!(
        out.contains("deny  records/deny[0]: roles nurse or intern"),
        "{out}"
    );
    assert!(
        out.contains("allow records/allow[1]: roles clinician"),
        "{out}"
    );
    assert!(out.ends_with("everyone else: denied\n"), "{out}");
}
