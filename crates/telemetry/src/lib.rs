//! mesh-telemetry: what every linkerd-mcp binary does the same way at start and stop, so users
//! meet one behaviour: bad configuration is one line and exit 64, logs follow `MESH_LOG`, and
//! Ctrl-C or SIGTERM stops the process gracefully.

/// Exit code for bad configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Prints `<name>: <message>` and exits with [`EXIT_USAGE`].
pub fn usage_exit(name: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{name}: {message}");
    std::process::exit(EXIT_USAGE);
}

/// Parses the command line; `--help`/`--version` print and exit 0, anything wrong is one line
/// and exit 64 (clap's own message, without its usage block).
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
            let text = e.to_string();
            usage_exit(
                name,
                text.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: "),
            )
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
