//! Criterion: the per-request CPU work of stages 2–5 (normalize, route, authenticate with a
//! real session token and session record, authorize) on a warm `App`, without network I/O —
//! with the in-memory state store, and (when `redis-server` is installed) with the Redis store
//! with its 1 s session cache and without it, so the Redis overhead reads as a ratio.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use wardgate::app::App;
use wardgate::authn::users::User;
use wardgate::config::Config;
use wardgate::gate::normalize::normalize;
use wardgate::gate::target::RequestTarget;
use wardgate::state::{memory::MemoryStore, StateStore};

fn config_text() -> String {
    let mut toml = String::from("[upstreams.u]\ntargets = [\"http://127.0.0.1:9000\"]\n");
    for index in 0..20 {
        toml.push_str(&format!(
            "[[routes]]\nname = \"r{index}\"\npath = \"/svc{index}/{{id}}/**\"\nupstream = \"u\"\npublic = true\n"
        ));
    }
    toml.push_str("[[routes]]\nname = \"records\"\nhost = \"portal.example.org\"\npath = \"/api/patients/{patient_id}/records\"\nmethods = [\"GET\"]\nupstream = \"u\"\nphi = true\nallow = [{ roles = [\"clinician\"] }, { roles = [\"patient\"], match = { patient_id = \"claim:patient_id\" } }]\n");
    toml
}

fn build(runtime: &tokio::runtime::Runtime, state: Arc<dyn StateStore>) -> (App, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::from_str(&config_text(), &dir.path().join("bench.toml"), dir.path())
        .expect("config");
    // The App keeps paths into `dir`; keep it for the whole run.
    std::mem::forget(dir);
    runtime.block_on(async {
        let key =
            wardgate::audit::checkpoint::CheckpointKey::load_or_create(&config.audit.signing_key)
                .expect("key");
        let settings = wardgate::audit::writer::WriterSettings {
            dir: config.audit.dir.clone(),
            fsync_interval: config.audit.fsync_interval,
            max_file_size: config.audit.max_file_size,
            checkpoint_every: config.audit.checkpoint_every,
            replica: "bench".into(),
            rotate_every: config.audit.rotate_every,
            mirror: None,
        };
        let audit = Arc::new(wardgate::audit::Auditor::start(
            settings,
            key,
            65_536,
            wardgate::audit::writer::Alerts {
                detector: None,
                webhook: None,
            },
        ));
        let app =
            App::build(config, state, audit, Arc::default(), Default::default()).expect("app");
        let user = User {
            name: "alice".into(),
            roles: vec!["clinician".into()],
            ..User::default()
        };
        app.users.add(user.clone()).expect("user");
        let now = wardgate::state::unix_now();
        let (token, _) = wardgate::authn::session::create(
            &app,
            &user,
            vec!["pwd".into(), "otp".into()],
            "127.0.0.1".into(),
            (now, now),
            None,
        )
        .await
        .expect("session");
        (app, token)
    })
}

fn stages(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    app: &App,
    token: &str,
) {
    let request = Request::get("/api/patients/1001/records")
        .header("host", "portal.example.org")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request");
    let conn =
        wardgate::gate::context::ConnInfo::new("127.0.0.1:40000".parse().expect("addr"), None);
    let now = wardgate::state::unix_now();
    c.bench_function(name, |b| {
        b.iter(|| {
            runtime.block_on(async {
                let target = RequestTarget::from_request(black_box(&request)).expect("target");
                let matched = app
                    .routes
                    .lookup(&target.host, &target.path, request.method())
                    .expect("route");
                assert!(app
                    .routes
                    .variant_route(&target.host, &target.path, request.method(), &matched)
                    .is_none());
                let caller = wardgate::authn::authenticate(
                    app,
                    &matched.route,
                    request.method(),
                    request.headers(),
                    None,
                )
                .await
                .expect("caller");
                wardgate::authz::authorize(&matched, caller, &conn, request.method(), now, None)
                    .expect("permit")
            })
        })
    });
}

/// A `redis-server` on a free loopback port for the Redis runs (killed on drop).
struct RedisServer(std::process::Child, u16);

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer(child, port));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    fn store(&self, session_cache: std::time::Duration) -> Arc<dyn StateStore> {
        let config = wardgate::config::state::RedisConfig {
            url: format!("redis://127.0.0.1:{}", self.1),
            username: None,
            password_file: None,
            ca_file: None,
            key_prefix: "bench:".into(),
            pool_size: 4,
            command_timeout: std::time::Duration::from_secs(1),
            session_cache,
        };
        wardgate::state::redis_store::RedisStore::start(&config).expect("redis store")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench(c: &mut Criterion) {
    // One worker runs the stores' background tasks (sweeper, Redis health and subscription).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, token) = build(&runtime, runtime.block_on(async { MemoryStore::start() }));

    c.bench_function("normalize/canonical", |b| {
        b.iter(|| normalize(black_box("/api/patients/1001/records")))
    });
    c.bench_function("normalize/dot-segments", |b| {
        b.iter(|| normalize(black_box("/api//patients/./1001/%72ecords/../records")))
    });
    c.bench_function("route/lookup-21-routes", |b| {
        b.iter(|| {
            app.routes.lookup(
                black_box("portal.example.org"),
                black_box("/api/patients/1001/records"),
                &Method::GET,
            )
        })
    });
    // A path with capitals cannot skip the spelling-variant scan (`gate/route/variants.rs`).
    c.bench_function("route/variant-check-mixed-case", |b| {
        let path = "/api/patients/AB1001/records";
        let matched = app
            .routes
            .lookup("portal.example.org", path, &Method::GET)
            .expect("route");
        b.iter(|| {
            app.routes.variant_route(
                black_box("portal.example.org"),
                black_box(path),
                &Method::GET,
                &matched,
            )
        })
    });
    stages(c, "stages/memory", &runtime, &app, &token);

    let Some(redis) = RedisServer::start() else {
        eprintln!("redis-server not installed: the Redis runs are skipped");
        return;
    };
    for (name, cache) in [
        ("stages/redis-cached-1s", std::time::Duration::from_secs(1)),
        ("stages/redis-uncached", std::time::Duration::ZERO),
    ] {
        let store = runtime.block_on(async { redis.store(cache) });
        // Let the health task see Redis and the heartbeat come back through the subscription.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (app, token) = build(&runtime, store);
        stages(c, name, &runtime, &app, &token);
    }
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
