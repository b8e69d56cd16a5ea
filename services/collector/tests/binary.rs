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
    // Prometheus evaluates the rules the binary prints, as linkerd-viz's would.
    let rules = Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
        .args(["print-rules", "--window", "10s", "--interval", "1s"])
        .output()
        .unwrap();
    assert!(rules.status.success());
    let prom = Prometheus::start_with_rules(
        &[addr],
        Duration::from_secs(1),
        &String::from_utf8(rules.stdout).unwrap(),
    )
    .await;
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
            // Read through the rules once their first evaluation is in.
            let recorded = g
                .sources
                .first()
                .is_some_and(|s| s.detail == "recording rules v1 (10s)");
            (g.edges.len() == 3 && verdicts && recorded).then_some((snap, g))
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
        "mesh_collector_prometheus_recording_rules 1",
        "mesh_collector_prometheus_read_duration_seconds_count ",
        "mesh_collector_prometheus_query_splits_total 0",
        "mesh_collector_prometheus_data_age_seconds ",
    ] {
        assert!(metrics.contains(want), "{want:?} not in:\n{metrics}");
    }
    // A build reads one series per edge and label set, not every proxy's: the rules' check and
    // 31 queries, and fewer series than emojivoto's proxies expose (269).
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{metrics}"))
    };
    assert_eq!(gauge("mesh_collector_prometheus_last_read_queries"), 32.0);
    let series = gauge("mesh_collector_prometheus_last_read_series");
    assert!(series > 0.0 && series < 269.0, "{series}");
    // Prometheus 2.35+ says how many samples it loaded.
    assert!(gauge("mesh_collector_prometheus_last_read_samples") > 0.0);
}

#[test]
fn print_rules_prints_what_the_chart_ships_and_promtool_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
        .args(["print-rules"])
        .env_remove("MESH_WINDOW")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shipped = root.join("helm/linkerd-mcp/files/linkerd-mcp_rules.yml");
    assert!(
        std::fs::read_to_string(&shipped).unwrap() == printed,
        "the chart's rules are not what `mesh-collector print-rules` prints; regenerate them \
         with `mesh-collector print-rules > {}`",
        shipped.display()
    );
    let check = Command::new(mesh_testkit::require_tool("promtool"))
        .args(["check", "rules"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 22 rules found"));
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
    mesh_testkit::check_cli_doc(
        env!("CARGO_BIN_EXE_mesh-collector"),
        &["print-rules"],
        "mesh-collector-print-rules",
    );
}
