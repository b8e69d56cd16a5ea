//! End to end for Linkerd 2.20's route metrics: meshsim impersonating 2.20 proxies (the
//! `outbound_{http,grpc}_route_*` families with the proxy's labels and seconds buckets) ->
//! real Prometheus (1 s scrapes) -> `meshctl graph -o json` and `meshctl routes`. Each route's
//! breakdown must match the topology within the tolerances edges have: RPS 10%, success rate
//! 0.02, p99 in the proxy bucket holding it. A 2.12 proxy reports no routes.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{net::SocketAddr, process::Command, sync::Arc, time::Duration};

use mesh_testkit::{Prometheus, poll};
use meshsim::{Latency, LinkerdVersion, ROUTE_RESPONSE_BUCKETS_S, RouteTraffic, Sim, Topology};
use serde_json::Value;

const WINDOW: &str = "10s";

struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn serve(t: Topology, version: LinkerdVersion) -> Served {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut sim = Sim::new(t, std::time::Instant::now());
    sim.set_version(version);
    tokio::spawn(meshsim::serve_shared(
        l,
        Arc::new(tokio::sync::Mutex::new(sim)),
        async {
            let _ = rx.await;
        },
    ));
    Served {
        addr,
        stop: Some(tx),
    }
}

/// emojivoto with routes: vote-bot's calls to web split over two HTTPRoutes and the default
/// route; web's VoteDoughnut calls (a GRPCRoute) fail.
fn emojivoto_routes() -> Topology {
    let mut t = meshsim::builtin("emojivoto").unwrap();
    for e in &mut t.edges {
        match (e.from.as_str(), e.to.as_str()) {
            ("emojivoto/vote-bot", "emojivoto/web") => {
                e.success_rate = 1.0;
                e.routes = vec![
                    RouteTraffic {
                        name: "api-vote".into(),
                        share: 0.5,
                        success_rate: Some(0.85),
                        latency_ms: Some(Latency {
                            p50: 20.0,
                            p95: 120.0,
                            p99: 300.0,
                        }),
                    },
                    RouteTraffic {
                        name: "api-list".into(),
                        share: 0.25,
                        success_rate: None,
                        latency_ms: None,
                    },
                ];
            }
            ("emojivoto/web", "emojivoto/voting") => {
                e.success_rate = 1.0;
                e.routes = vec![RouteTraffic {
                    name: "vote-doughnut".into(),
                    share: 0.2,
                    success_rate: Some(0.0),
                    latency_ms: None,
                }];
            }
            _ => {}
        }
    }
    t.validate().unwrap();
    t
}

fn meshctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .expect("run meshctl")
}

fn graph(prom: &Prometheus) -> Option<Value> {
    let out = meshctl(&[
        "graph",
        "--prometheus-url",
        &prom.url,
        "-o",
        "json",
        "--window",
        WINDOW,
    ]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The `(lo, hi]` bucket of the route histogram holding `ms`, in ms.
fn bucket_of(ms: f64) -> (f64, f64) {
    let mut lo = 0.0;
    for hi in ROUTE_RESPONSE_BUCKETS_S.map(|s| s * 1000.0) {
        if ms <= hi {
            return (lo, hi);
        }
        lo = hi;
    }
    (lo, f64::INFINITY)
}

/// Every way the graph's routes differ from the topology's; empty when they agree.
fn mismatches(g: &Value, t: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    let edges = g["edges"].as_array().cloned().unwrap_or_default();
    for e in &t.edges {
        let (src, dst) = (t.workload(&e.from).unwrap(), t.workload(&e.to).unwrap());
        let Some(got) = edges.iter().find(|x| {
            x["src"]["name"] == src.name.as_str()
                && x["dst"]["name"] == dst.name.as_str()
                && x["protocol"] == e.protocol.as_str()
        }) else {
            out.push(format!("missing edge {} -> {}", e.from, e.to));
            continue;
        };
        let routes = got["routes"].as_array().cloned().unwrap_or_default();
        let mix = e.route_mix();
        if routes.len() != mix.len() {
            out.push(format!(
                "{} -> {}: {} routes, want {}",
                e.from,
                e.to,
                routes.len(),
                mix.len()
            ));
            continue;
        }
        for m in mix {
            let at = format!("{} -> {} route {}", e.from, e.to, m.name);
            let Some(r) = routes.iter().find(|r| r["routeName"] == m.name.as_str()) else {
                out.push(format!("{at}: missing"));
                continue;
            };
            if r["routeKind"] != m.kind {
                out.push(format!("{at}: kind {}", r["routeKind"]));
            }
            let parent = format!("Service {}/{}:{}", dst.namespace, dst.service(), e.port);
            if r["parent"] != parent.as_str() {
                out.push(format!("{at}: parent {} vs {parent}", r["parent"]));
            }
            let want = e.rps * m.share;
            let rps = r["rps"].as_f64().unwrap_or(0.0);
            if (rps - want).abs() > 0.1 * want {
                out.push(format!("{at}: rps {rps} vs {want}"));
            }
            let sr = r["successRate"].as_f64().unwrap_or(f64::NAN);
            if (sr - m.success_rate).abs() > 0.02 {
                out.push(format!("{at}: success {sr} vs {}", m.success_rate));
            }
            let p99 = r["latencyP99Ms"].as_f64().unwrap_or(f64::NAN);
            let (lo, hi) = bucket_of(m.latency.p99);
            if !(lo..=hi).contains(&p99) {
                out.push(format!(
                    "{at}: p99 {p99} outside ({lo}, {hi}] holding {}",
                    m.latency.p99
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_breakdowns_through_prometheus_match_the_simulated_routes() {
    let t = emojivoto_routes();
    let (new, old) = (
        serve(t.clone(), LinkerdVersion::V2_20).await,
        serve(meshsim::builtin("booksapp").unwrap(), LinkerdVersion::V2_12).await,
    );
    let prom = Prometheus::start(&[new.addr, old.addr]).await;
    let mut last = Vec::new();
    let ok = poll(Duration::from_secs(90), Duration::from_secs(1), || {
        last = graph(&prom).map_or_else(|| vec!["no graph yet".into()], |g| mismatches(&g, &t));
        let done = last.is_empty();
        async move { done.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "routes never matched the topology: {last:#?}");

    let g = graph(&prom).unwrap();
    // booksapp's 2.12 proxies report no route families: its edges carry no routes.
    for e in g["edges"].as_array().unwrap() {
        if e["src"]["namespace"] == "booksapp" {
            assert!(e["routes"].as_array().is_none_or(Vec::is_empty), "{e}");
        }
    }

    // The routes view, like `linkerd viz stat-outbound`, for one workload.
    let out = meshctl(&[
        "routes",
        "emojivoto/web",
        "--prometheus-url",
        &prom.url,
        "--window",
        WINDOW,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("SRC "), "{text}");
    for want in [
        "emojivoto/api-vote",
        "emojivoto/api-list",
        "[default http]",
        "emojivoto/vote-doughnut",
        "[default grpc]",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains("booksapp"), "{text}");
    // The wide table names each edge's worst route.
    let out = meshctl(&[
        "graph",
        "--prometheus-url",
        &prom.url,
        "--window",
        WINDOW,
        "-o",
        "wide",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let voting = text
        .lines()
        .find(|l| l.starts_with("web ") && l.contains(" voting "))
        .unwrap();
    assert!(voting.contains("2, worst vote-doughnut 0.0%"), "{text}");
}
