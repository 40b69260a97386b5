//! `[log]` and `[limits]`, validated: how the process itself runs (log output, connection
//! and time limits, serving threads).

use std::time::Duration;

use toml::Spanned;

use super::error::IssueSink;
use super::file::FileConfig;
use super::*;

pub(super) fn log(file: &FileConfig, sink: &mut IssueSink<'_>) -> LogConfig {
    let format = match file.log.format.as_ref() {
        None => LogFormat::Text,
        Some(f) => match f.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                sink.span(
                    f.span(),
                    "log.format",
                    format!("`{other}` must be text or json"),
                );
                LogFormat::Text
            }
        },
    };
    let level = match &file.log.level {
        None => "info".to_string(),
        Some(level) => {
            if let Err(problem) = check_log_filter(level.get_ref()) {
                sink.span(level.span(), "log.level", problem);
            }
            level.get_ref().clone()
        }
    };
    LogConfig { format, level }
}

/// Checks a log filter: comma-separated levels (`trace`, `debug`, `info`, `warn`, `error`,
/// `off`), each alone or for a target (`wardgate=debug`). A bare word that is not a level would
/// be read as a target name and silence every other target: `inof` turned all logging off.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if directive.is_empty() || !is_level(level) {
            return Err(format!(
                "`{directive}` is not a log level (trace, debug, info, warn, error, off), alone or as target=level"
            ));
        }
    }
    Ok(())
}

/// CPUs available to the process (cgroup quotas included), the default for thread counts.
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A deadline that cuts connections or responses (`default` seconds when absent): zero would
/// cut every one at once, so it is an error at its line.
pub(super) fn deadline(
    value: &Option<Spanned<units::HumanDuration>>,
    field: &str,
    default: u64,
    sink: &mut IssueSink<'_>,
) -> Duration {
    match value {
        Some(value) if value.get_ref().0.is_zero() => {
            sink.span(value.span(), field, "must be longer than 0s");
            Duration::from_secs(default)
        }
        Some(value) => value.get_ref().0,
        None => Duration::from_secs(default),
    }
}

/// More serving threads than this only cost memory (each has its own upstream pools).
const MAX_SERVE_THREADS: usize = 64;

pub(super) fn limits(file: &FileConfig, sink: &mut IssueSink<'_>) -> Limits {
    let l = &file.limits;
    let d = |v: Option<units::HumanDuration>, default: u64| {
        v.map_or(Duration::from_secs(default), |v| v.0)
    };
    let mut deadline = |v: &Option<Spanned<units::HumanDuration>>, field: &str, default: u64| {
        self::deadline(v, &format!("limits.{field}"), default, sink)
    };
    let handshake_timeout = deadline(&l.handshake_timeout, "handshake_timeout", 10);
    let header_read_timeout = deadline(&l.header_read_timeout, "header_read_timeout", 10);
    let body_read_timeout = deadline(&l.body_read_timeout, "body_read_timeout", 30);
    let keepalive_timeout = deadline(&l.keepalive_timeout, "keepalive_timeout", 60);
    let send_timeout = deadline(&l.send_timeout, "send_timeout", 60);
    let max_connections = match &l.max_connections {
        Some(value) if *value.get_ref() == 0 => {
            sink.span(
                value.span(),
                "limits.max_connections",
                "must be at least 1 (0 would refuse every connection)",
            );
            10_000
        }
        Some(value) => *value.get_ref(),
        None => 10_000,
    };
    Limits {
        max_connections,
        handshake_timeout,
        header_read_timeout,
        body_read_timeout,
        max_header_size: l.max_header_size.map_or(64 * 1024, |s| s.0 as usize),
        keepalive_timeout,
        send_timeout,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams.unwrap_or(100),
        max_body: l.max_body.map_or(10 * 1024 * 1024, |s| s.0),
        shutdown_grace: d(l.shutdown_grace, 30),
        serve_threads: match l.serve_threads {
            Some(threads) if threads > 0 => threads.min(MAX_SERVE_THREADS),
            _ => cpus().min(MAX_SERVE_THREADS),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn serve_threads(limits: &str) -> usize {
        let text = format!(
            "{limits}\n[upstreams.b]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\npath = \"/**\"\nupstream = \"b\"\npublic = true\n"
        );
        Config::from_str(&text, Path::new("t.toml"), Path::new("/nonexistent"))
            .expect("config")
            .limits
            .serve_threads
    }

    /// Absent or 0: one serving thread per CPU; a number is taken as given, up to the cap.
    #[test]
    fn serve_threads_default_to_the_cpus() {
        let cpus = super::cpus();
        assert_eq!(serve_threads(""), cpus.min(super::MAX_SERVE_THREADS));
        assert_eq!(
            serve_threads("[limits]\nserve_threads = 0"),
            cpus.min(super::MAX_SERVE_THREADS)
        );
        assert_eq!(serve_threads("[limits]\nserve_threads = 3"), 3);
        assert_eq!(
            serve_threads("[limits]\nserve_threads = 100000"),
            super::MAX_SERVE_THREADS
        );
    }
}
