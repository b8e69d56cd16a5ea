//! ProposePolicy over a week of history: a generated mesh of `n` workloads without policy, its
//! proxies' metrics rendered every `STEP` for seven days and backfilled into a real Prometheus
//! with `promtool tsdb create-blocks-from openmetrics`; then the proposal for one namespace and
//! for every namespace, each read from Prometheus over the whole 7-day window as mesh-mcp reads
//! it (`increase(...[7d])`), with the number of objects proposed.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_policy::{
    cluster::Cluster,
    propose::{Access, Target, propose},
};

/// The history's resolution: a sample every three hours keeps the backfill of a 1,000-workload
/// mesh to minutes, while `increase()` over the week still spans all of it.
const STEP: Duration = Duration::from_secs(3 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The proxies' metrics of `t` over the week ending at `end`, as OpenMetrics with timestamps:
/// each series' samples together, series of one metric together, then `# EOF`.
fn history(t: &meshsim::Topology, end: SystemTime) -> (String, usize, usize) {
    let start = Instant::now();
    let mut sim = meshsim::Sim::new(t.clone(), start);
    sim.set_version(meshsim::LinkerdVersion::V2_20);
    let steps = (WEEK.as_secs() / STEP.as_secs()) as u32;
    let mut series: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let end_s = end
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for k in 0..=steps {
        sim.advance(start + STEP * k);
        let ts = end_s - u64::from(steps - k) * STEP.as_secs();
        for line in sim.render().lines() {
            // Latency histograms are not read by a proposal: left out of the backfill, which
            // holds every series the proposal's queries select.
            if line.starts_with('#')
                || line.is_empty()
                || line.contains("_bucket{")
                || line.contains("_sum{")
                || line.contains("_count{")
            {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            series
                .entry(name.to_owned())
                .or_default()
                .push((ts, value.to_owned()));
        }
    }
    let (count, mut samples) = (series.len(), 0);
    let mut out = String::new();
    for (name, values) in &series {
        for (ts, v) in values {
            let _ = writeln!(out, "{name} {v} {ts}");
            samples += 1;
        }
    }
    out.push_str("# EOF\n");
    (out, count, samples)
}

/// What ProposePolicy does with `since`: the week from Prometheus (of calls into namespace `ns`,
/// or the whole mesh), joined with the cluster.
async fn observe(url: &str, ns: Option<&str>, cluster: &Arc<Cluster>) -> mesh_model::MeshGraph {
    let mut source = mesh_prometheus::PrometheusSource::new(url, WEEK, Duration::from_secs(120))
        .expect("source");
    if let Some(ns) = ns {
        source = source.into_namespace(ns);
    }
    let seen = source.observe(SystemTime::now()).await.expect("observe");
    let mut g = seen.graph;
    mesh_policy::overlay::apply(
        &mut g,
        cluster,
        &seen.authz,
        &mut mesh_policy::overlay::Verdicts::default(),
    );
    g
}

/// Prints the backfill's size and time, and each proposal's time and objects.
pub(crate) async fn run(n: usize) {
    let t = meshsim::generate(n, 1).expect("valid topology");
    // The history ends a minute ago; instant queries look back over it (--query.lookback-delta).
    let end = SystemTime::now() - Duration::from_secs(60);
    let started = Instant::now();
    let (text, series, samples) = history(&t, end);
    let render = started.elapsed();
    let promtool = mesh_testkit::require_tool("promtool");
    let mut backfill = Duration::ZERO;
    let prom = mesh_testkit::Prometheus::start_prepared(
        &[],
        Duration::from_secs(15),
        &[
            "--storage.tsdb.retention.time=30d",
            "--query.lookback-delta=2h",
        ],
        |data| {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("history.om");
            std::fs::File::create(&file)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write the history");
            let start = Instant::now();
            let out = std::process::Command::new(promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&file)
                .arg(data)
                .output()
                .expect("run promtool");
            assert!(
                out.status.success(),
                "promtool: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            backfill = start.elapsed();
        },
    )
    .await;
    drop(text);

    let objects: Vec<serde_json::Value> = crate::collector::objects(&t)
        .into_iter()
        .filter(|o| {
            !o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("policy.linkerd.io"))
        })
        .collect();
    let cluster = Arc::new(Cluster::from_objects(objects, Cluster::unsynced("").health).0);
    let mut namespaces: Vec<String> = t.workloads.iter().map(|w| w.namespace.clone()).collect();
    namespaces.sort();
    namespaces.dedup();
    let mut one = Vec::new();
    let mut one_objects = 0;
    let mut read = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let g = observe(&prom.url, Some(&namespaces[0]), &cluster).await;
        read.push(start.elapsed());
        let p = propose(
            &g,
            &cluster,
            &Target {
                namespace: namespaces[0].clone(),
                workload: None,
            },
            Access::Audit,
        )
        .expect("a proposal");
        one.push(start.elapsed());
        one_objects = p.objects.len();
    }
    let start = Instant::now();
    let g = observe(&prom.url, None, &cluster).await;
    let (mut all_objects, mut denied) = (0, 0);
    for ns in &namespaces {
        let p = propose(
            &g,
            &cluster,
            &Target {
                namespace: ns.clone(),
                workload: None,
            },
            Access::Audit,
        )
        .expect("a proposal");
        all_objects += p.objects.len();
        denied += p.newly_denied.len();
    }
    let all = start.elapsed();
    let med = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "window=7d step={}m series={series} samples={samples} render_s={:.1} backfill_s={:.1} \
         edges={} namespace_ms={:.0} namespace_prometheus_ms={:.0} namespace_objects={one_objects} \
         mesh_ms={:.0} mesh_namespaces={} mesh_objects={all_objects} newly_denied={denied} \
         goal_namespace_under_2s={}",
        STEP.as_secs() / 60,
        render.as_secs_f64(),
        backfill.as_secs_f64(),
        g.edges.len(),
        ms(med(one.clone())),
        ms(med(read)),
        ms(all),
        namespaces.len(),
        med(one) < Duration::from_secs(2),
    );
}
