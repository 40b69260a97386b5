//! `serve` and `demo`: load the config, start logging and the runtime, run the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::config::Config;

/// The quick-start config, embedded so `demo` works from any directory.
const EMBEDDED_CONFIG: &str = include_str!("../../config/wardgate.toml");

/// `wardgate serve --config FILE`.
pub(super) fn serve(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    crate::telemetry::init(&config.log);
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
    crate::telemetry::init(&config.log);
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
        crate::server::run(config, source)
            .await
            .map_err(|err| CliError::Runtime(err.to_string()))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Runtime(format!("cannot start runtime: {err}")))
}
