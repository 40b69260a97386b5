//! `serve` and `demo`: load the config, start logging and the runtime, run the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::config::Config;

/// The quick-start config, embedded so `demo` works from any directory.
const EMBEDDED_CONFIG: &str = include_str!("../../config/wardgate.toml");

/// `wardgate serve --config FILE`.
pub(super) fn serve(path: &Path, allow_root: bool) -> Result<(), CliError> {
    let config = Config::load(path)?;
    refuse_root(&config, allow_root)?;
    let _log = crate::telemetry::init(&config.log);
    runtime()?.block_on(async {
        crate::server::run(config, Some(path.to_path_buf()))
            .await
            .map_err(|err| CliError::Runtime(err.to_string()))
    })
}

/// `wardgate demo`: the demo backend plus the proxy on the default config.
pub(super) fn demo(path: Option<PathBuf>) -> Result<(), CliError> {
    let default = PathBuf::from("config/wardgate.toml");
    let (config, source) = match path {
        Some(path) => (Config::load(&path)?, Some(path)),
        None if default.is_file() => (Config::load(&default)?, Some(default)),
        None => (
            Config::from_str(
                EMBEDDED_CONFIG,
                Path::new("(embedded)/wardgate.toml"),
                Path::new("."),
            )?,
            None,
        ),
    };
    let _log = crate::telemetry::init(&config.log);
    demo_users(&config)?;
    runtime()?.block_on(async {
        let backend: SocketAddr = crate::demo::DEMO_BACKEND
            .parse()
            .map_err(|_| CliError::Runtime("bad demo address".into()))?;
        let backend = crate::demo::spawn(backend).await.map_err(|err| {
            CliError::Runtime(format!("cannot start the demo backend on {backend}: {err}"))
        })?;
        println!("demo backend on http://{backend}");
        println!(
            "open {}/ (self-signed development certificate: your browser will warn once)",
            config.listen.public_url
        );
        println!("try: curl -k {}/api/clinic/hours", config.listen.public_url);
        println!(
            "sign in at {0}/.wardgate/login with a demo account, then open {0}/api/me",
            config.listen.public_url
        );
        crate::server::run(config, source)
            .await
            .map_err(|err| CliError::Runtime(err.to_string()))
    })
}

/// On the first demo start, creates a demo clinician and a demo patient with random
/// passwords and TOTP secrets, and prints how to sign in (also kept, mode 0600, in
/// `<data dir>/demo-credentials.txt`).
fn demo_users(config: &Config) -> Result<(), CliError> {
    use crate::authn::{totp, users::User};
    let auth = &config.auth;
    let store = crate::authn::users::UserStore::open(
        &auth.users_file,
        &auth.key_file,
        auth.key_env.as_deref(),
    )
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    let notes = config.data_dir.join("demo-credentials.txt");
    if !store.all().is_empty() {
        println!("demo sign-in details: {}", notes.display());
        return Ok(());
    }
    let mut text =
        String::from("Wardgate demo accounts (created on first start of `wardgate demo`)\n");
    for (name, role, claims) in [
        ("demo.clinician", "clinician", vec![]),
        ("demo.patient", "patient", vec![("patient_id", "1001")]),
    ] {
        let password = crate::authn::session::random_id()[..20].to_string();
        let secret = totp::new_secret();
        let user = User {
            name: name.into(),
            roles: vec![role.into()],
            claims: claims
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            password: auth
                .hash
                .hash_blocking(&password)
                .map_err(CliError::Runtime)?,
            totp_secret: Some(store.seal(name, &secret)),
            ..User::default()
        };
        store
            .add(user)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        text.push_str(&format!(
            "\n  user: {name}\n  password: {password}\n  TOTP: add {} to an authenticator app,\n        or get a code with: oathtool --totp -b {}\n",
            totp::otpauth_uri(&secret, name),
            totp::base32(&secret)
        ));
    }
    crate::authn::users::write_atomic(&notes, text.as_bytes())
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    println!("{text}\n(also saved to {})", notes.display());
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Runtime(format!("cannot start runtime: {err}")))
}

/// A proxy facing the network should not hold root: a bug in it would own the host. Root is
/// refused on a non-loopback listener unless `--allow-root` says the operator means it.
fn refuse_root(config: &Config, allow_root: bool) -> Result<(), CliError> {
    let exposed = [Some(config.listen.addr), config.listen.redirect_http]
        .into_iter()
        .flatten()
        .find(|addr| !addr.ip().is_loopback());
    match exposed {
        Some(addr) if rustix::process::geteuid().is_root() && !allow_root => {
            Err(CliError::Usage(format!(
                "refusing to run as root on {addr}, which is not a loopback address: run as a dedicated user \
                 (systemd: User=wardgate with AmbientCapabilities=CAP_NET_BIND_SERVICE), or pass --allow-root"
            )))
        }
        _ => Ok(()),
    }
}
