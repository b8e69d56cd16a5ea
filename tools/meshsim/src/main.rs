//! `meshsim`: serves linkerd-proxy-style metrics for a simulated mesh.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = meshsim::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let topology = match args.load_topology() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("meshsim: {e}");
            std::process::exit(64);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshsim: cannot listen on {}: {e}", args.listen);
            std::process::exit(64);
        }
    };
    tracing::info!(
        addr = %args.listen,
        workloads = topology.workloads.len(),
        edges = topology.edges.len(),
        "serving /metrics and /topology"
    );
    let shutdown = async {
        // Stop on Ctrl-C or SIGTERM (what `kill` and process supervisors send).
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
    };
    if let Err(e) = meshsim::serve(listener, topology, shutdown).await {
        eprintln!("meshsim: {e}");
        std::process::exit(1);
    }
}
