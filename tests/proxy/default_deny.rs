//! Unmatched requests get 404, protected routes without credentials get 401, and in neither
//! case is the backend contacted.

use crate::support::{config, Backend, Wardgate};

#[tokio::test]
async fn unknown_routes_and_methods_are_404_and_never_forwarded() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/nothing/here"),
        ("GET", "/pubx"),
        ("DELETE", "/upload"),
        ("GET", "/Pub/x"),
    ] {
        let response = client
            .request(method.parse().expect("method"), proxy.url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "not_found");
        assert_eq!(body["request_id"].as_str().map(str::len), Some(36));
    }
    assert!(
        backend.seen().is_empty(),
        "backend was contacted: {:?}",
        backend.paths()
    );
}

#[tokio::test]
async fn protected_and_phi_routes_answer_401_without_forwarding() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let client = proxy.client();
    for path in [
        "/private/admin",
        "/patients/1001/records",
        "/patients/1001/notes/1",
    ] {
        let response = client
            .get(proxy.url(path))
            .header("Authorization", "Bearer forged.token.value")
            .header("X-Wardgate-User", "admin")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "unauthorized");
    }
    // Protected route with a body: still refused, body not forwarded.
    let response = client
        .post(proxy.url("/private/upload"))
        .body("secret")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    assert!(
        backend.seen().is_empty(),
        "backend was contacted: {:?}",
        backend.paths()
    );
    // The public route still works afterwards.
    assert_eq!(
        client
            .get(proxy.url("/pub/ok"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}
