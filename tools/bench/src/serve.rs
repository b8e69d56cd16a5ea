//! gRPC benchmarks: a child process serves a generated graph (so its RSS is its own), the
//! parent measures GetMeshGraph latency and watch fan-out against it over loopback.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::MetricTolerance;
use mesh_proto::pb::{self, mesh_graph_event::Event, mesh_service_client::MeshServiceClient};
use mesh_store::MemoryStore;
use prost::Message;

fn build(t: &meshsim::Topology) -> mesh_model::MeshGraph {
    meshsim::graph(t, Duration::from_secs(60), SystemTime::now())
}

/// Child: serve a generated mesh of `n` workloads; every 2 s flip one edge of `ns-000` between
/// mTLS and plaintext, stamped with the publish time.
pub(crate) async fn serve(n: usize) {
    let mut t = meshsim::generate(n, 1).expect("valid topology");
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = mesh_collector::Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .expect("memory store");
    publisher.publish(build(&t)).await.expect("publish");
    let (tx, rx) = tokio::sync::watch::channel(None);
    // Announce the port only once the graph is loaded, so measurements start on a full server.
    tokio::spawn(follow_and_serve(store, tx, rx, true, None).await);
    let flip = t
        .edges
        .iter()
        .position(|e| e.from.starts_with("ns-000/") && e.tls == Some(true))
        .unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.edges[flip].tls = Some(t.edges[flip].tls != Some(true));
        let _ = publisher.publish(build(&t)).await;
    }
}

fn spawn_server(n: usize) -> (Child, u16) {
    let me = std::env::current_exe().expect("own path");
    let mut child = Command::new(me)
        .args(["--case", "serve", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let port = line
        .trim()
        .trim_start_matches("port=")
        .parse()
        .expect("port");
    (child, port)
}

/// Process `pid`'s resident memory in MiB (from `/proc`).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

pub(crate) fn cpu_secs() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `p` quantile of `v` in milliseconds (0 for none).
pub(crate) fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Parent: GetMeshGraph latency, filtered to one namespace and for the whole graph.
pub(crate) async fn get(n: usize) {
    let (child, port) = spawn_server(n);
    let child = Kill(child);
    let mut c = MeshServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    c = c.max_decoding_message_size(512 * 1024 * 1024);
    let filtered = pb::GetMeshGraphRequest {
        namespaces: vec!["ns-000".into()],
        ..Default::default()
    };
    let mut size = (0, 0);
    for _ in 0..50 {
        if let Ok(g) = c.get_mesh_graph(filtered.clone()).await {
            size.0 = g.into_inner().encoded_len();
        }
    }
    let mut times = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        c.get_mesh_graph(filtered.clone()).await.expect("get");
        times.push(start.elapsed());
    }
    let mut whole = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let g = c
            .get_mesh_graph(pb::GetMeshGraphRequest::default())
            .await
            .expect("get all");
        whole.push(start.elapsed());
        size.1 = g.into_inner().encoded_len();
    }
    println!(
        "filtered_p50_ms={:.3} filtered_p99_ms={:.3} filtered_bytes={} whole_p50_ms={:.1} whole_p99_ms={:.1} whole_bytes={} server_rss_mib={:.1}",
        pct(times.clone(), 0.5),
        pct(times, 0.99),
        size.0,
        pct(whole.clone(), 0.5),
        pct(whole, 0.99),
        size.1,
        rss_mib(child.0.id())
    );
}

/// Parent: `streams` filtered watches; time for one delta to reach them all.
pub(crate) async fn fanout(streams: usize) {
    let (child, port) = spawn_server(1000);
    let child = Kill(child);
    let per_conn = 100;
    let mut channels = Vec::new();
    for _ in 0..streams.div_ceil(per_conn) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        channels.push(ch);
    }
    let cpu0 = cpu_secs();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Duration>(streams);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    // Measured: the first delta built after every stream is open, to every stream, each held
    // open until all have it (a stream closing early would add its cancellation to the work
    // being measured).
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<SystemTime>);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for i in 0..streams {
        let mut c = MeshServiceClient::new(channels[i / per_conn].clone());
        let (done, ready) = (done_tx.clone(), ready_tx.clone());
        let (go, mut stop) = (go_rx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let req = pb::WatchMeshGraphRequest {
                namespaces: vec!["ns-000".into()],
                ..Default::default()
            };
            let Ok(resp) = c.watch_mesh_graph(req).await else {
                return;
            };
            let mut s = resp.into_inner();
            let _ = s.message().await; // the snapshot
            let _ = ready.send(()).await;
            while let Ok(Some(ev)) = s.message().await {
                if let Some(Event::Delta(d)) = ev.event {
                    let at = d.generated_at.unwrap_or_default();
                    let sent =
                        SystemTime::UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
                    let start = *go.borrow();
                    if start.is_some_and(|go| sent >= go) {
                        let _ = done
                            .send(SystemTime::now().duration_since(sent).unwrap_or_default())
                            .await;
                        break;
                    }
                }
            }
            let _ = stop.changed().await;
        });
    }
    for _ in 0..streams {
        ready_rx.recv().await;
    }
    let _ = go_tx.send(Some(SystemTime::now()));
    let rss_ready = rss_mib(child.0.id());
    let mut arrivals = Vec::with_capacity(streams);
    for _ in 0..streams {
        if let Some(d) = done_rx.recv().await {
            arrivals.push(d);
        }
    }
    let _ = stop_tx.send(true);
    // The first arrival is the publish path (build stamp to the first stream); the spread
    // after it is the fan-out itself.
    arrivals.sort();
    let first = arrivals.first().copied().unwrap_or_default();
    let worst = arrivals.last().copied().unwrap_or_default();
    println!(
        "streams={streams} delta_to_all_ms={:.1} first_ms={:.1} median_ms={:.1} \
         fanout_spread_ms={:.1} server_rss_mib={:.1} client_cpu_s={:.2}",
        worst.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        pct(arrivals.clone(), 0.5),
        (worst - first).as_secs_f64() * 1000.0,
        rss_ready,
        cpu_secs() - cpu0
    );
}

/// Child: the read path on a real Prometheus (`MESH_BENCH_PROMETHEUS`): the collector's build
/// loop on the in-process store, the follower, and the gRPC service.
pub(crate) async fn serve_prom() {
    let url = std::env::var("MESH_BENCH_PROMETHEUS").expect("MESH_BENCH_PROMETHEUS");
    let source = mesh_prometheus::PrometheusSource::new(
        &url,
        Duration::from_secs(60),
        Duration::from_secs(30),
    )
    .expect("Prometheus URL");
    let store = Arc::new(MemoryStore::new(100));
    // No cluster: this measures the Prometheus path.
    let (_keep, kubernetes) = tokio::sync::watch::channel(Arc::new(
        mesh_policy::cluster::Cluster::unsynced("not part of this benchmark"),
    ));
    tokio::spawn(mesh_collector::run::run(
        mesh_collector::run::Sources {
            prometheus: source,
            kubernetes,
            history: mesh_store::Retention::default(),
        },
        store.clone(),
        Duration::from_secs(15),
        mesh_collector::run::Metrics::default(),
        std::future::pending(),
    ));
    let (tx, rx) = tokio::sync::watch::channel(None);
    // Graphs of past moments read this Prometheus too (no cluster, so no change log).
    let past = Some((url, mesh_store::Backend::Memory(store.clone())));
    follow_and_serve(store, tx, rx, false, past).await.await;
}

/// The child's server: follows `store`, serves gRPC on a free port and prints `port=N` (once
/// a graph is loaded when `wait` is set); returns the serving future.
async fn follow_and_serve(
    store: Arc<MemoryStore>,
    tx: tokio::sync::watch::Sender<Option<Arc<mesh_model::MeshGraph>>>,
    rx: mesh_mcp::GraphWatch,
    wait: bool,
    past: Option<(String, mesh_store::Backend)>,
) -> impl Future<Output = ()> {
    let history = mesh_mcp::History::default();
    tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    if wait {
        rx.clone()
            .wait_for(Option::is_some)
            .await
            .expect("follower runs");
    }
    let routes = mesh_mcp::grpc_routes(
        match past {
            Some((url, log)) => mesh_mcp::GraphService::new(rx, history, Duration::from_secs(60))
                .with_prometheus(Some(url))
                .with_history(log),
            None => mesh_mcp::GraphService::new(rx, history, Duration::from_secs(60)),
        },
        None,
    )
    .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("port={}", l.local_addr().expect("addr").port());
    async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(mesh_mcp::incoming(l))
            .await
            .expect("serve");
    }
}

/// Parent: `n` simulated workloads scraped by a real Prometheus every 15 s; GetMeshGraph from
/// mesh-mcp against the same answer straight from Prometheus (the PromQL of
/// `meshctl graph --prometheus-url`).
pub(crate) async fn prom_get(n: usize) {
    let t = meshsim::generate(n, 1).expect("valid topology");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = l.local_addr().expect("addr");
    tokio::spawn(meshsim::serve(l, t.clone(), std::future::pending()));
    let prom = mesh_testkit::Prometheus::start_every(&[sim], Duration::from_secs(15)).await;
    let me = std::env::current_exe().expect("own path");
    let mut child = Command::new(me)
        .args(["--case", "serve-prom", &n.to_string()])
        .env("MESH_BENCH_PROMETHEUS", &prom.url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let child = Kill(child);
    let port: u16 = line
        .trim()
        .trim_start_matches("port=")
        .parse()
        .expect("port");
    let mut c = MeshServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .max_decoding_message_size(512 * 1024 * 1024);
    // Wait for a full window: every edge of the topology in the served graph (bounded).
    let started = Instant::now();
    loop {
        let edges = c
            .get_mesh_graph(pb::GetMeshGraphRequest::default())
            .await
            .map_or(0, |g| g.into_inner().edges.len());
        if edges >= t.edges.len() * 95 / 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {edges} of {} edges after 10 minutes",
            t.edges.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let warm = started.elapsed();
    let filtered = pb::GetMeshGraphRequest {
        namespaces: vec!["ns-000".into()],
        ..Default::default()
    };
    let mut size = (0, 0);
    let mut times = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        let g = c.get_mesh_graph(filtered.clone()).await.expect("get");
        times.push(start.elapsed());
        size.0 = g.into_inner().encoded_len();
    }
    let mut whole = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let g = c
            .get_mesh_graph(pb::GetMeshGraphRequest::default())
            .await
            .expect("get all");
        whole.push(start.elapsed());
        size.1 = g.into_inner().encoded_len();
    }
    let direct_source = mesh_prometheus::PrometheusSource::new(
        &prom.url,
        Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .expect("url");
    let mut direct = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let g = direct_source
            .graph(SystemTime::now())
            .await
            .expect("direct");
        let _ = mesh_model::GraphFilter {
            namespaces: vec!["ns-000".into()],
            ..Default::default()
        }
        .apply(&g);
        direct.push(start.elapsed());
    }
    // The graph of a moment ago (GetMeshGraph at): the same Prometheus read, at that time.
    let mut past = Vec::new();
    for _ in 0..3 {
        let req = pb::GetMeshGraphRequest {
            at: Some(mesh_proto::timestamp_to_pb(
                SystemTime::now() - Duration::from_secs(30),
            )),
            ..Default::default()
        };
        let mut r = tonic::Request::new(req);
        r.set_timeout(Duration::from_secs(120));
        let start = Instant::now();
        c.get_mesh_graph(r).await.expect("get at");
        past.push(start.elapsed());
    }
    let (fp50, dp50, wp50) = (
        pct(times.clone(), 0.5),
        pct(direct.clone(), 0.5),
        pct(whole.clone(), 0.5),
    );
    println!(
        "series={} warm_s={:.0} filtered_p50_ms={fp50:.3} filtered_p99_ms={:.3} filtered_bytes={} whole_p50_ms={wp50:.1} whole_p99_ms={:.1} whole_bytes={} prometheus_p50_ms={dp50:.0} prometheus_p99_ms={:.0} ratio_filtered={:.0}x ratio_whole={:.0}x at_p50_ms={:.0} at_max_ms={:.0} server_rss_mib={:.1}",
        series(&prom.url).await,
        warm.as_secs_f64(),
        pct(times, 0.99),
        size.0,
        pct(whole, 0.99),
        size.1,
        pct(direct, 0.99),
        dp50 / fp50,
        dp50 / wp50,
        pct(past.clone(), 0.5),
        pct(past, 1.0),
        rss_mib(child.0.id())
    );
}

/// Series in Prometheus's head block.
async fn series(url: &str) -> u64 {
    let v: Option<serde_json::Value> = async {
        reqwest::Client::new()
            .get(format!("{url}/api/v1/status/tsdb"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
    .await;
    v.and_then(|v| v["data"]["headStats"]["numSeries"].as_u64())
        .unwrap_or(0)
}
