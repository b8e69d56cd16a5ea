//! `mesh-mcp`: serves the mesh graph.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = match mesh_mcp::cli::Args::try_parse() {
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
            eprintln!(
                "mesh-mcp: {}",
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            );
            std::process::exit(mesh_mcp::cli::EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err((code, msg)) = mesh_mcp::cli::run(args).await {
        eprintln!("mesh-mcp: {msg}");
        std::process::exit(code);
    }
}
