//! The mesh domain of linkerd-mcp: workloads, edges between them with golden metrics and TLS
//! status, the policy overlay, building a graph from metric samples, and deltas between graphs.
//!
//! This crate is pure: no I/O, no async, no protobuf, no Kubernetes types. Conversions to and
//! from the wire (`mesh-proto`) and from Kubernetes (`mesh-k8s`) live at the edges. Time is a
//! parameter wherever it matters, so everything here is deterministic and testable.
//!
//! ```text
//!   metric samples ──GraphBuilder──> MeshGraph ──GraphDelta::between──> GraphDelta
//!   (Prometheus, meshsim)                 ▲                                 │
//!                                         └───────── GraphDelta::apply ─────┘
//! ```

mod delta;
mod graph;
pub mod input;
pub mod policy;
mod samples;

pub use self::{
    delta::{DeltaError, GraphDelta, MetricTolerance, PublishedView},
    graph::{
        Decision, Destination, Edge, EdgeKey, EdgeMetrics, GraphFilter, MeshGraph, PolicyKey,
        PolicyObject, PolicyVerdict, Protocol, SourceHealth, TlsStatus, Workload, WorkloadRef,
        is_dns_label,
    },
    samples::{
        GraphBuilder, IdentitySample, LatencyQuantile, LatencySample, ResponseSample, TcpSample,
        TlsObservation, WorkloadSample, service_account_of,
    },
};
