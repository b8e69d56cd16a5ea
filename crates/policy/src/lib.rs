//! mesh-policy: the policy core. Where Linkerd's policy is decided, offline: the typed Linkerd
//! policy objects (and the Kubernetes kinds policy needs), the one kind table, validation as
//! Linkerd's admission webhook does it, the cluster index, inbound authorization evaluated the
//! way the proxy does (verdicts, explain-access) and what-if over proposed policy.
//!
//! Pure: no Kubernetes client, no gRPC, no async runtime, no file or network I/O (the import
//! rule test, `crates/test-util/tests/import_rule.rs`, holds this). `mesh-k8s` reads manifests from disk and holds
//! the CRDs; the collector watches Kubernetes and feeds [`cluster::Cluster`]; the mcp service's
//! apply path, meshsim and the test harness use this crate directly.
//!
//! ```text
//!   YAML/JSON text ──document──> Document ──resources──> Resource ──validate──> findings
//!                                                │
//!        API objects ──────────────> cluster::Cluster (index: PolicySet, workloads, Services)
//!                                                │ with_proposed (what-if)
//!                                                ▼
//!   MeshGraph edges ──overlay::verdict_of / explain_request──> PolicyVerdict, Explanation
//! ```

pub mod approval;
pub mod cluster;
pub mod document;
pub mod eval;
pub mod history;
pub mod index;
pub mod kinds;
mod manifests;
pub mod overlay;
pub mod propose;
pub mod resources;
pub mod validate;

pub use self::manifests::{
    DEFAULT_POLICY_ANNOTATION, Manifests, REQUIRE_IDENTITY_ANNOTATION, pod_info, workload_names,
};
