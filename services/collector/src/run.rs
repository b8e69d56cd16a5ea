//! The build loop: on every tick read Prometheus, and on every Kubernetes change re-join the
//! last Prometheus read with the cluster; publish what changed. A failing source never stops
//! publication: what is still known is published with that source marked stale, since when and
//! why, so readers keep answering and can tell.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::{MeshGraph, MetricTolerance, SourceHealth};
use mesh_store::GraphStore;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::sync::watch;

use crate::{Observation, PrometheusSource, Publisher, cluster::Cluster, overlay::Verdicts};

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
    }

    /// Whether a graph was published yet (what `/ready` reports).
    pub fn has_published(&self) -> bool {
        self.version.get() > 0
    }
}

/// What the loop reads.
#[derive(Debug)]
pub struct Sources {
    /// linkerd-viz's Prometheus.
    pub prometheus: PrometheusSource,
    /// The cluster index (see [`crate::cluster::spawn`], or [`crate::kubernetes`]).
    pub kubernetes: watch::Receiver<Arc<Cluster>>,
}

/// Runs until `shutdown` resolves.
pub async fn run<S: GraphStore + Clone>(
    sources: Sources,
    store: S,
    interval: Duration,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let Sources {
        prometheus,
        mut kubernetes,
    } = sources;
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(200);
    let mut publisher = loop {
        match Publisher::start(store.clone(), MetricTolerance::default()).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start publishing; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut last: Option<Observation> = None;
    let mut prom_health = SourceHealth {
        source: "prometheus".into(),
        ok: false,
        last_success: None,
        error: "not read yet".into(),
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
            () = &mut shutdown => return,
        };
        let started = Instant::now();
        let now = SystemTime::now();
        if read_prometheus {
            match prometheus.observe(now).await {
                Ok(o) => {
                    last = Some(o);
                    prom_health.ok = true;
                    prom_health.last_success = Some(now);
                    prom_health.error.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus read failed; publishing what is still known, marked stale");
                    metrics.prometheus_errors.inc();
                    prom_health.ok = false;
                    prom_health.error = e.to_string();
                }
            }
        }
        let cluster = kubernetes.borrow_and_update().clone();
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
        match publisher.publish(build).await {
            Ok(v) => {
                if let Some(v) = v {
                    tracing::debug!(version = v, "published");
                    metrics.version.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                metrics.healthy.set(i64::from(healthy));
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

/// One build: the Prometheus graph joined with the cluster.
pub fn join(
    graph: &MeshGraph,
    authz: &[crate::overlay::AuthzSample],
    cluster: &Arc<Cluster>,
    verdicts: &mut Verdicts,
    now: SystemTime,
) -> MeshGraph {
    let mut g = graph.clone();
    g.generated_at = now;
    crate::overlay::apply(&mut g, cluster, authz, verdicts);
    g
}
