//! mesh-k8s: the Kubernetes edge of the policy core. Reads manifests from disk (files and folders
//! of YAML or JSON, size-limited) into `mesh-policy`'s typed set, and holds the CRDs of the Linkerd
//! policy and Gateway API kinds as the API server serves them (`crds/`, loaded into kube-sim).

pub mod crds;
pub mod files;

pub use self::files::read_manifests;
