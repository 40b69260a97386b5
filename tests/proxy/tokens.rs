//! Forged, altered and misused session tokens are refused, and never reach the backend.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::auth::{add_user, code, now, token};
use crate::support::{config, write_config, Backend, Wardgate};

fn session_key(proxy: &Wardgate) -> (String, Vec<u8>) {
    let text =
        std::fs::read_to_string(proxy.dir.path().join("data/session-keys.toml")).expect("keys");
    let value: toml::Value = toml::from_str(&text).expect("toml");
    let key = &value["keys"][0];
    (
        key["kid"].as_str().expect("kid").to_string(),
        STANDARD
            .decode(key["secret"].as_str().expect("secret"))
            .expect("b64"),
    )
}

fn sign(claims: &serde_json::Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
}

#[tokio::test]
async fn forged_and_altered_tokens_are_refused() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let alice = add_user(&path, "alice", &[], true);
    let mallory = add_user(&path, "mallory", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let real = token(&proxy, &alice, &code(&alice)).await;
    let mallory_token = token(&proxy, &mallory, &code(&mallory)).await;
    let (kid, secret) = session_key(&proxy);
    let claims = payload(&real);
    // Algorithm confusion: the public key anyone can fetch, used as an HMAC secret.
    let jwks: serde_json::Value = proxy
        .client()
        .get(proxy.url("/.wardgate/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let jwks_kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
    let jwks_public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().expect("x"))
        .expect("b64");
    let with = |key: &str, value: serde_json::Value| {
        let mut changed = claims.clone();
        changed[key] = value;
        changed
    };
    let segments: Vec<&str> = real.split('.').collect();
    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string());
    let rs_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "RS256", "typ": "JWT", "kid": kid }).to_string());
    let mut flipped = segments[2].to_string();
    flipped.replace_range(0..1, if flipped.starts_with('A') { "B" } else { "A" });
    let forged = [
        ("alg none", format!("{none_header}.{}.", segments[1])),
        (
            "RS256 header",
            format!("{rs_header}.{}.{}", segments[1], segments[2]),
        ),
        (
            "wrong key",
            sign(&claims, &kid, b"an attacker's guess at the key!!"),
        ),
        ("unknown kid", sign(&claims, "s0-0000", &secret)),
        (
            "kid path trick",
            sign(&claims, "../../../../dev/null", &secret),
        ),
        ("kid sql trick", sign(&claims, "' OR '1'='1", &secret)),
        (
            "flipped signature",
            format!("{}.{}.{flipped}", segments[0], segments[1]),
        ),
        (
            "expired",
            sign(&with("exp", json!(now() - 60)), &kid, &secret),
        ),
        (
            "not yet valid",
            sign(&with("nbf", json!(now() + 600)), &kid, &secret),
        ),
        (
            "wrong issuer",
            sign(&with("iss", json!("https://evil.example")), &kid, &secret),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("ehr")), &kid, &secret),
        ),
        (
            "someone else's session",
            sign(
                &with("sid", payload(&mallory_token)["sid"].clone()),
                &kid,
                &secret,
            ),
        ),
        (
            "unknown session",
            sign(&with("sid", json!("no-such-session")), &kid, &secret),
        ),
        (
            "HS256 keyed with the published assertion key",
            sign(&claims, &jwks_kid, &jwks_public),
        ),
        ("truncated", format!("{}.{}", segments[0], segments[1])),
        ("extra segment", format!("{real}.AAAA")),
        ("empty", String::new()),
        ("garbage", "not-a-token".to_string()),
    ];
    let client = proxy.client();
    for (name, token) in &forged {
        let response = client
            .get(proxy.url("/private/x"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 401, "{name}");
        let by_cookie = client
            .get(proxy.url("/private/x"))
            .header("cookie", format!("__Host-wardgate={token}"))
            .send()
            .await
            .expect("send");
        assert_eq!(by_cookie.status(), 401, "{name} (cookie)");
    }
    assert!(
        backend.seen().is_empty(),
        "a forged token reached the backend"
    );
    // The real token still works: nothing was corrupted.
    assert_eq!(
        client
            .get(proxy.url("/private/x"))
            .bearer_auth(&real)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    // And a correctly signed token re-minted with our key but for a revoked session is refused.
    let logout = client
        .post(proxy.url("/.wardgate/api/logout"))
        .bearer_auth(&real)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let reminted = sign(&with("exp", json!(now() + 3600)), &kid, &secret);
    assert_eq!(
        client
            .get(proxy.url("/private/x"))
            .bearer_auth(&reminted)
            .send()
            .await
            .expect("send")
            .status(),
        401
    );
}

#[tokio::test]
async fn half_finished_logins_and_other_deployments_tokens_open_nothing() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, ""));
    let alice = add_user(&path, "alice", &[], true);
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();

    // Password step only (browser flow): a pending-login cookie, not a session.
    let password_step = client
        .post(proxy.url("/.wardgate/login"))
        .header("origin", proxy.url("").trim_end_matches('/'))
        .form(&[
            ("username", "alice"),
            ("password", crate::support::auth::PASSWORD),
            ("rd", "/private/x"),
        ])
        .send()
        .await
        .expect("password step");
    let pending = password_step
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-wardgate-pending="))
        .and_then(|c| c.split(';').next())
        .expect("pending cookie")
        .to_string();
    for (name, request) in [
        (
            "pending cookie",
            client
                .get(proxy.url("/private/x"))
                .header("cookie", format!("__Host-wardgate-pending={pending}")),
        ),
        (
            "pending id as session cookie",
            client
                .get(proxy.url("/private/x"))
                .header("cookie", format!("__Host-wardgate={pending}")),
        ),
        (
            "pending id as bearer",
            client.get(proxy.url("/private/x")).bearer_auth(&pending),
        ),
    ] {
        let status = request.send().await.expect("send").status();
        assert_eq!(
            status, 401,
            "{name}: a password-only login must not open a protected route"
        );
    }

    // A session of another Wardgate deployment (its own keys and origin) is worthless here.
    let (other_dir, other_path) = write_config(&config(backend.addr, ""));
    let other_alice = add_user(&other_path, "alice", &[], true);
    let other = Wardgate::start_in(other_dir, other_path);
    let foreign = token(&other, &other_alice, &code(&other_alice)).await;
    for request in [
        client.get(proxy.url("/private/x")).bearer_auth(&foreign),
        client
            .get(proxy.url("/private/x"))
            .header("cookie", format!("__Host-wardgate={foreign}")),
    ] {
        assert_eq!(request.send().await.expect("send").status(), 401);
    }
    assert!(backend.seen().is_empty(), "nothing may reach the backend");
    // The local session still works.
    let local = token(&proxy, &alice, &code(&alice)).await;
    let ok = client
        .get(proxy.url("/private/x"))
        .bearer_auth(&local)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
}
