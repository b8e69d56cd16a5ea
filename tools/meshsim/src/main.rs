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
    let mut sim = meshsim::Sim::new(topology, std::time::Instant::now());
    sim.set_version(args.linkerd_version);
    let sim = std::sync::Arc::new(tokio::sync::Mutex::new(sim));
    if let Some(url) = &args.kube_url {
        let config =
            meshsim::authz::kube_config(url, args.kube_token.as_deref(), args.kube_ca.as_deref())
                .await
                .unwrap_or_else(|e| usage_exit("meshsim", e));
        let client = kube::Client::try_from(config)
            .unwrap_or_else(|e| usage_exit("meshsim", format!("--kube-url {url}: {e}")));
        tracing::info!(%url, "refusing what Linkerd policy there denies");
        meshsim::authz::follow(sim.clone(), mesh_collector::watch::spawn(&client));
    }
    if let Err(e) = meshsim::serve_shared(listener, sim, shutdown_signal()).await {
        eprintln!("meshsim: {e}");
        std::process::exit(1);
    }
}
