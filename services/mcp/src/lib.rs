//! mesh-mcp: serves the mesh graph. It holds no state of its own beyond an in-memory copy of the
//! published graph, kept current by [`Follower`] from the store, so any replica answers reads
//! without a store round trip per request.

pub mod agent;
pub mod apply;
mod approvals;
mod auth;
pub mod cli;
mod console;
mod follower;
mod http;
pub mod oauth;
mod past;
pub mod rollout;
mod service;
pub mod spec;

use std::{sync::Arc, time::Duration};

use mesh_model::MeshGraph;
use mesh_store::GraphStore;
use tokio::sync::watch;

pub use self::{
    auth::{AGENT_HEADER, Authenticator, Caller, TokenAuth, agent_name},
    follower::{Follower, FollowerError, Step},
    service::{GraphService, GraphView, GraphWatch, History},
};

/// Follows the store forever, publishing each new copy of the graph on `tx` and the deltas
/// that led to it in `history`. Store errors are logged and retried with backoff (capped at
/// 5 s); the last good graph keeps being served, with a `store` source in `history` saying it
/// may be stale and since when, until the store answers again.
pub async fn follow<S: GraphStore>(
    store: S,
    tx: watch::Sender<Option<Arc<MeshGraph>>>,
    history: History,
) {
    let mut follower = Follower::new(store);
    let mut backoff = Duration::from_millis(100);
    let mut last_success = None;
    loop {
        let result = follower.step(Duration::from_secs(1)).await;
        if result.is_ok() {
            last_success = Some(std::time::SystemTime::now());
            history.store_up();
        }
        match result {
            Ok(Step::Idle) => {}
            Ok(step) => {
                // Recorded before the graph is sent, so history always reaches the served version.
                match step {
                    Step::Applied(deltas) => {
                        let items = follower.graph().map_or(0, MeshGraph::items);
                        history.record(deltas, items).await;
                    }
                    _ => history.reset().await,
                }
                backoff = Duration::from_millis(100);
                if let Some(g) = follower.graph() {
                    tx.send_replace(Some(Arc::new(g.clone())));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "following the store failed");
                history.store_down(mesh_model::SourceHealth {
                    source: "store".into(),
                    ok: false,
                    last_success,
                    error: format!("serving the last graph read from the store: {e}"),
                    detail: String::new(),
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if tx.is_closed() {
            break;
        }
    }
}

/// Accepted gRPC connections under [`mesh_telemetry::serve::ConnLimits::DEFAULT`]: at most so
/// many open (more are closed on arrival), and each must send its first bytes within the
/// header deadline, so silent clients cannot hold the server before authentication. With
/// `TCP_NODELAY`: without it small responses wait for delayed ACKs (about 40 ms per request on
/// loopback).
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = Result<GuardedConn, std::io::Error>> + Send + 'static {
    incoming_with(listener, mesh_telemetry::serve::ConnLimits::DEFAULT)
}

/// [`incoming`] with other limits (tests use short deadlines).
pub fn incoming_with(
    listener: tokio::net::TcpListener,
    limits: mesh_telemetry::serve::ConnLimits,
) -> impl futures_util::Stream<Item = Result<GuardedConn, std::io::Error>> + Send + 'static {
    let (admitted, _) = mesh_telemetry::serve::admit(listener, limits);
    futures_util::stream::unfold(admitted, |mut rx| async move {
        rx.recv().await.map(|c| (Ok(GuardedConn(c)), rx))
    })
}

/// An accepted gRPC connection holding its place under the connection limit.
#[derive(Debug)]
pub struct GuardedConn(mesh_telemetry::serve::Admitted);

impl tokio::io::AsyncRead for GuardedConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for GuardedConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for GuardedConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.stream.connect_info()
    }
}

/// An HTTP listener setting `TCP_NODELAY` on every accepted connection, for the same reason
/// as [`incoming`] (without it every MCP call waits about 40 ms on loopback).
pub fn http_incoming(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|s| {
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// The web console (`/ui/`) over `service` behind `auth`, signing in with bearer tokens over
/// plain HTTP: for servers built in process (the test and benchmark harness); mesh-mcp's own
/// HTTP port serves it as its flags say.
pub fn console_routes(service: GraphService, auth: Option<Authenticator>) -> axum::Router {
    console::routes(service, auth, console::Options::plain())
}

/// `/mcp` (the Model Context Protocol over streamable HTTP) over `service`, behind `auth` as
/// the gRPC service is: the route `mesh-mcp run --http-listen` serves, for embedding.
pub fn mcp_routes(
    service: GraphService,
    auth: Option<Authenticator>,
    plans: agent::Plans,
    read_only: bool,
    allowed_hosts: &[String],
    allowed_origins: &[String],
) -> axum::Router {
    http::protected_mcp(
        service,
        auth,
        plans,
        read_only,
        allowed_hosts,
        allowed_origins,
    )
}

/// The gRPC routes: `MeshService` (behind `auth`, when given), health and reflection (open, as
/// probes and tooling expect).
pub async fn grpc_routes(
    service: GraphService,
    auth: Option<Authenticator>,
) -> tonic::service::Routes {
    // Both reflection versions: grpcurl speaks v1, while Python's grpcio-reflection and
    // grpc_cli still ask v1alpha, and would otherwise see no services.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mesh_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the API's descriptor set is valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the API's descriptor set is valid");
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reporter = health_reporter.clone();
    tokio::spawn(async move {
        reporter
            .set_serving::<mesh_proto::server::mesh_service_server::MeshServiceServer<GraphService>>()
            .await;
    });
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(mesh_proto::server::mesh_service_server::MeshServiceServer::new(service));
    match auth {
        // An axum middleware, not a tonic interceptor: TokenReview is async. It guards
        // MeshService only; health and reflection stay open.
        Some(a) => tonic::service::Routes::from(
            routes
                .into_axum_router()
                .layer(axum::middleware::from_fn_with_state(a, auth::middleware)),
        ),
        None => routes,
    }
}
