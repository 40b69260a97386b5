//! A real, certified OpenID Provider (npm `oidc-provider`, started by `tests/oidc/provider.mjs`)
//! on a loopback port with HTTPS from a test CA, stopped on drop; and a scripted client that
//! walks its login form the way a browser would.
//!
//! `scripts/test` installs the package (`npm ci --prefix tests/oidc`). When it is missing the
//! tests are skipped locally but fail under CI (`CI` set), like the Redis tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::certs::TestCa;
use super::Wardgate;

pub const CLIENT_ID: &str = "wardgate";
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789-abcdefghij";

pub struct OidcProvider {
    child: Option<Child>,
    pub port: u16,
    pub issuer: String,
    dir: tempfile::TempDir,
    clients: Vec<Value>,
    extra_ca: Option<PathBuf>,
}

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl OidcProvider {
    /// Prepares a provider on a free port (not started: Wardgate's ports go into its client
    /// registration, so Wardgate starts first). `None` (skipped) when the package is missing
    /// outside CI.
    pub fn prepare() -> Option<OidcProvider> {
        let installed = harness_dir().join("node_modules/oidc-provider").is_dir()
            && Command::new("node")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok();
        if !super::tool_available(
            installed,
            "node or tests/oidc/node_modules (npm oidc-provider)",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("Test Identity Provider CA");
        let leaf = ca.leaf("localhost", &["localhost"], false);
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("ca");
        std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).expect("key");
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, CLIENT_SECRET).expect("secret");
        set_mode_0600(&secret);
        Some(OidcProvider {
            child: None,
            port,
            issuer: format!("https://localhost:{port}"),
            dir,
            clients: Vec::new(),
            extra_ca: None,
        })
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_path()).expect("ca")
    }

    /// The `[[oidc.providers]]` entry for provider `name` (roles and groups mapped).
    pub fn provider_toml(&self, name: &str) -> String {
        format!(
            r#"
[[oidc.providers]]
name = "{name}"
display_name = "Test Hospital"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
ca_file = "{ca}"
scopes = ["profile", "email", "wardgate"]
claims = {{ roles = "wardgate_roles", groups = "groups", display_name = "name" }}
mfa_amr = ["mfa"]
"#,
            issuer = self.issuer,
            secret = self.dir.path().join("client-secret").display(),
            ca = self.ca_path().display(),
        )
    }

    /// Registers Wardgate `proxy` as the client and starts the provider.
    pub fn start_for(&mut self, proxy: &Wardgate) {
        let origin = format!("https://127.0.0.1:{}", proxy.public.port());
        self.start(&[origin], Some(proxy));
    }

    /// Registers one client whose redirect URIs are at `origins`, with back-channel logout to
    /// `backchannel` (whose development certificate node is told to trust), and starts.
    pub fn start(&mut self, origins: &[String], backchannel: Option<&Wardgate>) {
        let mut client = json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": origins.iter().map(|o| format!("{o}/.wardgate/oidc/callback")).collect::<Vec<_>>(),
            "post_logout_redirect_uris": origins.iter().map(|o| format!("{o}/.wardgate/login")).collect::<Vec<_>>(),
        });
        if let Some(proxy) = backchannel {
            client["backchannel_logout_uri"] = json!(format!(
                "https://127.0.0.1:{}/.wardgate/oidc/backchannel-logout",
                proxy.public.port()
            ));
            let ca = self.dir.path().join("wardgate-ca.pem");
            std::fs::write(&ca, proxy.dev_cert()).expect("dev cert");
            self.extra_ca = Some(ca);
        }
        self.clients = vec![client];
        self.restart();
    }

    /// (Re)starts the provider on the same port and issuer. Every start makes a new signing
    /// key, so a restart is a key rotation at the provider.
    pub fn restart(&mut self) {
        self.stop();
        let config = json!({
            "port": self.port,
            "issuer": self.issuer,
            "cert": self.dir.path().join("cert.pem"),
            "key": self.dir.path().join("key.pem"),
            "clients": self.clients,
        });
        let config_path = self.dir.path().join("provider.json");
        std::fs::write(&config_path, config.to_string()).expect("provider config");
        let mut command = Command::new("node");
        command
            .arg(harness_dir().join("provider.mjs"))
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ca) = &self.extra_ca {
            command.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let mut child = command.spawn().expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("oidc-provider ready") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(Duration::from_secs(30))
            .expect("oidc-provider did not start");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes the provider rewrite the ID token of its next token response (fault injection).
    pub async fn set_mode(&self, mode: &str) {
        let response = self
            .client()
            .post(format!("{}/test/mode", self.issuer))
            .json(&json!({ "mode": mode }))
            .send()
            .await
            .expect("set mode");
        assert!(response.status().is_success(), "set mode {mode}");
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem()).expect("ca"))
            .build()
            .expect("client")
    }

    /// A cookie-keeping client trusting both `proxy` and this provider, following redirects
    /// except those into Wardgate's `/.wardgate/` (so a test holds the callback URL in hand).
    pub fn browser_like(&self, proxy: &Wardgate) -> reqwest::Client {
        proxy
            .client_builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem()).expect("ca"))
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let wardgate = |url: &reqwest::Url| url.path().starts_with("/.wardgate/");
                if wardgate(attempt.url()) || attempt.previous().last().is_some_and(wardgate) {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .expect("client")
    }

    /// Starts a sign-on at `proxy` and signs in at the provider; returns the callback URL the
    /// provider redirected to (not yet visited).
    pub async fn sign_in(
        &self,
        proxy: &Wardgate,
        client: &reqwest::Client,
        username: &str,
        password: &str,
    ) -> String {
        let start = "/.wardgate/oidc/hospital/start?rd=/private/after-sso";
        self.sign_in_from(proxy, client, start, username, password)
            .await
    }

    /// [`Self::sign_in`] beginning at Wardgate path `start`.
    pub async fn sign_in_from(
        &self,
        proxy: &Wardgate,
        client: &reqwest::Client,
        start_path: &str,
        username: &str,
        password: &str,
    ) -> String {
        // Wardgate starts before the provider (its ports go into the client registration), so
        // the first discovery fails; it retries within seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let start = loop {
            let start = client
                .get(proxy.url(start_path))
                .send()
                .await
                .expect("start");
            if start.status() != 503 || std::time::Instant::now() > deadline {
                break start;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(start.status(), 303, "start: {}", start.status());
        let authorize = location(&start);
        assert!(authorize.starts_with(&self.issuer), "{authorize}");
        for (key, _) in [
            ("code_challenge_method=S256", ()),
            ("nonce=", ()),
            ("state=", ()),
        ] {
            assert!(authorize.contains(key), "{key} missing in {authorize}");
        }
        let form = client.get(&authorize).send().await.expect("authorize");
        if form.status().is_redirection() {
            // Still signed in at the provider (single sign-on): straight back to Wardgate.
            return location(&form);
        }
        let form_url = form.url().to_string();
        let page = form.text().await.expect("login form");
        assert!(page.contains("id=\"username\""), "{page}");
        let action = format!("{}/login", form_url.trim_end_matches('/'));
        let done = client
            .post(action)
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .expect("login");
        assert!(done.status().is_redirection(), "login: {}", done.status());
        let callback = location(&done);
        assert!(callback.contains("/.wardgate/oidc/callback?"), "{callback}");
        callback
    }
}

impl OidcProvider {
    /// Signs out at the provider (its end-session page, then its confirmation form), as the
    /// user of `client` would; the provider then sends back-channel logout tokens.
    pub async fn end_session(&self, client: &reqwest::Client) {
        let page = client
            .get(format!("{}/session/end?client_id={CLIENT_ID}", self.issuer))
            .send()
            .await
            .expect("end session")
            .text()
            .await
            .expect("page");
        let action = attribute(&page, "action=\"").expect("form action");
        let mut fields: Vec<(String, String)> = page
            .split("<input")
            .skip(1)
            .filter_map(|input| {
                Some((
                    attribute(input, "name=\"")?,
                    attribute(input, "value=\"").unwrap_or_default(),
                ))
            })
            .collect();
        if !fields.iter().any(|(k, _)| k == "logout") {
            fields.push(("logout".into(), "yes".into()));
        }
        let url = if action.starts_with("http") {
            action
        } else {
            format!("{}{action}", self.issuer)
        };
        let done = client
            .post(url)
            .form(&fields)
            .send()
            .await
            .expect("confirm");
        assert!(
            done.status().is_redirection() || done.status().is_success(),
            "{}",
            done.status()
        );
    }
}

fn attribute(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)? + prefix.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_string()
}

fn set_mode_0600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
