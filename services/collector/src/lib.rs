//! mesh-collector: builds the mesh graph. It reads linkerd-viz's Prometheus through
//! `mesh-prometheus`, watches Kubernetes into `mesh-policy`'s cluster index ([`watch`]), joins
//! the two with policy verdicts, and publishes the result through `mesh-store` ([`run`],
//! [`publish`]).

pub mod changes;
pub mod publish;
pub mod run;
pub mod watch;

pub use self::publish::Publisher;

use mesh_policy::cluster::Cluster;

/// Which Kubernetes API a service talks to: the flag every binary that watches or writes
/// Kubernetes reads the same way (`#[command(flatten)]`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeArgs {
    /// kubeconfig file (default: `KUBECONFIG`, else the in-cluster service account, as kubectl
    /// and kube-rs find them).
    #[arg(long, env = "MESH_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl KubeArgs {
    /// The configuration these flags name. `Err`: a `--kubeconfig` that cannot be used (bad
    /// configuration). `Ok(Err(why))`: none found where kube-rs looks, which services run
    /// without (the graph's `kubernetes` source says why).
    pub async fn config(&self) -> Result<Result<kube::Config, String>, String> {
        let Some(path) = &self.kubeconfig else {
            return Ok(kube::Config::infer().await.map_err(|e| {
                format!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}")
            }));
        };
        let file = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map(Ok)
            .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))
    }
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
