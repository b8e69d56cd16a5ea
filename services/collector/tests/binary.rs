//! The `mesh-collector` binary: meshsim -> real Prometheus -> mesh-collector -> real Redis.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{process::Command, time::Duration};

use mesh_store::GraphStore;
use mesh_testkit::{ChildGuard, Prometheus, Redis, poll};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_publishes_the_graph_to_redis() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(meshsim::serve(
        l,
        meshsim::builtin("emojivoto").unwrap(),
        async {
            let _ = stopped.await;
        },
    ));
    let prom = Prometheus::start(&[addr]).await;
    let redis = Redis::start().await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n".into(),
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The standard kube configuration, as `kube::Client::try_default` reads it.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("collector-token")).unwrap();
    let admin = mesh_testkit::free_port();
    let _collector = ChildGuard::spawn(
        "mesh-collector",
        Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
            .args([
                "--prometheus-url",
                &prom.url,
                "--redis-url",
                &redis.url,
                "--window",
                "10s",
                "--interval",
                "1s",
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
            ])
            .env("KUBECONFIG", &kubeconfig),
        &dir.path().join("collector.log"),
    );
    let store =
        mesh_store::RedisStore::new(&redis.url, "mesh:", 100, Duration::from_secs(2)).unwrap();
    let graph = poll(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let snap = store.load().await.ok()??;
            let g = mesh_proto::pb::MeshGraph::decode(snap.graph.as_slice()).ok()?;
            let verdicts = g.edges.iter().all(|e| {
                e.policy.as_ref().is_some_and(|p| {
                    p.decision == mesh_proto::pb::policy_verdict::Decision::Allowed as i32
                })
            });
            (g.edges.len() == 3 && verdicts).then_some((snap, g))
        },
    )
    .await;
    let (snap, g) = graph.unwrap_or_else(|| {
        panic!(
            "no graph in Redis: {}",
            std::fs::read_to_string(dir.path().join("collector.log")).unwrap_or_default()
        )
    });
    assert_eq!((snap.epoch, g.epoch), (1, 1));
    assert!(g.sources[0].ok);
    assert_eq!(g.sources[1].source, "kubernetes");
    assert!(g.sources[1].ok, "{}", g.sources[1].error);

    // Its own metrics and readiness on the admin port.
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let r = http
            .get(format!("http://127.0.0.1:{admin}{path}"))
            .timeout(Duration::from_secs(5))
            .send();
        async move { r.await.unwrap() }
    };
    assert_eq!(get("/ready").await.status(), 200);
    let metrics = get("/metrics").await.text().await.unwrap();
    for want in [
        "mesh_collector_builds_total ",
        "mesh_collector_build_duration_seconds_count ",
        "mesh_collector_publish_errors_total 0",
        "mesh_collector_graph_edges 3",
        "mesh_collector_healthy 1",
    ] {
        assert!(metrics.contains(want), "{want:?} not in:\n{metrics}");
    }
}

#[test]
fn bad_configuration_is_one_line_and_exit_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
        .args([
            "--prometheus-url",
            "ftp://x",
            "--redis-url",
            "redis://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "mesh-collector: invalid Prometheus URL \"ftp://x\": scheme \"ftp\" is not http or https"
    );
}

#[test]
fn the_cli_reference_is_current() {
    mesh_testkit::check_cli_doc(env!("CARGO_BIN_EXE_mesh-collector"), &[], "mesh-collector");
}
