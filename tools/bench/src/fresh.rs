//! Fresh at scale: the collector's real build loop reading a real Prometheus that scrapes `n`
//! simulated workloads every 15 s (linkerd-viz's setting here), with and without the recording
//! rules, for `MESH_BENCH_MINUTES` (default 10) each. Every build's graph reaches a
//! `WatchMeshGraph` client over gRPC; every 30 s one edge's traffic is multiplied by four in
//! meshsim, and the time until the client sees it is that change's freshness.
//!
//! Build time is a delta's arrival at the client less its graph's `generated_at` (taken before
//! the read): read, join, publish and delivery. Prometheus CPU is from `/proc/<pid>/stat`: per
//! build over the run (`prom_cpu_s_per_build`: everything Prometheus did meanwhile, rule
//! evaluations included, over the builds), net of what it spends on scraping and evaluating
//! the rules alone (`_net`, from a minute measured before the collector starts), and as cores
//! busy on average (`prom_cores`). Compare the gross figures between the two runs: the net one
//! leaves the rules' own cost out.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_prometheus::{PrometheusSource, RulesMode};
use mesh_proto::pb::{self, mesh_graph_event::Event, mesh_service_client::MeshServiceClient};
use mesh_store::MemoryStore;

/// linkerd-viz's scrape interval in this benchmark, and the rules' evaluation interval.
const SCRAPE: Duration = Duration::from_secs(15);
/// The collector's defaults.
const WINDOW: Duration = Duration::from_secs(60);
const INTERVAL: Duration = Duration::from_secs(10);
/// The collector's counters a run reads: builds, failed reads, samples and series read.
const COUNTERS: [&str; 4] = [
    "mesh_collector_builds_total",
    "mesh_collector_prometheus_errors_total",
    "mesh_collector_prometheus_samples_read_total",
    "mesh_collector_prometheus_series_read_total",
];
/// A traffic change every this often.
const STEP_EVERY: Duration = Duration::from_secs(30);
/// A change not seen after this long counts as this long.
const STEP_LIMIT: Duration = Duration::from_secs(120);

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resident memory of process `pid`, MiB.
fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0)
}

fn key(src: &pb::WorkloadRef, dst: &pb::WorkloadRef) -> String {
    format!(
        "{}/{}->{}/{}",
        src.namespace, src.name, dst.namespace, dst.name
    )
}

/// What the client saw: per edge its rps, and every build's time.
#[derive(Default)]
struct Seen {
    rps: BTreeMap<String, f64>,
    build_ms: Vec<f64>,
}

pub(crate) async fn run(n: usize) {
    let minutes: u64 = std::env::var("MESH_BENCH_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let t = meshsim::generate(n, 1).expect("valid topology");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let sim = Arc::new(tokio::sync::Mutex::new(meshsim::Sim::new(
        t.clone(),
        std::time::Instant::now(),
    )));
    tokio::spawn(meshsim::serve_shared(
        l,
        sim.clone(),
        std::future::pending(),
    ));
    let mut first = true;
    for (mode, rules) in [("raw", RulesMode::Off), ("rules", RulesMode::Auto)] {
        let line = measure(n, &t, &sim, addr, rules, minutes, first).await;
        first = false;
        print!("{mode}: {line} ");
    }
    println!();
}

/// One run against a Prometheus of its own; returns its figures as `key=value` pairs.
async fn measure(
    n: usize,
    t: &meshsim::Topology,
    sim: &meshsim::SharedSim,
    target: std::net::SocketAddr,
    rules: RulesMode,
    minutes: u64,
    report_series: bool,
) -> String {
    let prom = if rules == RulesMode::Off {
        mesh_testkit::Prometheus::start_every(&[target], SCRAPE).await
    } else {
        let file = mesh_prometheus::promql::rules_file(WINDOW, SCRAPE);
        mesh_testkit::Prometheus::start_with_rules(&[target], SCRAPE, &file).await
    };
    let pid = prom.pid();
    // A full window of scrapes (and rule evaluations), then a minute of Prometheus alone.
    let warm = mesh_testkit::poll(Duration::from_secs(900), SCRAPE, || {
        let url = prom.url.clone();
        async move {
            let src = PrometheusSource::new(&url, WINDOW, Duration::from_secs(120)).ok()?;
            let up = src
                .query("count(up == 1)")
                .await
                .ok()?
                .first()
                .and_then(|s| s.value.1.parse::<f64>().ok())?;
            (up >= 1.0).then_some(())
        }
    })
    .await;
    assert!(warm.is_some(), "Prometheus never scraped meshsim");
    tokio::time::sleep(WINDOW + SCRAPE).await;
    let (idle_start, idle_at) = (cpu_of(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_per_s = (cpu_of(pid) - idle_start) / idle_at.elapsed().as_secs_f64();

    // The collector's loop, publishing to memory; mesh-mcp's follower and gRPC service on it.
    let source = PrometheusSource::new(
        &prom.url,
        WINDOW,
        mesh_collector::run::read_deadline(INTERVAL),
    )
    .expect("Prometheus URL")
    .with_rules(rules);
    let store = Arc::new(MemoryStore::new(100));
    let metrics = mesh_collector::run::Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let (_keep, kubernetes) = tokio::sync::watch::channel(Arc::new(
        mesh_policy::cluster::Cluster::unsynced("not part of this benchmark"),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(mesh_collector::run::run(
        mesh_collector::run::Sources {
            prometheus: source,
            kubernetes,
            history: mesh_store::Retention::default(),
        },
        store.clone(),
        INTERVAL,
        metrics.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let (tx, rx) = tokio::sync::watch::channel(None);
    let history = mesh_mcp::History::default();
    let follower = tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    let routes = mesh_mcp::grpc_routes(
        mesh_mcp::GraphService::new(rx, history, Duration::from_secs(60)),
        None,
    )
    .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(mesh_mcp::incoming(l))
            .await;
    });
    let client = MeshServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .max_decoding_message_size(512 * 1024 * 1024);

    // The watch: rps per edge, and each build's time, as the client sees them.
    let seen = Arc::new(tokio::sync::Mutex::new(Seen::default()));
    let (changed_tx, mut changed) = tokio::sync::watch::channel(());
    // Until the first build is published the service says so; poll for it (bounded).
    let mut stream = mesh_testkit::poll(Duration::from_secs(300), Duration::from_secs(1), || {
        let mut c = client.clone();
        async move {
            c.watch_mesh_graph(pb::WatchMeshGraphRequest::default())
                .await
                .ok()
        }
    })
    .await
    .expect("a first graph within 5 minutes")
    .into_inner();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                let mut s = seen.lock().await;
                let edges = match ev.event {
                    Some(Event::Snapshot(g)) => g.edges,
                    Some(Event::Delta(d)) => {
                        if let Some(at) = d.generated_at {
                            let sent = SystemTime::UNIX_EPOCH
                                + Duration::new(
                                    u64::try_from(at.seconds).unwrap_or(0),
                                    u32::try_from(at.nanos).unwrap_or(0),
                                );
                            let took = SystemTime::now().duration_since(sent).unwrap_or_default();
                            s.build_ms.push(took.as_secs_f64() * 1000.0);
                        }
                        d.upserted_edges
                    }
                    _ => continue,
                };
                for e in edges {
                    let (Some(src), Some(dst)) = (&e.src, &e.dst) else {
                        continue;
                    };
                    let rps = e.metrics.as_ref().map_or(0.0, |m| m.rps);
                    s.rps.insert(key(src, dst), rps);
                }
                drop(s);
                let _ = changed_tx.send(());
            }
        })
    };

    // Warm: the whole mesh in the graph, read the way this run reads.
    let want = t.edges.len() * 95 / 100;
    let started = Instant::now();
    let keys: Vec<String> = t
        .edges
        .iter()
        .map(|e| format!("{}->{}", e.from, e.to))
        .collect();
    loop {
        let have = {
            let s = seen.lock().await;
            keys.iter().filter(|k| s.rps.contains_key(*k)).count()
        };
        if have >= want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {have} of {} edges after 15 minutes",
            t.edges.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), changed.changed()).await;
    }
    let warm_s = started.elapsed().as_secs_f64();
    let counter = |name: &str| -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        mesh_testkit::parse_exposition(&text)
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    };
    let base = COUNTERS.map(&counter);
    seen.lock().await.build_ms.clear();
    let (cpu_start, run_at) = (cpu_of(pid), Instant::now());

    // The run: a traffic change every 30 s, each on an edge of its own, timed to the client.
    // Edges with requests to count (TCP-only edges have no request rate).
    let http: Vec<&meshsim::EdgeSpec> = t
        .edges
        .iter()
        .filter(|e| e.protocol != "tcp" && e.rps > 0.0)
        .collect();
    assert!(!http.is_empty(), "no HTTP edges to change");
    let mut fresh = Vec::new();
    let mut edge = 0;
    let end = run_at + Duration::from_secs(minutes * 60);
    while Instant::now() + STEP_EVERY <= end {
        let step_at = Instant::now();
        let e = http[(edge * 7919) % http.len()];
        edge += 1;
        let k = format!("{}->{}", e.from, e.to);
        let before = seen.lock().await.rps.get(&k).copied().unwrap_or(e.rps);
        {
            let mut changed_t = t.clone();
            for x in &mut changed_t.edges {
                if x.from == e.from && x.to == e.to {
                    x.rps *= 4.0;
                }
            }
            sim.lock()
                .await
                .set_topology(changed_t, std::time::Instant::now());
        }
        let saw = loop {
            if seen
                .lock()
                .await
                .rps
                .get(&k)
                .is_some_and(|r| *r > before * 1.5)
            {
                break step_at.elapsed();
            }
            if step_at.elapsed() >= STEP_LIMIT {
                break STEP_LIMIT;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
        };
        fresh.push(saw.as_secs_f64());
        // Back to normal for the next change, once this one was seen.
        sim.lock()
            .await
            .set_topology(t.clone(), std::time::Instant::now());
        tokio::time::sleep((step_at + STEP_EVERY).saturating_duration_since(Instant::now())).await;
    }
    let run_s = run_at.elapsed().as_secs_f64();
    let prom_cpu = cpu_of(pid) - cpu_start;
    let now = COUNTERS.map(&counter);
    let [builds, errors, samples, series] = [0, 1, 2, 3].map(|i| now[i] - base[i]);
    let recorded = counter("mesh_collector_prometheus_recording_rules");
    let build_ms = seen.lock().await.build_ms.clone();
    let reads = (builds - errors).max(1.0);
    let prom_rss = rss_of(pid);
    let all_series = if report_series {
        let src = PrometheusSource::new(&prom.url, WINDOW, Duration::from_secs(120)).expect("url");
        src.query("prometheus_tsdb_head_series")
            .await
            .ok()
            .and_then(|r| r.first().and_then(|s| s.value.1.parse::<f64>().ok()))
            .map_or(String::new(), |v| format!("head_series={v:.0} "))
    } else {
        String::new()
    };
    let _ = stop_tx.send(());
    let _ = collector.await;
    for task in [follower, server, watcher] {
        task.abort();
    }
    drop(prom);
    format!(
        "n={n} {all_series}minutes={minutes} warm_s={warm_s:.0} read_rules={recorded:.0} builds={builds:.0} \
         failed_builds={errors:.0} build_p50_ms={:.0} build_p99_ms={:.0} \
         prom_cores={:.2} prom_cpu_s_per_build={:.2} prom_cpu_s_per_build_net={:.2} prom_idle_cores={idle_per_s:.2} \
         samples_per_build={:.0} series_per_build={:.0} fresh_p50_s={:.1} fresh_p99_s={:.1} \
         fresh_max_s={:.1} changes={} prom_rss_mib={prom_rss:.0}",
        pct(&build_ms, 0.5),
        pct(&build_ms, 0.99),
        prom_cpu / run_s,
        prom_cpu / builds.max(1.0),
        (prom_cpu - idle_per_s * run_s) / builds.max(1.0),
        samples / reads,
        series / reads,
        pct(&fresh, 0.5),
        pct(&fresh, 0.99),
        fresh.iter().copied().fold(0.0, f64::max),
        fresh.len(),
    )
}
