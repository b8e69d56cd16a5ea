//! `mesh-mcp`'s command line and wiring: where the graph comes from (Redis/Valkey, or the
//! embedded collector on the in-process store), and the gRPC, HTTP and admin listeners.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mesh_model::MeshGraph;
use tokio::sync::watch;

use mesh_telemetry::RunError;

use crate::{Authenticator, GraphService, GraphWatch, TokenAuth};

/// Exit code for bad configuration.
pub const EXIT_USAGE: i32 = mesh_telemetry::EXIT_USAGE;

/// Command line; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mesh-mcp",
    version,
    about = "Serves the Linkerd mesh graph over gRPC and HTTP",
    mut_arg("redis_url", |a| a.help("Redis/Valkey URL where collectors publish and replicas share MCP plans (`redis://` or `rediss://`)")),
    mut_arg("prometheus_url", |a| a.help("linkerd-viz Prometheus, for the embedded collector and for policy proposals over a window of their own (ProposePolicy since)")),
    mut_arg("window", |a| a.help("Metrics window of the embedded collector")),
    mut_arg("interval", |a| a.help("How often the embedded collector rebuilds"))
)]
pub struct Args {
    /// The Redis/Valkey where collectors publish and replicas share MCP plans (required unless
    /// `--embedded-collector`).
    #[command(flatten)]
    pub store: mesh_store::StoreArgs,
    /// Run the collector in this process on the in-process store (no Redis).
    #[arg(long, env = "MESH_EMBEDDED_COLLECTOR", conflicts_with = "redis_url")]
    pub embedded_collector: bool,
    /// What the embedded collector reads, and how often.
    #[command(flatten)]
    pub collect: mesh_collector::run::CollectArgs,
    /// gRPC address.
    #[arg(long, env = "MESH_GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    pub grpc_listen: SocketAddr,
    /// HTTP address for `GET /v1/graph` (JSON).
    #[arg(long, env = "MESH_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The admin port.
    #[command(flatten)]
    pub admin: mesh_telemetry::AdminArgs,
    /// The Kubernetes API to watch, and to apply policy changes through.
    #[command(flatten)]
    pub kube: mesh_collector::KubeArgs,
    /// Static bearer tokens (kube-apiserver token file CSV).
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Accept unauthenticated requests (demos only).
    #[arg(long, env = "MESH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Also accept Kubernetes tokens (service accounts'), checked with `TokenReview` through
    /// the standard kube configuration.
    #[arg(long, env = "MESH_TOKEN_REVIEW")]
    pub token_review: bool,
    /// With --token-review, accept only tokens minted for this audience (projected service
    /// account tokens with `audience: AUD`), not tokens meant for the API server.
    #[arg(long, env = "MESH_TOKEN_AUDIENCE", requires = "token_review")]
    pub token_audience: Option<String>,
    /// A user that may act on behalf of others (`on_behalf_of`, `meshctl apply --as`), e.g. the
    /// chatbot's service account `system:serviceaccount:linkerd-mcp:chatbot`. Repeatable.
    #[arg(long, env = "MESH_DELEGATOR", value_delimiter = ',')]
    pub delegator: Vec<String>,
    /// A group a delegated identity may carry (never `system:*`). Repeatable.
    #[arg(long, env = "MESH_DELEGATE_GROUP", value_delimiter = ',')]
    pub delegate_group: Vec<String>,
    /// Seconds between watch heartbeats.
    #[arg(long, env = "MESH_HEARTBEAT", default_value = "15s", value_parser = mesh_prometheus::parse_window)]
    pub heartbeat: Duration,
    /// Accept OAuth 2.1 access tokens (JWTs) from this issuer (the MCP authorization spec).
    #[arg(long, env = "MESH_OAUTH_ISSUER", requires = "oauth_audience")]
    pub oauth_issuer: Option<String>,
    /// The audience tokens must carry: this server's MCP URL, e.g. `https://mcp.example.com/mcp`.
    #[arg(long, env = "MESH_OAUTH_AUDIENCE", requires = "oauth_issuer")]
    pub oauth_audience: Option<String>,
    /// The issuer's JWKS URL (default: from its `.well-known` metadata).
    #[arg(long, env = "MESH_OAUTH_JWKS_URL", requires = "oauth_issuer")]
    pub oauth_jwks_url: Option<String>,
    /// The token claim naming the user (the Kubernetes user changes are made as).
    #[arg(long, env = "MESH_OAUTH_USER_CLAIM", default_value = "sub")]
    pub oauth_user_claim: String,
    /// The token claim listing the user's groups.
    #[arg(long, env = "MESH_OAUTH_GROUPS_CLAIM", default_value = "groups")]
    pub oauth_groups_claim: String,
    /// Prefix for user names from tokens, as kube-apiserver's --oidc-username-prefix
    /// (default: the issuer and '#' unless the user claim is email; '-' for none).
    #[arg(long, env = "MESH_OAUTH_USERNAME_PREFIX")]
    pub oauth_username_prefix: Option<String>,
    /// Prefix for groups from tokens, as kube-apiserver's --oidc-groups-prefix (e.g. `oidc:`).
    #[arg(long, env = "MESH_OAUTH_GROUPS_PREFIX", default_value = "")]
    pub oauth_groups_prefix: String,
    /// The web console's OpenID Connect client id at --oauth-issuer: the console then offers
    /// sign-in there (authorization code with PKCE; register `<console URL>/ui/callback` as its
    /// redirect URI). Without it, the console signs in with a bearer token.
    #[arg(long, env = "MESH_UI_OIDC_CLIENT_ID", requires = "oauth_issuer")]
    pub ui_oidc_client_id: Option<String>,
    /// The console's external URL, e.g. `https://mcp.example.com` (the OIDC redirect URI is
    /// built on it); default: the scheme and `Host` each request arrives with.
    #[arg(long, env = "MESH_UI_URL")]
    pub ui_url: Option<String>,
    /// The approval policy (YAML): who must approve which policy changes, per namespace, and
    /// what agents may do. Checked whole at start (an error stops mesh-mcp) and reloaded when
    /// the file changes (a broken edit is logged and the last good policy stays). Without it,
    /// writes need no approval and approval requests cannot be approved.
    #[arg(long, env = "MESH_APPROVAL_POLICY")]
    pub approval_policy: Option<PathBuf>,
    /// Serve MCP without its mutation tools (plan_*, apply_plan).
    #[arg(long, env = "MESH_READ_ONLY")]
    pub read_only: bool,
    /// A `Host` the MCP endpoint answers to (DNS-rebinding protection; default: loopback
    /// names only). Repeatable; a name without port matches any port.
    #[arg(long, env = "MESH_MCP_ALLOWED_HOST", value_delimiter = ',')]
    pub mcp_allowed_host: Vec<String>,
    /// A browser `Origin` allowed to call the MCP endpoint (e.g. `https://app.example.com`;
    /// default: loopback pages only); requests from other origins are refused. Repeatable.
    #[arg(long, env = "MESH_MCP_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub mcp_allowed_origin: Vec<String>,
}

/// `mesh-mcp stdio`: a local MCP server (for desktop assistants) over a remote mcp service.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mesh-mcp stdio",
    version,
    about = "Serves MCP on stdin/stdout, answering from a remote mesh-mcp over gRPC"
)]
pub struct StdioArgs {
    /// The mcp service's gRPC address (`host:port` or `http://host:port`).
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token for it.
    #[arg(long, env = "MESH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Without the mutation tools.
    #[arg(long, env = "MESH_READ_ONLY")]
    pub read_only: bool,
}

/// Runs `mesh-mcp stdio` until the client closes stdin.
pub async fn run_stdio(args: StdioArgs) -> Result<(), RunError> {
    use rmcp::ServiceExt;
    let url = if args.server.contains("://") {
        args.server.clone()
    } else {
        format!("http://{}", args.server)
    };
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .map_err(|e| RunError::Usage(format!("--server {}: {e}", args.server)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect_lazy();
    let backend = crate::agent::Backend::Remote {
        client: mesh_proto::pb::mesh_service_client::MeshServiceClient::new(channel),
        token: args.token,
    };
    let server = crate::agent::MeshAgent::new(backend, args.read_only)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| RunError::Failed(format!("MCP over stdio: {e}")))?;
    server
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| RunError::Failed(format!("MCP over stdio: {e}")))
}

/// Checks the configuration and runs until Ctrl-C or SIGTERM. Errors are `(exit code, line)`.
pub async fn run(args: Args) -> Result<(), RunError> {
    let usage = RunError::Usage;
    let configured = args.token_file.is_some() || args.token_review || args.oauth_issuer.is_some();
    let auth = match (configured, args.insecure_no_auth) {
        (true, true) => {
            return Err(usage(
                "--token-file/--token-review/--oauth-issuer and --insecure-no-auth exclude each other"
                    .into(),
            ));
        }
        (false, false) => {
            return Err(usage(
                "set --token-file, --token-review or --oauth-issuer, or --insecure-no-auth for a demo"
                    .into(),
            ));
        }
        (true, false) => {
            let tokens = match &args.token_file {
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| usage(format!("--token-file {}: {e}", f.display())))?;
                    TokenAuth::parse(&text).map_err(usage)?
                }
                None => TokenAuth::default(),
            };
            let review = if args.token_review {
                Some(kube::Client::try_default().await.map_err(|e| {
                    usage(format!(
                        "--token-review needs a Kubernetes configuration (KUBECONFIG or in-cluster): {e}"
                    ))
                })?)
            } else {
                None
            };
            let mut a = Authenticator::new(tokens, review, args.token_audience.clone());
            if let (Some(issuer), Some(audience)) = (&args.oauth_issuer, &args.oauth_audience) {
                let v = crate::oauth::JwtVerifier::new(crate::oauth::OAuthConfig {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks_url: args.oauth_jwks_url.clone(),
                    user_claim: args.oauth_user_claim.clone(),
                    groups_claim: args.oauth_groups_claim.clone(),
                    username_prefix: args
                        .oauth_username_prefix
                        .clone()
                        .map(|p| if p == "-" { String::new() } else { p }),
                    groups_prefix: args.oauth_groups_prefix.clone(),
                })
                .map_err(usage)?;
                a = a.with_oauth(v);
            }
            Some(a)
        }
        (false, true) => {
            tracing::warn!(
                "--insecure-no-auth: every request is accepted without a token; never do this outside a demo"
            );
            None
        }
    };
    let (tx, rx) = watch::channel::<Option<Arc<MeshGraph>>>(None);
    let history = crate::History::default();
    // One Kubernetes view for the embedded collector and for what-if answers.
    let kube_config = args.kube.config().await.map_err(usage)?;
    let cluster = mesh_collector::cluster_from(&kube_config);
    let mut registry = prometheus_client::registry::Registry::default();
    let collector_metrics = mesh_collector::run::Metrics::default();
    let mut plans = crate::agent::Plans::memory();
    let changes;
    if args.embedded_collector {
        let source = args.collect.source("--embedded-collector").map_err(usage)?;
        let store = mesh_store::MemoryStore::new(1000);
        let sources = mesh_collector::run::Sources {
            prometheus: source,
            kubernetes: cluster.clone(),
            history: args.collect.history(),
        };
        collector_metrics.register(&mut registry);
        tokio::spawn(mesh_collector::run::run(
            sources,
            store.clone(),
            args.collect.interval,
            collector_metrics,
            std::future::pending(),
        ));
        changes = mesh_store::Backend::Memory(Arc::new(store.clone()));
        tokio::spawn(crate::follow(store, tx, history.clone()));
    } else {
        let store = args
            .store
            .redis("", 10_000, Duration::from_secs(2))
            .map_err(usage)?
            .ok_or_else(|| usage("set --redis-url, or --embedded-collector".into()))?;
        let store = Arc::new(store);
        // Replicas share MCP plans through the store, so any of them can apply one.
        plans = crate::agent::Plans::Redis(store.clone());
        changes = mesh_store::Backend::Redis(store.clone());
        tokio::spawn(crate::follow(store, tx, history.clone()));
    }

    // One service for gRPC and HTTP, so both share its filtered-view cache.
    let delegation = crate::apply::Delegation {
        delegators: args.delegator.clone(),
        allowed_groups: args.delegate_group.clone(),
    };
    if let Some(bad) = delegation
        .allowed_groups
        .iter()
        .find(|g| g.starts_with("system:"))
    {
        return Err(usage(format!(
            "--delegate-group {bad}: system groups can never be delegated"
        )));
    }
    let approval_policy = match &args.approval_policy {
        Some(path) => mesh_telemetry::watch_file(
            "approval policy",
            path.clone(),
            Duration::from_secs(2),
            |p: &std::path::Path| {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("--approval-policy {}: {e}", p.display()))?;
                mesh_policy::approval::ApprovalPolicy::parse(&text)
                    .map_err(|e| format!("--approval-policy {}: {e}", p.display()))
            },
        )
        .map_err(usage)?,
        None => watch::channel(Arc::new(mesh_policy::approval::ApprovalPolicy::default())).1,
    };
    let applier = kube_config
        .and_then(|c| crate::apply::Applier::new(c, delegation, cluster.clone(), rx.clone()))
        .map(|a| a.with_approval_policy(approval_policy, Arc::new(mesh_model::SystemClock)));
    if let Ok(a) = &applier {
        a.register_metrics(&mut registry);
    }
    let service = GraphService::new(rx.clone(), history, args.heartbeat)
        .with_applier(applier)
        .with_prometheus(args.collect.prometheus_url.clone())
        .with_records(plans.clone())
        .with_history(changes);
    let routes = crate::grpc_routes(service.clone(), auth.clone()).await;
    let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .map_err(|e| usage(format!("--grpc-listen {}: {e}", args.grpc_listen)))?;
    tracing::info!(addr = %args.grpc_listen, "serving gRPC");
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(async move {
        tonic::transport::Server::builder()
            // Dead peers are found, and idle watches kept alive through proxies.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_routes(routes)
            .serve_with_incoming(crate::incoming(grpc))
            .await
            .map_err(|e| e.to_string())
    });
    if let Some(addr) = args.http_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| usage(format!("--http-listen {addr}: {e}")))?;
        let app =
            crate::http::routes(&args, service.clone(), auth.clone(), plans).map_err(usage)?;
        servers.spawn(async move {
            mesh_telemetry::serve::serve_http(
                l,
                app,
                mesh_telemetry::serve::ConnLimits::DEFAULT,
                std::future::pending(),
            )
            .await;
            Ok(())
        });
    }
    if let Some(addr) = args.admin.admin_listen {
        register_graph_metrics(&mut registry, rx.clone());
        let graph = rx.clone();
        let ready: mesh_telemetry::Readiness = Arc::new(move || {
            if graph.borrow().is_some() {
                Ok(())
            } else {
                Err("no graph yet".into())
            }
        });
        let router = mesh_telemetry::admin_router(Arc::new(registry), ready);
        let admin = mesh_telemetry::serve_admin(addr, router)
            .await
            .map_err(usage)?;
        servers.spawn(async move { admin.await.map_err(|e| e.to_string()) });
    }
    tokio::select! {
        () = mesh_telemetry::shutdown_signal() => Ok(()),
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RunError::Failed(format!("server stopped: {e}"))),
            Err(e) => Err(RunError::Failed(format!("server task failed: {e}"))),
        },
    }
}

/// Gauges of the graph being served, read when scraped.
fn register_graph_metrics(r: &mut prometheus_client::registry::Registry, graph: GraphWatch) {
    use prometheus_client::metrics::gauge::Gauge;
    let (version, edges, workloads) = (
        Gauge::<i64>::default(),
        Gauge::<i64>::default(),
        Gauge::<i64>::default(),
    );
    let r = r.sub_registry_with_prefix("mesh_mcp");
    r.register(
        "graph_version",
        "Version of the graph being served",
        version.clone(),
    );
    r.register(
        "graph_edges",
        "Edges in the graph being served",
        edges.clone(),
    );
    r.register(
        "graph_workloads",
        "Workloads in the graph being served",
        workloads.clone(),
    );
    let mut graph = graph;
    tokio::spawn(async move {
        loop {
            if let Some(g) = graph.borrow_and_update().clone() {
                version.set(i64::try_from(g.version).unwrap_or(i64::MAX));
                edges.set(i64::try_from(g.edges.len()).unwrap_or(i64::MAX));
                workloads.set(i64::try_from(g.workloads.len()).unwrap_or(i64::MAX));
            }
            if graph.changed().await.is_err() {
                return;
            }
        }
    });
}
