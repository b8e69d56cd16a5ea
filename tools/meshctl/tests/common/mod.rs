//! An in-process mesh-mcp over a kube-sim: the cluster watched as mesh-mcp's service account,
//! a simulated mesh's graph joined with it and published, gRPC on a loopback port.

use std::{sync::Arc, time::Duration};

use mesh_model::MetricTolerance;
use mesh_store::MemoryStore;

/// kube-sim with the Linkerd CRDs, emojivoto without its policy and the RBAC that lets
/// mesh-mcp's identity watch it; `tokens` must hold `mcp-token`.
#[allow(dead_code, reason = "each test file uses part of the common setup")]
pub(crate) async fn emojivoto_without_policy(tokens: &str) -> kube_sim::KubeSim {
    let seed =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/kube-sim/seed/demo");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: tokens.into(),
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    for f in ["emojivoto.yaml", "linkerd-mcp-rbac.yaml"] {
        kube.load_yaml(&std::fs::read_to_string(seed.join(f)).unwrap())
            .await
            .unwrap();
    }
    kube
}

/// Serves `topology`'s graph, as `version`'s proxies report it, joined with `kube` (watched with
/// `mcp-token`, which the seeded RBAC must let list and watch), to callers holding the tokens of
/// `auth_csv`. Returns the gRPC address.
#[allow(dead_code, reason = "each test file uses part of the common setup")]
pub(crate) async fn serve_mcp(
    kube: &kube_sim::KubeSim,
    topology: &meshsim::Topology,
    version: meshsim::LinkerdVersion,
    auth_csv: &str,
) -> String {
    let cfg = kube.kube_config("mcp-token");
    let mut cluster = mesh_collector::watch::spawn(&kube::Client::try_from(cfg.clone()).unwrap());
    let ready = tokio::time::timeout(Duration::from_secs(30), cluster.wait_for(|c| c.health.ok))
        .await
        .map(|r| r.map(|c| c.clone()));
    let Ok(Ok(c)) = ready else {
        panic!("no cluster view in 30 s: {:?}", cluster.borrow().health)
    };
    let graph = mesh_collector::run::join(
        &meshsim::graph_as(
            topology,
            Duration::from_secs(60),
            std::time::SystemTime::now(),
            version,
        ),
        &[],
        &c,
        &mut mesh_policy::overlay::Verdicts::default(),
        std::time::SystemTime::now(),
    );
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = mesh_collector::Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .unwrap();
    publisher.publish(graph).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let history = mesh_mcp::History::default();
    tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    rx.clone().wait_for(Option::is_some).await.unwrap();
    let applier = mesh_mcp::apply::Applier::new(
        cfg,
        mesh_mcp::apply::Delegation::default(),
        cluster,
        rx.clone(),
    );
    let service =
        mesh_mcp::GraphService::new(rx, history, Duration::from_secs(30)).with_applier(applier);
    let auth = mesh_mcp::TokenAuth::parse(auth_csv).unwrap();
    let routes = mesh_mcp::grpc_routes(service, Some(auth.into())).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(mesh_mcp::incoming(l)),
    );
    addr
}

/// Runs the meshctl binary: exit code, stdout, stderr.
#[allow(dead_code, reason = "each test file uses part of the common setup")]
pub(crate) fn meshctl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
