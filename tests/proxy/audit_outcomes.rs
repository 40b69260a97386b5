//! How each admitted access ends in the audit trail: cancelled before its answer, failed in
//! forwarding, a WebSocket tunnel closing, and a shutdown that cannot write what is queued.

use std::time::Duration;

use crate::audit::{records, wait_for_record, wait_for_record_in, SmallDisk};
use crate::support::auth::{add_user, code, token};
use crate::support::{config, write_config, Backend, Wardgate};

/// A proxy (the test config plus `extra`) with patient 7 signed in: its backend, the proxy and
/// the session token.
async fn signed_in_patient(extra: &str) -> (Backend, Wardgate, String) {
    let backend = Backend::start().await;
    let (proxy, token) = signed_in_patient_at(backend.addr, extra).await;
    (backend, proxy, token)
}

/// The same, in front of the backend at `backend`.
async fn signed_in_patient_at(backend: std::net::SocketAddr, extra: &str) -> (Wardgate, String) {
    let (dir, path) = write_config(&config(backend, extra));
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let token = token(&proxy, &pat, &code(&pat)).await;
    (proxy, token)
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

/// Shutdown while the writer cannot write (its disk full): the proxy says how many records
/// were not written and exits 1, never "closed" and 0.
#[tokio::test]
async fn shutdown_with_unwritable_records_exits_non_zero() {
    let backend = Backend::start().await;
    let extra = "\n[audit]\ndir = \"disk/audit\"\n\n[limits]\nshutdown_grace = \"1s\"\n";
    let (dir, path) = write_config(&config(backend.addr, extra));
    let disk = SmallDisk::mount(&dir.path().join("disk"), "256k");
    let mut proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    assert!(
        wait_for_record_in(&disk.0.join("audit"), |r| r["event"] == "audit_start").await,
        "the writer did not start"
    );
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(disk.0.join("filler")).expect("filler");
    for block in [4096, 1] {
        while std::io::Write::write_all(&mut filler, &vec![b'x'; block]).is_ok() {}
    }
    // Refused PHI requests are recorded whatever the writer's state (their records are
    // kept); 40 of them outgrow the room left in the audit file's last page.
    for _ in 0..40 {
        let refused = client
            .get(proxy.url("/patients/7/records"))
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), 401);
    }
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(20)).await, Some(1));
    assert!(
        proxy.wait_for_log("audit trail not closed", Duration::from_secs(2)),
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    let unwritten: usize = logs
        .split("queued=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the count of unwritten records");
    assert!(unwritten >= 20, "{unwritten} unwritten: {logs}");
    assert!(!logs.contains("audit trail closed"));
}

/// A WebSocket still open at shutdown: its access is completed then ("still open at
/// shutdown"), before `audit_stop`, not left with an admission record only.
#[tokio::test]
async fn a_websocket_open_at_shutdown_is_completed() {
    let (_backend, mut proxy, token) = signed_in_patient("").await;
    let mut socket = crate::continuous::open_ws(&proxy, "/patients/7/ws", Some(&token)).await;
    crate::continuous::echo(&mut socket, "vitals: hr 72").await;
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(20)).await, Some(0));
    let trail = records(proxy.dir.path());
    let completed = trail
        .iter()
        .position(|r| {
            r["path"] == "/patients/7/ws"
                && r["status"] == 101
                && r["reason"] == "still open at shutdown"
        })
        .unwrap_or_else(|| panic!("no completion: {trail:?}"));
    let stopped = trail
        .iter()
        .position(|r| r["event"] == "audit_stop")
        .expect("audit_stop");
    assert!(completed < stopped, "{trail:?}");
    drop(socket);
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

/// Shutdown cuts off what the drain deadline left open, and the trail says so: a PHI stream
/// still sending (its bytes so far) and a PHI request whose backend has not answered are
/// completed as cut off at shutdown, before `audit_stop`, not left with an admission only.
#[tokio::test]
async fn accesses_cut_off_at_shutdown_are_completed() {
    let extra = "\n[limits]\nshutdown_grace = \"1s\"\n";
    let (_backend, mut proxy, token) = signed_in_patient(extra).await;
    let client = proxy.client();
    let mut stream = client
        .get(proxy.url("/patients/7/ticks"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.expect("read").expect("a tick");
    assert!(first.starts_with(b"tick 0"), "{first:?}");
    let waiting = tokio::spawn({
        let request = client
            .get(proxy.url("/patients/7/slow?ms=20000"))
            .bearer_auth(&token);
        async move { request.send().await }
    });
    let home = proxy.dir.path().to_path_buf();
    assert!(
        wait_for_record(&home, |r| r["path"] == "/patients/7/slow"
            && r["decision"] == "allow")
        .await,
        "the slow request was not admitted"
    );
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(20)).await, Some(0));
    assert!(
        waiting.await.expect("join").is_err(),
        "the slow request got an answer"
    );
    let trail = records(&home);
    let position = |path: &str, reason: &str| {
        trail
            .iter()
            .position(|r| r["path"] == path && r["reason"] == reason)
            .unwrap_or_else(|| panic!("no {path} completion saying {reason:?}: {trail:?}"))
    };
    let streamed = position(
        "/patients/7/ticks",
        "cut off at shutdown before the response ended",
    );
    assert_eq!(trail[streamed]["status"], 200);
    assert!(
        trail[streamed]["bytes"].as_u64().is_some_and(|b| b >= 7),
        "{}",
        trail[streamed]
    );
    let unanswered = position(
        "/patients/7/slow",
        "cut off at shutdown before the backend answered",
    );
    let stopped = trail
        .iter()
        .position(|r| r["event"] == "audit_stop")
        .expect("audit_stop");
    assert!(streamed < stopped && unanswered < stopped, "{trail:?}");
}

/// A backend response that ends in trailers is a complete access: hyper stops polling a body
/// once it has its trailers and drops it, which must not read as a client leaving early.
#[tokio::test]
async fn a_response_ending_in_trailers_completes_its_access() {
    let (addr, _) =
        crate::upstream_pool::counting_backend(crate::upstream_pool::Answer::Trailers).await;
    let (proxy, token) = signed_in_patient_at(addr, "").await;
    let response = proxy
        .client()
        .get(proxy.url("/patients/7/chart"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
    // Completed with its status and no reason (an early end would give one).
    let home = proxy.dir.path().to_path_buf();
    assert!(
        wait_for_record(&home, |r| r["path"] == "/patients/7/chart"
            && r["status"] == 200
            && r["reason"].is_null())
        .await,
        "no complete access: {:?}",
        records(&home)
    );
}
