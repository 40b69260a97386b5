//! Authentication end to end through the JSON API: password + TOTP, sessions checked on every
//! request, logout, replay, identical failures, lockout and its expiry, rate limits, idle
//! timeout, CSRF rules, and user changes taking effect without restart.

use std::time::Duration;

use crate::support::auth::{self, add_user, code, login, next_code, token, PASSWORD};
use crate::support::{config, write_config, Backend, Wardgate};

const PROTECTED: &str = "/private/chart";

#[tokio::test]
async fn password_and_totp_open_a_session_checked_on_every_request_until_logout() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let alice = add_user(
        &path,
        "alice",
        &[
            "--role",
            "clinician",
            "--role",
            "nurse",
            "--claim",
            "patient_id=7",
        ],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();

    let token = token(&proxy, &alice, &code(&alice)).await;
    let response = client
        .get(proxy.url(PROTECTED))
        .bearer_auth(&token)
        .header("X-Wardgate-User", "mallory")
        .header("X-Wardgate-Roles", "admin")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let seen = backend.last();
    assert_eq!(seen.headers["x-wardgate-user"], "alice");
    assert_eq!(seen.headers["x-wardgate-roles"], "clinician,nurse");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the session token must not reach the backend"
    );

    let whoami: serde_json::Value = client
        .get(proxy.url("/.wardgate/session"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(whoami["user"], "alice");
    assert_eq!(whoami["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(whoami["claims"]["patient_id"], "7");

    let logout = client
        .post(proxy.url("/.wardgate/api/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let after = client
        .get(proxy.url(PROTECTED))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(after.status(), 401);
    assert_eq!(after.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        backend.seen().len(),
        1,
        "nothing after logout reached the backend"
    );
    assert!(proxy.wait_for_log("event=\"logout\"", Duration::from_secs(2)));
}

#[tokio::test]
async fn cookie_session_works_and_cookie_posts_need_our_origin() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let bob = add_user(&path, "bob", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);
    let response = login(&proxy, "bob", PASSWORD, &code(&bob)).await;
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attribute in [
        "__Host-wardgate=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().expect("pair").to_string();
    let client = proxy.client();
    let origin = format!("https://127.0.0.1:{}", proxy.public.port());
    let with_app_cookie = format!("{cookie}; app_pref=dark");
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .header("cookie", &with_app_cookie)
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(
        backend.last().headers["cookie"],
        "app_pref=dark",
        "the session cookie must not reach the backend"
    );
    // A browser sends the cookie to public routes too: it must not reach their backends
    // either, nor a session token sent as a bearer credential.
    let token = cookie.trim_start_matches("__Host-wardgate=");
    let public = client
        .get(proxy.url("/pub/page"))
        .header(
            "cookie",
            format!("{with_app_cookie}; __Host-wardgate-pending=p"),
        )
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert_eq!(public.status(), 200);
    let seen = backend.last();
    assert_eq!(seen.path_and_query, "/pub/page");
    assert_eq!(
        seen.headers["cookie"], "app_pref=dark",
        "{:?}",
        seen.headers
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "the session token must not reach a public backend"
    );
    let only_ours = client
        .get(proxy.url("/pub/page"))
        .header("cookie", &cookie)
        .header("authorization", "Basic YXBwOmtleQ==")
        .send()
        .await
        .expect("get");
    assert_eq!(only_ours.status(), 200);
    let seen = backend.last();
    assert!(seen.headers.get("cookie").is_none(), "{:?}", seen.headers);
    assert_eq!(
        seen.headers["authorization"], "Basic YXBwOmtleQ==",
        "a public backend's own credentials pass"
    );
    let cross = client
        .post(proxy.url(PROTECTED))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), 403);
    let no_origin = client
        .post(proxy.url(PROTECTED))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("post");
    assert_eq!(no_origin.status(), 403);
    let same = client
        .post(proxy.url(PROTECTED))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .send()
        .await
        .expect("post");
    assert_eq!(same.status(), 200);
    assert_eq!(backend.seen().len(), 4);
    // Logout by cookie from another origin is refused; from ours it works.
    let evil_logout = client
        .post(proxy.url("/.wardgate/api/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(evil_logout.status(), 403);
    let logout = client
        .post(proxy.url("/.wardgate/api/logout"))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .send()
        .await
        .expect("post");
    assert_eq!(logout.status(), 204);
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get")
            .status(),
        401
    );
}

#[tokio::test]
async fn every_login_failure_looks_the_same_and_codes_work_once() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let carol = add_user(&path, "carol", &[], true);
    let dave = add_user(&path, "dave", &[], true);
    let (code_status, _, err) = auth::cli(&path, &["disable", "dave"], "");
    assert_eq!(code_status, 0, "{err}");
    let proxy = Wardgate::start_in(dir, path);

    let good = code(&carol);
    assert_eq!(login(&proxy, "carol", PASSWORD, &good).await.status(), 200);
    let attempts = [
        ("carol", PASSWORD, good.clone()), // replayed code
        ("carol", "wrong password here", next_code(&carol)), // wrong password
        ("carol", PASSWORD, "000000".to_string()), // wrong code (almost surely)
        ("nobody", PASSWORD, good.clone()), // unknown user
        ("dave", PASSWORD, code(&dave)),   // disabled
        ("carol", PASSWORD, "12345".to_string()), // malformed code
    ];
    for (name, password, totp) in attempts {
        let response = login(&proxy, name, password, &totp).await;
        assert_eq!(response.status(), 401, "{name}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_credentials", "{name}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{name}: {body}");
    }
    // The next step's code still works once: replay protection did not burn the account.
    assert_eq!(
        login(&proxy, "carol", PASSWORD, &next_code(&carol))
            .await
            .status(),
        200
    );
    assert!(backend.seen().is_empty());
    let logs = proxy.logs();
    assert!(!logs.contains(PASSWORD), "a password reached the logs");
    assert!(!logs.contains(&good), "a TOTP code reached the logs");
}

#[tokio::test]
async fn lockout_blocks_even_the_right_password_then_expires() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "").replace(
        "ip_limit = 1000",
        "ip_limit = 1000\nlockout_after = 3\nlockout_base = \"2s\"\nlockout_max = \"2s\"",
    );
    let (dir, path) = write_config(&toml);
    let erin = add_user(&path, "erin", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    for _ in 0..3 {
        assert_eq!(
            login(&proxy, "erin", "not the password!", "000000")
                .await
                .status(),
            401
        );
    }
    let locked = login(&proxy, "erin", PASSWORD, &code(&erin)).await;
    assert_eq!(locked.status(), 429);
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .expect("retry")
        .parse()
        .expect("number");
    assert!((1..=2).contains(&retry), "{retry}");
    // An unknown name locks exactly the same way.
    for _ in 0..3 {
        assert_eq!(
            login(&proxy, "ghost", "not the password!", "000000")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        login(&proxy, "ghost", PASSWORD, "000000").await.status(),
        429
    );
    assert!(proxy.wait_for_log("event=\"lockout\"", Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        login(&proxy, "erin", PASSWORD, &code(&erin)).await.status(),
        200
    );
}

#[tokio::test]
async fn login_attempts_per_source_address_are_rate_limited() {
    let backend = Backend::start().await;
    let (dir, path) =
        write_config(&config(backend.addr, "").replace("ip_limit = 1000", "ip_limit = 3"));
    let _frank = add_user(&path, "frank", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    for name in ["a1", "a2", "a3"] {
        assert_eq!(
            login(&proxy, name, "whatever password", "000000")
                .await
                .status(),
            401
        );
    }
    let limited = login(&proxy, "frank", PASSWORD, "000000").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn idle_sessions_end_and_user_changes_apply_without_restart() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("[login]", "[session]\nidle_timeout = \"2s\"\n\n[login]");
    let (dir, path) = write_config(&toml);
    let gina = add_user(&path, "gina", &[], true);
    let hank = add_user(&path, "hank", &[], true);
    let proxy = Wardgate::start_in(dir, path.clone());
    let client = proxy.client();

    let idle = token(&proxy, &gina, &code(&gina)).await;
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .bearer_auth(&idle)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .bearer_auth(&idle)
            .send()
            .await
            .expect("send")
            .status(),
        401
    );

    let active = token(&proxy, &hank, &code(&hank)).await;
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .bearer_auth(&active)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let (status, _, err) = auth::cli(&path, &["disable", "hank"], "");
    assert_eq!(status, 0, "{err}");
    assert!(proxy.wait_for_log("users file reloaded", Duration::from_secs(5)));
    assert_eq!(
        client
            .get(proxy.url(PROTECTED))
            .bearer_auth(&active)
            .send()
            .await
            .expect("send")
            .status(),
        401
    );
}

#[tokio::test]
async fn enrollment_through_the_api_is_confirmed_by_the_first_code() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    add_user(&path, "ivy", &[], false);
    let proxy = Wardgate::start_in(dir, path.clone());
    let client = proxy.client();
    // Without a secret there is no way in.
    assert_eq!(login(&proxy, "ivy", PASSWORD, "000000").await.status(), 401);
    let enroll = |password: &'static str| {
        client
            .post(proxy.url("/.wardgate/api/enroll"))
            .json(&serde_json::json!({ "username": "ivy", "password": password }))
            .send()
    };
    assert_eq!(
        enroll("wrong password!!").await.expect("send").status(),
        401
    );
    let body: serde_json::Value = enroll(PASSWORD)
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ivy = auth::secret_from_uri("ivy", body["otpauth"].as_str().expect("otpauth"));
    assert_eq!(
        login(&proxy, "ivy", PASSWORD, &code(&ivy)).await.status(),
        200
    );
    assert_eq!(
        enroll(PASSWORD).await.expect("send").status(),
        401,
        "a confirmed secret cannot be replaced this way"
    );
    let (_, listed, _) = auth::cli(&path, &["list"], "");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ivy") && l.contains("enrolled")),
        "{listed}"
    );
}

/// A cookie-keeping client that has passed the portal's password step as `user` (the
/// response says where the sign-in goes next).
async fn browser_password_step(
    proxy: &Wardgate,
    user: &str,
) -> (reqwest::Client, reqwest::Response) {
    let browser = proxy
        .client_builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let origin = proxy.url("");
    let step = browser
        .post(proxy.url("/.wardgate/login"))
        .header("origin", origin.trim_end_matches('/'))
        .form(&[("username", user), ("password", PASSWORD)])
        .send()
        .await
        .expect("password step");
    (browser, step)
}

/// A secret handed out out of band (`wardgate user enroll`) is never shown again: knowing the
/// password gets neither it nor a replacement through the API, and the browser sign-in asks
/// for a code from it on a page that does not show it. The first good code confirms it.
#[tokio::test]
async fn a_secret_given_out_of_band_is_never_shown_at_sign_in() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let una = add_user(&path, "una", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let (browser, step) = browser_password_step(&proxy, "una").await;
    let enroll = browser
        .post(proxy.url("/.wardgate/api/enroll"))
        .json(&serde_json::json!({ "username": "una", "password": PASSWORD }))
        .send()
        .await
        .expect("enroll");
    assert_eq!(enroll.status(), 401);
    let origin = proxy.url("");
    let origin = origin.trim_end_matches('/');
    assert_eq!(step.status(), 303);
    let next = step
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(next.ends_with("/.wardgate/login/totp"), "{next}");
    let secret = una.secret_base32.clone();
    for page in ["/.wardgate/login/totp", "/.wardgate/enroll"] {
        let html = browser
            .get(proxy.url(page))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(!html.contains(&secret), "{page} shows the secret");
        assert!(!html.contains("<svg"), "{page} shows a QR code");
    }
    let done = browser
        .post(proxy.url("/.wardgate/login/totp"))
        .header("origin", origin)
        .form(&[("code", code(&una).as_str())])
        .send()
        .await
        .expect("code step");
    assert_eq!(done.status(), 303, "{:?}", done.headers());
}

/// The enrollment page a browser sign-in shows is audited with the caller's address.
#[tokio::test]
async fn an_enrollment_shown_by_the_portal_is_audited_with_the_callers_address() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    add_user(&path, "vic", &[], false);
    let proxy = Wardgate::start_in(dir, path);
    let (browser, step) = browser_password_step(&proxy, "vic").await;
    assert_eq!(step.status(), 303);
    let page = browser
        .get(proxy.url("/.wardgate/enroll"))
        .send()
        .await
        .expect("enroll page");
    assert_eq!(page.status(), 200);
    let home = proxy.dir.path().to_path_buf();
    assert!(
        crate::audit::wait_for_record(&home, |r| r["event"] == "enroll"
            && r["user"] == "vic"
            && r["src_ip"] == "127.0.0.1")
        .await,
        "{:?}",
        crate::audit::records(&home)
    );
}

#[tokio::test]
async fn codes_from_oathtool_are_accepted() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let jack = add_user(&path, "jack", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "-b", &jack.secret_base32])
        .output()
        .expect("oathtool is installed by scripts/test (Debian oathtool)");
    let independent = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(independent.len(), 6, "{independent}");
    assert_eq!(
        login(&proxy, "jack", PASSWORD, &independent).await.status(),
        200
    );
}

#[tokio::test]
async fn portal_posts_need_our_origin_and_json_endpoints_need_json() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    let body = serde_json::json!({ "username": "x", "password": "y", "totp": "1" });
    let cross = client
        .post(proxy.url("/.wardgate/api/login"))
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(cross.status(), 403);
    let text = client
        .post(proxy.url("/.wardgate/api/login"))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(text.status(), 415);
    let malformed = client
        .post(proxy.url("/.wardgate/api/login"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        client
            .get(proxy.url("/.wardgate/session"))
            .send()
            .await
            .expect("send")
            .status(),
        401
    );
    assert_eq!(
        client
            .get(proxy.url("/.wardgate/nothing"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
}

#[tokio::test]
async fn browsers_are_sent_to_login_and_api_clients_get_401() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    let browser = client
        .get(proxy.url("/private/x?y=1"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("send");
    assert_eq!(browser.status(), 302);
    assert_eq!(
        browser.headers()["location"],
        "/.wardgate/login?rd=%2Fprivate%2Fx%3Fy%3D1"
    );
    let api = client
        .get(proxy.url("/private/x"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(api.status(), 401);
    let with_token = client
        .get(proxy.url("/private/x"))
        .header("accept", "text/html")
        .bearer_auth("garbage")
        .send()
        .await
        .expect("send");
    assert_eq!(
        with_token.status(),
        401,
        "a request with Authorization is an API client"
    );
    // The login page only ever offers a same-origin return path.
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/%2F%2Fevil.example",
        "/\\evil.example",
        "https:evil.example",
        "/%5Cevil.example",
        "\\/evil.example",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
    ] {
        let page = client
            .get(proxy.url("/.wardgate/login"))
            .query(&[("rd", evil)])
            .send()
            .await
            .expect("send");
        let html = page.text().await.expect("html");
        assert!(html.contains("name=\"rd\" value=\"/\""), "{evil}: {html}");
    }
}

#[tokio::test]
async fn unknown_users_cost_the_same_time_as_wrong_passwords() {
    let backend = Backend::start().await;
    let toml =
        config(backend.addr, "").replace("ip_limit = 1000", "ip_limit = 1000\nlockout_after = 50");
    let (dir, path) = write_config(&toml);
    let _known = add_user(&path, "known.user", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let failure = |name: &'static str| {
        let proxy = &proxy;
        async move {
            let started = std::time::Instant::now();
            let response = login(proxy, name, "wrong password!!", "000000").await;
            let took = started.elapsed();
            assert_eq!(response.status(), 401);
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_credentials");
            took
        }
    };
    // Interleaved samples, medians compared: an unknown name still runs one argon2
    // verification, so neither the answer nor (within noise) its time tells it apart. A name
    // without a hash would answer tens of times faster.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        known.push(failure("known.user").await);
        unknown.push(failure("nobody.here").await);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[4], unknown[4]);
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    eprintln!("median login failure: known {known:?}, unknown {unknown:?}, ratio {ratio:.2}");
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
}

#[test]
fn enrollment_can_be_confirmed_from_the_cli_with_a_current_code() {
    let (_dir, path) = write_config(&config("127.0.0.1:9".parse().expect("addr"), ""));
    let uma = add_user(&path, "uma", &[], true);
    let listed = |path: &std::path::Path| auth::cli(path, &["list"], "").1;
    assert!(listed(&path).contains("pending"));
    let (status, out, err) = auth::cli(&path, &["confirm", "uma", "--code", "000000"], "");
    assert_eq!(status, 1, "{out}{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(listed(&path).contains("pending"));
    let (status, out, err) = auth::cli(&path, &["confirm", "uma", "--code", &code(&uma)], "");
    assert_eq!(status, 0, "{out}{err}");
    assert!(listed(&path).contains("enrolled"), "{}", listed(&path));
}
