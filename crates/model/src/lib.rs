//! The mesh domain of linkerd-mcp: workloads, edges between them with golden metrics and TLS
//! status, policy verdicts on edges, building a graph from metric samples, and deltas between
//! graphs. Evaluating policy is `mesh-policy`'s job.
//!
//! This crate is pure: no I/O, no async, no protobuf, no Kubernetes types. Conversions to and
//! from the wire (`mesh-proto`) and from Kubernetes (`mesh-policy`, `mesh-k8s`) live at the edges. Time is a
//! parameter wherever it matters, so everything here is deterministic and testable.
//!
//! ```text
//!   metric samples ──GraphBuilder──> MeshGraph ──GraphDelta::between──> GraphDelta
//!   (Prometheus, meshsim)                 ▲                                 │
//!                                         └───────── GraphDelta::apply ─────┘
//! ```

pub mod approval;
mod clock;
mod delta;
mod graph;
pub mod history;
pub mod input;
pub mod rollout;
mod samples;

pub use self::{
    clock::{Clock, SystemClock},
    delta::{DeltaError, GraphDelta, MetricTolerance, PublishedView},
    graph::{
        Decision, Destination, Edge, EdgeKey, EdgeMetrics, GraphFilter, MeshGraph, PolicyKey,
        PolicyObject, PolicyVerdict, Protocol, RouteId, RouteStats, SourceHealth, TlsStatus,
        Workload, WorkloadRef, is_dns_label, is_dns_subdomain,
    },
    samples::{
        GraphBuilder, IdentitySample, LatencyQuantile, LatencySample, ResponseSample,
        RouteLatencySample, RouteSample, TcpSample, TlsObservation, WorkloadSample,
        service_account_of,
    },
};
