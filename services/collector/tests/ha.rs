//! High availability over real processes: two `mesh-collector` replicas on one real
//! redis-server, fed by a real Prometheus scraping meshsim. The leader is killed, paused and
//! stopped; a standby takes over each time, and a reader of the stream never sees a silent gap
//! or a write from a deposed leader. Take-over *times* are benchmark figures (`make bench`),
//! never asserted here.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{collections::BTreeMap, process::Command, sync::Arc, time::Duration};

use mesh_store::{GraphStore, RedisStore, STREAM_START};
use mesh_testkit::{ChildGuard, Prometheus, Redis, free_port, poll};
use tokio::sync::Mutex;

struct Replica {
    guard: ChildGuard,
    admin: u16,
}

struct Cluster {
    prom_url: String,
    redis_url: String,
    dir: tempfile::TempDir,
    spawned: usize,
}

impl Cluster {
    /// A collector replica named `name`, with the default lease timings.
    fn replica(&mut self, name: &str) -> Replica {
        self.spawned += 1;
        let admin = free_port();
        let kubeconfig = self.dir.path().join("no-kubeconfig");
        let guard = ChildGuard::spawn(
            name,
            Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
                .args(["--prometheus-url", &self.prom_url])
                .args(["--redis-url", &self.redis_url])
                .args(["--window", "10s", "--interval", "1s"])
                .args(["--lease-holder", name])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                // No cluster: the graph comes from Prometheus alone.
                .env("KUBECONFIG", &kubeconfig)
                .env("MESH_LOG", "info"),
            &self.dir.path().join(format!("{name}-{}.log", self.spawned)),
        );
        Replica { guard, admin }
    }
}

/// The replica's `mesh_collector_leader` gauge, if its admin port answers.
async fn leads(r: &Replica) -> Option<bool> {
    mesh_testkit::admin_metric(r.admin, "mesh_collector_leader")
        .await
        .map(|v| v == 1.0)
}

/// Which of the two leads, once exactly one says so.
async fn leader(rs: &[Replica; 2]) -> usize {
    poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match (leads(&rs[0]).await, leads(&rs[1]).await) {
                (Some(true), Some(false)) => Some(0),
                (Some(false), Some(true)) => Some(1),
                _ => None,
            }
        },
    )
    .await
    .expect("no single leader within 30 s")
}

/// What a reader saw of the stream: every entry in order, checked as a follower would.
#[derive(Debug, Default)]
struct Reader {
    /// The newest epoch seen.
    epoch: u64,
    /// The version reached in it.
    version: u64,
    /// Entries whose `from_version` skipped versions within one epoch.
    silent_gaps: Vec<String>,
    /// Entries from an epoch older than one already seen: a deposed leader's write.
    stale_writes: Vec<String>,
    /// Epoch changes (the reader reloads the snapshot there: an explicit snapshot).
    takeovers: BTreeMap<u64, u64>,
}

/// Tails the stream from its start for as long as the test runs.
fn read_stream(store: Arc<RedisStore>, reader: Arc<Mutex<Reader>>) {
    tokio::spawn(async move {
        let mut after = STREAM_START.to_owned();
        loop {
            let Ok(entries) = store.tail(&after, Duration::from_millis(500), 1000).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut r = reader.lock().await;
            for e in entries {
                let what = format!(
                    "{} epoch {} {}->{}",
                    e.id, e.epoch, e.from_version, e.to_version
                );
                if e.epoch < r.epoch {
                    r.stale_writes.push(what);
                } else if e.epoch > r.epoch {
                    r.takeovers.insert(e.epoch, e.from_version);
                    r.epoch = e.epoch;
                    r.version = e.to_version;
                } else if e.from_version != r.version {
                    r.silent_gaps.push(what);
                    r.version = e.to_version;
                } else {
                    r.version = e.to_version;
                }
                after = e.id;
            }
        }
    });
}

async fn snapshot_epoch(store: &RedisStore) -> u64 {
    store.load().await.ok().flatten().map_or(0, |s| s.epoch)
}

/// Polls until the snapshot's epoch passes `after` (a new leader published).
async fn published_after(store: &RedisStore, after: u64) -> u64 {
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let e = snapshot_epoch(store).await;
            (e > after).then_some(e)
        },
    )
    .await
    .unwrap_or_else(|| panic!("no new leader published past epoch {after} within 30 s"))
}

/// meshsim with emojivoto, whose traffic `churn` changes every second so every build is a delta.
async fn setup() -> (Cluster, Arc<RedisStore>, Redis, Prometheus) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sim = Arc::new(tokio::sync::Mutex::new(meshsim::Sim::new(
        meshsim::builtin("emojivoto").unwrap(),
        std::time::Instant::now(),
    )));
    tokio::spawn(meshsim::serve_shared(
        l,
        sim.clone(),
        std::future::pending(),
    ));
    // Rates that keep moving: each build differs, so the stream carries deltas all the time.
    tokio::spawn(async move {
        let mut i = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            i += 1;
            let mut t = meshsim::builtin("emojivoto").unwrap();
            for e in &mut t.edges {
                e.rps *= 1.0 + f64::from(i % 5) * 0.3;
            }
            sim.lock().await.set_topology(t, std::time::Instant::now());
        }
    });
    let prom = Prometheus::start(&[addr]).await;
    let redis = Redis::start().await;
    let store =
        Arc::new(RedisStore::new(&redis.url, "mesh:", 10_000, Duration::from_secs(2)).unwrap());
    let cluster = Cluster {
        prom_url: prom.url.clone(),
        redis_url: redis.url.clone(),
        dir: tempfile::tempdir().unwrap(),
        spawned: 0,
    };
    (cluster, store, redis, prom)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_paused_or_stopped_leader_without_stale_writes() {
    let (mut cluster, store, _redis, _prom) = setup().await;
    let reader = Arc::new(Mutex::new(Reader::default()));
    read_stream(store.clone(), reader.clone());
    let mut rs = [cluster.replica("a"), cluster.replica("b")];
    let mut epoch = published_after(&store, 0).await;

    // kill -9 the leader, five times; the killed one comes back as the next standby.
    for round in 0..5 {
        let i = leader(&rs).await;
        rs[i].guard.signal("KILL");
        assert!(rs[i].guard.wait_exit(Duration::from_secs(10)));
        epoch = published_after(&store, epoch).await;
        let name = if round % 2 == 0 { "a" } else { "b" };
        rs[i] = cluster.replica(&format!("{name}{round}"));
    }

    // SIGSTOP the leader past its lease, let the other take over, then SIGCONT it: it must not
    // write a single entry under its old epoch.
    let i = leader(&rs).await;
    rs[i].guard.signal("STOP");
    epoch = published_after(&store, epoch).await;
    rs[i].guard.signal("CONT");
    // It finds out at its next renewal (or is refused by the store before that).
    let demoted = poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (leads(&rs[i]).await == Some(false)).then_some(()) },
    )
    .await;
    assert!(demoted.is_some(), "the paused leader never stood down");
    // A few more builds' time in which a stale write would show up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // SIGTERM: the leader gives the lease up on the way out and the standby takes over.
    let i = leader(&rs).await;
    rs[i].guard.signal("TERM");
    assert!(
        rs[i].guard.wait_exit(Duration::from_secs(10)),
        "SIGTERM did not stop the collector"
    );
    epoch = published_after(&store, epoch).await;
    let log = std::fs::read_to_string(
        std::fs::read_dir(cluster.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .find(|p| {
                std::fs::read_to_string(p).is_ok_and(|t| t.contains("gave the leader lease up"))
            })
            .expect("no replica logged giving the lease up"),
    )
    .unwrap();
    assert!(log.contains("took the leader lease"), "{log}");

    // The last leader's deltas reach the reader, continuing from its snapshot.
    let caught_up = poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (reader.lock().await.epoch >= epoch).then_some(()) },
    )
    .await;
    let r = reader.lock().await;
    assert!(caught_up.is_some(), "no delta from epoch {epoch}: {r:?}");
    assert!(
        r.stale_writes.is_empty(),
        "deposed leaders wrote: {:?}",
        r.stale_writes
    );
    assert!(r.silent_gaps.is_empty(), "silent gaps: {:?}", r.silent_gaps);
}
