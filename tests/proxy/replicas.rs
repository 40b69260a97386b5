//! Several Wardgate replicas sharing one real `redis-server`: what happens on one replica
//! (login, logout, a spent TOTP code, failures, rate-limit hits) holds on all of them, Redis
//! outages fail closed and recover by themselves, and every key Redis holds expires.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::auth::{
    add_user, code, get_status, login, logout, logout_status, next_code, token, PASSWORD,
};
use crate::support::redis::RedisServer;
use crate::support::{config, write_config, Backend, Wardgate};

const PROTECTED: &str = "/private/chart";
const ORIGIN: &str = "https://portal.wardgate.test";

/// `n` config files in one directory: shared data dir (keys, users, certificate), one audit
/// directory and replica id each, all on `redis`. `login` replaces the `[login]` settings.
fn replica_configs(
    backend: &Backend,
    redis: &RedisServer,
    n: usize,
    login: &str,
) -> (tempfile::TempDir, Vec<PathBuf>) {
    let (dir, first) = write_config("");
    let paths = (0..n)
        .map(|i| {
            let extra = format!(
                "{}\n[data]\ndir = \"data\"\n\n[audit]\ndir = \"audit-{i}\"\nreplica = \"r{i}\"\n",
                redis.state_toml()
            );
            // Replicas behind one load balancer share one public origin (the token issuer).
            let toml = config(backend.addr, &extra)
                .replace("ip_limit = 1000", login)
                .replacen(
                    "[listen]\n",
                    &format!("[listen]\npublic_url = \"{ORIGIN}\"\n"),
                    1,
                );
            let path = if i == 0 {
                first.clone()
            } else {
                dir.path().join(format!("wardgate-{i}.toml"))
            };
            std::fs::write(&path, toml).expect("write replica config");
            path
        })
        .collect();
    (dir, paths)
}

async fn readyz(proxy: &Wardgate) -> u16 {
    match reqwest::get(proxy.admin_url("/readyz")).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_session_opened_on_one_replica_works_on_all_and_logout_on_any_ends_it_everywhere() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 3, "ip_limit = 1000");
    let alice = add_user(&paths[0], "alice", &[], true);
    let a = Wardgate::start_in(dir, paths[0].clone());
    let b = Wardgate::start_replica(paths[1].clone());
    let c = Wardgate::start_replica(paths[2].clone());
    for proxy in [&a, &b, &c] {
        wait_until("replica ready", Duration::from_secs(10), async || {
            readyz(proxy).await == 200
        })
        .await;
    }

    let token = token(&a, &alice, &code(&alice)).await;
    // Every replica accepts it, and has it in its local session cache now.
    for proxy in [&a, &b, &c] {
        assert_eq!(get_status(proxy, PROTECTED, &token).await, 200);
    }
    logout(&b, &token).await;
    // Refused on the very next request everywhere, although the cache would still be fresh.
    for proxy in [&a, &c, &b] {
        assert_eq!(get_status(proxy, PROTECTED, &token).await, 401);
    }
    // Each replica writes its own audit chain with its own replica id.
    let audit = std::fs::read_dir(a.config_path.parent().expect("dir").join("audit-1"))
        .expect("audit dir of replica 1")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).expect("audit file"))
        .collect::<String>();
    assert!(audit.contains("\"replica\":\"r1\""), "{audit}");
    assert!(audit.contains("\"event\":\"logout\""), "{audit}");

    // Shipped side by side, each replica's directory verifies as its own chain.
    let (mut a, mut b, mut c) = (a, b, c);
    for proxy in [&mut a, &mut b, &mut c] {
        proxy.signal("TERM");
        assert_eq!(proxy.exited(Duration::from_secs(10)).await, Some(0));
    }
    let root = a.config_path.parent().expect("dir").to_path_buf();
    let (code, out, err) = crate::support::run_cli(
        &[
            "audit",
            "verify",
            "--config",
            paths[0].to_str().expect("path"),
            "audit-0",
            "audit-1",
            "audit-2",
        ],
        &root,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(3 chains)"), "{out}");
}

#[tokio::test]
async fn a_totp_code_spent_on_one_replica_is_refused_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 2, "ip_limit = 1000");
    let bob = add_user(&paths[0], "bob", &[], true);
    let a = Wardgate::start_in(dir, paths[0].clone());
    let b = Wardgate::start_replica(paths[1].clone());

    let spent = code(&bob);
    assert_eq!(login(&a, "bob", PASSWORD, &spent).await.status(), 200);
    assert_eq!(login(&b, "bob", PASSWORD, &spent).await.status(), 401);
    assert_eq!(
        login(&b, "bob", PASSWORD, &next_code(&bob)).await.status(),
        200
    );
}

#[tokio::test]
async fn failures_and_rate_limits_are_counted_across_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let login_settings = "ip_limit = 8\nlockout_after = 3\nlockout_base = \"1m\"";
    let (dir, paths) = replica_configs(&backend, &redis, 2, login_settings);
    let carol = add_user(&paths[0], "carol", &[], true);
    let a = Wardgate::start_in(dir, paths[0].clone());
    let b = Wardgate::start_replica(paths[1].clone());

    // Three failures, split between the replicas, lock the account on both.
    for proxy in [&a, &b, &a] {
        let failed = login(proxy, "carol", "wrong password!!", "000000").await;
        assert_eq!(failed.status(), 401);
    }
    for proxy in [&b, &a] {
        let locked = login(proxy, "carol", PASSWORD, &code(&carol)).await;
        assert_eq!(locked.status(), 429, "lockout must hold on every replica");
    }
    // Five hits so far from this address; three more reach the limit of 8, the ninth is over.
    for proxy in [&b, &a, &b] {
        let status = login(proxy, "nobody", "wrong password!!", "000000")
            .await
            .status();
        assert_eq!(status, 401);
    }
    let limited = login(&a, "nobody", "wrong password!!", "000000").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn redis_outage_fails_closed_then_recovers_without_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 1, "ip_limit = 1000");
    let dave = add_user(&paths[0], "dave", &[], true);
    let proxy = Wardgate::start_in(dir, paths[0].clone());
    wait_until("ready", Duration::from_secs(10), async || {
        readyz(&proxy).await == 200
    })
    .await;
    let token = token(&proxy, &dave, &code(&dave)).await;
    assert_eq!(get_status(&proxy, PROTECTED, &token).await, 200);

    // Load keeps running while Redis dies: nothing is forwarded without a verified session.
    let forwarded_before = backend.seen().len();
    let load_proxy_url = proxy.url(PROTECTED);
    let client = proxy.client();
    let load_token = token.clone();
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let response = client
                .get(&load_proxy_url)
                .bearer_auth(&load_token)
                .send()
                .await;
            statuses.push(response.map_or(0, |r| r.status().as_u16()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let statuses = load.await.expect("load task");
    let first_refusal = statuses.iter().position(|s| *s != 200).expect("a refusal");
    assert!(
        statuses[first_refusal..].iter().all(|s| *s == 503),
        "after the outage every protected request is 503: {statuses:?}"
    );
    assert_eq!(
        backend.seen().len() - forwarded_before,
        first_refusal,
        "only the requests before the outage were forwarded"
    );
    assert_eq!(readyz(&proxy).await, 503);
    let public = proxy
        .client()
        .get(proxy.url("/pub/ok"))
        .send()
        .await
        .expect("public");
    assert_eq!(public.status(), 200, "public routes do not need the store");
    assert_eq!(
        login(&proxy, "dave", PASSWORD, &next_code(&dave))
            .await
            .status(),
        503
    );
    // A logout the store cannot carry out says so (503), not 204 with the session alive.
    assert_eq!(logout_status(&proxy, &token).await, 503);
    assert!(proxy.wait_for_log("state store unavailable", Duration::from_secs(2)));
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("wardgate_state_up 0"), "{metrics}");

    // Redis returns (empty: no persistence in this test): ready again, and a new login works.
    redis.restart();
    wait_until("ready again", Duration::from_secs(10), async || {
        readyz(&proxy).await == 200
    })
    .await;
    assert_eq!(
        get_status(&proxy, PROTECTED, &token).await,
        401,
        "the session died with Redis"
    );
    let fresh = token_after_outage(&proxy, &dave).await;
    assert_eq!(get_status(&proxy, PROTECTED, &fresh).await, 200);
}

/// A name removed from the users file while no Wardgate ran (so nothing compared the files),
/// then added again, starts with no sessions: the old holder's, still in Redis, are refused.
#[tokio::test]
async fn a_name_added_again_does_not_inherit_the_old_holders_sessions() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 1, "ip_limit = 1000");
    let dave = add_user(&paths[0], "dave", &[], true);
    let mut proxy = Wardgate::start_in(dir, paths[0].clone());
    wait_until("ready", Duration::from_secs(10), async || {
        readyz(&proxy).await == 200
    })
    .await;
    let old_token = token(&proxy, &dave, &code(&dave)).await;
    assert_eq!(get_status(&proxy, PROTECTED, &old_token).await, 200);
    let dir = proxy.take_dir();
    drop(proxy);
    // Edited by hand while Wardgate is down: the old dave removed, a new dave added (who has
    // not enrolled an authenticator yet: enrolment would end older sessions by itself).
    let users = dir.path().join("data/users.toml");
    std::fs::remove_file(&users).expect("remove the users file");
    add_user(&paths[0], "dave", &[], false);
    let proxy = Wardgate::start_in(dir, paths[0].clone());
    wait_until("ready again", Duration::from_secs(10), async || {
        readyz(&proxy).await == 200
    })
    .await;
    assert_eq!(get_status(&proxy, PROTECTED, &old_token).await, 401);
}

/// Logs in with whichever of the current and next codes has not been spent (the store's memory
/// of spent steps died with Redis, so either may be accepted).
async fn token_after_outage(proxy: &Wardgate, user: &crate::support::auth::TestUser) -> String {
    for totp in [code(user), next_code(user)] {
        let response = login(proxy, &user.name, PASSWORD, &totp).await;
        if response.status() == 200 {
            let body: serde_json::Value = response.json().await.expect("json");
            return body["token"].as_str().expect("token").to_string();
        }
    }
    panic!("login after the outage failed");
}

#[tokio::test]
async fn every_key_wardgate_writes_to_redis_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 1, "ip_limit = 1000");
    let erin = add_user(&paths[0], "erin", &["--role", "clinician"], true);
    let proxy = Wardgate::start_in(dir, paths[0].clone());
    let token = token(&proxy, &erin, &code(&erin)).await;
    assert_eq!(get_status(&proxy, PROTECTED, &token).await, 200);
    assert_eq!(
        login(&proxy, "erin", "wrong password!!", "000000")
            .await
            .status(),
        401
    );
    let browser_login = proxy
        .client()
        .post(proxy.url("/.wardgate/login"))
        .header("Origin", ORIGIN)
        .form(&[("username", "erin"), ("password", PASSWORD)])
        .send()
        .await
        .expect("browser login step");
    assert!(browser_login.status().is_redirection() || browser_login.status().is_success());

    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("wardgate:*")
        .query(&mut conn)
        .expect("keys");
    for kind in ["s:", "u:", "totp:", "fail:", "rl:", "pending:"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("wardgate:{kind}"))),
            "no {kind} key in {keys:?}"
        );
    }
    for key in &keys {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).expect("ttl");
        assert!(ttl > 0, "{key} has no expiry (TTL {ttl})");
    }
}

#[tokio::test]
async fn the_store_operations_are_atomic_under_concurrency() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let config = wardgate::config::state::RedisConfig {
        url: redis.url(),
        username: None,
        password_file: None,
        ca_file: None,
        key_prefix: "atomic:".into(),
        pool_size: 4,
        command_timeout: Duration::from_secs(2),
        session_cache: Duration::from_secs(1),
    };
    let store = wardgate::state::redis_store::RedisStore::start(&config).expect("store");
    use wardgate::state::StateStore as _;

    let spends =
        futures_util::future::join_all((0..40).map(|_| store.use_totp_step("frank", 1_000))).await;
    let winners = spends.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(winners, 1, "one code, one use: {spends:?}");

    let policy = wardgate::state::LockPolicy {
        free_failures: 5,
        base_secs: 30,
        max_secs: 3600,
        hard_limit: 100,
    };
    let counts = futures_util::future::join_all(
        (0..20).map(|_| store.add_failure("acct:frank", 1_000, policy)),
    )
    .await;
    let mut seen: Vec<u32> = counts
        .into_iter()
        .map(|r| r.expect("add_failure").count)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "no failure lost");
    let failures = store.failures("acct:frank").await.expect("failures");
    assert_eq!(failures.count, 20);
    assert_eq!(
        failures.locked_until,
        1_000 + 3600,
        "back-off capped at max"
    );

    let hits = futures_util::future::join_all(
        (0..30).map(|_| store.hit_rate_limit("ip:1", 10, Duration::from_secs(60))),
    )
    .await;
    let allowed = hits.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(allowed, 10);
}

#[test]
fn state_settings_are_checked_with_file_line_and_field() {
    let toml =
        "[state]\nbackend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:6379\"\npool_size = 0\n";
    let (dir, path) = write_config(toml);
    let (code, out, err) = crate::support::run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    assert_eq!(code, 2, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(":3: state.url: must not carry credentials"),
        "{text}"
    );
    assert!(text.contains(":4: state.pool_size"), "{text}");
    assert!(!text.contains("hunter2"), "the password was echoed: {text}");
}

#[tokio::test]
async fn a_logout_on_one_replica_closes_the_websocket_held_on_another() {
    use crate::continuous::{closed, echo, open_ws};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::start().await;
    let (dir, paths) = replica_configs(&backend, &redis, 2, "ip_limit = 1000");
    let gail = add_user(&paths[0], "gail", &[], true);
    let a = Wardgate::start_in(dir, paths[0].clone());
    let b = Wardgate::start_replica(paths[1].clone());
    for proxy in [&a, &b] {
        wait_until("replica ready", Duration::from_secs(10), async || {
            readyz(proxy).await == 200
        })
        .await;
    }
    let token = token(&a, &gail, &code(&gail)).await;
    let mut socket = open_ws(&b, "/private/ws", Some(&token)).await;
    echo(&mut socket, "signalling: offer").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    echo(&mut socket, "signalling: candidate").await;

    logout(&a, &token).await;
    let (code, took) = closed(&mut socket, Duration::from_secs(2)).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(
        took <= Duration::from_secs(1),
        "closed after {took:?} on the other replica"
    );
}
