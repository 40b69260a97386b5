//! The audit trail end to end: every PHI access (allowed or refused) and every security event
//! is recorded before anything reaches the backend, the chain verifies, every kind of
//! tampering is caught at its line, rotation keeps the chain, and an unusable audit sink
//! refuses PHI requests (503) until it works again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::auth::{add_user, code, token, PASSWORD};
use crate::support::{config, run_cli, write_config, Backend, Wardgate};

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    audit_files_in(&dir.join("data/audit"))
}

fn audit_files_in(audit_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(audit_dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "jsonl"));
    files.sort();
    files
}

pub(crate) fn records(dir: &Path) -> Vec<serde_json::Value> {
    records_in(&dir.join("data/audit"))
}

fn records_in(audit_dir: &Path) -> Vec<serde_json::Value> {
    audit_files_in(audit_dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

fn verify(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    run_cli(&all, cwd)
}

pub(crate) async fn wait_for_record(
    dir: &Path,
    check: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    wait_for_record_in(&dir.join("data/audit"), check).await
}

pub(crate) async fn wait_for_record_in(
    audit_dir: &Path,
    check: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    for _ in 0..50 {
        if records_in(audit_dir).iter().any(&check) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn phi_accesses_and_security_events_are_recorded_and_the_chain_verifies() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "\n[audit]\ncheckpoint_every = 5\n");
    let (dir, path) = write_config(&toml);
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let mut proxy = Wardgate::start_in(dir, path.clone());
    let client = proxy.client();
    let token = token(&proxy, &pat, &code(&pat)).await;

    let response = client
        .get(proxy.url("/patients/7/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let _ = response.bytes().await;
    let refused = client
        .get(proxy.url("/patients/8/records"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);
    assert_eq!(login_failure(&proxy).await, 401);

    let home = proxy.dir.path().to_path_buf();
    assert!(
        wait_for_record(&home, |r| r["request_id"] == request_id.as_str()
            && r["status"] == 200)
        .await,
        "no completion record"
    );
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));

    let all = records(&home);
    let access: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(
        access.len(),
        2,
        "admission and completion records: {access:?}"
    );
    assert_eq!(access[0]["event"], "access");
    assert_eq!(access[0]["decision"], "allow");
    assert_eq!(access[0]["user"], "pat");
    assert_eq!(access[0]["patient_id"], "7");
    assert_eq!(access[0]["route"], "patient-records");
    assert_eq!(access[0]["path"], "/patients/7/records");
    // The session is named by the first half of the SHA-256 of its id (the token's `sid`),
    // never by the id itself.
    let payload = token.split('.').nth(1).expect("JWT payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64"),
    )
    .expect("claims");
    let sid = claims["sid"].as_str().expect("sid");
    let named = wardgate::audit::record::session_hash(sid);
    assert_eq!(access[0]["session"].as_str(), Some(&*named));
    assert_eq!(access[1]["session"].as_str(), Some(&*named));
    assert!(
        !all.iter().any(|r| r.to_string().contains(sid)),
        "a session id reached the audit trail"
    );
    assert!(
        access[0].get("status").is_none(),
        "admission happens before forwarding"
    );
    assert_eq!(access[1]["status"], 200);
    assert!(access[1]["bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(
        access[1].get("reason").is_none(),
        "a fully delivered response is complete: {}",
        access[1]
    );
    assert!(all.iter().any(|r| r["event"] == "access"
        && r["decision"] == "deny"
        && r["patient_id"] == "8"
        && r["status"] == 401));
    for event in [
        "audit_start",
        "login",
        "login_failed",
        "checkpoint",
        "audit_stop",
    ] {
        assert!(all.iter().any(|r| r["event"] == event), "no {event} record");
    }
    let text: String = audit_files(&home)
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert!(
        !text.contains(&token) && !text.contains(PASSWORD),
        "a secret reached the audit trail"
    );
    assert!(all.iter().all(|r| r["ts"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.len() == 24)));

    let config_arg = path.to_str().expect("path");
    let audit_dir = home.join("data/audit");
    let (status, out, err) = verify(
        &["--config", config_arg, audit_dir.to_str().expect("dir")],
        &home,
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.starts_with("intact:") && !out.contains(" 0 checkpoint signatures"),
        "{out}"
    );
}

async fn login_failure(proxy: &Wardgate) -> u16 {
    crate::support::auth::login(proxy, "pat", "not the right one", "000000")
        .await
        .status()
        .as_u16()
}

/// Writes a small, valid log by running the proxy, then stops it.
async fn sample_log() -> (tempfile::TempDir, PathBuf) {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, "\n[audit]\ncheckpoint_every = 3\n"));
    let mut proxy = Wardgate::start_in(dir, path.clone());
    let client = proxy.client();
    for patient in 1..=6 {
        let _ = client
            .get(proxy.url(&format!("/patients/{patient}/records")))
            .send()
            .await;
    }
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    let copy = tempfile::tempdir().expect("tempdir");
    let file = audit_files(path.parent().expect("dir"))
        .pop()
        .expect("audit file");
    let target = copy.path().join("audit-1.jsonl");
    std::fs::copy(&file, &target).expect("copy");
    std::fs::copy(
        path.parent().expect("dir").join("data/audit-signing.pub"),
        copy.path().join("key.pub"),
    )
    .expect("pub");
    (copy, target)
}

#[tokio::test]
async fn every_kind_of_tampering_is_reported_at_its_line() {
    let (dir, file) = sample_log().await;
    let original = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 10, "sample too small: {}", lines.len());
    let (status, out, err) = verify(&[file.to_str().expect("path")], dir.path());
    assert_eq!(status, 0, "{out}{err}");

    let join = |lines: &[String]| lines.join("\n") + "\n";
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut cases: Vec<(&str, String, usize)> = Vec::new();
    let target = owned
        .iter()
        .position(|l| l.contains("\"/patients/"))
        .expect("an access record");
    let mut edited = owned.clone();
    edited[target] = edited[target].replacen("\"/patients/", "\"/patientz/", 1);
    cases.push(("edit", join(&edited), target + 1));
    let mut deleted = owned.clone();
    deleted.remove(3);
    cases.push(("delete", join(&deleted), 4));
    let mut inserted = owned.clone();
    inserted.insert(2, owned[2].clone());
    cases.push(("insert", join(&inserted), 4)); // the second, identical copy is the extra one
    let mut reordered = owned.clone();
    reordered.swap(5, 6);
    cases.push(("reorder", join(&reordered), 6));
    let truncated = original[..original.len() - 20].to_string();
    cases.push(("torn tail", truncated, lines.len()));
    for (name, text, line) in cases {
        std::fs::write(&file, text).expect("write");
        let (status, _, err) = verify(&[file.to_str().expect("path")], dir.path());
        assert_eq!(status, 1, "{name} not detected");
        let expected = format!("{}:{line}:", file.display());
        assert!(
            err.starts_with(&expected),
            "{name}: expected {expected}, got {err}"
        );
    }
    // A forged checkpoint signature is caught when the key is known.
    let mut broken_sig = owned.clone();
    let sig_line = broken_sig
        .iter()
        .position(|l| l.contains("\"checkpoint\""))
        .expect("a checkpoint");
    let at = broken_sig[sig_line].find("\"signature\":\"").expect("sig") + 13;
    let flipped = if &broken_sig[sig_line][at..at + 1] == "a" {
        "b"
    } else {
        "a"
    };
    broken_sig[sig_line].replace_range(at..at + 1, flipped);
    std::fs::write(&file, join(&broken_sig)).expect("write");
    let config = dir.path().join("verify.toml");
    std::fs::write(&config, "[audit]\nsigning_key = \"key.key\"\n").expect("config");
    let (status, _, err) = verify(
        &[
            "--config",
            config.to_str().expect("cfg"),
            file.to_str().expect("path"),
        ],
        dir.path(),
    );
    assert_eq!(status, 1);
    assert!(
        err.starts_with(&format!(
            "{}:{}: checkpoint signature does not verify",
            file.display(),
            sig_line + 1
        )),
        "{err}"
    );

    // Rewriting history without the key: drop every checkpoint, renumber and rehash. The
    // chain is then intact, but with the key known the missing checkpoints are reported where
    // the run of unsigned records grows longer than checkpoint_every (3 here).
    let mut prev = "0".repeat(64);
    let mut rewritten = Vec::new();
    for line in owned
        .iter()
        .filter(|l| !l.contains("\"event\":\"checkpoint\""))
    {
        let mut record: serde_json::Value = serde_json::from_str(line).expect("record");
        record["seq"] = serde_json::json!(rewritten.len() + 1);
        record["prev"] = serde_json::json!(prev);
        let text = serde_json::to_string(&record).expect("json");
        prev = wardgate::audit::record::line_hash(text.as_bytes());
        rewritten.push(text);
    }
    std::fs::write(&file, join(&rewritten)).expect("write");
    let (status, out, err) = verify(&[file.to_str().expect("path")], dir.path());
    assert_eq!(
        status, 0,
        "the rewritten chain itself is consistent: {out}{err}"
    );
    std::fs::write(
        &config,
        "[audit]\nsigning_key = \"key.key\"\ncheckpoint_every = 3\n",
    )
    .expect("config");
    let (status, _, err) = verify(
        &[
            "--config",
            config.to_str().expect("cfg"),
            file.to_str().expect("path"),
        ],
        dir.path(),
    );
    assert_eq!(status, 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{}:4: 4 records since the last signed checkpoint",
            file.display()
        )),
        "{err}"
    );
    // The untouched log passes with the same config.
    std::fs::write(&file, &original).expect("write");
    let (status, out, err) = verify(
        &[
            "--config",
            config.to_str().expect("cfg"),
            file.to_str().expect("path"),
        ],
        dir.path(),
    );
    assert_eq!(status, 0, "{out}{err}");
}

#[tokio::test]
async fn rotation_keeps_one_chain_across_files() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(
        backend.addr,
        "\n[audit]\nmax_file_size = \"4096\"\n",
    ));
    let mut proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    for patient in 0..40 {
        let _ = client
            .get(proxy.url(&format!("/patients/{patient}/records")))
            .send()
            .await;
    }
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    let home = proxy.dir.path().to_path_buf();
    let files = audit_files(&home);
    assert!(
        files.len() >= 3,
        "expected rotation, got {} files",
        files.len()
    );
    let (status, out, err) = verify(&[home.join("data/audit").to_str().expect("dir")], &home);
    assert_eq!(status, 0, "{out}{err}");
    // Removing a middle file breaks the linkage at the first record of the next one.
    std::fs::remove_file(&files[1]).expect("remove");
    let (status, _, err) = verify(&[home.join("data/audit").to_str().expect("dir")], &home);
    assert_eq!(status, 1);
    assert!(
        err.starts_with(&format!("{}:1:", files[2].display())),
        "{err}"
    );
}

#[tokio::test]
async fn unusable_audit_sink_refuses_phi_requests_until_it_recovers() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, "\n[audit]\ndir = \"blocked\"\n"));
    let home = dir.path().to_path_buf();
    std::fs::write(
        home.join("blocked"),
        "a file where the audit directory should be",
    )
    .expect("block");
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let proxy = Wardgate::start_in(dir, path);
    let client = proxy.client();
    let token = token(&proxy, &pat, &code(&pat)).await;
    let phi = client
        .get(proxy.url("/patients/7/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(phi.status(), 503);
    assert_eq!(
        client
            .get(proxy.url("/private/x"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        200,
        "non-PHI traffic continues"
    );
    assert_eq!(
        client
            .get(proxy.url("/pub/x"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(proxy.admin_url("/readyz"))
            .await
            .expect("readyz")
            .status(),
        503
    );
    assert!(
        backend
            .seen()
            .iter()
            .all(|s| !s.path_and_query.starts_with("/patients")),
        "PHI forwarded unrecorded"
    );

    std::fs::remove_file(home.join("blocked")).expect("unblock");
    let mut recovered = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if client
            .get(proxy.url("/patients/7/records"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status()
            == 200
        {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "PHI access did not recover when the audit directory came back"
    );
    assert_eq!(
        reqwest::get(proxy.admin_url("/readyz"))
            .await
            .expect("readyz")
            .status(),
        200
    );
}

#[tokio::test]
async fn strict_mode_loses_no_acknowledged_access_on_kill_9() {
    let backend = Backend::start().await;
    let extra = "\n[[routes]]\nname = \"strict-records\"\npath = \"/strict/{patient_id}/**\"\nupstream = \"b\"\nphi = true\naudit = \"strict\"\nallow = [{ roles = [\"clinician\"] }]\n";
    let (dir, path) = write_config(&config(backend.addr, extra));
    let doc = add_user(&path, "doc", &["--role", "clinician"], true);
    let mut proxy = Wardgate::start_in(dir, path.clone());
    let token = token(&proxy, &doc, &code(&doc)).await;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let client = proxy.client();
        let url = proxy.url(&format!("/strict/{worker}/chart"));
        let (token, acknowledged, stop) = (token.clone(), acknowledged.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(response) if response.status() == 200 => {
                        let id = response.headers()["x-request-id"]
                            .to_str()
                            .expect("id")
                            .to_string();
                        acknowledged.lock().expect("lock").push(id);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.signal("KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let home = proxy.dir.path().to_path_buf();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 20,
        "only {} requests completed",
        acknowledged.len()
    );
    let recorded: std::collections::HashSet<String> = records(&home)
        .into_iter()
        .filter(|r| r["event"] == "access" && r["decision"] == "allow")
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged accesses missing from the audit trail",
        missing.len(),
        acknowledged.len()
    );
    let audit_dir = home.join("data/audit");
    let (status, out, err) = verify(&[audit_dir.to_str().expect("dir")], &home);
    // SIGKILL can cut a write short (Linux stops a write when a fatal signal is pending), so
    // the only damage allowed is a torn last line holding records nobody was told were kept;
    // the restarted writer cuts it off and the chain verifies again (checked below).
    assert!(
        status == 0 || err.contains("last line is incomplete"),
        "{out}{err}"
    );
    // A restart continues the same chain after the crash.
    let kept = proxy.take_dir();
    drop(proxy);
    let mut restarted = Wardgate::start_in(kept, path);
    let again = token_after_restart(&restarted, &doc).await;
    assert_eq!(
        restarted
            .client()
            .get(restarted.url("/strict/1/chart"))
            .bearer_auth(&again)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    restarted.signal("TERM");
    assert_eq!(restarted.exited(Duration::from_secs(10)).await, Some(0));
    let (status, out, err) = verify(&[audit_dir.to_str().expect("dir")], &home);
    assert_eq!(status, 0, "{out}{err}");
    assert_eq!(
        records(&home)
            .iter()
            .filter(|r| r["event"] == "audit_start")
            .count(),
        2
    );
}

/// Sessions lived in the killed process's memory: sign in again (next step's code, since this
/// step's code was spent before the crash... and the spent-step record died with the process,
/// but the next step is always safe).
async fn token_after_restart(proxy: &Wardgate, user: &crate::support::auth::TestUser) -> String {
    token(proxy, user, &crate::support::auth::next_code(user)).await
}

#[tokio::test]
async fn detection_rules_raise_alerts_in_the_trail_and_at_the_webhook() {
    let backend = Backend::start().await;
    let extra = format!("\n[detect]\nfailed_logins_per_account = 3\ndistinct_patients = 2\nwebhook = \"http://{}/hook\"\n", backend.addr);
    let (dir, path) = write_config(&config(backend.addr, &extra));
    let doc = add_user(&path, "doc", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, path);
    for _ in 0..3 {
        assert_eq!(
            crate::support::auth::login(&proxy, "doc", "wrong password!!", "000000")
                .await
                .status(),
            401
        );
    }
    let token = token(&proxy, &doc, &code(&doc)).await;
    let client = proxy.client();
    for patient in ["1", "2"] {
        assert_eq!(
            client
                .get(proxy.url(&format!("/patients/{patient}/records")))
                .bearer_auth(&token)
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
    }
    let home = proxy.dir.path().to_path_buf();
    for rule in ["failed_logins_account", "distinct_patients"] {
        assert!(
            wait_for_record(&home, |r| r["event"] == "alert" && r["rule"] == rule).await,
            "no {rule} alert"
        );
    }
    let alerts = records(&home)
        .into_iter()
        .filter(|r| r["event"] == "alert")
        .count();
    assert_eq!(alerts, 2, "each rule fires once, at its threshold");
    let mut delivered = 0;
    for _ in 0..50 {
        delivered = backend
            .seen()
            .iter()
            .filter(|s| s.path_and_query == "/hook" && s.method == "POST")
            .count();
        if delivered == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, 2, "alerts POSTed to the webhook");
}

/// Sends `count` unauthenticated requests to the PHI route, `parallel` at a time; returns
/// their statuses.
async fn refused_requests(proxy: &Wardgate, count: usize, parallel: usize) -> Vec<u16> {
    let client = proxy.client();
    let url = proxy.url("/patients/7/records");
    let mut statuses = Vec::new();
    for _ in 0..count / parallel {
        let batch = (0..parallel).map(|_| {
            let request = client.get(&url).send();
            async move { request.await.map_or(0, |r| r.status().as_u16()) }
        });
        statuses.extend(futures_util::future::join_all(batch).await);
    }
    statuses
}

#[tokio::test]
async fn a_flood_of_refusals_stays_bounded_and_the_trail_reports_what_it_lost() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(
        backend.addr,
        "\n[audit]\ndir = \"blocked\"\nqueue = 8\n",
    ));
    let home = dir.path().to_path_buf();
    std::fs::write(home.join("blocked"), "not a directory").expect("block");
    let proxy = Wardgate::start_in(dir, path);
    let threads = proxy.threads();

    // The writer cannot open its directory, so nothing drains: 8 records fit the queue and 8
    // its reserve; every later refusal is answered at once and counted as lost.
    let statuses = refused_requests(&proxy, 400, 16).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        proxy.threads() <= threads + 2,
        "the flood started threads: {threads} before, {} after",
        proxy.threads()
    );
    assert_eq!(proxy.metric("wardgate_audit_records_lost_total").await, 384);
    assert!(proxy.wait_for_log("audit record lost", Duration::from_secs(2)));

    std::fs::remove_file(home.join("blocked")).expect("unblock");
    assert!(
        wait_for_record_in(&home.join("blocked"), |r| r["rule"] == "audit_records_lost").await,
        "no alert about the lost records"
    );
    let trail = records_in(&home.join("blocked"));
    let alert = trail
        .iter()
        .find(|r| r["rule"] == "audit_records_lost")
        .expect("alert");
    let reason = alert["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("384 audit record(s)") && reason.contains("access: 384"),
        "{reason}"
    );
    let kept = trail
        .iter()
        .filter(|r| r["event"] == "access" && r["status"] == 401)
        .count();
    assert_eq!(kept, 16, "the queue and its reserve were written");
    let (status, out, err) = verify(&[home.join("blocked").to_str().expect("dir")], &home);
    assert_eq!(status, 0, "{out}{err}");
}

#[tokio::test]
async fn refusals_wait_for_room_instead_of_being_lost() {
    let backend = Backend::start().await;
    let toml = config(backend.addr, "\n[audit]\nqueue = 1\n");
    let proxy = Wardgate::start(&toml);
    let dir = proxy.config_path.parent().expect("dir").to_path_buf();
    let statuses = refused_requests(&proxy, 480, 24).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(proxy.metric("wardgate_audit_records_lost_total").await, 0);
    let mut written = 0;
    for _ in 0..50 {
        written = records(&dir)
            .iter()
            .filter(|r| r["event"] == "access" && r["status"] == 401)
            .count();
        if written == 480 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written, 480, "every refusal is in the trail");
}

/// A small tmpfs, unmounted when dropped (the disk-full test needs a disk that can fill up).
pub(crate) struct SmallDisk(pub(crate) PathBuf);

impl SmallDisk {
    pub(crate) fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI and scripts/test run as root)"
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_phi_requests_loses_nothing_and_recovers() {
    let backend = Backend::start().await;
    let (dir, path) = write_config(&config(backend.addr, "\n[audit]\ndir = \"disk/audit\"\n"));
    let home = dir.path().to_path_buf();
    let disk = SmallDisk::mount(&home.join("disk"), "256k");
    let pat = add_user(
        &path,
        "pat",
        &["--role", "patient", "--claim", "patient_id=7"],
        true,
    );
    let mut proxy = Wardgate::start_in(dir, path.clone());
    let client = proxy.client();
    let token = token(&proxy, &pat, &code(&pat)).await;
    let mut acknowledged = Vec::new();
    let first = client
        .get(proxy.url("/patients/7/records"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), 200);
    acknowledged.push(
        first.headers()["x-request-id"]
            .to_str()
            .expect("id")
            .to_string(),
    );

    // Fill the disk.
    let filler = disk.0.join("filler");
    let mut block = vec![b'x'; 4096];
    let mut file = std::fs::File::create(&filler).expect("filler");
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    block.clear();
    let mut refused = false;
    for _ in 0..40 {
        let response = client
            .get(proxy.url("/patients/7/records"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        if response.status() == 503 {
            refused = true;
            break;
        }
        acknowledged.push(
            response.headers()["x-request-id"]
                .to_str()
                .expect("id")
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "PHI requests were not refused when the audit disk was full"
    );
    assert_eq!(
        client
            .get(proxy.url("/pub/x"))
            .send()
            .await
            .expect("send")
            .status(),
        200,
        "other traffic continues"
    );
    assert_eq!(
        reqwest::get(proxy.admin_url("/readyz"))
            .await
            .expect("readyz")
            .status(),
        503
    );
    assert!(proxy.wait_for_log("audit write failed", Duration::from_secs(2)));

    // Free the space: recovery is automatic.
    drop(file);
    std::fs::remove_file(&filler).expect("remove filler");
    let mut recovered = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = client
            .get(proxy.url("/patients/7/records"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        if response.status() == 200 {
            acknowledged.push(
                response.headers()["x-request-id"]
                    .to_str()
                    .expect("id")
                    .to_string(),
            );
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "PHI access did not recover after space was freed"
    );
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    let audit_dir = disk.0.join("audit");
    let (status, out, err) = verify(&[audit_dir.to_str().expect("dir")], &home);
    assert_eq!(status, 0, "{out}{err}");
    let text: String = std::fs::read_dir(&audit_dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    for id in &acknowledged {
        assert!(
            text.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("\"decision\":\"allow\"")),
            "access {id} was answered 200 but is not in the audit trail"
        );
    }
}

#[tokio::test]
async fn records_are_mirrored_to_syslog_and_files_rotate_by_age() {
    let backend = Backend::start().await;
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector");
    let collector_port = collector.local_addr().expect("addr").port();
    // A host name, as a SIEM is usually configured (resolved by the mirror at each connect).
    let extra = format!(
        "\n[audit]\nmirror = \"syslog+tcp://localhost:{collector_port}\"\nrotate_every = \"1s\"\n"
    );
    let mut proxy = Wardgate::start(&config(backend.addr, &extra));
    let client = proxy.client();
    let first = client
        .get(proxy.url("/patients/1/records"))
        .send()
        .await
        .expect("send");
    let first_id = first.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), collector.accept())
        .await
        .expect("mirror connects")
        .expect("accept");
    let mut received = String::new();
    let mut buf = vec![0u8; 65536];
    while !received.contains(&first_id) {
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        .expect("frame in time")
        .expect("read");
        assert!(n > 0, "collector connection closed");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        received.contains("<110>1 "),
        "RFC 5424 frame expected: {received}"
    );
    let frame_len: usize = received
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("octet count");
    assert!(frame_len > 20);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let _ = client.get(proxy.url("/patients/2/records")).send().await;
    proxy.signal("TERM");
    assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    let home = proxy.dir.path().to_path_buf();
    assert!(audit_files(&home).len() >= 2, "no rotation by age");
    let (status, out, err) = verify(&[home.join("data/audit").to_str().expect("dir")], &home);
    assert_eq!(status, 0, "{out}{err}");
}
