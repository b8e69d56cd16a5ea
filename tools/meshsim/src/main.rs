//! `meshsim`: serves linkerd-proxy-style metrics for a simulated mesh.

use mesh_telemetry::{init_logging, parse_args, shutdown_signal, usage_exit};

#[tokio::main]
async fn main() {
    let args: meshsim::Args = parse_args("meshsim");
    init_logging();
    let topology = args
        .load_topology()
        .unwrap_or_else(|e| usage_exit("meshsim", e));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| {
            usage_exit("meshsim", format!("cannot listen on {}: {e}", args.listen))
        });
    tracing::info!(
        addr = %args.listen,
        workloads = topology.workloads.len(),
        edges = topology.edges.len(),
        "serving /metrics and /topology"
    );
    if let Err(e) = meshsim::serve(listener, topology, shutdown_signal()).await {
        eprintln!("meshsim: {e}");
        std::process::exit(1);
    }
}
