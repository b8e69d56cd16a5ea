//! `kube-sim`: a Kubernetes API server for linkerd-mcp's tests and demo. Never for production.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use mesh_telemetry::{init_logging, parse_args, shutdown_signal, usage_exit};

/// Command line; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, Parser)]
#[command(
    name = "kube-sim",
    version,
    about = "A Kubernetes API server for tests and demos (not for production)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Bearer tokens, in kube-apiserver --token-auth-file CSV format.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    token_file: PathBuf,
    /// Directory of YAML manifests to load at start (repeatable).
    #[arg(long, env = "MESH_SEED")]
    seed: Vec<PathBuf>,
    /// Watch events kept for resuming; older resume points get 410 Gone.
    #[arg(long, env = "MESH_HISTORY", default_value_t = 10_000)]
    history: usize,
    /// Load the Linkerd policy CRDs (and Gateway API HTTPRoute/GRPCRoute) at start.
    #[arg(long, env = "MESH_WITH_LINKERD_CRDS")]
    with_linkerd_crds: bool,
    /// Serve HTTPS with a self-signed certificate (kubectl sends tokens only over TLS).
    #[arg(long, env = "MESH_TLS")]
    tls: bool,
    /// With --tls, write the certificate clients should trust to this file.
    #[arg(long, env = "MESH_TLS_CA_OUT", requires = "tls")]
    tls_ca_out: Option<PathBuf>,
    /// Seconds between watch bookmarks.
    #[arg(long, env = "MESH_BOOKMARK_INTERVAL", default_value_t = 10)]
    bookmark_interval: u64,
}

#[tokio::main]
async fn main() {
    let args: Args = parse_args("kube-sim");
    init_logging();
    let tokens = std::fs::read_to_string(&args.token_file).unwrap_or_else(|e| {
        usage_exit(
            "kube-sim",
            format!(
                "cannot read --token-file {}: {e}",
                args.token_file.display()
            ),
        )
    });
    let config = kube_sim::Config {
        listen: args.listen,
        tokens,
        seed_dirs: args.seed,
        history_limit: args.history,
        bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
        tls: args.tls,
        with_linkerd_crds: args.with_linkerd_crds,
        token_audiences: Vec::new(),
    };
    let sim = kube_sim::KubeSim::start(config)
        .await
        .unwrap_or_else(|e| usage_exit("kube-sim", e));
    if let (Some(path), Some(pem)) = (&args.tls_ca_out, sim.ca_pem())
        && let Err(e) = std::fs::write(path, pem)
    {
        usage_exit(
            "kube-sim",
            format!("cannot write --tls-ca-out {}: {e}", path.display()),
        );
    }
    tracing::info!(url = %sim.url(), "serving the Kubernetes API (test server, not for production)");
    shutdown_signal().await;
    drop(sim);
}
