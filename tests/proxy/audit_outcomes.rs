//! How each admitted access ends in the audit trail: cancelled before its answer, failed in
//! forwarding, a WebSocket tunnel closing, and a shutdown that cannot write what is queued.

use std::time::Duration;

use crate::audit::{records, wait_for_record};
use crate::support::auth::{add_user, code, token};
use crate::support::{config, write_config, Backend, Wardgate};

/// A proxy (the test config plus `extra`) with patient 7 signed in: its backend, the proxy and
/// the session token.
async fn signed_in_patient(extra: &str) -> (Backend, Wardgate, String) {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, extra));
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &pat, &code(&pat)).await;
    (backend, proxy, token)
}

/// A PHI request admitted (and so possibly acted on by the backend) but cancelled before its
/// answer, here by the client resetting its HTTP/2 stream, still gets its completion record,
/// saying so; a forwarding error completes the access with its status (not a second,
/// "deny" record).
#[tokio::test]
async fn a_cancelled_phi_request_leaves_a_completion_saying_so() {
    let gone = "\n[upstreams.gone]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nname = \"gone\"\npath = \"/gone/**\"\nupstream = \"gone\"\nphi = true\nallow = [{ roles = [\"patient\"] }]\n";
    let (_backend, proxy, token) = signed_in_patient(gone).await;
    let impatient = proxy
        .client_builder()
        .timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    let sent = impatient
        .get(proxy.url("/patients/7/slow?ms=5000"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(sent.is_err(), "the client was to give up first: {sent:?}");
    let home = proxy.dir.path().to_path_buf();
    assert!(
        wait_for_record(&home, |r| r["event"] == "access"
            && r["path"] == "/patients/7/slow"
            && r["reason"] == "cancelled before the backend answered")
        .await,
        "no completion for the cancelled request: {:?}",
        records(&home)
    );
    let failed = proxy
        .client()
        .get(proxy.url("/gone/x"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(failed.status(), 502);
    assert!(
        wait_for_record(&home, |r| r["path"] == "/gone/x" && r["status"] == 502).await,
        "no completion for the failed forward"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let about_gone: Vec<serde_json::Value> = records(&home)
        .into_iter()
        .filter(|r| r["path"] == "/gone/x")
        .collect();
    assert_eq!(
        about_gone.len(),
        2,
        "admission and completion only: {about_gone:?}"
    );
    // It was allowed, and then the backend could not be reached: said by status and reason.
    assert_eq!(about_gone[1]["decision"], "allow");
    assert!(
        about_gone[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("upstream")),
        "{}",
        about_gone[1]
    );
}

/// Shutdown with records the writer cannot write (its directory unusable): the proxy says how
/// many were still queued and exits 1, never "closed" and 0.
#[tokio::test]
async fn shutdown_with_unwritable_records_exits_non_zero() {
    let backend = Backend::start().await;
    let extra = "\n[audit]\ndir = \"blocked\"\n\n[limits]\nshutdown_grace = \"1s\"\n";
    let (dir, path) = write_config(&config(backend.addr, extra));
    std::fs::write(dir.path().join("blocked"), "not a directory").expect("block");
    let mut proxy = Wardgate::start_in(dir, path);
    // A refused PHI request is recorded even while the writer fails (its record is kept).
    let refused = proxy
        .client()
        .get(proxy.url("/patients/7/records"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(20)).await, Some(1));
    assert!(
        proxy.wait_for_log("audit trail not closed", Duration::from_secs(2)),
        "{}",
        proxy.logs()
    );
    assert!(!proxy.logs().contains("audit trail closed"));
}

/// A WebSocket on a PHI route is one access: admitted at the handshake and completed when the
/// tunnel ends (status 101, the bytes relayed to the client, why it ended), not at the 101.
#[tokio::test]
async fn a_phi_websocket_is_completed_when_its_tunnel_ends() {
    use futures_util::StreamExt;
    let (_backend, proxy, token) = signed_in_patient("").await;
    let mut socket = crate::continuous::open_ws(&proxy, "/patients/7/ws", Some(&token)).await;
    crate::continuous::echo(&mut socket, "vitals: hr 72").await;
    let home = proxy.dir.path().to_path_buf();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !records(&home)
            .iter()
            .any(|r| r["path"] == "/patients/7/ws" && r["status"] == 101),
        "completed while the tunnel was still open"
    );
    socket.close(None).await.expect("close");
    while let Some(Ok(_)) = socket.next().await {}
    assert!(
        wait_for_record(&home, |r| r["path"] == "/patients/7/ws"
            && r["status"] == 101
            && r["bytes"] == 13
            && r["reason"] == "tunnel closed")
        .await,
        "{:?}",
        records(&home)
    );
}
