//! mesh-collector: builds the mesh graph. The Prometheus source queries linkerd-viz's
//! Prometheus the way `linkerd viz stat`/`edges` do (`meshctl graph --prometheus-url` uses it as
//! a library); the cluster watchers index Kubernetes; the overlay joins them with policy
//! verdicts; the build loop publishes the result through `mesh-store`.

pub mod cluster;
pub mod overlay;
pub mod prometheus;
pub mod promql;
pub mod publish;
pub mod run;

pub use self::{
    prometheus::{Observation, PromError, PrometheusSource},
    publish::Publisher,
};

/// Parses a metrics window such as `30s`, `1m` or `1h30m`.
pub fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("invalid window {s:?}: must be at least 1s"));
    }
    Ok(d)
}

/// The standard kube configuration (`KUBECONFIG`, else in-cluster), as
/// `kube::Client::try_default` finds it, or why there is none.
pub async fn kube_config() -> Result<kube::Config, String> {
    kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}"))
}

/// The cluster index through `config`. Without one the graph's `kubernetes` source says why,
/// and the collector still publishes what Prometheus shows.
pub fn cluster_from(
    config: &Result<kube::Config, String>,
) -> tokio::sync::watch::Receiver<std::sync::Arc<cluster::Cluster>> {
    let client = config
        .clone()
        .and_then(|c| kube::Client::try_from(c).map_err(|e| format!("Kubernetes client: {e}")));
    match client {
        Ok(client) => cluster::spawn(&client),
        Err(why) => {
            tracing::warn!("{why}; policy verdicts will be unknown");
            tokio::sync::watch::channel(std::sync::Arc::new(cluster::Cluster::unsynced(why))).1
        }
    }
}

/// The cluster index from the standard kube configuration ([`kube_config`], [`cluster_from`]).
pub async fn kubernetes() -> tokio::sync::watch::Receiver<std::sync::Arc<cluster::Cluster>> {
    cluster_from(&kube_config().await)
}
