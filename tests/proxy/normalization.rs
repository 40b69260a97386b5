//! Every path-normalization case: canonicalized (and forwarded in exactly that form) or 400
//! (and never forwarded). Sent with a raw TLS client, since HTTP client libraries clean paths
//! themselves.

use crate::support::{config, raw, Backend, Wardgate};

#[tokio::test]
async fn paths_are_canonicalized_and_forwarded_exactly_as_matched() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    let cases = [
        ("/pub/a/b", "/pub/a/b"),
        ("/pub//a///b", "/pub/a/b"),
        ("/pub/./a/./b", "/pub/a/b"),
        ("/pub/a/../b", "/pub/b"),
        ("/pub/a/%2e%2e/b", "/pub/b"),
        ("/pub/a/%2E/b", "/pub/a/b"),
        ("/%70ub/x", "/pub/x"),
        ("/pub/a%20b", "/pub/a%20b"),
        ("/pub/caf%c3%a9", "/pub/caf%C3%A9"),
        ("/pub/x/", "/pub/x/"),
        ("/pub/x?q=%2e%2e/a", "/pub/x?q=%2e%2e/a"),
        ("/private/../pub/y", "/pub/y"),
        ("https://127.0.0.1/pub/abs", "/pub/abs"),
        // A fragment is dropped by the HTTP parser: matched and forwarded without it.
        ("/pub/frag#/../../private", "/pub/frag"),
    ];
    for (sent, forwarded) in cases {
        let before = backend.seen().len();
        let response = raw::send(proxy.public, &ca, &raw::get(sent)).await;
        assert_eq!(raw::status(&response), 200, "{sent}: {response}");
        let seen = backend.seen();
        assert_eq!(seen.len(), before + 1, "{sent}");
        assert_eq!(seen[before].path_and_query, forwarded, "{sent}");
    }
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_never_forwarded() {
    let backend = Backend::start().await;
    let proxy = Wardgate::start(&config(backend.addr, ""));
    let ca = proxy.dev_cert();
    let cases = [
        "/pub/..%2fprivate/x",
        "/pub/a%2Fb",
        "/pub/a%5cb",
        "/pub/a\\..\\private",
        "/pub/a%00b",
        "/pub/admin;jsessionid=1",
        "/pub/%252e%252e/private",
        "/pub/%zz",
        "/pub/%c0%ae%c0%ae/private",
        "/pub/%ff",
        "/..",
        "/pub/../../etc/passwd",
        "/%2e%2e/pub",
    ];
    for sent in cases {
        let response = raw::send(proxy.public, &ca, &raw::get(sent)).await;
        assert_eq!(raw::status(&response), 400, "{sent}: {response}");
    }
    // Requests hyper itself refuses as malformed: still a 400, still nothing forwarded.
    for request in [
        "GET /pub/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /pub/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /pub/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET http://other.example/pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw::send(proxy.public, &ca, request.as_bytes()).await;
        assert_eq!(raw::status(&response), 400, "{request:?}: {response}");
    }
    assert!(
        backend.seen().is_empty(),
        "backend was contacted: {:?}",
        backend.paths()
    );
    // The proxy is still healthy afterwards.
    let response = raw::send(proxy.public, &ca, &raw::get("/pub/fine")).await;
    assert_eq!(raw::status(&response), 200);
}

/// With a public catch-all, `/Private/x` and `/patients/7/records` spelled in capitals would
/// reach it in Wardgate and, at a backend that ignores case, the protected handler: 400, never
/// forwarded, and the refusal on the PHI route is audited with its patient. A trailing slash
/// likewise for an exact protected route; other paths with capitals, and variants between
/// routes configured alike, still pass.
#[tokio::test]
async fn case_and_slash_variants_of_another_route_are_400() {
    let backend = Backend::start().await;
    let catch_all = "\n[[routes]]\nname = \"site\"\npath = \"/**\"\nupstream = \"b\"\npublic = true\n\n[[routes]]\nname = \"account\"\npath = \"/account\"\nupstream = \"b\"\nallow = [{ authenticated = true }]\n";
    let proxy = Wardgate::start(&config(backend.addr, catch_all));
    let ca = proxy.dev_cert();
    for sent in [
        "/Private/x",
        "/PATIENTS/7/records",
        "/account/",
        "/Account",
        "/account.",
        "/private.%20/x",
    ] {
        let response = raw::send(proxy.public, &ca, &raw::get(sent)).await;
        assert_eq!(raw::status(&response), 400, "{sent}: {response}");
    }
    assert!(
        backend.seen().is_empty(),
        "forwarded: {:?}",
        backend.paths()
    );
    // The body is the fixed error JSON; the log line says why.
    assert!(
        proxy.logs().contains(
            "if letter case, a trailing slash or the dots and spaces ending a segment are ignored"
        ),
        "{}",
        proxy.logs()
    );
    // `/ws` and the catch-all are configured alike (public, same backend): no ambiguity.
    for sent in ["/pub/Mixed/Case", "/Site/page/", "/private", "/ws/", "/WS"] {
        let response = raw::send(proxy.public, &ca, &raw::get(sent)).await;
        assert_ne!(raw::status(&response), 400, "{sent}: {response}");
    }
    let home = proxy.dir.path().to_path_buf();
    assert!(
        crate::audit::wait_for_record(&home, |r| r["path"] == "/PATIENTS/7/records"
            && r["route"] == "patient-records"
            && r["patient_id"] == "7"
            && r["decision"] == "deny"
            && r["status"] == 400)
        .await,
        "the refusal on the PHI route was not audited: {:?}",
        crate::audit::records(&home)
    );
}
