//! `meshctl graph --server` and `meshctl watch` against an in-process mesh-mcp.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use mesh_collector::Publisher;
use mesh_model::MetricTolerance;
use mesh_store::MemoryStore;

fn build(t: &meshsim::Topology) -> mesh_model::MeshGraph {
    meshsim::graph(
        t,
        Duration::from_secs(60),
        std::time::SystemTime::UNIX_EPOCH,
    )
}

/// Kills the child by PID when dropped, also when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_and_watch_from_the_server() {
    let mut t = meshsim::builtin("emojivoto").unwrap();
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .unwrap();
    publisher.publish(build(&t)).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let history = mesh_mcp::History::default();
    tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    let auth = mesh_mcp::TokenAuth::parse("tok,alice,u,\"\"\n").unwrap();
    let routes = mesh_mcp::grpc_routes(
        mesh_mcp::GraphService::new(rx, history, Duration::from_secs(30)),
        Some(auth.into()),
    )
    .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(mesh_mcp::incoming(l)),
    );
    let meshctl = env!("CARGO_BIN_EXE_meshctl");

    let table = mesh_testkit::poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let addr = addr.clone();
        async move {
            let out = Command::new(meshctl)
                .args(["graph", "--server", &addr, "--token", "tok"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await
    .expect("meshctl graph --server never answered");
    assert!(
        table.starts_with("SRC ") && table.contains("voting") && table.lines().count() == 4,
        "{table}"
    );

    let out = Command::new(meshctl)
        .args(["graph", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));

    let mut watch = KillOnDrop(
        Command::new(meshctl)
            .args(["watch", "--server", &addr, "--token", "tok"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let l = lines.next().unwrap().unwrap();
        (l, lines)
    })
    .await
    .unwrap();
    assert!(
        first
            .0
            .starts_with("snapshot epoch 1 version 1: 4 workloads, 3 edges"),
        "{}",
        first.0
    );
    t.edges.retain(|e| e.to != "emojivoto/emoji");
    publisher.publish(build(&t)).await.unwrap();
    let mut lines = first.1;
    let delta = tokio::task::spawn_blocking(move || {
        (
            lines.next().unwrap().unwrap(),
            lines.next().unwrap().unwrap(),
        )
    })
    .await
    .unwrap();
    drop(watch);
    assert_eq!(delta.0, "delta 1 -> 2:");
    assert_eq!(delta.1, "  - emojivoto/web -> emojivoto/emoji (grpc)");
}

#[test]
fn unreachable_server_is_one_line() {
    let port = mesh_testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args([
            "graph",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "meshctl: cannot reach mesh-mcp at http://127.0.0.1:{port}: "
        )),
        "{err}"
    );
}

/// Pointing --server at an HTTP port (mesh-mcp's --http-listen) names the mix-up; --window
/// with --server is refused, as mesh-mcp's graph has its collector's window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_port_and_window_with_server_are_explained() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // An HTTP server that, like mesh-mcp's HTTP listener, speaks HTTP/2 too and has no gRPC.
    tokio::spawn(async move { axum::serve(l, axum::Router::new()).await });
    let meshctl = env!("CARGO_BIN_EXE_meshctl");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(meshctl)
            .args(["graph", "--server", &addr, "--timeout", "5s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("looks like mesh-mcp's HTTP port") && err.contains("--grpc-listen"),
        "{err}"
    );
    let out = Command::new(meshctl)
        .args(["graph", "--server", "127.0.0.1:1", "--window", "5m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--window") && err.contains("--server"),
        "{err}"
    );
}
