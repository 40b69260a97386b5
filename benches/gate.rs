//! Criterion: the per-request CPU work of stages 2–5 (normalize, route, authenticate with a
//! real session token and session record, authorize) on a warm `App`, without network I/O.

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

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::from_str(&config_text(), &dir.path().join("bench.toml"), dir.path())
        .expect("config");
    let (app, token) = runtime.block_on(async {
        let state: Arc<dyn StateStore> = MemoryStore::start();
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
        let app = App::build(config, state, audit).expect("app");
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
            now,
        )
        .await
        .expect("session");
        (app, token)
    });

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
    let request = Request::get("/api/patients/1001/records")
        .header("host", "portal.example.org")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request");
    let conn = wardgate::gate::context::ConnInfo {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        client_identity: None,
    };
    let now = wardgate::state::unix_now();
    c.bench_function("stages/normalize+route+session+authorize", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let target = RequestTarget::from_request(black_box(&request)).expect("target");
                let matched = app
                    .routes
                    .lookup(&target.host, &target.path, request.method())
                    .expect("route");
                let caller = wardgate::authn::authenticate(
                    &app,
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

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
