//! mesh-collector: builds the mesh graph. It reads linkerd-viz's Prometheus through
//! `mesh-prometheus`, watches Kubernetes into `mesh-policy`'s cluster index ([`watch`]), joins
//! the two with policy verdicts, and publishes the result through `mesh-store` ([`run`],
//! [`publish`]).

pub mod publish;
pub mod run;
pub mod watch;

pub use self::publish::Publisher;

use mesh_policy::cluster::Cluster;

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
) -> tokio::sync::watch::Receiver<std::sync::Arc<Cluster>> {
    let client = config
        .clone()
        .and_then(|c| kube::Client::try_from(c).map_err(|e| format!("Kubernetes client: {e}")));
    match client {
        Ok(client) => watch::spawn(&client),
        Err(why) => {
            tracing::warn!("{why}; policy verdicts will be unknown");
            tokio::sync::watch::channel(std::sync::Arc::new(Cluster::unsynced(why))).1
        }
    }
}

/// The cluster index from the standard kube configuration ([`kube_config`], [`cluster_from`]).
pub async fn kubernetes() -> tokio::sync::watch::Receiver<std::sync::Arc<Cluster>> {
    cluster_from(&kube_config().await)
}
