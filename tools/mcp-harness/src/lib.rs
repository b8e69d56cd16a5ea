//! The mcp service as tests and benchmarks need it: kube-sim seeded with the demo cluster
//! (emojivoto, booksapp, their policy and linkerd-mcp's RBAC) and any further seeds, a meshsim
//! topology's graph joined with that cluster and published to an in-process store, and the real
//! `MeshService` (reads, explain, the apply pipeline) on a loopback port. Stops when dropped.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use kube_sim::KubeSim;
use mesh_collector::{Publisher, changes::ChangeLog};
use mesh_mcp::apply::{Applier, Delegation};
use mesh_model::MetricTolerance;
use mesh_policy::cluster::Cluster;
use mesh_store::{GraphStore, MemoryStore, Retention};
use tokio::sync::{Mutex, oneshot, watch};

/// How to start one.
#[derive(Clone, Debug)]
pub struct Options {
    /// kube-sim's token file; it must hold `mcp-token` for mesh-mcp's own identity.
    pub kube_tokens: String,
    /// Seed directories after the demo cluster's (relative to the workspace root).
    pub extra_seeds: Vec<&'static str>,
    /// The traffic.
    pub topology: meshsim::Topology,
    /// Who may act for others, with which groups.
    pub delegation: Delegation,
    /// mesh-mcp's static token file.
    pub mcp_tokens: String,
    /// How often an idle watch gets a heartbeat.
    pub heartbeat: Duration,
    /// Adjusts the apply pipeline (its test hooks); `|a| a` for none.
    pub tweak: fn(Applier) -> Applier,
    /// linkerd-viz's Prometheus, for graphs of past moments and diffs (the cluster's changes
    /// are logged as a collector logs them either way).
    pub prometheus_url: Option<String>,
}

/// A running mcp service and the cluster behind it.
pub struct McpHarness {
    /// The Kubernetes API (request log, objects).
    pub kube: KubeSim,
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The MCP endpoint (streamable HTTP), e.g. `http://127.0.0.1:PORT/mcp`.
    pub mcp_url: String,
    /// The same HTTP server's base URL (`http://127.0.0.1:<port>`): the console is at `/ui/`.
    pub http_base: String,
    /// Stops the MCP endpoint when the harness drops.
    _mcp_stop: oneshot::Sender<()>,
    /// The apply pipeline behind it (its metrics, for tests), if it could be made.
    pub applier: Option<Applier>,
    publisher: Mutex<Publisher<Arc<MemoryStore>>>,
    cluster: watch::Receiver<Arc<Cluster>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for McpHarness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Logs every change of the cluster to the change log, as the leading collector does.
fn log_changes(mut log: ChangeLog<Arc<MemoryStore>>, mut cluster: watch::Receiver<Arc<Cluster>>) {
    tokio::spawn(async move {
        loop {
            let now = cluster.borrow_and_update().clone();
            if let Err(e) = log.record(&now).await {
                tracing::warn!(error = %e, "could not log the cluster's changes");
            }
            if cluster.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl McpHarness {
    /// Starts kube-sim, waits for the collector's view of it, publishes the topology's graph
    /// and serves the mcp service. Panics on failure: it is for tests and benchmarks.
    pub async fn start(o: Options) -> Self {
        let mut seed_dirs = vec![root().join("tools/kube-sim/seed/demo")];
        seed_dirs.extend(o.extra_seeds.iter().map(|d| root().join(d)));
        let kube = KubeSim::start(kube_sim::Config {
            tokens: o.kube_tokens,
            seed_dirs,
            with_linkerd_crds: true,
            ..kube_sim::Config::default()
        })
        .await
        .expect("kube-sim starts");
        let config = kube.kube_config("mcp-token");
        let client = kube::Client::try_from(config.clone()).expect("a kube client");
        let mut cluster = mesh_collector::watch::spawn(&client);
        tokio::time::timeout(Duration::from_secs(20), cluster.wait_for(|c| c.health.ok))
            .await
            .expect("the cluster is indexed within 20 s")
            .expect("the cluster watch runs");
        let store = Arc::new(MemoryStore::new(100));
        // The harness leads for as long as it runs, as the one collector would.
        let lease = store
            .acquire("mcp-harness", Duration::from_secs(86_400), 0)
            .await
            .expect("an in-process store")
            .expect("a free lease");
        let publisher = Publisher::lead(store.clone(), &lease, MetricTolerance::default());
        log_changes(
            ChangeLog::lead(store.clone(), &lease, Retention::default()),
            cluster.clone(),
        );
        let (tx, mut rx) = watch::channel(None);
        let history = mesh_mcp::History::default();
        tokio::spawn(mesh_mcp::follow(store.clone(), tx, history.clone()));
        let applier = Applier::new(config, o.delegation, cluster.clone(), rx.clone()).map(o.tweak);
        let kept = applier.as_ref().ok().cloned();
        let service = mesh_mcp::GraphService::new(rx.clone(), history, o.heartbeat)
            .with_applier(applier)
            .with_prometheus(o.prometheus_url.clone())
            .with_history(mesh_store::Backend::Memory(store));
        let auth: mesh_mcp::Authenticator = mesh_mcp::TokenAuth::parse(&o.mcp_tokens)
            .expect("a token file")
            .into();
        // MCP over streamable HTTP, for real MCP clients (agents), behind the same tokens.
        let mcp = mesh_mcp::mcp_routes(
            service.clone(),
            Some(auth.clone()),
            mesh_mcp::agent::Plans::memory(),
            false,
            &[],
            &[],
        )
        // The web console on the same port, signing in with the same tokens.
        .merge(mesh_mcp::console_routes(
            service.clone(),
            Some(auth.clone()),
        ));
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let http_base = format!("http://{}", ml.local_addr().expect("its address"));
        let mcp_url = format!("{http_base}/mcp");
        let (mcp_stop, mcp_stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(ml, mcp)
                .with_graceful_shutdown(async {
                    let _ = mcp_stopped.await;
                })
                .await;
        });
        let routes = mesh_mcp::grpc_routes(service, Some(auth)).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = l.local_addr().expect("its address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(mesh_mcp::incoming(l), async {
                    let _ = stopped.await;
                })
                .await;
        });
        let h = Self {
            kube,
            addr,
            mcp_url,
            http_base,
            _mcp_stop: mcp_stop,
            applier: kept,
            publisher: Mutex::new(publisher),
            cluster,
            stop: Some(stop),
        };
        h.publish(&o.topology).await;
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
            .await
            .expect("the graph is served within 10 s")
            .expect("the follower runs");
        h
    }

    /// The cluster as the service sees it, as it changes (for simulators that follow it).
    pub fn cluster_watch(&self) -> watch::Receiver<Arc<Cluster>> {
        self.cluster.clone()
    }

    /// Publishes the graph of `t` joined with the cluster as it is now; returns the version
    /// readers hold afterwards (unchanged when nothing they see changed).
    pub async fn publish(&self, t: &meshsim::Topology) -> u64 {
        // As Linkerd 2.20's proxies report it: with each edge's routes.
        let base = meshsim::graph_as(
            t,
            Duration::from_secs(60),
            SystemTime::now(),
            meshsim::LinkerdVersion::V2_20,
        );
        let c = self.cluster.borrow().clone();
        let join = |authz: &[mesh_policy::overlay::AuthzSample]| {
            mesh_collector::run::join(
                &base,
                authz,
                &c,
                &mut mesh_policy::overlay::Verdicts::default(),
                SystemTime::now(),
            )
        };
        // What the simulated proxies count for the policy in force (meshsim's proxies decide
        // with the same evaluation): allowed, allowed only by audit mode, or denied, per
        // client identity, over the 60 s window.
        let reported: Vec<mesh_policy::overlay::AuthzSample> = join(&[])
            .edges
            .values()
            .filter_map(|e| {
                let mesh_model::Destination::Workload(dst) = &e.key.dst else {
                    return None;
                };
                let d = e.policy.decision;
                Some(mesh_policy::overlay::AuthzSample {
                    dst: dst.clone(),
                    client_id: e.client_identity.clone(),
                    tcp: e.key.protocol == mesh_model::Protocol::Tcp,
                    allowed: d != mesh_model::Decision::Denied,
                    audit: d == mesh_model::Decision::Audit,
                    count: e.metrics.rps * 60.0,
                })
            })
            .collect();
        let graph = join(&reported);
        let mut publisher = self.publisher.lock().await;
        let published = publisher
            .publish(graph)
            .await
            .expect("publish to the in-process store");
        published
            .or_else(|| publisher.published().map(|g| g.version))
            .unwrap_or_default()
    }
}
