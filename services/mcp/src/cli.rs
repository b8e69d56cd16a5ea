//! `mesh-mcp`'s command line and wiring: where the graph comes from (Redis/Valkey, or the
//! embedded collector on the in-process store), and the gRPC, HTTP and admin listeners.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use mesh_model::MeshGraph;
use tokio::sync::watch;

use crate::{GraphService, GraphWatch, TokenAuth};

/// Exit code for bad configuration.
pub const EXIT_USAGE: i32 = mesh_telemetry::EXIT_USAGE;

/// Command line; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mesh-mcp",
    version,
    about = "Serves the Linkerd mesh graph over gRPC and HTTP"
)]
pub struct Args {
    /// Redis/Valkey URL where collectors publish (`redis://` or `rediss://`).
    #[arg(long, env = "MESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix in Redis.
    #[arg(long, env = "MESH_KEY_PREFIX", default_value = "mesh:")]
    pub key_prefix: String,
    /// Run the collector in this process on the in-process store (no Redis).
    #[arg(long, env = "MESH_EMBEDDED_COLLECTOR", conflicts_with = "redis_url")]
    pub embedded_collector: bool,
    /// linkerd-viz Prometheus, for the embedded collector.
    #[arg(long, env = "MESH_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Metrics window of the embedded collector.
    #[arg(long, env = "MESH_WINDOW", default_value = "1m", value_parser = mesh_collector::parse_window)]
    pub window: Duration,
    /// How often the embedded collector rebuilds.
    #[arg(long, env = "MESH_INTERVAL", default_value = "10s", value_parser = mesh_collector::parse_window)]
    pub interval: Duration,
    /// gRPC address.
    #[arg(long, env = "MESH_GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    pub grpc_listen: SocketAddr,
    /// HTTP address for `GET /v1/graph` (JSON).
    #[arg(long, env = "MESH_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Admin address for `/live`, `/ready`, `/metrics`.
    #[arg(long, env = "MESH_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Static bearer tokens (kube-apiserver token file CSV).
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Accept unauthenticated requests (demos only).
    #[arg(long, env = "MESH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Seconds between watch heartbeats.
    #[arg(long, env = "MESH_HEARTBEAT", default_value = "15s", value_parser = mesh_collector::parse_window)]
    pub heartbeat: Duration,
}

/// Checks the configuration and runs until Ctrl-C or SIGTERM. Errors are `(exit code, line)`.
pub async fn run(args: Args) -> Result<(), (i32, String)> {
    let usage = |m: String| (EXIT_USAGE, m);
    let auth = match (&args.token_file, args.insecure_no_auth) {
        (Some(_), true) => {
            return Err(usage(
                "--token-file and --insecure-no-auth exclude each other".into(),
            ));
        }
        (None, false) => {
            return Err(usage(
                "set --token-file, or --insecure-no-auth for a demo".into(),
            ));
        }
        (Some(f), false) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| usage(format!("--token-file {}: {e}", f.display())))?;
            Some(TokenAuth::parse(&text).map_err(usage)?)
        }
        (None, true) => {
            tracing::warn!(
                "--insecure-no-auth: every request is accepted without a token; never do this outside a demo"
            );
            None
        }
    };
    let (tx, rx) = watch::channel::<Option<Arc<MeshGraph>>>(None);
    if args.embedded_collector {
        let url = args
            .prometheus_url
            .clone()
            .ok_or_else(|| usage("--embedded-collector needs --prometheus-url".into()))?;
        let source =
            mesh_collector::PrometheusSource::new(&url, args.window, Duration::from_secs(10))
                .map_err(|e| usage(e.to_string()))?;
        let store = mesh_store::MemoryStore::new(1000);
        tokio::spawn(mesh_collector::run::run(
            source,
            store.clone(),
            args.interval,
            std::future::pending(),
        ));
        tokio::spawn(crate::follow(store, tx));
    } else {
        let url = args
            .redis_url
            .clone()
            .ok_or_else(|| usage("set --redis-url, or --embedded-collector".into()))?;
        let store =
            mesh_store::RedisStore::new(&url, &args.key_prefix, 10_000, Duration::from_secs(2))
                .map_err(|e| usage(e.to_string()))?;
        tokio::spawn(crate::follow(Arc::new(store), tx));
    }

    // One service for gRPC and HTTP, so both share its filtered-view cache.
    let service = GraphService::new(rx.clone(), args.heartbeat);
    let routes = crate::grpc_routes(service.clone(), auth.clone()).await;
    let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .map_err(|e| usage(format!("--grpc-listen {}: {e}", args.grpc_listen)))?;
    tracing::info!(addr = %args.grpc_listen, "serving gRPC");
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(crate::incoming(grpc))
            .await
            .map_err(|e| e.to_string())
    });
    if let Some(addr) = args.http_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| usage(format!("--http-listen {addr}: {e}")))?;
        let app = Router::new()
            .route("/v1/graph", get(http_graph))
            .with_state((service.clone(), auth.clone()));
        servers.spawn(async move { axum::serve(l, app).await.map_err(|e| e.to_string()) });
    }
    if let Some(addr) = args.admin_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| usage(format!("--admin-listen {addr}: {e}")))?;
        let app = Router::new()
            .route("/live", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(rx.clone());
        servers.spawn(async move { axum::serve(l, app).await.map_err(|e| e.to_string()) });
    }
    tokio::select! {
        () = mesh_telemetry::shutdown_signal() => Ok(()),
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((1, format!("server stopped: {e}"))),
            Err(e) => Err((1, format!("server task failed: {e}"))),
        },
    }
}

#[derive(serde::Deserialize, Default)]
struct GraphQuery {
    namespaces: Option<String>,
    workload: Option<String>,
    tls: Option<String>,
    min_rps: Option<f64>,
    include_policies: Option<bool>,
}

async fn http_graph(
    State((svc, auth)): State<(GraphService, Option<TokenAuth>)>,
    headers: HeaderMap,
    Query(q): Query<GraphQuery>,
) -> axum::response::Response {
    if let Some(a) = auth {
        let mut req = tonic::Request::new(());
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Ok(m) = v.parse()
        {
            req.metadata_mut().insert("authorization", m);
        }
        if let Err(s) = a.check(req) {
            return (StatusCode::UNAUTHORIZED, format!("{}\n", s.message())).into_response();
        }
    }
    let tls = match q.tls.as_deref() {
        None | Some("") => 0,
        Some(t) => match mesh_proto::pb::TlsStatus::from_str_name(&t.to_ascii_uppercase()) {
            Some(v) => v as i32,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("tls: {t:?} is not MTLS, PLAINTEXT or UNKNOWN\n"),
                )
                    .into_response();
            }
        },
    };
    let req = mesh_proto::pb::GetMeshGraphRequest {
        namespaces: q
            .namespaces
            .map(|n| n.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        workload: q.workload.unwrap_or_default(),
        tls,
        min_rps: q.min_rps.unwrap_or(0.0),
        include_policies: q.include_policies.unwrap_or(false),
    };
    match mesh_proto::pb::mesh_service_server::MeshService::get_mesh_graph(
        &svc,
        tonic::Request::new(req),
    )
    .await
    {
        Ok(g) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&g.into_inner()).unwrap_or_default(),
        )
            .into_response(),
        Err(s) => {
            let code = match s.code() {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, format!("{}\n", s.message())).into_response()
        }
    }
}

async fn ready(State(graph): State<GraphWatch>) -> impl IntoResponse {
    if graph.borrow().is_some() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no graph yet\n")
    }
}

async fn metrics(State(graph): State<GraphWatch>) -> impl IntoResponse {
    let g = graph.borrow().clone();
    let (version, edges, workloads) =
        g.map_or((0, 0, 0), |g| (g.version, g.edges.len(), g.workloads.len()));
    format!(
        "# HELP mesh_mcp_graph_version Version of the graph being served.\n# TYPE mesh_mcp_graph_version gauge\nmesh_mcp_graph_version {version}\n\
         # HELP mesh_mcp_graph_edges Edges in the graph being served.\n# TYPE mesh_mcp_graph_edges gauge\nmesh_mcp_graph_edges {edges}\n\
         # HELP mesh_mcp_graph_workloads Workloads in the graph being served.\n# TYPE mesh_mcp_graph_workloads gauge\nmesh_mcp_graph_workloads {workloads}\n"
    )
}
