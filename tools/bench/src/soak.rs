//! Soak (`make soak`, never in `make test`): one `mesh-mcp` following a real redis-server, fed
//! by two `mesh-collector` replicas (one leads under the fenced lease) that read a real
//! Prometheus scraping meshsim. meshsim's traffic changes every 2 s and the collectors build
//! every 2 s, so nearly every build is a delta. Meanwhile 1,000 watch streams (a quarter on the
//! whole graph, the rest on one namespace each) and 500 mixed `GetMeshGraph` reads a second run
//! for N minutes; halfway, the leading collector is killed with SIGKILL and replaced.
//!
//! Every stream checks every event against the position it holds: a delta must start at that
//! position (same epoch, `from_version` = the version held), a snapshot after the first only
//! under a newer epoch (the fail-over), a heartbeat must name the position held, and a stream
//! may not be quiet past two heartbeat intervals. Every tenth stream also keeps its own copy of
//! its view from the events. At the end the whole-graph streams must hold the graph's final
//! position and every copy must equal the view served. Prints the totals, and writes
//! `soak.csv`, `soak.svg` and `soak.png` (p99 read latency and mesh-mcp's RSS per 10 s) to
//! `SOAK_OUT` (default `target/soak`).

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use mesh_proto::pb::{self, mesh_graph_event::Event, mesh_service_client::MeshServiceClient};
use mesh_testkit::{ChildGuard, Prometheus, Redis, free_port, poll};

use crate::{failover, serve};
use tonic::transport::Channel;

/// Seconds per point of the series.
const BUCKET: Duration = Duration::from_secs(10);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the streams saw, over all of them.
#[derive(Default)]
struct Streams {
    deltas: AtomicU64,
    resyncs: AtomicU64,
    heartbeats: AtomicU64,
    /// Deltas that did not start at the position held, or snapshots within an epoch.
    gaps: AtomicU64,
    /// Heartbeats naming another position than the one held.
    bad_heartbeats: AtomicU64,
    /// Streams refused, ended or broken.
    errors: AtomicU64,
    /// Times a stream said nothing for longer than two heartbeat intervals.
    silences: AtomicU64,
}

/// What a stream holds at the end: its position and, when it keeps one, its copy of the
/// filtered view's edges.
struct Held {
    at: Option<(u64, u64)>,
    edges: Option<HashMap<String, pb::Edge>>,
}

/// An edge's identity (source, destination, protocol) as a map key.
fn edge_key(
    src: Option<&pb::WorkloadRef>,
    dst: Option<&pb::WorkloadRef>,
    authority: &str,
    protocol: &str,
) -> String {
    let w = |r: Option<&pb::WorkloadRef>| {
        r.map(|r| format!("{}/{}/{}", r.namespace, r.kind, r.name))
            .unwrap_or_default()
    };
    format!("{} {} {authority} {protocol}", w(src), w(dst))
}

fn edges_of(g: &pb::MeshGraph) -> HashMap<String, pb::Edge> {
    g.edges
        .iter()
        .map(|e| {
            let k = edge_key(
                e.src.as_ref(),
                e.dst.as_ref(),
                &e.dst_authority,
                &e.protocol,
            );
            (k, e.clone())
        })
        .collect()
}

/// Follows one watch stream until `stop`, checking its positions and, with `copy`, keeping
/// its own copy of the view from the snapshot and every delta; returns what it holds then.
async fn follow(
    mut c: MeshServiceClient<Channel>,
    req: pb::WatchMeshGraphRequest,
    copy: bool,
    tally: Arc<Streams>,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Held {
    let mut held = Held {
        at: None,
        edges: copy.then(HashMap::new),
    };
    let mut s = match c.watch_mesh_graph(req).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            eprintln!("soak: a watch was refused: {e}");
            tally.errors.fetch_add(1, Relaxed);
            let _ = ready.send(()).await;
            return held;
        }
    };
    let at = &mut held.at;
    loop {
        // mesh-mcp's heartbeat is 15 s: a stream quiet for 35 s is a broken one.
        let next = tokio::select! {
            m = tokio::time::timeout(Duration::from_secs(35), s.message()) => match m {
                Ok(m) => m,
                Err(_) => {
                    tally.silences.fetch_add(1, Relaxed);
                    continue;
                }
            },
            _ = stop.changed() => return held,
        };
        let ev = match next {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                tally.errors.fetch_add(1, Relaxed);
                return held;
            }
            Err(e) => {
                eprintln!("soak: a watch broke: {e}");
                tally.errors.fetch_add(1, Relaxed);
                return held;
            }
        };
        match ev.event {
            Some(Event::Snapshot(g)) => {
                if let Some(edges) = &mut held.edges {
                    *edges = edges_of(&g);
                }
                match *at {
                    None => {
                        let _ = ready.send(()).await;
                    }
                    Some((epoch, _)) if g.epoch > epoch => {
                        tally.resyncs.fetch_add(1, Relaxed);
                    }
                    Some(_) => {
                        tally.gaps.fetch_add(1, Relaxed);
                    }
                }
                *at = Some((g.epoch, g.version));
            }
            Some(Event::Delta(d)) => {
                if let Some(edges) = &mut held.edges {
                    for r in &d.removed_edges {
                        edges.remove(&edge_key(
                            r.src.as_ref(),
                            r.dst.as_ref(),
                            &r.dst_authority,
                            &r.protocol,
                        ));
                    }
                    for e in d.upserted_edges {
                        let k = edge_key(
                            e.src.as_ref(),
                            e.dst.as_ref(),
                            &e.dst_authority,
                            &e.protocol,
                        );
                        edges.insert(k, e);
                    }
                }
                match *at {
                    Some((e, v)) if d.epoch == e && d.from_version == v && d.to_version > v => {
                        tally.deltas.fetch_add(1, Relaxed);
                    }
                    _ => {
                        tally.gaps.fetch_add(1, Relaxed);
                    }
                }
                *at = Some((d.epoch, d.to_version));
            }
            Some(Event::Heartbeat(h)) => {
                tally.heartbeats.fetch_add(1, Relaxed);
                let p = h.position.unwrap_or_default();
                if *at != Some((p.epoch, p.version)) {
                    tally.bad_heartbeats.fetch_add(1, Relaxed);
                }
            }
            None => {}
        }
    }
}

/// One read's outcome: when (bucket), how long, whether it failed.
struct Read {
    bucket: usize,
    took: Duration,
    ok: bool,
}

/// One point of the series.
struct Point {
    t: f64,
    reads: usize,
    errors: usize,
    p50: f64,
    p99: f64,
    rss: f64,
}

/// Runs the soak for `minutes` and prints its figures (see the module's comment).
pub(crate) async fn run(minutes: usize) {
    let me = std::env::current_exe().expect("own path");
    let (mcp_bin, collector_bin) = (
        me.with_file_name("mesh-mcp"),
        me.with_file_name("mesh-collector"),
    );
    if !mcp_bin.exists() || !collector_bin.exists() {
        println!("soak: not run: build mesh-mcp and mesh-collector next to mesh-bench (make soak)");
        return;
    }
    let streams = env_or("SOAK_STREAMS", 1000);
    let rate = env_or("SOAK_READS", 500);
    let out = PathBuf::from(std::env::var("SOAK_OUT").unwrap_or_else(|_| "target/soak".into()));
    std::fs::create_dir_all(&out).expect("output directory");
    let duration = Duration::from_secs(60 * minutes as u64);

    // The world: meshsim (its traffic changed every 2 s below), Prometheus scraping it every
    // second, Redis, two collectors, and the mesh-mcp under test.
    let mut topology = meshsim::generate(200, 7).expect("valid topology");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = l.local_addr().expect("addr");
    tokio::spawn(meshsim::serve(l, topology.clone(), std::future::pending()));
    let prom = Prometheus::start_every(&[sim], Duration::from_secs(1)).await;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spawned = 0;
    let next_collector = |spawned: &mut usize| {
        *spawned += 1;
        failover::spawn(
            &collector_bin,
            &prom.url,
            &redis.url,
            dir.path(),
            &format!("c{spawned}"),
            "2s",
        )
    };
    let mut replicas = [next_collector(&mut spawned), next_collector(&mut spawned)];
    let (grpc, admin) = (free_port(), free_port());
    let mcp = ChildGuard::spawn(
        "mesh-mcp",
        Command::new(&mcp_bin)
            .args(["--redis-url", &redis.url, "--insecure-no-auth"])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .env("KUBECONFIG", dir.path().join("none")),
        &dir.path().join("mesh-mcp.log"),
    );
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let connect = || async {
        poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .expect("endpoint")
                    .timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .ok()
            },
        )
        .await
        .expect("mesh-mcp never listened")
    };
    let reader = MeshServiceClient::new(connect().await);
    let first = poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let g = reader
                .clone()
                .get_mesh_graph(pb::GetMeshGraphRequest::default())
                .await
                .ok()?
                .into_inner();
            (!g.edges.is_empty()).then_some(g)
        },
    )
    .await
    .expect("mesh-mcp never served a graph with edges");
    let namespaces: Vec<String> = {
        let mut ns: Vec<String> = first
            .workloads
            .iter()
            .filter_map(|w| w.r#ref.as_ref())
            .map(|w| w.namespace.clone())
            .collect();
        ns.sort();
        ns.dedup();
        ns
    };
    let workloads: Vec<String> = first
        .edges
        .iter()
        .filter_map(|e| e.src.as_ref())
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect();

    // The watch streams, 100 to a connection.
    let tally = Arc::new(Streams::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(streams.max(1));
    let mut channels = Vec::new();
    for _ in 0..streams.div_ceil(100) {
        channels.push(connect().await);
    }
    let mut followers = Vec::new();
    for i in 0..streams {
        let whole = i % 4 == 0;
        let req = pb::WatchMeshGraphRequest {
            namespaces: if whole {
                Vec::new()
            } else {
                vec![namespaces[i % namespaces.len()].clone()]
            },
            ..Default::default()
        };
        let c = MeshServiceClient::new(channels[i / 100].clone());
        followers.push((
            whole,
            req.namespaces.clone(),
            tokio::spawn(follow(
                c,
                req,
                // Every tenth stream (half of them whole-graph ones) also keeps a copy of its
                // view: keeping all 1,000 took the cores the service is measured on (read p99
                // 605 ms instead of 191 ms).
                i % 10 == 0,
                tally.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
            )),
        ));
    }
    drop(ready_tx);
    let opened = tokio::time::timeout(Duration::from_secs(120), async {
        for _ in 0..streams {
            if ready_rx.recv().await.is_none() {
                break;
            }
        }
    })
    .await;
    assert!(
        opened.is_ok(),
        "the watch streams did not open within 120 s"
    );
    println!(
        "soak: {streams} watch streams open, {rate} reads/s for {minutes} min, graph of {} workloads and {} edges",
        first.workloads.len(),
        first.edges.len()
    );

    // Traffic that changes every 2 s: a tenth of the edges alternate between their rate and
    // four times it.
    let web = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let changer = {
        let web = web.clone();
        let base: Vec<f64> = topology.edges.iter().map(|e| e.rps).collect();
        tokio::spawn(async move {
            let mut high = false;
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                high = !high;
                for (i, e) in topology.edges.iter_mut().enumerate() {
                    if i % 10 == 0 {
                        e.rps = if high { base[i] * 4.0 } else { base[i] };
                    }
                }
                let _ = web
                    .put(format!("http://{sim}/topology"))
                    .body(topology.to_yaml())
                    .send()
                    .await;
            }
        })
    };

    // Reads: `rate` a second, a tenth whole graph, seven tenths one namespace, two tenths one
    // workload; at most 256 in flight (a read that cannot start is counted as shed).
    let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel::<Read>();
    let shed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(tokio::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let readers = {
        let (shed, first_error, permits) = (shed.clone(), first_error.clone(), permits.clone());
        let mut read_channels = Vec::new();
        for _ in 0..4 {
            read_channels.push(connect().await);
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0usize;
            while start.elapsed() < duration {
                tick.tick().await;
                i += 1;
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    shed.fetch_add(1, Relaxed);
                    continue;
                };
                let req = match i % 10 {
                    0 => pb::GetMeshGraphRequest::default(),
                    1..=7 => pb::GetMeshGraphRequest {
                        namespaces: vec![namespaces[i % namespaces.len()].clone()],
                        ..Default::default()
                    },
                    _ => pb::GetMeshGraphRequest {
                        workload: workloads[i % workloads.len()].clone(),
                        ..Default::default()
                    },
                };
                let mut c = MeshServiceClient::new(read_channels[i % 4].clone());
                let (tx, first_error) = (read_tx.clone(), first_error.clone());
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = c.get_mesh_graph(req).await;
                    let took = t0.elapsed();
                    if let Err(e) = &r {
                        first_error
                            .lock()
                            .await
                            .get_or_insert_with(|| e.to_string());
                    }
                    let _ = tx.send(Read {
                        bucket: (t0.duration_since(start).as_secs_f64() / BUCKET.as_secs_f64())
                            as usize,
                        took,
                        ok: r.is_ok(),
                    });
                    drop(permit);
                });
            }
        })
    };

    // Sample mesh-mcp's memory every bucket; kill the leader halfway.
    let mut rss = Vec::new();
    let mut killed_at = None;
    let mut tick = tokio::time::interval(BUCKET);
    while start.elapsed() < duration {
        tick.tick().await;
        rss.push((start.elapsed().as_secs_f64(), serve::rss_mib(mcp.pid())));
        if killed_at.is_none() && start.elapsed() >= duration / 2 {
            let i = failover::leader(&replicas)
                .await
                .expect("one collector leads");
            replicas[i].guard.signal("KILL");
            killed_at = Some(start.elapsed().as_secs_f64());
            println!(
                "soak: killed the leading collector at {:.0} s",
                killed_at.unwrap_or(0.0)
            );
            replicas[i] = next_collector(&mut spawned);
        }
    }
    let _ = readers.await;
    // Every read started has finished (each is bounded by the channel's 10 s timeout).
    let _ = permits.acquire_many(256).await;
    // The collectors and the traffic stop, so the next position is the final one.
    changer.abort();
    for r in &replicas {
        r.guard.signal("KILL");
    }
    let final_graph = {
        let mut last = (0, 0);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(g) = reader
                .clone()
                .get_mesh_graph(pb::GetMeshGraphRequest::default())
                .await
            {
                let g = g.into_inner();
                if (g.epoch, g.version) == last {
                    break;
                }
                last = (g.epoch, g.version);
            }
        }
        last
    };
    // A moment for the last delta to reach every stream, then each hands back its position.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    // Every stream's own copy of its view must be the view the service serves now.
    let (mut behind, mut differ, mut copies) = (0, 0, 0);
    let mut served: HashMap<Vec<String>, HashMap<String, pb::Edge>> = HashMap::new();
    for (whole, filter, f) in followers {
        let Ok(held) = f.await else {
            differ += 1;
            continue;
        };
        if whole && held.at != Some(final_graph) {
            behind += 1;
        }
        if !served.contains_key(&filter) {
            let g = reader
                .clone()
                .get_mesh_graph(pb::GetMeshGraphRequest {
                    namespaces: filter.clone(),
                    ..Default::default()
                })
                .await
                .expect("the final view")
                .into_inner();
            served.insert(filter.clone(), edges_of(&g));
        }
        let Some(edges) = held.edges else { continue };
        copies += 1;
        if served.get(&filter) != Some(&edges) {
            differ += 1;
        }
    }

    // Reads per bucket.
    let mut buckets: Vec<Vec<Duration>> = Vec::new();
    let mut errors_per: Vec<usize> = Vec::new();
    let (mut reads, mut errors, mut all) = (0usize, 0usize, Vec::new());
    while let Ok(r) = read_rx.try_recv() {
        if buckets.len() <= r.bucket {
            buckets.resize_with(r.bucket + 1, Vec::new);
            errors_per.resize(r.bucket + 1, 0);
        }
        reads += 1;
        if r.ok {
            buckets[r.bucket].push(r.took);
            all.push(r.took);
        } else {
            errors += 1;
            errors_per[r.bucket] += 1;
        }
    }
    // Whole buckets only: the last one holds the stragglers of the final tick.
    let whole = (duration.as_secs_f64() / BUCKET.as_secs_f64()) as usize;
    let points: Vec<Point> = buckets
        .iter_mut()
        .take(whole)
        .enumerate()
        .map(|(i, b)| Point {
            t: (i + 1) as f64 * BUCKET.as_secs_f64(),
            reads: b.len() + errors_per[i],
            errors: errors_per[i],
            p50: serve::pct(b.clone(), 0.5),
            p99: serve::pct(b.clone(), 0.99),
            rss: rss
                .iter()
                .min_by(|a, b| {
                    (a.0 - (i + 1) as f64 * BUCKET.as_secs_f64())
                        .abs()
                        .total_cmp(&(b.0 - (i + 1) as f64 * BUCKET.as_secs_f64()).abs())
                })
                .map_or(0.0, |r| r.1),
        })
        .collect();
    let secs = duration.as_secs_f64();
    let (p50, p99) = (serve::pct(all.clone(), 0.5), serve::pct(all, 0.99));
    let rss_first = rss.first().map_or(0.0, |r| r.1);
    let rss_last = rss.last().map_or(0.0, |r| r.1);
    let rss_max = rss.iter().map(|r| r.1).fold(0.0, f64::max);
    let first_error = first_error.lock().await.clone();
    println!(
        "soak: minutes={minutes} streams={streams} reads={reads} reads_per_s={:.0} read_errors={errors} \
         shed={} read_p50_ms={p50:.2} read_p99_ms={p99:.2} deltas_delivered={} resyncs={} \
         heartbeats={} gaps={} bad_heartbeats={} stream_errors={} silences={} \
         whole_streams_behind_at_end={behind} copies_checked={copies} views_differing_at_end={differ} \
         final_position={}:{} rss_mib_first={rss_first:.1} rss_mib_last={rss_last:.1} rss_mib_max={rss_max:.1}",
        reads as f64 / secs,
        shed.load(Relaxed),
        tally.deltas.load(Relaxed),
        tally.resyncs.load(Relaxed),
        tally.heartbeats.load(Relaxed),
        tally.gaps.load(Relaxed),
        tally.bad_heartbeats.load(Relaxed),
        tally.errors.load(Relaxed),
        tally.silences.load(Relaxed),
        final_graph.0,
        final_graph.1,
    );
    if let Some(e) = first_error {
        println!("soak: first read error: {e}");
    }
    let clean = errors == 0
        && tally.gaps.load(Relaxed) == 0
        && tally.bad_heartbeats.load(Relaxed) == 0
        && tally.errors.load(Relaxed) == 0
        && tally.silences.load(Relaxed) == 0
        && behind == 0
        && differ == 0;
    println!(
        "soak: {} (zero read errors, zero gaps, zero broken or silent streams, every whole-graph \
         stream at the final position, every stream's copy equal to the view served)",
        if clean { "CLEAN" } else { "NOT CLEAN" }
    );

    let mut csv = String::from("t_s,reads,read_errors,p50_ms,p99_ms,mesh_mcp_rss_mib\n");
    for p in &points {
        let _ = writeln!(
            csv,
            "{:.0},{},{},{:.3},{:.3},{:.1}",
            p.t, p.reads, p.errors, p.p50, p.p99, p.rss
        );
    }
    std::fs::write(out.join("soak.csv"), csv).expect("write soak.csv");
    let svg = chart(
        &points,
        killed_at,
        &format!(
            "mesh-mcp soak: {streams} watch streams + {rate} GetMeshGraph/s, {minutes} min, leader collector killed once"
        ),
    );
    std::fs::write(out.join("soak.svg"), &svg).expect("write soak.svg");
    match mesh_render::svg_to_png(&svg) {
        Ok(png) => std::fs::write(out.join("soak.png"), png).expect("write soak.png"),
        Err(e) => println!("soak: no PNG: {e}"),
    }
    println!(
        "soak: wrote {}/soak.csv, soak.svg and soak.png",
        out.display()
    );
}

/// One line of a panel: its name, colour and values.
type Line<'a> = (&'a str, &'a str, Vec<f64>);

/// Two panels over time: p50/p99 read latency (ms) and mesh-mcp's RSS (MiB); a dashed line
/// where the leader was killed.
fn chart(points: &[Point], killed_at: Option<f64>, title: &str) -> String {
    let (w, h, left, right, top) = (900.0, 580.0, 70.0, 20.0, 60.0);
    let panel = 210.0;
    let gap = 60.0;
    let t_max = points.last().map_or(1.0, |p| p.t).max(1.0);
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{left}" y="22" font-size="14">{}</text>"#,
        mesh_render::xml_escape(title)
    );
    // p50 is a flat line at this scale: its range goes in its label.
    let (lo, hi) = points
        .iter()
        .map(|p| p.p50)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let p50_label = format!("p50 ({lo:.2}-{hi:.2} ms)");
    let series: [(&str, Vec<Line<'_>>); 2] = [
        (
            "read latency (ms)",
            vec![
                ("p99", "#c0392b", points.iter().map(|p| p.p99).collect()),
                (
                    p50_label.as_str(),
                    "#2c7fb8",
                    points.iter().map(|p| p.p50).collect(),
                ),
            ],
        ),
        (
            "mesh-mcp RSS (MiB)",
            vec![("RSS", "#238b45", points.iter().map(|p| p.rss).collect())],
        ),
    ];
    for (k, (label, lines)) in series.iter().enumerate() {
        let y0 = top + k as f64 * (panel + gap);
        let v_max = lines
            .iter()
            .flat_map(|l| l.2.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let y = |v: f64| y0 + panel - panel * v / v_max;
        let _ = write!(
            s,
            r##"<rect x="{left}" y="{y0}" width="{}" height="{panel}" fill="none" stroke="#999"/><text x="{left}" y="{}">{label}</text>"##,
            w - left - right,
            y0 - 6.0
        );
        for i in 0..=4 {
            let v = v_max * f64::from(i) / 4.0;
            let _ = write!(
                s,
                r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
                left - 6.0,
                y(v) + 4.0,
                fmt_axis(v),
                w - right,
                y(v),
                y(v)
            );
        }
        for (j, (name, colour, values)) in lines.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .zip(values)
                .map(|(p, v)| format!("{:.1},{:.1}", x(p.t), y(*v)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="{colour}">{name}</text>"#,
                path.join(" "),
                w - right - 60.0 - 150.0 * j as f64,
                y0 + 16.0
            );
        }
        if let Some(t) = killed_at {
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{y0}" y2="{1}" stroke="#555" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3}" fill="#555">leader killed</text>"##,
                x(t),
                y0 + panel,
                x(t) + 4.0,
                y0 + panel - 6.0
            );
        }
    }
    let base = top + 2.0 * panel + gap + 20.0;
    for i in 0..=5 {
        let t = t_max * f64::from(i) / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{base}" text-anchor="middle">{:.0} s</text>"#,
            x(t),
            t
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_axis(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
