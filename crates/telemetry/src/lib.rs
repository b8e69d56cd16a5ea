//! mesh-telemetry: what every linkerd-mcp binary does the same way at start and stop, so users
//! meet one behaviour: bad configuration is a clear message and exit 64, logs follow `MESH_LOG`, and
//! Ctrl-C or SIGTERM stops the process gracefully.

pub mod serve;

/// Loads the file at `path` with `load` and keeps it current: the file is checked every
/// `every` (modification time and size); a changed file that `load` refuses is logged with
/// its reason and the last good value stays in force. `what` names it in the logs.
pub fn watch_file<T, E>(
    what: &'static str,
    path: std::path::PathBuf,
    every: std::time::Duration,
    load: impl Fn(&std::path::Path) -> Result<T, E> + Send + 'static,
) -> Result<tokio::sync::watch::Receiver<std::sync::Arc<T>>, E>
where
    T: Send + Sync + 'static,
    E: std::fmt::Display,
{
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                m.len(),
            )
        })
    };
    // Stamped with what was loaded, so a change right after start is not missed.
    let mut last = stamp(&path);
    let first = load(&path)?;
    let (tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(first));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match load(&path) {
                Ok(v) => {
                    tracing::info!(path = %path.display(), "{what} reloaded");
                    tx.send_replace(std::sync::Arc::new(v));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "{what} not reloaded; the previous one stays");
                }
            }
        }
    });
    Ok(rx)
}

/// Exit code for bad configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Prints `<name>: <message>` and exits with [`EXIT_USAGE`].
pub fn usage_exit(name: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{name}: {message}");
    std::process::exit(EXIT_USAGE);
}

/// Why a binary stops with an error: its configuration is wrong (exit 64, nothing was started)
/// or something failed while it ran (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Bad configuration: a flag, a file it names, a value out of range.
    Usage(String),
    /// A failure while running: a listener that stopped, a task that died.
    Failed(String),
}

impl RunError {
    /// The process's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Failed(_) => 1,
        }
    }

    /// Prints `<name>: <message>` and exits with [`RunError::exit_code`].
    pub fn exit(&self, name: &str) -> ! {
        eprintln!("{name}: {self}");
        std::process::exit(self.exit_code());
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

/// Parses the command line; `--help`/`--version` print and exit 0. Anything wrong prints clap's
/// whole message (what is missing or invalid, the allowed values, a suggestion for a misspelt
/// subcommand, and the usage line) and exits 64, so the user can fix it without `--help`.
pub fn parse_args<A: clap::Parser>(name: &str) -> A {
    match A::try_parse() {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // clap colours only when standard error is a terminal.
            if e.print().is_err() {
                eprintln!("{name}: invalid arguments");
            }
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// Logs to stderr, filtered by `MESH_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files or collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on Ctrl-C or SIGTERM (what `kill` and process supervisors send).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The admin port's flag, shared by every binary (`#[command(flatten)]`).
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin address for `/live`, `/ready` and `/metrics` (absent: no admin port).
    #[arg(long, env = "MESH_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// Readiness as the admin port reports it: `Ok` when ready, else why not.
pub type Readiness = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The admin port every service serves: `/live` (the process answers), `/ready` (200 when
/// `ready` says so, else 503 with the reason) and `/metrics` (the registry, Prometheus text).
pub fn admin_router(
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
    ready: Readiness,
) -> axum::Router {
    use axum::{http::StatusCode, http::header, response::IntoResponse, routing::get};
    axum::Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let r = ready();
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        out,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }),
        )
}

/// Binds `addr` and serves `router` on it in the background; the error names the address.
pub async fn serve_admin(
    addr: std::net::SocketAddr,
    router: axum::Router,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--admin-listen {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        serve::serve_http(
            l,
            router,
            serve::ConnLimits::DEFAULT,
            std::future::pending(),
        )
        .await;
    }))
}

/// Longest look back a history question may ask (Prometheus keeps 15 days by default; long
/// term stores keep more).
pub const MAX_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(400 * 86_400);

/// Parses how far back to look, such as `90s`, `1h` or `2d`: at least a second, at most
/// [`MAX_LOOKBACK`].
pub fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 90s, 15m or 1h: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?}: a duration of at least 1s"));
    }
    if d > MAX_LOOKBACK {
        return Err(format!(
            "{s:?}: longer than {} days",
            MAX_LOOKBACK.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// Parses a moment: an RFC 3339 time in UTC (`2026-12-07T10:32:00Z`), or a duration before
/// `now` written with a minus sign (`-90s`, `-1h`).
pub fn parse_moment(s: &str, now: std::time::SystemTime) -> Result<std::time::SystemTime, String> {
    let s = s.trim();
    if let Some(ago) = s.strip_prefix('-') {
        return Ok(now - parse_since(ago)?);
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is not a time: give RFC 3339 in UTC (2026-12-07T10:32:00Z) or a duration ago (-1h): {e}")
    })
}

#[cfg(test)]
mod moment_tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn moments_are_rfc3339_or_a_duration_ago_and_bad_ones_say_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_moment("-90s", now), Ok(now - Duration::from_secs(90)));
        assert_eq!(
            parse_moment("2026-12-07T10:32:00Z", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_639_520))
        );
        for bad in ["yesterday", "-", "-1x", "2026-13-07T10:32:00Z", ""] {
            let e = parse_moment(bad, now).unwrap_err();
            assert!(
                e.contains(&format!("{:?}", bad.trim_start_matches('-'))) || e.contains(bad),
                "{bad}: {e}"
            );
        }
        assert!(parse_since("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_since("1000d").unwrap_err().contains("longer than"));
        assert_eq!(parse_since("1h"), Ok(Duration::from_secs(3600)));
    }
}
