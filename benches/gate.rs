//! Criterion: the per-request CPU work of stages 2–5 (normalize, route, authenticate,
//! authorize) on a warm route table, without I/O.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use wardgate::config::Config;
use wardgate::gate::normalize::normalize;
use wardgate::gate::route::RouteTable;
use wardgate::gate::target::RequestTarget;

fn table() -> RouteTable {
    let mut toml = String::from("[upstreams.u]\ntargets = [\"http://127.0.0.1:9000\"]\n");
    for index in 0..20 {
        toml.push_str(&format!(
            "[[routes]]\nname = \"r{index}\"\npath = \"/svc{index}/{{id}}/**\"\nupstream = \"u\"\npublic = true\n"
        ));
    }
    toml.push_str("[[routes]]\nname = \"records\"\nhost = \"portal.example.org\"\npath = \"/api/patients/{patient_id}/records\"\nmethods = [\"GET\"]\nupstream = \"u\"\npublic = true\n");
    let config = Config::from_str(&toml, Path::new("bench.toml"), Path::new(".")).expect("config");
    RouteTable::new(&config.routes)
}

fn bench(c: &mut Criterion) {
    c.bench_function("normalize/canonical", |b| {
        b.iter(|| normalize(black_box("/api/patients/1001/records")))
    });
    c.bench_function("normalize/dot-segments", |b| {
        b.iter(|| normalize(black_box("/api//patients/./1001/%72ecords/../records")))
    });
    let routes = table();
    c.bench_function("route/lookup-21-routes", |b| {
        b.iter(|| {
            routes.lookup(
                black_box("portal.example.org"),
                black_box("/api/patients/1001/records"),
                &Method::GET,
            )
        })
    });
    let request = Request::get("/api/patients/1001/records")
        .header("host", "portal.example.org")
        .body(())
        .expect("request");
    c.bench_function("stages/normalize+route+authn+authz", |b| {
        b.iter(|| {
            let target = RequestTarget::from_request(black_box(&request)).expect("target");
            let matched = routes
                .lookup(&target.host, &target.path, request.method())
                .expect("route");
            let caller = wardgate::authn::authenticate(&matched.route).expect("caller");
            wardgate::authz::authorize(&matched, caller).expect("permit")
        })
    });
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
