//! Single sign-on against a real, certified OpenID Provider (npm `oidc-provider` on loopback
//! HTTPS): the scripted authorization code flow, identity mapping into policies, Wardgate's TOTP
//! step when the provider shows no MFA, every refusal the issue names, key rotation, a provider
//! that is down at start, and back-channel logout across replicas.

use std::time::{Duration, Instant};

use crate::support::auth::{add_user, code, PASSWORD};
use crate::support::browser::Browser;
use crate::support::oidc::{location, OidcProvider};
use crate::support::{config, write_config, Backend, Wardgate};

const ORIGIN: &str = "https://portal.wardgate.test";

/// A proxy whose config names `op` as provider `hospital`.
fn proxy_for(backend: &Backend, op: &OidcProvider, extra: &str) -> Wardgate {
    Wardgate::start(&config(
        backend.addr,
        &format!("{}{extra}", op.provider_toml("hospital")),
    ))
}

/// Audit records of `event`, waiting briefly for the batched writer until one has a reason
/// containing `needle`.
async fn events(proxy: &Wardgate, event: &str, needle: &str) -> Vec<serde_json::Value> {
    let dir = proxy.config_path.parent().expect("dir").join("data/audit");
    events_in(&dir, event, needle).await
}

/// [`events`] in the audit directory `dir`.
async fn events_in(dir: &std::path::Path, event: &str, needle: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let found: Vec<serde_json::Value> = crate::support::audit_records_in(dir)
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect();
        let seen = found
            .iter()
            .any(|r| r["reason"].as_str().unwrap_or("").contains(needle));
        if seen || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether one of `records` has a reason containing `needle`.
fn has_reason(records: &[serde_json::Value], needle: &str) -> bool {
    records
        .iter()
        .any(|r| r["reason"].as_str().unwrap_or("").contains(needle))
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-wardgate="))
        .and_then(|v| v.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[tokio::test]
async fn sign_in_maps_provider_claims_into_policies_and_audit() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let proxy = proxy_for(&backend, &op, "");
    op.start_for(&proxy);
    let client = op.browser_like(&proxy);

    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    let done = client.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), 200);
    let token = session_cookie(&done).expect("session cookie");
    let page = done.text().await.expect("page");
    assert!(page.contains("/private/after-sso"), "{page}");

    let who: serde_json::Value = client
        .get(proxy.url("/.wardgate/session"))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(who["user"], "drsmith");
    assert_eq!(who["roles"], serde_json::json!(["clinician"]));
    assert_eq!(who["groups"], serde_json::json!(["cardiology"]));
    assert_eq!(who["display_name"], "Dr Smith");
    assert_eq!(who["provider"], "hospital");
    assert_eq!(who["amr"], serde_json::json!(["fed", "mfa"]));

    // The mapped role opens the PHI route exactly as a local clinician's would.
    let phi = proxy
        .client()
        .get(proxy.url("/patients/1001/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("phi");
    assert_eq!(
        phi.status(),
        200,
        "{:?}",
        crate::continuous::audit_records(&proxy)
    );
    assert_eq!(backend.last().path_and_query, "/patients/1001/records");
    let logins = events(&proxy, "sso_login", "provider hospital").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["user"], "drsmith");
    assert!(has_reason(&logins, "amr pwd,mfa"), "{logins:?}");
    // The access record is batched: wait for the writer.
    let deadline = Instant::now() + Duration::from_secs(3);
    let reads = loop {
        let reads: Vec<_> = crate::continuous::audit_records(&proxy)
            .into_iter()
            .filter(|r| r["route"] == "patient-records" && r["user"] == "drsmith")
            .collect();
        if !reads.is_empty() || Instant::now() > deadline {
            break reads;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !reads.is_empty(),
        "the PHI read is audited under the SSO user"
    );

    // The same callback cannot be used twice: the sign-on record was spent.
    let replay = client.get(&callback).send().await.expect("replay");
    assert_eq!(replay.status(), 400);

    // RP-initiated logout: Wardgate ends its session and sends the user to the provider.
    let out = proxy
        .client()
        .post(proxy.url("/.wardgate/api/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 200);
    let body: serde_json::Value = out.json().await.expect("json");
    let end = body["end_session_url"].as_str().expect("end_session_url");
    assert!(end.starts_with(&op.issuer), "{end}");
    assert!(end.contains("client_id=wardgate"), "{end}");
    let after = proxy
        .client()
        .get(proxy.url("/patients/1001/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("after logout");
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn provider_without_mfa_requires_the_wardgate_totp_step() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let proxy = proxy_for(&backend, &op, "");
    op.start_for(&proxy);

    // No MFA at the provider and no Wardgate authenticator: refused, with a clear page.
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "nurse", "idp-pass-2").await;
    let refused = client.get(&callback).send().await.expect("callback");
    assert_eq!(refused.status(), 403);
    assert!(session_cookie(&refused).is_none());
    let text = refused.text().await.expect("page");
    assert!(text.contains("second factor"), "{text}");
    let failures = events(&proxy, "sso_failed", "no Wardgate TOTP").await;
    assert!(
        has_reason(
            &failures,
            "nurse: no second factor from the provider and no Wardgate TOTP"
        ),
        "{failures:?}"
    );

    // With an enrolled Wardgate authenticator of the same name, the TOTP step completes it.
    let nurse = add_user(&proxy.config_path, "nurse", &[], true);
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "nurse", "idp-pass-2").await;
    let hop = client.get(&callback).send().await.expect("callback");
    assert_eq!(hop.status(), 200);
    assert!(
        session_cookie(&hop).is_none(),
        "no session before the TOTP step"
    );
    // The hop page moves on to the TOTP step (or its first-use confirmation page).
    let page = hop.text().await.expect("page");
    let step = ["/.wardgate/login/totp", "/.wardgate/enroll"]
        .into_iter()
        .find(|p| page.contains(&format!("url={}{p}", proxy.url(""))))
        .unwrap_or_else(|| panic!("no TOTP step in {page}"));
    let wrong = client
        .post(proxy.url(step))
        .header("origin", proxy.url(""))
        .form(&[("code", "000000")])
        .send()
        .await
        .expect("wrong code");
    assert_eq!(wrong.status(), 401);
    let done = client
        .post(proxy.url(step))
        .header("origin", proxy.url(""))
        .form(&[("code", code(&nurse).as_str())])
        .send()
        .await
        .expect("code");
    assert_eq!(done.status(), 303, "{:?}", done.headers());
    assert!(location(&done).ends_with("/private/after-sso"));
    let who: serde_json::Value = client
        .get(proxy.url("/.wardgate/session"))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(who["user"], "nurse");
    assert_eq!(who["amr"], serde_json::json!(["fed", "otp"]));
    assert_eq!(
        who["roles"],
        serde_json::json!(["nurse"]),
        "roles come from the provider"
    );
    // Step-up through the JSON API uses the same local TOTP secret as the pages do.
    let stepped = client
        .post(proxy.url("/.wardgate/api/step-up"))
        .header("origin", proxy.url(""))
        .json(&serde_json::json!({ "totp": crate::support::auth::next_code(&nurse) }))
        .send()
        .await
        .expect("step-up");
    assert_eq!(stepped.status(), 200);
    let logins = events(&proxy, "sso_login", "Wardgate TOTP").await;
    assert!(
        has_reason(&logins, "provider hospital and Wardgate TOTP"),
        "{logins:?}"
    );
}

#[tokio::test]
async fn bad_tokens_and_callbacks_are_refused() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let proxy = proxy_for(&backend, &op, "");
    op.start_for(&proxy);

    // Tokens the provider is made to spoil (fault injection in the test harness).
    let cases = [
        (
            "alg_none",
            "ID token refused: Signature verification failed: No signature",
        ),
        ("wrong_nonce", "ID token refused: Invalid nonce"),
        ("wrong_aud", "ID token refused: Invalid audiences"),
        ("expired", "ID token refused: Expired"),
        (
            "tampered",
            "ID token refused: Signature verification failed: Crypto error",
        ),
        ("wrong_iss", "ID token refused: Invalid issuer"),
        ("future_iat", "in the future: check the clocks"),
    ];
    for (mode, expected) in cases {
        let client = op.browser_like(&proxy);
        let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
        op.set_mode(mode).await;
        let refused = client.get(&callback).send().await.expect("callback");
        assert_eq!(refused.status(), 401, "{mode}");
        assert!(session_cookie(&refused).is_none(), "{mode}");
        let failures = events(&proxy, "sso_failed", expected).await;
        assert!(has_reason(&failures, expected), "{mode}: {failures:?}");
    }

    // `state` that does not match the browser's sign-on.
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    let forged = callback.replace("state=", "state=x");
    let refused = client.get(&forged).send().await.expect("callback");
    assert_eq!(refused.status(), 400);
    let failures = events(&proxy, "sso_failed", "state mismatch").await;
    assert!(has_reason(&failures, "provider hospital: state mismatch"));

    // No sign-on cookie at all (another browser): refused.
    let stranger = proxy
        .client()
        .get(&callback)
        .send()
        .await
        .expect("callback");
    assert_eq!(stranger.status(), 400);

    // A replayed authorization code: spent once, then sent with a fresh sign-on's state.
    let client = op.browser_like(&proxy);
    let first = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    assert_eq!(
        client.get(&first).send().await.expect("first").status(),
        200
    );
    let second = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    let code_of = |url: &str| {
        url.split(['?', '&'])
            .find_map(|p| p.strip_prefix("code="))
            .expect("code")
            .to_string()
    };
    let replayed = second.replace(&code_of(&second), &code_of(&first));
    let refused = client.get(&replayed).send().await.expect("replay");
    assert_eq!(refused.status(), 401);
    let failures = events(&proxy, "sso_failed", "invalid_grant").await;
    assert!(
        has_reason(&failures, "code exchange refused: invalid_grant"),
        "{failures:?}"
    );

    // Nothing reached the backend on any refused sign-on.
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
}

#[tokio::test]
async fn provider_down_at_start_then_key_rotation_without_restart() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, &op.provider_toml("hospital")));
    let carol = add_user(&path, "carol", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);

    // The provider is not running: a clear 503, and local login still works.
    let down = proxy
        .client()
        .get(proxy.url("/.wardgate/oidc/hospital/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(down.status(), 503);
    assert!(down
        .text()
        .await
        .expect("page")
        .contains("cannot be reached"));
    let local = crate::support::auth::login(&proxy, "carol", PASSWORD, &code(&carol)).await;
    assert_eq!(local.status(), 200);
    let login_page = proxy
        .client()
        .get(proxy.url("/.wardgate/login?rd=/private/x"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("html");
    assert!(login_page.contains("id=\"sso-hospital\""), "{login_page}");
    assert!(login_page.contains("Sign in with Test Hospital"));

    // Provider up: discovery is retried and sign-on works.
    op.start_for(&proxy);
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    assert_eq!(
        client.get(&callback).send().await.expect("cb").status(),
        200
    );

    // The provider restarts with a new signing key; Wardgate fetches the new key set when it
    // meets the unknown kid (once the 5 s refresh interval has passed), without a restart.
    op.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    let after = client.get(&callback).send().await.expect("cb");
    assert_eq!(after.status(), 200, "{}", proxy.logs());
    assert!(proxy.logs().contains("identity provider keys refreshed"));
}

#[tokio::test]
async fn backchannel_logout_ends_sessions_on_every_replica() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let Some(redis) = crate::support::redis::RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let extra = format!("{}{}", op.provider_toml("hospital"), redis.state_toml());
    // Replicas behind one load balancer share one public origin (token issuer, redirect URI).
    let replica = |audit: &str| {
        config(
            backend.addr,
            &format!("{extra}\n[audit]\ndir = \"audit-{audit}\"\nreplica = \"{audit}\"\n"),
        )
        .replacen(
            "[listen]\n",
            &format!("[listen]\npublic_url = \"{ORIGIN}\"\n"),
            1,
        )
    };
    let (dir, first) = write_config(&replica("a"));
    let second = dir.path().join("b.toml");
    std::fs::write(&second, replica("b")).expect("b");
    let a = Wardgate::start_in(dir, first);
    let b = Wardgate::start_replica(second);
    op.start(&[ORIGIN.to_string()], Some(&b));

    let client = op.browser_like(&a);
    let callback = op.sign_in(&a, &client, "drsmith", "idp-pass-1").await;
    assert!(callback.starts_with(ORIGIN), "{callback}");
    // The load balancer would send the browser to a replica: here, A.
    let callback = callback.replacen(ORIGIN, &a.url(""), 1);
    let done = client.get(&callback).send().await.expect("cb");
    assert_eq!(done.status(), 200);
    let token = session_cookie(&done).expect("session");
    for proxy in [&a, &b] {
        assert_eq!(
            crate::support::auth::get_status(proxy, "/private/x", &token).await,
            200
        );
    }
    let mut socket = crate::continuous::open_ws(&a, "/private/ws", Some(&token)).await;

    // A forged logout token is refused and changes nothing.
    let forged = b
        .client()
        .post(b.url("/.wardgate/oidc/backchannel-logout"))
        .form(&[("logout_token", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 400);
    assert_eq!(
        crate::support::auth::get_status(&a, "/private/x", &token).await,
        200
    );

    // The user signs out at the provider; it notifies replica B over the back channel.
    op.end_session(&client).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::support::auth::get_status(&a, "/private/x", &token).await != 401 {
        assert!(
            Instant::now() < deadline,
            "session still valid on A after back-channel logout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (close, _) = crate::continuous::closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(
        close,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy
    );
    let b_audit = b.config_path.parent().expect("dir").join("audit-b");
    let records = events_in(&b_audit, "backchannel_logout", "ended by").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["user"], "drsmith");
    assert!(
        has_reason(&records, "provider hospital: 1 session(s) ended by sid"),
        "{records:?}"
    );
    let refused = events_in(&b_audit, "sso_failed", "logout token refused").await;
    assert!(has_reason(&refused, "logout token refused"), "{refused:?}");
}

#[test]
fn provider_config_errors_name_file_line_and_field() {
    let (dir, path) = write_config(
        "[[oidc.providers]]\nname = \"bad name\"\nissuer = \"http://idp.example\"\nclient_id = \"\"\nclient_secret_file = \"missing\"\n",
    );
    let (status, _out, err) = crate::support::run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    assert_ne!(status, 0);
    for needle in [
        "wardgate.toml:2: oidc.providers[0].name",
        "wardgate.toml:3: oidc.providers[0].issuer",
        "wardgate.toml:4: oidc.providers[0].client_id",
        "wardgate.toml:5: oidc.providers[0].client_secret_file",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
}

#[tokio::test]
async fn browser_signs_in_through_the_provider_and_out_again_in_chromium() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let proxy = proxy_for(&backend, &op, "");
    op.start_for(&proxy);
    let browser = Browser::start().await;

    browser.goto(&proxy.url("/private/page?tab=notes")).await;
    browser
        .wait_for_url(|u| u.contains("/.wardgate/login?rd="))
        .await;
    browser.screenshot("sso-01-login").await;
    // Discovery is retried while the provider comes up; the link answers 503 until then.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        browser.click("#sso-hospital").await;
        let url = browser
            .wait_for_url(|u| u.contains("/interaction/") || u.contains("/.wardgate/oidc/"))
            .await;
        if url.contains("/interaction/") {
            assert!(url.starts_with(&op.issuer), "{url}");
            break;
        }
        assert!(Instant::now() < deadline, "provider never became available");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser
            .goto(&proxy.url("/.wardgate/login?rd=%2Fprivate%2Fpage%3Ftab%3Dnotes"))
            .await;
    }
    browser.screenshot("sso-02-provider-login").await;
    browser.type_into("#username", "drsmith").await;
    browser.type_into("#password", "idp-pass-1").await;
    browser.click("#signin").await;
    let url = browser.wait_for_url(|u| u.contains("/private/page")).await;
    assert_eq!(url, proxy.url("/private/page?tab=notes"));
    assert!(browser.source().await.contains("/private/page?tab=notes"));
    assert_eq!(backend.last().headers["x-wardgate-user"], "drsmith");

    browser.goto(&proxy.url("/.wardgate/")).await;
    assert_eq!(browser.text("#user").await, "drsmith");
    browser.screenshot("sso-03-signed-in").await;
    browser.click("#sign-out").await;
    // Wardgate's session ends, then the provider's (RP-initiated logout), which returns the
    // browser to Wardgate's login page.
    let url = browser
        .wait_for_url(|u| u.starts_with(&proxy.url("/.wardgate/login")))
        .await;
    assert!(url.starts_with(&proxy.url("/.wardgate/login")), "{url}");
    browser.goto(&proxy.url("/private/page")).await;
    let url = browser
        .wait_for_url(|u| u.contains("/.wardgate/login"))
        .await;
    assert!(
        url.contains("/.wardgate/login?rd="),
        "still signed in: {url}"
    );
    // Signed out at the provider too: the next sign-on asks for the password again.
    browser.click("#sso-hospital").await;
    let url = browser.wait_for_url(|u| u.contains("/interaction/")).await;
    assert!(url.starts_with(&op.issuer), "{url}");
    assert_eq!(backend.seen().len(), 1);
    let logouts = events(&proxy, "logout", "user logout").await;
    assert_eq!(logouts.len(), 1, "{logouts:?}");
}

#[tokio::test]
async fn step_up_signs_in_again_at_the_provider() {
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let route = r#"
[[routes]]
name = "recent"
path = "/recent/**"
upstream = "b"
max_auth_age = "1s"
allow = [{ roles = ["clinician"] }]
"#;
    let proxy = proxy_for(&backend, &op, route);
    op.start_for(&proxy);
    let client = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    let first = client.get(&callback).send().await.expect("callback");
    let token = session_cookie(&first).expect("session");
    let status = |token: String| {
        let client = proxy.client();
        let url = proxy.url("/recent/chart");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
        }
    };
    assert_eq!(status(token.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stale = status(token.clone()).await;
    assert_eq!(stale.status(), 401);
    let challenge = stale.headers()["www-authenticate"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );

    // The step-up page offers a fresh sign-in at the provider (no TOTP secret is needed).
    let page = client
        .get(proxy.url("/.wardgate/step-up?rd=/recent/chart"))
        .send()
        .await
        .expect("step-up page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("id=\"sso-reauth\""), "{page}");
    let reauth = "/.wardgate/oidc/hospital/start?reauth=1&rd=%2Frecent%2Fchart";
    assert!(page.contains(&reauth.replace('&', "&amp;")), "{page}");
    // The provider still has a session, yet must ask for the password again (prompt=login).
    let start = client.get(proxy.url(reauth)).send().await.expect("start");
    let authorize = location(&start);
    assert!(
        authorize.contains("prompt=login") && authorize.contains("max_age=0"),
        "{authorize}"
    );
    let form = client.get(&authorize).send().await.expect("authorize");
    assert_eq!(form.status(), 200, "the provider did not ask again");
    let action = format!("{}/login", form.url().as_str().trim_end_matches('/'));
    let done = client
        .post(action)
        .form(&[("username", "drsmith"), ("password", "idp-pass-1")])
        .send()
        .await
        .expect("login");
    let callback = location(&done);
    let again = client.get(&callback).send().await.expect("callback");
    let fresh = session_cookie(&again).expect("new session");
    assert_eq!(status(fresh).await.status(), 200);

    // An ID token without `auth_time` (allowed when `max_age` was not asked) says nothing about
    // when the factors were checked: that session needs the step-up at once, although new.
    let silent = op.browser_like(&proxy);
    let callback = op.sign_in(&proxy, &silent, "drsmith", "idp-pass-1").await;
    op.set_mode("no_auth_time").await;
    let hop = silent.get(&callback).send().await.expect("callback");
    let unknown = session_cookie(&hop).expect("session without auth_time");
    assert_eq!(status(unknown).await.status(), 401);
}

#[tokio::test]
async fn misconfigured_issuer_and_client_secret_are_named_in_the_audit() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(mut op) = OidcProvider::prepare() else {
        return;
    };
    let backend = Backend::start().await;
    let wrong_secret = tempfile::NamedTempFile::new().expect("secret");
    std::fs::write(
        wrong_secret.path(),
        "not-the-secret-registered-at-the-provider",
    )
    .expect("w");
    std::fs::set_permissions(wrong_secret.path(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let bad_client = op
        .provider_toml("badsecret")
        .lines()
        .map(|l| {
            if l.starts_with("client_secret_file") {
                format!("client_secret_file = \"{}\"", wrong_secret.path().display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let bad_issuer = op.provider_toml("badissuer").replace(
        &format!("issuer = \"{}\"", op.issuer),
        &format!("issuer = \"{}/\"", op.issuer),
    );
    let proxy = proxy_for(&backend, &op, &format!("{bad_client}\n{bad_issuer}"));
    op.start_for(&proxy);
    let client = op.browser_like(&proxy);
    // The good provider works (and proves the provider is up).
    let callback = op.sign_in(&proxy, &client, "drsmith", "idp-pass-1").await;
    assert_eq!(
        client.get(&callback).send().await.expect("cb").status(),
        200
    );

    // An issuer that is not the provider's: discovery fails, sign-on answers 503, and once a
    // discovery attempt has reached the provider, the audit names the mismatch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let failures = loop {
        let refused = proxy
            .client()
            .get(proxy.url("/.wardgate/oidc/badissuer/start"))
            .send()
            .await
            .expect("start");
        assert_eq!(refused.status(), 503);
        let failures = events(&proxy, "sso_failed", "unexpected issuer").await;
        if has_reason(&failures, "unexpected issuer") || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        has_reason(
            &failures,
            "identity provider badissuer is unavailable: discovery"
        ) && has_reason(&failures, "unexpected issuer"),
        "{failures:?}"
    );

    // A client secret the provider does not know: the code exchange is refused, clearly.
    let client = op.browser_like(&proxy);
    let callback = op
        .sign_in_from(
            &proxy,
            &client,
            "/.wardgate/oidc/badsecret/start",
            "drsmith",
            "idp-pass-1",
        )
        .await;
    let refused = client.get(&callback).send().await.expect("callback");
    assert_eq!(refused.status(), 401);
    let failures = events(&proxy, "sso_failed", "invalid_client").await;
    assert!(
        has_reason(
            &failures,
            "provider badsecret: code exchange refused: invalid_client"
        ),
        "{failures:?}"
    );
}
