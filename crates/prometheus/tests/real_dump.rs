//! A real proxy's metrics through real Prometheus: the full `linkerd diagnostics proxy-metrics`
//! dump linkerd2's prommatch tests hold (pod `slow-cooker-opaque-pod`, ~2022;
//! `fixtures/proxy-metrics/SOURCES.md`) is served with its counters advancing and the labels
//! linkerd-viz's scrape job adds (`fixtures/linkerd-viz-prometheus-scrape-linkerd-proxy.yaml.tmpl`:
//! `namespace`, `pod`, the owner kind, `control_plane_ns`), scraped every second, and read the
//! way the collector reads it. The graph must hold the edge the dump implies, and nothing else:
//! an opaque TCP edge to deployment `opaque-pod` over mTLS with its server identity, at the
//! rates the advancing counters give; the loopback (`peer="src"`) and admin-port series make
//! no edges.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::{Destination, Protocol, TlsStatus, WorkloadRef};
use mesh_prometheus::PrometheusSource;
use mesh_testkit::{Prometheus, poll};

const DUMP: &str = include_str!("fixtures/proxy-metrics/linkerd2-prommatch-sampleMetrics.txt");
const NAMESPACE: &str = "linkerd-opaque-ports-test";
/// linkerd2's test/integration/deep/opaqueports/testdata/opaque_ports_client.yaml runs the
/// client as a Deployment of this name.
const SOURCE: &str = "slow-cooker-opaque-pod";

/// The dump at `secs` seconds: every counter's sample grown by its own value each second (so
/// its rate is its dumped value per second), gauges as dumped, and viz's scrape labels added.
fn dump_at(secs: f64) -> String {
    let mut counters = BTreeSet::new();
    let mut out = String::new();
    for line in DUMP.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some("counter" | "histogram")) = (parts.next(), parts.next()) {
                counters.insert(name.to_owned());
            }
        }
        if line.starts_with('#') || line.trim().is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| counters.contains(*f))
            .unwrap_or(name);
        let v: f64 = value.parse().unwrap();
        let v = if counters.contains(family) {
            v * (1.0 + secs)
        } else {
            v
        };
        let scrape = format!(
            "namespace=\"{NAMESPACE}\",pod=\"{SOURCE}-mjqsw\",deployment=\"{SOURCE}\",control_plane_ns=\"linkerd\""
        );
        let labelled = match series.split_once('{') {
            Some((n, rest)) => format!("{n}{{{scrape},{rest}"),
            None => format!("{series}{{{scrape}}}"),
        };
        out.push_str(&format!("{labelled} {v}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_2022_dump_gives_its_opaque_mtls_edge_and_nothing_else() {
    let start = Arc::new(Instant::now());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let start = start.clone();
            async move { dump_at(start.elapsed().as_secs_f64()) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let prom = Prometheus::start(&[addr]).await;
    let source =
        PrometheusSource::new(&prom.url, Duration::from_secs(10), Duration::from_secs(5)).unwrap();
    let src = WorkloadRef {
        namespace: NAMESPACE.into(),
        kind: "Deployment".into(),
        name: SOURCE.into(),
    };
    let dst = WorkloadRef {
        namespace: NAMESPACE.into(),
        kind: "Deployment".into(),
        name: "opaque-pod".into(),
    };
    // A bounded poll: the window fills with scrapes before the rates settle.
    let last = std::cell::RefCell::new(String::new());
    let graph = poll(Duration::from_secs(60), Duration::from_secs(1), || {
        let (source, src, dst, last) = (&source, &src, &dst, &last);
        async move {
            let g = source.graph(SystemTime::now()).await.ok()?;
            *last.borrow_mut() = format!(
                "{:#?}",
                g.edges
                    .values()
                    .map(|e| (&e.key, e.metrics.rps, e.tls))
                    .collect::<Vec<_>>()
            );
            let hit = g.edges.values().any(|e| {
                e.key.src == *src
                    && e.key.dst == Destination::Workload(dst.clone())
                    // One connection opened per second, 8323 bytes read per second.
                    && (e.metrics.rps - 1.0).abs() <= 0.1
                    && (e.metrics.read_bytes_per_sec - 8323.0).abs() <= 832.3
            });
            hit.then_some(g)
        }
    })
    .await;
    let last = last.into_inner();
    let graph = graph.unwrap_or_else(|| panic!("the dump's edge never settled: {last}"));
    assert_eq!(graph.edges.len(), 1, "only the opaque edge: {last}");
    let e = graph.edges.values().next().unwrap();
    assert_eq!(e.key.protocol, Protocol::Tcp);
    assert_eq!(e.tls, TlsStatus::Mtls);
    assert_eq!(
        e.server_identity,
        "default.linkerd-opaque-ports-test.serviceaccount.identity.linkerd.cluster.local"
    );
    assert!((e.metrics.tcp_open_connections - 1.0).abs() < 1e-9);
    assert!((e.metrics.write_bytes_per_sec - 3763.0).abs() <= 376.3);
    assert!(e.routes.is_empty(), "a 2022 proxy has no route families");
}
