//! Collector fail-over: two `mesh-collector` processes (built next to this binary) on a real
//! redis-server, fed by a real Prometheus scraping meshsim. The leader is killed with SIGKILL
//! `n` times; each time, the time from the kill to the standby's first snapshot under its new
//! epoch. Then both run undisturbed (`FAILOVER_STEADY_SECS`, default 60) while a busy loop
//! takes the other core, and the leader changes in that time are counted (flaps).

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use mesh_store::{GraphStore, RedisStore};
use mesh_testkit::{ChildGuard, Prometheus, Redis, free_port};

/// A `mesh-collector` process and its admin port.
pub(crate) struct Replica {
    pub(crate) guard: ChildGuard,
    admin: u16,
}

/// Starts `mesh-collector` `name` on `prom` and `redis` with a 10 s window, building every
/// `interval` (a duration as the flag takes it), with no cluster.
pub(crate) fn spawn(
    bin: &std::path::Path,
    prom: &str,
    redis: &str,
    dir: &std::path::Path,
    name: &str,
    interval: &str,
) -> Replica {
    let admin = free_port();
    let guard = ChildGuard::spawn(
        name,
        Command::new(bin)
            .args(["--prometheus-url", prom, "--redis-url", redis])
            .args([
                "--window",
                "10s",
                "--interval",
                interval,
                "--lease-holder",
                name,
            ])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .env("KUBECONFIG", dir.join("none")),
        &dir.join(format!("{name}.log")),
    );
    Replica { guard, admin }
}

/// A counter or gauge from the replica's admin port.
async fn metric(r: &Replica, name: &str) -> Option<f64> {
    mesh_testkit::admin_metric(r.admin, name).await
}

/// The replica that leads, once both are up and exactly one leads (within 30 s).
pub(crate) async fn leader(rs: &[Replica; 2]) -> Option<usize> {
    for _ in 0..300 {
        let (a, b) = (
            metric(&rs[0], "mesh_collector_leader").await,
            metric(&rs[1], "mesh_collector_leader").await,
        );
        if let (Some(a), Some(b)) = (a, b)
            && a + b == 1.0
        {
            return Some(usize::from(b == 1.0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn epoch(store: &RedisStore) -> u64 {
    store.load().await.ok().flatten().map_or(0, |s| s.epoch)
}

/// Prints fail-over times (min, median, max over `n` kills), refused writes and flaps.
pub(crate) async fn run(n: usize) {
    let me = std::env::current_exe().expect("own path");
    let bin = me.with_file_name("mesh-collector");
    if !bin.exists() {
        println!("failover: not run: build mesh-collector next to mesh-bench (make bench does)");
        return;
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = l.local_addr().expect("addr");
    tokio::spawn(meshsim::serve(
        l,
        meshsim::builtin("emojivoto").expect("builtin"),
        std::future::pending(),
    ));
    let prom = Prometheus::start(&[sim]).await;
    let redis = Redis::start().await;
    let store = Arc::new(
        RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).expect("store"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spawned = 0;
    let next = |spawned: &mut usize| {
        *spawned += 1;
        spawn(
            &bin,
            &prom.url,
            &redis.url,
            dir.path(),
            &format!("c{spawned}"),
            "1s",
        )
    };
    let mut rs = [next(&mut spawned), next(&mut spawned)];
    let wait_epoch = |after: u64| {
        let store = store.clone();
        async move {
            let limit = Instant::now() + Duration::from_secs(60);
            while Instant::now() < limit {
                let e = epoch(&store).await;
                if e > after {
                    return Some(e);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        }
    };
    let mut current = wait_epoch(0).await.expect("a first leader publishes");
    let mut times = Vec::new();
    let mut refused = 0.0;
    for _ in 0..n {
        let i = leader(&rs).await.expect("one leader");
        // Counters are exposed with `_total` (OpenMetrics); a missing one is a broken bench.
        refused += metric(&rs[i], "mesh_collector_fenced_writes_total")
            .await
            .expect("the leader exposes mesh_collector_fenced_writes_total");
        let killed = Instant::now();
        rs[i].guard.signal("KILL");
        current = wait_epoch(current).await.expect("a standby takes over");
        times.push(killed.elapsed());
        rs[i] = next(&mut spawned);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // Steady running with the other core busy: leader changes are flaps.
    let steady = std::env::var("FAILOVER_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let busy = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(steady);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        x
    });
    let before = epoch(&store).await;
    tokio::time::sleep(Duration::from_secs(steady)).await;
    let flaps = epoch(&store).await - before;
    let _ = busy.join();
    for r in &rs {
        refused += metric(r, "mesh_collector_fenced_writes_total")
            .await
            .unwrap_or(0.0);
    }
    println!(
        "kills={n} failover_min_ms={:.0} failover_p50_ms={:.0} failover_max_ms={:.0} \
         goal_max_under_3000ms={} fenced_writes={refused} flaps_in_{steady}s_busy={flaps}",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        if ms(times[times.len() - 1]) < 3000.0 {
            "met"
        } else {
            "NOT met"
        },
    );
}
