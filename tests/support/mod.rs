//! Test harness: a real Wardgate process on ephemeral loopback ports with real TLS, and a
//! real hyper backend that records what it receives.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod auth;
pub mod backend;
pub mod browser;
pub mod certs;
pub mod oidc;
pub mod raw;
pub mod redis;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use backend::Backend;

/// A running `wardgate serve` process.
pub struct Wardgate {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<String>>,
}

/// A config with one upstream `b` at `backend` and the usual test routes; `extra` is appended.
pub fn config(backend: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[log]
level = "debug"

[login]
ip_limit = 1000

[upstreams.b]
targets = ["http://{backend}"]

[[routes]]
name = "public"
path = "/pub/**"
upstream = "b"
public = true

[[routes]]
name = "upload"
path = "/upload"
methods = ["POST", "PUT"]
upstream = "b"
public = true
max_body = "1MiB"

[[routes]]
name = "big-upload"
path = "/big-upload"
methods = ["POST"]
upstream = "b"
public = true
max_body = "64MiB"

[[routes]]
name = "ws"
path = "/ws"
upstream = "b"
public = true

[[routes]]
name = "private"
path = "/private/**"
upstream = "b"
allow = [{{ authenticated = true }}]

[[routes]]
name = "patient-records"
path = "/patients/{{patient_id}}/**"
upstream = "b"
phi = true
allow = [{{ roles = ["clinician"] }}, {{ roles = ["patient"], match = {{ patient_id = "claim:patient_id" }} }}]
deny = [{{ name = "suspended", groups = ["suspended"] }}]
{extra}
"#
    )
}

/// Writes `toml` into a fresh temp dir (so users can be added before the proxy starts).
pub fn write_config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("wardgate.toml");
    std::fs::write(&config_path, toml).expect("write config");
    (dir, config_path)
}

impl Wardgate {
    /// Writes `toml` to a temp dir and starts `wardgate serve` on it.
    pub fn start(toml: &str) -> Wardgate {
        let (dir, config_path) = write_config(toml);
        Self::start_in(dir, config_path)
    }

    /// Starts another replica on `config_path`, whose directory another handle owns.
    pub fn start_replica(config_path: PathBuf) -> Wardgate {
        Self::start_in(tempfile::tempdir().expect("tempdir"), config_path)
    }

    /// Starts on a config already written into `dir`.
    pub fn start_in(dir: tempfile::TempDir, config_path: PathBuf) -> Wardgate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "wardgate=debug,info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wardgate");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("logs")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("wardgate ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "wardgate did not start; logs:\n{}",
                    logs.lock().expect("logs")
                );
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .and_then(|url| url.rsplit("://").next())
                .and_then(|addr| addr.parse().ok())
        };
        Wardgate {
            public: field("public").expect("public addr"),
            admin: field("admin").expect("admin addr"),
            redirect: field("redirect"),
            child,
            dir,
            config_path,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.public.port(), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The Prometheus text of the admin listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The development CA certificate (PEM) the proxy generated.
    pub fn dev_cert(&self) -> Vec<u8> {
        let dir = self.config_path.parent().expect("config dir");
        std::fs::read(dir.join("data/dev-cert.pem")).expect("dev cert")
    }

    /// An HTTPS client trusting only the proxy's development certificate.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client")
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let cert = reqwest::Certificate::from_pem(&self.dev_cert()).expect("cert");
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(cert)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The value of the unlabelled metric `name` (0 while it has not been recorded).
    pub async fn metric(&self, name: &str) -> u64 {
        let prefix = format!("{name} ");
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |value| value.trim().parse().expect("metric value"))
    }

    /// How many threads the proxy process runs now.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|tasks| tasks.count())
            .unwrap_or(0)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Like `wait_exit`, but lets the test's own runtime keep serving its client connections
    /// (an HTTP/2 client must answer the server's GOAWAY/PING for a graceful close).
    pub async fn exited(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Takes the working directory away from this process handle (to restart on it).
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn rewrite_config(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).expect("rewrite config");
    }
}

impl Drop for Wardgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the wardgate binary with `args`, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run wardgate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every complete record of the `*.jsonl` audit files in `dir`, in file order.
///
/// The writer may be part-way through a line when a test polls (its buffer flushes wherever it
/// fills), so only lines that end in a newline count; the rest arrives on the next poll.
pub fn audit_records_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("audit file");
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            complete
                .lines()
                .map(|l| serde_json::from_str(l).expect("record"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether an external tool the tests need is here. When it is missing the tests are skipped
/// locally but fail under CI (`CI` set), so a CI machine that lost a package cannot pass by
/// skipping.
pub fn tool_available(installed: bool, what: &str) -> bool {
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing (scripts/test installs it); these tests cannot be skipped under CI"
        );
        eprintln!("SKIPPED: {what} is missing (run scripts/test)");
    }
    installed
}
