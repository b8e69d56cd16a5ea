//! `mesh-bench`: times graph build + delta for generated meshes of 100, 1,000 and 10,000
//! workloads (fed in-process, as Prometheus would answer), and rendering for 100 and 300, with
//! each case's peak memory. Each case runs in a child process of its own so that its peak
//! resident set (`VmHWM`) is its alone. Run with `make bench`; never part of `make test`.

mod agent;
mod apply;
mod approvals;
mod chat;
mod collector;
mod console;
mod failover;
mod fresh;
mod history;
mod propose;
mod serve;
mod soak;

use std::{
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::{MeshGraph, MetricTolerance, PublishedView};
use meshsim::Topology;

const WINDOW: Duration = Duration::from_secs(60);

fn build(t: &Topology) -> MeshGraph {
    meshsim::graph(t, WINDOW, SystemTime::UNIX_EPOCH)
}

/// `t` with `k` routes on every HTTP/gRPC edge: `k - 1` named routes and Linkerd's default
/// route sharing its requests evenly, the first named route failing a tenth more.
fn with_routes(t: &Topology, k: usize) -> Topology {
    let mut t = t.clone();
    for e in t.edges.iter_mut().filter(|e| e.protocol != "tcp") {
        e.routes = (1..k)
            .map(|i| meshsim::RouteTraffic {
                name: format!("route-{i}"),
                share: 1.0 / k as f64,
                success_rate: (i == 1).then_some(e.success_rate * 0.9),
                latency_ms: None,
            })
            .collect();
    }
    t
}

/// The graph Linkerd 2.20's proxies give: with each edge's routes.
fn build_routes(t: &Topology) -> MeshGraph {
    meshsim::graph_as(
        t,
        WINDOW,
        SystemTime::UNIX_EPOCH,
        meshsim::LinkerdVersion::V2_20,
    )
}

/// The next minute of the same mesh: a fifth of the edges change rate by 10%, one in fifty
/// disappears, and success rates wobble under the threshold.
pub(crate) fn next_minute(t: &Topology) -> Topology {
    let mut n = t.clone();
    for (i, e) in n.edges.iter_mut().enumerate() {
        if i % 5 == 0 {
            e.rps *= 1.1;
        }
        if i % 7 == 0 {
            e.success_rate = (e.success_rate - 0.001).max(0.0);
        }
    }
    let mut i = 0;
    n.edges.retain(|_| {
        i += 1;
        i % 50 != 0
    });
    n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The process's resident memory now, in KiB (0 where `/proc` does not say).
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Medians of building a mesh's graph and publishing the next minute's as a delta.
struct BuildFigures {
    edges: usize,
    routes: usize,
    upserted: usize,
    removed: usize,
    build: Duration,
    delta: Duration,
}

/// Builds `t` with `build` and advances the published view to `next`, `runs` times.
fn build_and_delta(
    t: &Topology,
    next: &Topology,
    build: fn(&Topology) -> MeshGraph,
    runs: usize,
) -> BuildFigures {
    let (mut builds, mut deltas) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0, 0);
    for _ in 0..runs {
        let start = Instant::now();
        let a = build(t);
        builds.push(start.elapsed());
        let b = build(next);
        let mut view = PublishedView::new(a, MetricTolerance::default());
        let start = Instant::now();
        let d = view.advance(b).expect("the mesh changed");
        deltas.push(start.elapsed());
        let g = view.graph();
        sizes = (
            g.edges.len(),
            g.edges.values().map(|e| e.routes.len()).sum(),
            d.upserted_edges.len(),
            d.removed_edges.len(),
        );
    }
    BuildFigures {
        edges: sizes.0,
        routes: sizes.1,
        upserted: sizes.2,
        removed: sizes.3,
        build: median(builds),
        delta: median(deltas),
    }
}

/// Runs one case in this process and prints `key=value` figures.
fn run_case(case: &str, n: usize) {
    let t = meshsim::generate(n, 1).expect("generated topology is valid");
    let runs = if n >= 10_000 { 5 } else { 15 };
    match case {
        "graph" => {
            let r = build_and_delta(&t, &next_minute(&t), build, runs);
            println!(
                "edges={} upserted={} removed={} build_ms={:.2} delta_ms={:.2} total_ms={:.2} peak_mib={:.1}",
                r.edges,
                r.upserted,
                r.removed,
                ms(r.build),
                ms(r.delta),
                ms(r.build + r.delta),
                peak_rss_kib() as f64 / 1024.0
            );
        }
        "routes" => {
            // Five routes per HTTP/gRPC edge, built and published as delta, as "graph" does.
            let (t, next) = (with_routes(&t, 5), with_routes(&next_minute(&t), 5));
            let r = build_and_delta(&t, &next, build_routes, runs);
            let with =
                prost::Message::encoded_len(&mesh_proto::pb::MeshGraph::from(&build_routes(&t)));
            let without = prost::Message::encoded_len(&mesh_proto::pb::MeshGraph::from(&build(&t)));
            println!(
                "edges={} routes={} upserted={} build_ms={:.2} delta_ms={:.2} total_ms={:.2} peak_mib={:.1} payload_kib={} payload_without_routes_kib={} payload_ratio={:.2}",
                r.edges,
                r.routes,
                r.upserted,
                ms(r.build),
                ms(r.delta),
                ms(r.build + r.delta),
                peak_rss_kib() as f64 / 1024.0,
                with / 1024,
                without / 1024,
                with as f64 / without as f64
            );
        }
        "render" => {
            let g = build(&t);
            let (mut svgs, mut pngs) = (Vec::new(), Vec::new());
            let mut bytes = 0;
            for _ in 0..runs.min(5) {
                let start = Instant::now();
                let svg = mesh_render::svg(&g);
                svgs.push(start.elapsed());
                let start = Instant::now();
                bytes = mesh_render::svg_to_png(&svg).expect("png").len();
                pngs.push(start.elapsed());
            }
            println!(
                "edges={} svg_ms={:.1} png_ms={:.1} png_kib={} peak_mib={:.1}",
                g.edges.len(),
                ms(median(svgs)),
                ms(median(pngs)),
                bytes / 1024,
                peak_rss_kib() as f64 / 1024.0
            );
        }
        other => panic!("unknown case {other}"),
    }
}

fn run_async_case(case: &str, n: usize) -> bool {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match case {
        "serve" => rt.block_on(serve::serve(n)),
        "grpc-get" => rt.block_on(serve::get(n)),
        "fanout" => rt.block_on(serve::fanout(n)),
        "serve-prom" => rt.block_on(serve::serve_prom()),
        "prom-get" => rt.block_on(serve::prom_get(n)),
        "collector" => rt.block_on(collector::cycle(n)),
        "apply" => rt.block_on(apply::run(n)),
        "failover" => rt.block_on(failover::run(n)),
        "mcp" => rt.block_on(agent::run(n)),
        "chat" => rt.block_on(chat::run(n)),
        "propose" => rt.block_on(propose::run(n)),
        "soak" => rt.block_on(soak::run(n)),
        "history" => rt.block_on(history::run(n)),
        "approvals" => rt.block_on(approvals::run(n)),
        "console" => rt.block_on(console::run(n)),
        "fresh" => rt.block_on(fresh::run(n)),
        _ => return false,
    }
    true
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--case" {
        let n = args[3].parse().expect("size");
        if !run_async_case(&args[2], n) {
            run_case(&args[2], n);
        }
        return;
    }
    let me = std::env::current_exe().expect("own path");
    println!("mesh-bench: medians; peak memory is each case's own process (VmHWM)");
    let mut totals = Vec::new();
    for (case, sizes) in [
        ("graph", &[100, 1_000, 10_000][..]),
        ("routes", &[1_000, 10_000][..]),
        ("render", &[100, 300][..]),
        ("collector", &[1_000, 10_000][..]),
        ("grpc-get", &[1_000, 10_000][..]),
        ("prom-get", &[1_000][..]),
        ("fanout", &[1_000, 10_000][..]),
        ("apply", &[1_000][..]),
        ("mcp", &[1_000][..]),
        ("chat", &[200][..]),
        ("approvals", &[40][..]),
        ("console", &[100, 1_000][..]),
        ("propose", &[1_000][..]),
        ("history", &[1_000, 10_000][..]),
        // Prometheus holds about 5 GB at 1,000 workloads (300,000 series) answering the raw
        // queries, and outgrew 21 GB at 3,000: larger meshes need a larger machine.
        ("fresh", &[1_000][..]),
        ("failover", &[20][..]),
    ] {
        for &n in sizes {
            let out = Command::new(&me)
                .args(["--case", case, &n.to_string()])
                .output()
                .expect("run case");
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                out.status.success(),
                "{case} {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // n is workloads, except for fanout, where it is streams (over 1,000 workloads).
            println!("{case:<8} n={n:<6} {line}");
            if case == "graph" || case == "routes" {
                let total: f64 = line
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("total_ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                totals.push((case, n, total));
            }
        }
    }
    let graph: Vec<(usize, f64)> = totals
        .iter()
        .filter(|(c, _, _)| *c == "graph")
        .map(|(_, n, t)| (*n, *t))
        .collect();
    for w in graph.windows(2) {
        let ((n0, t0), (n1, t1)) = (w[0], w[1]);
        println!(
            "ratio  build+delta {n1} / {n0} workloads: {:.1}x time for {}x size",
            t1 / t0,
            n1 / n0
        );
    }
    for (_, n, t) in totals.iter().filter(|(c, _, _)| *c == "routes") {
        if let Some((_, g)) = graph.iter().find(|(m, _)| m == n) {
            println!(
                "ratio  build+delta with 5 routes per edge / without, {n} workloads: {:.1}x",
                t / g
            );
        }
    }
    if let Some((_, t)) = graph.iter().find(|(n, _)| *n == 10_000) {
        println!(
            "goal   build+delta for 10,000 workloads under 1000 ms: {:.0} ms ({})",
            t,
            if *t < 1000.0 { "met" } else { "NOT met" }
        );
    }
}
