//! End to end: meshsim (emojivoto and booksapp) -> real Prometheus (1 s scrapes) ->
//! `meshctl graph -o json`, checked against the topologies. Prometheus is killed when the test
//! ends, also on failure (its guard kills it by PID on drop).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Command, Output},
    time::Duration,
};

use mesh_testkit::{Prometheus, VictoriaMetrics, poll};
use meshsim::{LATENCY_BUCKETS_MS, Topology};
use serde_json::Value;

const WINDOW: &str = "10s";

/// VictoriaMetrics' `-search.maxUniqueTimeseries` in its test: the two builtin meshes emit 676
/// outbound latency bucket series, 572 of them in booksapp and 104 in emojivoto.
const VM_SERIES_LIMIT: usize = 600;

struct Sim {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_sim(t: Topology) -> Sim {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(meshsim::serve(l, t, async {
        let _ = rx.await;
    }));
    Sim {
        addr,
        stop: Some(tx),
    }
}

/// How long a graph may take to match: the window must fill with scrapes first.
const LONG: Duration = Duration::from_secs(90);

/// Polls `meshctl graph -o json` from `url` (with `extra` flags) every second, for at most
/// `limit`, until it matches `topologies`; returns the last read's mismatches (empty: matched).
async fn until_matches(
    url: &str,
    extra: &[&str],
    topologies: &[&Topology],
    limit: Duration,
) -> Vec<String> {
    let mut last = Vec::new();
    poll(limit, Duration::from_secs(1), || {
        last = graph_json(url, extra).map_or_else(
            || vec!["no graph yet".into()],
            |g| mismatches(&g, topologies),
        );
        let done = last.is_empty();
        async move { done.then_some(()) }
    })
    .await;
    last
}

/// emojivoto and booksapp, each served by a simulator of its own.
async fn start_builtins() -> (Topology, Topology, Sim, Sim) {
    let emojivoto = meshsim::builtin("emojivoto").unwrap();
    let booksapp = meshsim::builtin("booksapp").unwrap();
    let (s1, s2) = (
        start_sim(emojivoto.clone()).await,
        start_sim(booksapp.clone()).await,
    );
    (emojivoto, booksapp, s1, s2)
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .expect("run meshctl")
}

fn graph_json(url: &str, extra: &[&str]) -> Option<Value> {
    let mut args = vec![
        "graph",
        "--prometheus-url",
        url,
        "-o",
        "json",
        "--window",
        WINDOW,
    ];
    args.extend(extra);
    let out = meshctl(&args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("meshctl prints JSON"))
}

/// The bucket `(lo, hi]` of the proxy's histogram that holds `v`.
fn bucket_of(v: f64) -> (f64, f64) {
    let mut lo = 0.0;
    for &hi in &LATENCY_BUCKETS_MS {
        if v <= hi {
            return (lo, hi);
        }
        lo = hi;
    }
    (lo, f64::INFINITY)
}

fn key(e: &Value) -> String {
    let r = |v: &Value| {
        format!(
            "{}/{}",
            v["namespace"].as_str().unwrap_or(""),
            v["name"].as_str().unwrap_or("")
        )
    };
    format!(
        "{}->{}:{}",
        r(&e["src"]),
        r(&e["dst"]),
        e["protocol"].as_str().unwrap()
    )
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Every mismatch between the graph and the topologies; empty when they agree.
fn mismatches(graph: &Value, topologies: &[&Topology]) -> Vec<String> {
    let edges: BTreeMap<String, &Value> = graph["edges"]
        .as_array()
        .map(|a| a.iter().map(|e| (key(e), e)).collect())
        .unwrap_or_default();
    let mut want = Vec::new();
    let mut problems = Vec::new();
    for t in topologies {
        for e in &t.edges {
            let k = format!("{}->{}:{}", e.from, e.to, e.protocol);
            want.push(k.clone());
            let Some(got) = edges.get(&k) else {
                problems.push(format!("missing edge {k}"));
                continue;
            };
            let (src, dst) = (t.workload(&e.from).unwrap(), t.workload(&e.to).unwrap());
            let m = &got["metrics"];
            let rps = num(&m["rps"]);
            if (rps - e.rps).abs() > 0.1 * e.rps {
                problems.push(format!("{k}: rps {rps} vs {}", e.rps));
            }
            let sr = num(&m["successRate"]);
            if (sr - e.success_rate).abs() > 0.02 {
                problems.push(format!("{k}: success rate {sr} vs {}", e.success_rate));
            }
            let p99 = num(&m["latencyP99Ms"]);
            let (lo, hi) = bucket_of(e.latency_ms.p99);
            if !(lo..=hi).contains(&p99) {
                problems.push(format!(
                    "{k}: p99 {p99} outside ({lo}, {hi}] holding {}",
                    e.latency_ms.p99
                ));
            }
            if got["tls"] != "MTLS" {
                problems.push(format!("{k}: tls {}", got["tls"]));
            }
            if got["serverIdentity"] != dst.identity().as_str() {
                problems.push(format!("{k}: server identity {}", got["serverIdentity"]));
            }
            if got["clientIdentity"] != src.identity().as_str() {
                problems.push(format!("{k}: client identity {}", got["clientIdentity"]));
            }
        }
    }
    for k in edges.keys() {
        if !want.contains(k) {
            problems.push(format!("unexpected edge {k}"));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_graph_matches_the_simulated_meshes() {
    let (emojivoto, booksapp, s1, s2) = start_builtins().await;
    let prom = Prometheus::start(&[s1.addr, s2.addr]).await;
    eprintln!("prometheus pid {} at {}", prom.pid(), prom.url);

    // The window must fill with scrapes before rates settle; poll with a bound.
    let last = until_matches(&prom.url, &[], &[&emojivoto, &booksapp], LONG).await;
    assert!(
        last.is_empty(),
        "graph never matched the topologies: {last:#?}"
    );

    let g = graph_json(&prom.url, &[]).unwrap();
    let workloads = g["workloads"].as_array().unwrap();
    let webapp = workloads
        .iter()
        .find(|w| w["ref"]["name"] == "webapp")
        .unwrap();
    assert_eq!(webapp["readyReplicas"], 3);
    assert_eq!(webapp["serviceAccount"], "webapp");
    let bot = workloads
        .iter()
        .find(|w| w["ref"]["name"] == "vote-bot")
        .unwrap();
    assert_eq!(
        bot["identity"],
        "default.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    );

    // A namespace filter keeps only that namespace. Each read is a fresh query whose irate-based
    // p99 can sit a scrape apart from the last one, so poll (bounded) rather than read once.
    let last = until_matches(
        &prom.url,
        &["--namespace", "booksapp"],
        &[&booksapp],
        Duration::from_secs(30),
    )
    .await;
    assert!(last.is_empty(), "{last:#?}");

    // Without recording rules the raw series are read, and the graph says why; requiring the
    // rules is a clear failure.
    let g = graph_json(&prom.url, &[]).unwrap();
    assert_eq!(
        g["sources"][0]["detail"],
        "raw series (no recording rules are loaded)"
    );
    let out = meshctl(&[
        "graph",
        "--prometheus-url",
        &prom.url,
        "--window",
        WINDOW,
        "--recording-rules",
        "require",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "recording rules are required, but no recording rules are loaded: load the output \
             of `mesh-collector print-rules --window 10s`"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The other formats work against the same data.
    let table = meshctl(&["graph", "--prometheus-url", &prom.url, "--window", WINDOW]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.starts_with("SRC ") && text.contains("vote-bot"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("mesh.png");
    let out = meshctl(&[
        "graph",
        "--prometheus-url",
        &prom.url,
        "--window",
        WINDOW,
        "-o",
        "png",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_change_shows_up_in_the_next_graph() {
    let t = meshsim::builtin("emojivoto").unwrap();
    let sim = start_sim(t.clone()).await;
    let prom = Prometheus::start(&[sim.addr]).await;
    let ready = poll(Duration::from_secs(90), Duration::from_secs(1), || {
        let done = graph_json(&prom.url, &[]).is_some_and(|g| mismatches(&g, &[&t]).is_empty());
        async move { done.then_some(()) }
    })
    .await;
    assert!(ready.is_some(), "initial graph never matched");

    // Voting gets ten times the traffic and emoji is no longer called.
    let mut changed = t.clone();
    changed.edges.retain(|e| e.to != "emojivoto/emoji");
    for e in &mut changed.edges {
        if e.to == "emojivoto/voting" {
            e.rps = 20.0;
        }
    }
    let resp = reqwest::Client::new()
        .put(format!("http://{}/topology", sim.addr))
        .body(changed.to_yaml())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);

    let last = until_matches(&prom.url, &[], &[&changed], LONG).await;
    assert!(last.is_empty(), "changed topology never showed: {last:#?}");

    // Bad topologies are refused with the field named, and change nothing.
    let bad = reqwest::Client::new()
        .put(format!("http://{}/topology", sim.addr))
        .body("workloads: [{namespace: a, name: x}]\nedges: [{from: a/x, to: a/y, rps: 1}]\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .starts_with("edges[0].to: unknown workload \"a/y\"")
    );
    let current: String = reqwest::get(format!("http://{}/topology", sim.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(Topology::from_yaml(&current).unwrap(), changed);
}

#[test]
fn unreachable_prometheus_is_one_line_and_non_zero() {
    let port = mesh_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = meshctl(&["graph", "--prometheus-url", &url, "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("meshctl: cannot reach Prometheus at {url}: ")),
        "{err}"
    );
}

/// Usage errors keep exit 64 and print clap's whole message: what is wrong, the allowed values
/// or a suggestion, and the usage line, so nobody needs `--help` to fix them.
#[test]
fn usage_errors_exit_64_with_the_whole_message() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["graph", "--prometheus-url", "http://x", "-o", "gif"],
            &["'gif'", "possible values", "table", "png", "try '--help'"],
        ),
        (
            &["graph"],
            &["--prometheus-url", "--server", "Usage: meshctl graph"],
        ),
        (&["watch"], &["--server", "Usage: meshctl watch"]),
        (
            &["explain"],
            &["--manifests", "--from", "--to", "Usage: meshctl explain"],
        ),
        (&[], &["Usage: meshctl", "graph", "apply"]),
        (
            &["grpah"],
            &["'grpah'", "similar", "'graph'", "Usage: meshctl"],
        ),
    ];
    for (args, wants) in cases {
        let out = meshctl(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains('\u{1b}'),
            "{args:?}: colour codes off a terminal: {err}"
        );
        for want in wants {
            assert!(err.contains(want), "{args:?}: no {want:?} in {err}");
        }
    }
}

/// Edge by edge, where graphs `a` and `b` differ beyond the tolerances the topology checks use
/// (rates within 10 %, success within 2 points, p99 in one histogram bucket; TLS and both
/// identities equal; the same routes).
fn differences(a: &Value, b: &Value) -> Vec<String> {
    let edges = |g: &Value| -> BTreeMap<String, Value> {
        g["edges"]
            .as_array()
            .map(|a| a.iter().map(|e| (key(e), e.clone())).collect())
            .unwrap_or_default()
    };
    let (ea, eb) = (edges(a), edges(b));
    let mut out = Vec::new();
    if ea.keys().collect::<Vec<_>>() != eb.keys().collect::<Vec<_>>() {
        out.push(format!(
            "edges differ: {:?} vs {:?}",
            ea.keys().collect::<Vec<_>>(),
            eb.keys().collect::<Vec<_>>()
        ));
    }
    for (k, x) in &ea {
        let Some(y) = eb.get(k) else { continue };
        let (mx, my) = (&x["metrics"], &y["metrics"]);
        let (rx, ry) = (num(&mx["rps"]), num(&my["rps"]));
        if (rx - ry).abs() > 0.1 * rx.max(ry) {
            out.push(format!("{k}: rps {rx} vs {ry}"));
        }
        let (sx, sy) = (num(&mx["successRate"]), num(&my["successRate"]));
        if (sx - sy).abs() > 0.02 {
            out.push(format!("{k}: success {sx} vs {sy}"));
        }
        let (px, py) = (num(&mx["latencyP99Ms"]), num(&my["latencyP99Ms"]));
        if bucket_of(px) != bucket_of(py) {
            out.push(format!("{k}: p99 {px} vs {py}"));
        }
        for field in ["tls", "serverIdentity", "clientIdentity"] {
            if x[field] != y[field] {
                out.push(format!("{k}: {field} {} vs {}", x[field], y[field]));
            }
        }
        let routes = |e: &Value| -> Vec<String> {
            let mut r: Vec<String> = e["routes"]
                .as_array()
                .map(|a| a.iter().map(|r| r["route"].to_string()).collect())
                .unwrap_or_default();
            r.sort();
            r
        };
        if routes(x) != routes(y) {
            out.push(format!("{k}: routes {:?} vs {:?}", routes(x), routes(y)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_rules_give_the_graph_the_raw_series_give() {
    let (emojivoto, booksapp, s1, s2) = start_builtins().await;
    // What `mesh-collector print-rules --window 10s --interval 1s` prints, as Prometheus
    // evaluates it.
    let rules = mesh_prometheus::promql::rules_file(
        mesh_prometheus::parse_window(WINDOW).unwrap(),
        Duration::from_secs(1),
    );
    let prom =
        Prometheus::start_with_rules(&[s1.addr, s2.addr], Duration::from_secs(1), &rules).await;
    eprintln!("prometheus pid {} at {}", prom.pid(), prom.url);

    // Each path matches the topologies; then the two match each other, read a moment apart.
    // Polled one at a time: an irate-based p99 can sit a scrape apart between reads, so all
    // three holding in one round is rarer than each holding in turn.
    let topologies = [&emojivoto, &booksapp];
    for (path, rules) in [("recorded", "require"), ("raw", "off")] {
        let last = until_matches(&prom.url, &["--recording-rules", rules], &topologies, LONG).await;
        assert!(last.is_empty(), "the {path} graph never matched: {last:#?}");
    }
    let mut last = Vec::new();
    let ok = poll(LONG, Duration::from_secs(1), || {
        let recorded = graph_json(&prom.url, &["--recording-rules", "require"]);
        let raw = graph_json(&prom.url, &["--recording-rules", "off"]);
        last = match (&recorded, &raw) {
            (Some(a), Some(b)) => differences(a, b),
            _ => vec!["no graph yet".into()],
        };
        let done = last.is_empty();
        async move { done.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "recorded and raw never agreed: {last:#?}");

    // `auto` reads the rules, and says so; the data is as old as their last evaluation.
    let g = graph_json(&prom.url, &[]).unwrap();
    assert_eq!(g["sources"][0]["detail"], "recording rules v1 (10s)");
    let evaluated =
        humantime::parse_rfc3339_weak(g["sources"][0]["lastSuccess"].as_str().unwrap()).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(evaluated)
        .expect("the data's time is not in the future");
    // The rules evaluate every second here.
    assert!(age < Duration::from_secs(10), "{age:?}");
    let raw = graph_json(&prom.url, &["--recording-rules", "off"]).unwrap();
    assert_eq!(raw["sources"][0]["detail"], "raw series");

    // Calls into one namespace (what a proposal reads), from the recorded series of that
    // namespace only. Each read is a fresh one: poll (bounded), a second apart.
    let source = mesh_prometheus::PrometheusSource::new(
        &prom.url,
        mesh_prometheus::parse_window(WINDOW).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
    .with_rules(mesh_prometheus::RulesMode::Require)
    .into_namespace("booksapp");
    let last = std::sync::Arc::new(tokio::sync::Mutex::new(vec!["not read".to_owned()]));
    poll(Duration::from_secs(30), Duration::from_secs(1), || {
        let (source, last, booksapp) = (source.clone(), last.clone(), booksapp.clone());
        async move {
            let seen = source.observe(std::time::SystemTime::now()).await.unwrap();
            assert_eq!(seen.read.reads, mesh_prometheus::promql::Reads::Recorded);
            let g = serde_json::to_value(mesh_proto::pb::MeshGraph::from(&seen.graph)).unwrap();
            let mut last = last.lock().await;
            *last = mismatches(&g, &[&booksapp]);
            last.is_empty().then_some(())
        }
    })
    .await;
    let last = last.lock().await;
    assert!(last.is_empty(), "calls into booksapp, recorded: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_gives_the_same_graph_and_queries_too_large_are_split() {
    let (emojivoto, booksapp, s1, s2) = start_builtins().await;
    // Fewer series per query than the two meshes' latency buckets hold together, but more
    // than either namespace's alone: the whole query is refused, its halves are not.
    let vm = VictoriaMetrics::start(
        &[s1.addr, s2.addr],
        Duration::from_secs(1),
        &[&format!("-search.maxUniqueTimeseries={VM_SERIES_LIMIT}")],
    )
    .await;
    eprintln!("victoria-metrics pid {} at {}", vm.pid(), vm.url);
    let last = until_matches(&vm.url, &[], &[&emojivoto, &booksapp], LONG).await;
    assert!(
        last.is_empty(),
        "the VictoriaMetrics graph never matched: {last:#?}"
    );
    let g = graph_json(&vm.url, &[]).unwrap();
    assert_eq!(
        g["sources"][0]["detail"],
        "raw series (no recording rules are loaded)"
    );
    // The latency query was too large whole and was split, and the store says so to us.
    let source = mesh_prometheus::PrometheusSource::new(
        &vm.url,
        mesh_prometheus::parse_window(WINDOW).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    let seen = source.observe(std::time::SystemTime::now()).await.unwrap();
    assert!(seen.read.splits > 0, "{:?}", seen.read);
    let whole = source
        .query(&source.queries().latency[0])
        .await
        .unwrap_err();
    assert!(whole.too_large(), "{whole}");
}
