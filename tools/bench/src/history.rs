//! History at scale, on a real redis-server: a cluster of `n` workloads logged by the
//! collector's change-log writer, then 1,000 changes (Deployments scaled, one a build); the
//! past objects replayed from the log, and a diff over those 1,000 changes with both ends'
//! graphs joined and compared (Prometheus's part of a past graph is the `prom-get` case's
//! `at_*` figures: the same read, at another time); and the log's memory in Redis per 10,000
//! changes.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_collector::changes::ChangeLog;
use mesh_model::{GraphFilter, SourceHealth, history};
use mesh_policy::{cluster::Cluster, history::Record, index::Index};
use mesh_store::{GraphStore, HistoryStore, RedisStore, Retention, STREAM_START};
use serde_json::Value;

use crate::{collector::objects, serve::pct};

fn healthy() -> SourceHealth {
    SourceHealth {
        source: "kubernetes".into(),
        ok: true,
        last_success: Some(SystemTime::now()),
        error: String::new(),
        detail: String::new(),
    }
}

/// The objects as they were just after the change with stream id `after`, and the object
/// changes since: what `GetMeshGraph(at)` and `DiffMeshGraph` read from the log.
async fn replay(store: &RedisStore, after: &str) -> (Cluster, Vec<Record>) {
    let mut later = Vec::new();
    let mut from = after.to_owned();
    loop {
        let page = store.changes_after(&from, 5_000).await.expect("changes");
        let n = page.len();
        for c in page {
            later.push(serde_json::from_str::<Record>(&c.record).expect("a record"));
            from = c.id;
        }
        if n < 5_000 {
            break;
        }
    }
    let current: HashMap<String, String> = store
        .logged_objects()
        .await
        .expect("objects")
        .into_iter()
        .collect();
    let objects = mesh_policy::history::objects_before(current, &later);
    (Cluster::from_objects(objects, healthy()).0, later)
}

/// Stream memory (`MEMORY USAGE`) of a key, in bytes.
async fn memory(url: &str, key: &str) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async::<Option<u64>>(&mut c)
        .await
        .expect("MEMORY USAGE")
        .unwrap_or(0)
}

/// Scales Deployment `i % n` to `replicas`: one change.
fn scaled(deploys: &[Value], i: usize, replicas: usize) -> Value {
    let mut d = deploys[i % deploys.len()].clone();
    d["spec"]["replicas"] = Value::from(replicas);
    d
}

pub(crate) async fn run(n: usize) {
    let redis = mesh_testkit::Redis::start().await;
    let store = Arc::new(
        RedisStore::new(&redis.url, "bench:", 1000, Duration::from_secs(10)).expect("store"),
    );
    let lease = store
        .acquire("bench", Duration::from_secs(86_400), 0)
        .await
        .expect("store")
        .expect("lease");
    let t = meshsim::generate(n, 1).expect("valid topology");
    let all = objects(&t);
    let deploys: Vec<Value> = all
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .cloned()
        .collect();
    let mut index = Index::default();
    for o in all {
        index.apply(o);
    }
    let mut log = ChangeLog::lead(store.clone(), &lease, Retention::default());
    let (c, _) = index.snapshot(healthy());
    let start = Instant::now();
    let listed = log.record(&c).await.expect("log");
    let listed_ms = start.elapsed().as_secs_f64() * 1000.0;
    let base = store
        .changes_after(STREAM_START, usize::MAX >> 1)
        .await
        .expect("changes")
        .last()
        .map(|c| c.id.clone())
        .expect("listed");

    // 1,000 changes, one per build, as a busy hour would bring them.
    let mut append = Vec::new();
    for i in 0..1_000 {
        index.apply(scaled(&deploys, i, 2 + i / deploys.len()));
        let (c, _) = index.snapshot(healthy());
        let s = Instant::now();
        assert_eq!(log.record(&c).await.expect("log"), 1);
        append.push(s.elapsed());
    }
    let (now, _) = index.snapshot(healthy());

    // GetMeshGraph(at) before those changes: the log's part.
    let mut replays = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let (c, later) = replay(&store, &base).await;
        assert_eq!(later.len(), 1_000);
        assert_eq!(c.workloads.len(), now.workloads.len());
        replays.push(s.elapsed());
    }

    // DiffMeshGraph over the 1,000 changes: both ends replayed and joined with the traffic
    // (in process here), the graphs compared, the object changes listed.
    let window = Duration::from_secs(60);
    let traffic = meshsim::graph(&t, window, SystemTime::now());
    let mut diffs = Vec::new();
    let mut found = 0;
    for _ in 0..10 {
        let s = Instant::now();
        let (before, later) = replay(&store, &base).await;
        let (after, _) = replay(&store, &format!("{}-0", u64::MAX >> 1)).await;
        let join = |c: Cluster| {
            let mut g = traffic.clone();
            mesh_policy::overlay::apply(
                &mut g,
                &Arc::new(c),
                &[],
                &mut mesh_policy::overlay::Verdicts::default(),
            );
            GraphFilter::default().apply(&g)
        };
        let (a, b) = (join(before), join(after));
        let mut changes: Vec<history::Change> = later
            .iter()
            .map(|r| history::Change {
                at: SystemTime::now(),
                what: history::ChangeKind::Object(Box::new(r.to_change())),
            })
            .collect();
        changes.extend(
            history::graph_changes(&a, &b, &history::Thresholds::default())
                .into_iter()
                .map(|what| history::Change {
                    at: SystemTime::now(),
                    what,
                }),
        );
        history::sort_changes(&mut changes);
        found = changes.len();
        diffs.push(s.elapsed());
    }

    // Memory: 10,000 more changes of the same kind, their records made as the writer makes
    // them and appended 500 at a time (the cluster index is not what is measured here).
    let before = memory(&redis.url, "bench:changes").await;
    let mut last: HashMap<String, String> = store
        .logged_objects()
        .await
        .expect("objects")
        .into_iter()
        .collect();
    for chunk in (0..10_000).collect::<Vec<usize>>().chunks(500) {
        let mut entries = Vec::new();
        for &i in chunk {
            let d = scaled(&deploys, i, 1_000 + i);
            let key = mesh_policy::index::ObjectKey::of(&d);
            let text = mesh_policy::history::key_text(&key);
            let now = mesh_policy::history::Logged::of(&d);
            let r = Record::of(&key, last.get(&text).map(String::as_str), Some(&now))
                .expect("a change");
            last.insert(text.clone(), now.text.clone());
            entries.push(mesh_store::LogEntry {
                key: text,
                after: Some(now.text),
                record: serde_json::to_string(&r).expect("json"),
            });
        }
        store
            .append_changes(&lease, entries, Retention::default())
            .await
            .expect("append");
    }
    let after = memory(&redis.url, "bench:changes").await;
    let objects_bytes = memory(&redis.url, "bench:changes:objects").await;
    println!(
        "objects={listed} listed_ms={listed_ms:.0} append_p50_ms={:.2} append_p99_ms={:.2} replay_1000_p50_ms={:.1} replay_1000_p99_ms={:.1} diff_1000_p50_ms={:.1} diff_1000_p99_ms={:.1} diff_changes={found} stream_mib_per_10000_changes={:.2} objects_mib={:.2}",
        pct(append.clone(), 0.5),
        pct(append, 0.99),
        pct(replays.clone(), 0.5),
        pct(replays, 0.99),
        pct(diffs.clone(), 0.5),
        pct(diffs, 0.99),
        (after.saturating_sub(before)) as f64 / 1_048_576.0,
        objects_bytes as f64 / 1_048_576.0,
    );
}
