//! Users and sign-in for tests: accounts are made with the real CLI, codes with the real TOTP
//! implementation (and, in one test, with `oathtool`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::Wardgate;

pub const PASSWORD: &str = "tidal marble lantern";

pub struct TestUser {
    pub name: String,
    pub secret: Vec<u8>,
    pub secret_base32: String,
}

/// Runs `wardgate user ...` with `stdin` fed to it.
pub fn cli(config: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["user"])
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("cli output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Adds `name` with `extra` CLI flags (e.g. `--role`, `clinician`) and, if `enroll`, a TOTP
/// secret from `user enroll`.
pub fn add_user(config: &Path, name: &str, extra: &[&str], enroll: bool) -> TestUser {
    let mut args = vec!["add", name, "--password-stdin"];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(config, &args, &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "user add: {out}{err}");
    if !enroll {
        return TestUser {
            name: name.into(),
            secret: Vec::new(),
            secret_base32: String::new(),
        };
    }
    let (code, out, err) = cli(config, &["enroll", name], "");
    assert_eq!(code, 0, "user enroll: {out}{err}");
    let uri = out.lines().next().expect("otpauth line");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    secret_from_uri(name, uri)
}

pub fn secret_from_uri(name: &str, uri: &str) -> TestUser {
    let base32 = uri
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .expect("secret parameter")
        .to_string();
    let secret = totp_rs::Secret::Encoded(base32.clone())
        .to_bytes()
        .expect("base32");
    TestUser {
        name: name.into(),
        secret,
        secret_base32: base32,
    }
}

pub fn now() -> u64 {
    wardgate::state::unix_now()
}

/// The code for the current step.
pub fn code(user: &TestUser) -> String {
    wardgate::authn::totp::code_at(&user.secret, now())
}

/// The code for the next step (accepted thanks to the ±1 step window): a second login within
/// one step needs it, since each step's code works once.
pub fn next_code(user: &TestUser) -> String {
    wardgate::authn::totp::code_at(&user.secret, now() + 30)
}

/// `POST /.wardgate/api/login`.
pub async fn login(proxy: &Wardgate, name: &str, password: &str, totp: &str) -> reqwest::Response {
    proxy
        .client()
        .post(proxy.url("/.wardgate/api/login"))
        .json(&serde_json::json!({ "username": name, "password": password, "totp": totp }))
        .send()
        .await
        .expect("login request")
}

/// Logs in and returns the bearer token.
pub async fn token(proxy: &Wardgate, user: &TestUser, totp: &str) -> String {
    let response = login(proxy, &user.name, PASSWORD, totp).await;
    assert_eq!(response.status(), 200, "login of {}", user.name);
    let body: serde_json::Value = response.json().await.expect("json");
    body["token"].as_str().expect("token").to_string()
}

/// `POST /.wardgate/api/logout` with a bearer token; expects 204.
pub async fn logout(proxy: &Wardgate, token: &str) {
    assert_eq!(logout_status(proxy, token).await, 204, "logout");
}

/// The status of `POST /.wardgate/api/logout` with a bearer token.
pub async fn logout_status(proxy: &Wardgate, token: &str) -> u16 {
    proxy
        .client()
        .post(proxy.url("/.wardgate/api/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout")
        .status()
        .as_u16()
}

/// The status of a GET of `path` with a bearer token.
pub async fn get_status(proxy: &Wardgate, path: &str, token: &str) -> u16 {
    proxy
        .client()
        .get(proxy.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}
