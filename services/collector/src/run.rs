//! The build loop: on every tick read Prometheus, and on every Kubernetes change re-join the
//! last Prometheus read with the cluster; publish what changed. A failing source never stops
//! publication: what is still known is published with that source marked stale, since when and
//! why, so readers keep answering and can tell.
//!
//! Every replica runs the loop (a warm standby reads Prometheus and watches Kubernetes all the
//! time); only the holder of the store's leader lease publishes. A replica that gains the lease
//! publishes a full snapshot under its new epoch at once; one that cannot renew before its
//! local deadline stops writing before the lease can lapse in the store; shutdown gives the
//! lease up so a standby takes over within one renew interval.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::{MeshGraph, MetricTolerance, SourceHealth};
use mesh_store::{GraphStore, HistoryStore, Lease, Retention, StoreError};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::sync::watch;

use mesh_policy::{cluster::Cluster, overlay::Verdicts};
use mesh_prometheus::{Observation, PrometheusSource};

use crate::{Publisher, changes::ChangeLog};

/// What the build loop reads and how often: the flags of `mesh-collector` and of mesh-mcp's
/// embedded collector (`#[command(flatten)]`).
#[derive(Clone, Debug, clap::Args)]
pub struct CollectArgs {
    /// linkerd-viz Prometheus base URL.
    #[arg(long, env = "MESH_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Metrics window.
    #[arg(long, env = "MESH_WINDOW", default_value = "1m", value_parser = mesh_prometheus::parse_window)]
    pub window: Duration,
    /// How often to rebuild.
    #[arg(long, env = "MESH_INTERVAL", default_value = "10s", value_parser = mesh_prometheus::parse_window)]
    pub interval: Duration,
    /// How long the change log (`<prefix>changes`) keeps a change.
    #[arg(long, env = "MESH_HISTORY_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub history_retention: Duration,
    /// Most changes the change log keeps (the oldest go first).
    #[arg(long, env = "MESH_HISTORY_MAX_CHANGES", default_value_t = 1_000_000)]
    pub history_max_changes: usize,
    /// Read the series `mesh-collector print-rules` records (one per edge) instead of every
    /// proxy's: `auto` when rules of this version and window are loaded, `require`, or `off`.
    #[arg(long, env = "MESH_RECORDING_RULES", default_value = "auto", value_parser = ["auto", "require", "off"])]
    pub recording_rules: String,
    /// Prometheus queries of one build in flight at once.
    #[arg(long, env = "MESH_QUERY_CONCURRENCY", default_value_t = mesh_prometheus::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub query_concurrency: u16,
}

/// How long one build's read of Prometheus may take: two intervals, and never under 10 s (a
/// read that overruns its interval delays the next build, it does not pile up behind it).
pub fn read_deadline(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(10))
}

impl CollectArgs {
    /// What the change log keeps.
    pub fn history(&self) -> Retention {
        Retention {
            max_age: self.history_retention,
            max_entries: self.history_max_changes,
        }
    }

    /// The Prometheus source these flags name, or why there is none (`needs` says which flag
    /// asked for it).
    pub fn source(&self, needs: &str) -> Result<PrometheusSource, String> {
        let url = self
            .prometheus_url
            .as_deref()
            .ok_or_else(|| format!("{needs} needs --prometheus-url"))?;
        let rules: mesh_prometheus::RulesMode = self.recording_rules.parse()?;
        Ok(
            PrometheusSource::new(url, self.window, read_deadline(self.interval))
                .map_err(|e| e.to_string())?
                .with_rules(rules)
                .with_concurrency(usize::from(self.query_concurrency)),
        )
    }
}

/// The collector's own metrics (served on its admin port).
#[derive(Clone, Debug)]
pub struct Metrics {
    builds: Counter,
    build_seconds: Histogram,
    publish_errors: Counter,
    prometheus_errors: Counter,
    edges: Gauge,
    workloads: Gauge,
    version: Gauge,
    /// 1 when the last publication succeeded and both sources are healthy.
    healthy: Gauge,
    leader: Gauge,
    acquisitions: Counter,
    fenced: Counter,
    store_ok: Gauge,
    changes_logged: Counter,
    history_errors: Counter,
    read: ReadMetrics,
}

/// What reading Prometheus costs, build by build.
#[derive(Clone, Debug)]
struct ReadMetrics {
    seconds: Histogram,
    queries: Counter,
    series: Counter,
    samples: Counter,
    splits: Counter,
    last_queries: Gauge,
    last_series: Gauge,
    last_samples: Gauge,
    recorded: Gauge,
    data_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for ReadMetrics {
    fn default() -> Self {
        Self {
            seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 14,
            )),
            queries: Counter::default(),
            series: Counter::default(),
            samples: Counter::default(),
            splits: Counter::default(),
            last_queries: Gauge::default(),
            last_series: Gauge::default(),
            last_samples: Gauge::default(),
            recorded: Gauge::default(),
            data_age: Gauge::default(),
        }
    }
}

impl ReadMetrics {
    fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("prometheus");
        r.register(
            "read_duration_seconds",
            "Time one build took to read Prometheus (all its queries)",
            self.seconds.clone(),
        );
        r.register("queries", "Queries sent", self.queries.clone());
        r.register(
            "series_read",
            "Series the answers held",
            self.series.clone(),
        );
        r.register(
            "samples_read",
            "Samples Prometheus loaded to answer (0 from stores that do not say)",
            self.samples.clone(),
        );
        r.register(
            "query_splits",
            "Queries refused as too large and split by namespace",
            self.splits.clone(),
        );
        r.register(
            "last_read_queries",
            "Queries the last build sent",
            self.last_queries.clone(),
        );
        r.register(
            "last_read_series",
            "Series the last build read",
            self.last_series.clone(),
        );
        r.register(
            "last_read_samples",
            "Samples Prometheus loaded for the last build",
            self.last_samples.clone(),
        );
        r.register(
            "recording_rules",
            "1 when the last build read the recording rules, 0 when it read the raw series",
            self.recorded.clone(),
        );
        r.register(
            "data_age_seconds",
            "Age of the data the last build read when it was read (the rules' last evaluation)",
            self.data_age.clone(),
        );
    }

    fn observe(&self, r: &mesh_prometheus::ReadReport, now: SystemTime) {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.seconds.observe(r.seconds);
        self.queries.inc_by(r.queries);
        self.series.inc_by(r.series);
        self.samples.inc_by(r.samples);
        self.splits.inc_by(r.splits);
        self.last_queries.set(i(r.queries));
        self.last_series.set(i(r.series));
        self.last_samples.set(i(r.samples));
        self.recorded.set(i64::from(
            r.reads == mesh_prometheus::promql::Reads::Recorded,
        ));
        self.data_age.set(
            now.duration_since(r.data_time)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            builds: Counter::default(),
            build_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
            ),
            publish_errors: Counter::default(),
            prometheus_errors: Counter::default(),
            edges: Gauge::default(),
            workloads: Gauge::default(),
            version: Gauge::default(),
            healthy: Gauge::default(),
            leader: Gauge::default(),
            acquisitions: Counter::default(),
            fenced: Counter::default(),
            store_ok: Gauge::default(),
            changes_logged: Counter::default(),
            history_errors: Counter::default(),
            read: ReadMetrics::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `mesh_collector_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("mesh_collector");
        r.register(
            "builds",
            "Graph builds (a Prometheus read or a Kubernetes change)",
            self.builds.clone(),
        );
        r.register(
            "build_duration_seconds",
            "Time to read, join and publish one build",
            self.build_seconds.clone(),
        );
        r.register(
            "publish_errors",
            "Builds that could not be written to the store",
            self.publish_errors.clone(),
        );
        r.register(
            "prometheus_errors",
            "Prometheus reads that failed",
            self.prometheus_errors.clone(),
        );
        r.register("graph_edges", "Edges in the last build", self.edges.clone());
        r.register(
            "graph_workloads",
            "Workloads in the last build",
            self.workloads.clone(),
        );
        r.register(
            "graph_version",
            "Version of the last published graph",
            self.version.clone(),
        );
        r.register(
            "healthy",
            "1 when the last build was published with every source healthy",
            self.healthy.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            self.leader.clone(),
        );
        r.register(
            "lease_acquisitions",
            "Times this replica took the leader lease",
            self.acquisitions.clone(),
        );
        r.register(
            "fenced_writes",
            "Writes the store refused because this replica no longer held the lease",
            self.fenced.clone(),
        );
        r.register(
            "changes_logged",
            "Object changes appended to the change log",
            self.changes_logged.clone(),
        );
        r.register(
            "history_errors",
            "Change-log appends that failed (retried with the next build)",
            self.history_errors.clone(),
        );
        r.register(
            "store_up",
            "1 when the last lease call reached the store",
            self.store_ok.clone(),
        );
        self.read.register(r);
    }

    /// Whether a graph was published yet.
    pub fn has_published(&self) -> bool {
        self.version.get() > 0
    }

    /// What `/ready` reports: the store answers, and the leader has published.
    pub fn readiness(&self) -> Result<(), String> {
        if self.store_ok.get() == 0 {
            return Err("the store does not answer".into());
        }
        if self.leader.get() == 1 && !self.has_published() {
            return Err("leading, but no graph published yet".into());
        }
        Ok(())
    }
}

/// How a collector holds the leader lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// This replica's name in the lease.
    pub holder: String,
    /// How long the lease lasts unless renewed.
    pub ttl: Duration,
    /// How often the holder renews and a standby tries to take over.
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    /// Tuned for fail-over within 3 s: a dead leader's lease lapses after 2 s, and a standby
    /// asks every 500 ms.
    fn default() -> Self {
        Self {
            holder: default_holder(),
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(500),
        }
    }
}

/// `<host name>/<pid>`: unique per replica (a pod's host name is its name).
pub fn default_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "collector".into());
    format!("{host}/{}", std::process::id())
}

/// Takes and keeps the lease; publishes who holds it on `lease` (only when that changes) and
/// the local deadline on `deadline` (after every renewal). Gives it up when `stop` fires.
async fn keep_lease<S: GraphStore>(
    store: S,
    cfg: LeaseConfig,
    lease: watch::Sender<Option<Lease>>,
    deadline: watch::Sender<Instant>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut held: Option<(Lease, Instant)> = None;
    // The newest epoch this replica led: a store that restarted empty must not hand out an
    // older one (readers would take the new leader's writes for a deposed one's).
    let mut newest = 0;
    loop {
        // Taken before asking: the store's expiry is at least this far away.
        let asked = Instant::now();
        let (next, reached) = match held.take() {
            None => match store.acquire(&cfg.holder, cfg.ttl, newest).await {
                Ok(Some(l)) => {
                    newest = l.epoch;
                    tracing::info!(epoch = l.epoch, holder = %cfg.holder, "took the leader lease");
                    metrics.acquisitions.inc();
                    (Some((l, asked + cfg.ttl)), true)
                }
                Ok(None) => (None, true),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the store for the lease");
                    (None, false)
                }
            },
            Some((l, until)) => match store.renew(&l, cfg.ttl).await {
                Ok(true) => (Some((l, asked + cfg.ttl)), true),
                Ok(false) => {
                    tracing::warn!(epoch = l.epoch, "lost the leader lease; standing by");
                    (None, true)
                }
                Err(e) if Instant::now() < until => {
                    tracing::warn!(error = %e, "cannot renew the lease; still held locally");
                    (Some((l, until)), false)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the lease ran out unrenewed; standing by");
                    (None, false)
                }
            },
        };
        held = next;
        metrics.store_ok.set(i64::from(reached));
        metrics.leader.set(i64::from(held.is_some()));
        if let Some((_, until)) = &held {
            deadline.send_replace(*until);
        }
        let current = held.as_ref().map(|(l, _)| l.clone());
        lease.send_if_modified(|l| {
            let changed = *l != current;
            *l = current;
            changed
        });
        tokio::select! {
            () = tokio::time::sleep(cfg.renew_every) => {}
            _ = stop.changed() => {
                if let Some((l, _)) = held {
                    match tokio::time::timeout(cfg.ttl, store.release(&l)).await {
                        Ok(Ok(())) => tracing::info!(epoch = l.epoch, "gave the leader lease up"),
                        _ => tracing::warn!("could not give the lease up; it lapses by itself"),
                    }
                }
                metrics.leader.set(0);
                lease.send_replace(None);
                return;
            }
        }
    }
}

/// What the loop reads.
#[derive(Debug)]
pub struct Sources {
    /// linkerd-viz's Prometheus.
    pub prometheus: PrometheusSource,
    /// The cluster index (see [`crate::watch::spawn`], or [`crate::kubernetes`]).
    pub kubernetes: watch::Receiver<Arc<Cluster>>,
    /// What the change log keeps.
    pub history: Retention,
}

/// Runs with the default lease until `shutdown` resolves.
pub async fn run<S: GraphStore + HistoryStore + Clone>(
    sources: Sources,
    store: S,
    interval: Duration,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    run_leased(
        sources,
        store,
        interval,
        LeaseConfig::default(),
        metrics,
        shutdown,
    )
    .await;
}

/// Runs until `shutdown` resolves, publishing only while holding the lease `lease` describes;
/// on shutdown the lease is given up.
pub async fn run_leased<S: GraphStore + HistoryStore + Clone>(
    sources: Sources,
    store: S,
    interval: Duration,
    lease: LeaseConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let Sources {
        prometheus,
        mut kubernetes,
        history,
    } = sources;
    tokio::pin!(shutdown);
    let (lease_tx, mut held) = watch::channel(None);
    let (deadline_tx, deadline) = watch::channel(Instant::now());
    let (stop, stopped) = watch::channel(false);
    let keeper = tokio::spawn(keep_lease(
        store.clone(),
        lease,
        lease_tx,
        deadline_tx,
        metrics.clone(),
        stopped,
    ));
    // The change log is written by a task of its own, at each change of the cluster: a
    // Prometheus read in progress must not delay (and misdate) what Kubernetes changed.
    tokio::spawn(log_changes(
        store.clone(),
        held.clone(),
        kubernetes.clone(),
        history,
        deadline.clone(),
        metrics.clone(),
        stop.subscribe(),
    ));
    let mut publisher: Option<Publisher<S>> = None;
    let mut held_open = true;
    let mut last: Option<Observation> = None;
    let mut prom_health = SourceHealth {
        source: "prometheus".into(),
        ok: false,
        last_success: None,
        error: "not read yet".into(),
        detail: String::new(),
    };
    let mut kube_open = true;
    let mut verdicts = Verdicts::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let read_prometheus = tokio::select! {
            _ = tick.tick() => true,
            r = kubernetes.changed(), if kube_open => {
                kube_open = r.is_ok();
                false
            }
            // Promoted (publish at once) or deposed.
            r = held.changed(), if held_open => {
                held_open = r.is_ok();
                false
            }
            () = &mut shutdown => {
                let _ = stop.send(true);
                let _ = keeper.await;
                return;
            }
        };
        let lease = held.borrow_and_update().clone();
        match (&lease, &publisher) {
            (Some(l), Some(p)) if p.epoch() == l.epoch => {}
            // A new epoch starts with a full snapshot.
            (Some(l), _) => {
                publisher = Some(Publisher::lead(
                    store.clone(),
                    l,
                    MetricTolerance::default(),
                ));
            }
            (None, _) => publisher = None,
        }
        let started = Instant::now();
        let now = SystemTime::now();
        if read_prometheus {
            // The source's own deadline bounds every query; this bounds the whole read, queries
            // queued behind the concurrency limit and splits included.
            let deadline = read_deadline(interval);
            let read = tokio::time::timeout(deadline, prometheus.observe(now))
                .await
                .unwrap_or_else(|_| {
                    // The slowest reads belong in the read-time histogram most of all.
                    metrics.read.seconds.observe(deadline.as_secs_f64());
                    Err(mesh_prometheus::PromError::Timeout {
                        url: prometheus.url().to_owned(),
                        timeout: deadline,
                    })
                });
            match read {
                Ok(o) => {
                    metrics.read.observe(&o.read, SystemTime::now());
                    // The age of what was read: for recorded series, their last evaluation.
                    prom_health.ok = true;
                    prom_health.last_success = Some(o.read.data_time.min(now));
                    prom_health.error.clear();
                    prom_health.detail = o.read.detail(prometheus.window());
                    last = Some(o);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus read failed; publishing what is still known, marked stale");
                    metrics.prometheus_errors.inc();
                    prom_health.ok = false;
                    prom_health.error = e.to_string();
                    // The error says what was tried; the last success's path no longer holds.
                    prom_health.detail.clear();
                }
            }
        }
        let cluster = kubernetes.borrow_and_update().clone();
        // A standby keeps its sources warm and builds nothing.
        if publisher.is_none() {
            continue;
        }
        let mut build = match &last {
            Some(o) => join(&o.graph, &o.authz, &cluster, &mut verdicts, now),
            // Nothing from Prometheus yet: the cluster alone still tells who is in the mesh.
            None if cluster.health.last_success.is_some() => join(
                &MeshGraph::empty(prometheus.window(), now),
                &[],
                &cluster,
                &mut verdicts,
                now,
            ),
            None => continue,
        };

        build.sources = vec![prom_health.clone(), cluster.health.clone()];
        let healthy = build.sources.iter().all(|s| s.ok);
        let (edges, workloads) = (build.edges.len(), build.workloads.len());
        metrics.builds.inc();
        if Instant::now() >= *deadline.borrow() {
            // The lease could not be renewed in time: it may lapse any moment, and another
            // replica may be leading already. Not a single write until it is renewed.
            tracing::warn!("the lease is past its local deadline; not publishing");
            continue;
        }
        let Some(p) = publisher.as_mut() else {
            continue;
        };
        match p.publish(build).await {
            Ok(v) => {
                if let Some(v) = v {
                    tracing::debug!(version = v, "published");
                    metrics.version.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                metrics.healthy.set(i64::from(healthy));
            }
            Err(e @ StoreError::Fenced { .. }) => {
                metrics.fenced.inc();
                metrics.healthy.set(0);
                tracing::warn!(error = %e, "the store refused the write: another replica leads");
                publisher = None;
            }
            Err(e) => {
                metrics.publish_errors.inc();
                metrics.healthy.set(0);
                tracing::warn!(error = %e, "publish failed; will retry with the next build");
            }
        }
        metrics.edges.set(i64::try_from(edges).unwrap_or(i64::MAX));
        metrics
            .workloads
            .set(i64::try_from(workloads).unwrap_or(i64::MAX));
        metrics
            .build_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// How soon a change-log append that failed is tried again when nothing else happens.
const LOG_RETRY: Duration = Duration::from_secs(1);

/// While this replica leads, logs every change of the cluster as it arrives; stops with the
/// loop (`stop`) or when its sources close.
async fn log_changes<S: HistoryStore + Clone>(
    store: S,
    mut held: watch::Receiver<Option<Lease>>,
    mut cluster: watch::Receiver<Arc<Cluster>>,
    keep: Retention,
    deadline: watch::Receiver<Instant>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut log: Option<ChangeLog<S>> = None;
    loop {
        let lease = held.borrow_and_update().clone();
        match (&lease, &log) {
            (Some(l), Some(g)) if g.epoch() == l.epoch => {}
            (Some(l), _) => log = Some(ChangeLog::lead(store.clone(), l, keep)),
            (None, _) => log = None,
        }
        let mut failed = false;
        // Past the local deadline the lease may be another's already: not a single write.
        if let Some(g) = log.as_mut()
            && Instant::now() < *deadline.borrow()
        {
            let now = cluster.borrow_and_update().clone();
            match g.record(&now).await {
                Ok(n) => {
                    metrics.changes_logged.inc_by(n as u64);
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    metrics.fenced.inc();
                    tracing::warn!(error = %e, "the store refused a change-log write: another replica leads");
                    log = None;
                }
                Err(e) => {
                    metrics.history_errors.inc();
                    failed = true;
                    tracing::warn!(error = %e, "could not append to the change log; retrying");
                }
            }
        }
        tokio::select! {
            r = cluster.changed() => if r.is_err() { return },
            r = held.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
            () = tokio::time::sleep(LOG_RETRY), if failed => {}
        }
    }
}

/// One build: the Prometheus graph joined with the cluster.
pub fn join(
    graph: &MeshGraph,
    authz: &[mesh_policy::overlay::AuthzSample],
    cluster: &Arc<Cluster>,
    verdicts: &mut Verdicts,
    now: SystemTime,
) -> MeshGraph {
    let mut g = graph.clone();
    g.generated_at = now;
    mesh_policy::overlay::apply(&mut g, cluster, authz, verdicts);
    g
}
