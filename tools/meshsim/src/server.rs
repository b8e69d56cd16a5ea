//! The HTTP face: `GET /metrics`, `GET /topology`, `PUT /topology`.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use clap::builder::TypedValueParser as _;
use tokio::{net::TcpListener, sync::Mutex};

use mesh_model::Decision;

use crate::{Sim, Topology, generate, topology::TopologyError};

/// The simulation shared by request handlers.
pub type SharedSim = Arc<Mutex<Sim>>;

/// Command line of `meshsim`; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "meshsim",
    version,
    about = "Serves linkerd-proxy metrics for a simulated mesh"
)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["topology", "builtin", "generate"])))]
pub struct Args {
    /// A topology file (YAML).
    #[arg(long, env = "MESH_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// A built-in topology: emojivoto or booksapp.
    #[arg(long, env = "MESH_BUILTIN", value_parser = ["emojivoto", "booksapp"])]
    pub builtin: Option<String>,
    /// Generate a mesh of N workloads.
    #[arg(long, env = "MESH_GENERATE", value_name = "N")]
    pub generate: Option<usize>,
    /// Seed for --generate.
    #[arg(long, env = "MESH_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Address to serve /metrics and /topology on.
    #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:4191")]
    pub listen: SocketAddr,
    /// Watch workloads and Linkerd policy on this Kubernetes API server and refuse the traffic
    /// policy denies, as the proxies would (403, gRPC PERMISSION_DENIED, `*_authz_deny_total`).
    #[arg(long, env = "MESH_KUBE_URL", value_name = "URL")]
    pub kube_url: Option<String>,
    /// Bearer token for --kube-url (it needs list and watch, as the collector's).
    #[arg(
        long,
        env = "MESH_KUBE_TOKEN",
        requires = "kube_url",
        hide_env_values = true
    )]
    pub kube_token: Option<String>,
    /// CA certificate (PEM) that signed the --kube-url server's certificate.
    #[arg(long, env = "MESH_KUBE_CA", requires = "kube_url", value_name = "FILE")]
    pub kube_ca: Option<PathBuf>,
    /// The Linkerd whose proxies to impersonate: 2.12 emits the legacy families only; 2.20 adds
    /// the route families (`outbound_http_route_*`, `outbound_grpc_route_*`).
    #[arg(
        long,
        env = "MESH_LINKERD_VERSION",
        default_value = "2.12",
        value_parser = clap::builder::PossibleValuesParser::new(crate::LinkerdVersion::NAMES)
            .map(|s: String| crate::LinkerdVersion::parse(&s).expect("a listed version"))
    )]
    pub linkerd_version: crate::LinkerdVersion,
}

impl Args {
    /// The topology the flags ask for.
    pub fn load_topology(&self) -> Result<Topology, TopologyError> {
        if let Some(path) = &self.topology {
            let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Invalid {
                field: path.display().to_string(),
                reason: e.to_string(),
            })?;
            return Topology::from_yaml(&text);
        }
        if let Some(name) = &self.builtin {
            return Ok(generate::builtin(name).expect("clap checked the name"));
        }
        generate::generate(self.generate.unwrap_or(0), self.seed)
    }
}

/// The router over a shared simulation.
pub fn router(sim: SharedSim) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/topology", get(get_topology).put(put_topology))
        .route("/authz", get(get_authz))
        .with_state(sim)
}

/// Serves `topology` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    topology: Topology,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sim = Arc::new(Mutex::new(Sim::new(topology, Instant::now())));
    serve_shared(listener, sim, shutdown).await
}

/// Serves `sim` (which the caller may also drive, e.g. with [`crate::authz::follow`]).
pub async fn serve_shared(
    listener: TcpListener,
    sim: SharedSim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// One line per edge: what the destination's proxy does with its traffic.
async fn get_authz(State(sim): State<SharedSim>) -> impl IntoResponse {
    let sim = sim.lock().await;
    let mut out = String::new();
    for (e, a) in sim.topology().edges.iter().zip(sim.authz()) {
        // The words the graph's POLICY column uses, so the two can be read side by side.
        let why = match a.decision {
            Decision::Unknown if !a.server[2].is_empty() => format!(
                "{}; traffic admitted, as simulated requests carry no path",
                a.undecided
            ),
            Decision::Unknown => format!("{}; traffic admitted", a.undecided),
            Decision::Denied => format!("{} {}", a.server[1], a.server[2]),
            _ => format!("{} {}", a.authz[1], a.authz[2]),
        };
        out.push_str(&format!(
            "{} -> {}:{} {} {} ({why})\n",
            e.from,
            e.to,
            e.port,
            e.protocol,
            a.decision.as_str()
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out)
}

async fn metrics(State(sim): State<SharedSim>) -> impl IntoResponse {
    let mut sim = sim.lock().await;
    sim.advance(Instant::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        sim.render(),
    )
}

async fn get_topology(State(sim): State<SharedSim>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        sim.lock().await.topology().to_yaml(),
    )
}

async fn put_topology(State(sim): State<SharedSim>, body: String) -> impl IntoResponse {
    match Topology::from_yaml(&body) {
        Ok(t) => {
            let summary = format!(
                "topology replaced: {} workloads, {} edges\n",
                t.workloads.len(),
                t.edges.len()
            );
            sim.lock().await.set_topology(t, Instant::now());
            (StatusCode::OK, summary)
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}
