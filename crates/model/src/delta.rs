//! Deltas between graph versions.
//!
//! ```text
//!   build 1 ──┐        build 2 ──┐          build 3 ──┐
//!             v                  v                    v
//!   view v0 ──between──> Δ1 ──apply──> view v1 ──between──> Δ2 ──apply──> view v2
//!                        │                                  │
//!                        └──> Redis stream, readers ────────┘   (readers hold exactly `view`)
//! ```
//!
//! A metric-only change within [`MetricTolerance`] is left out of a delta. To keep readers'
//! copies within the tolerance of the newest build *forever*, the writer diffs each new build
//! against what readers hold (the published view, [`PublishedView`]), never against the previous
//! build: otherwise many small changes could each slip under the threshold and add up.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use crate::graph::{
    Edge, EdgeKey, EdgeMetrics, MeshGraph, PolicyKey, PolicyObject, PolicyVerdict, RouteStats,
    SourceHealth, Workload, WorkloadRef,
};

/// How far a metric may drift before an edge is re-sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricTolerance {
    /// Relative change allowed in rates, latencies, connections and bytes (0.05 = 5%).
    pub relative: f64,
    /// Absolute change always allowed in those (noise floor).
    pub absolute: f64,
    /// Absolute change allowed in success rate (0.005 = half a percentage point).
    pub success_rate: f64,
}

impl Default for MetricTolerance {
    fn default() -> Self {
        Self {
            relative: 0.05,
            absolute: 0.01,
            success_rate: 0.005,
        }
    }
}

impl MetricTolerance {
    /// No tolerance: every change is sent.
    pub const EXACT: Self = Self {
        relative: 0.0,
        absolute: 0.0,
        success_rate: 0.0,
    };

    fn close(&self, a: f64, b: f64) -> bool {
        (a - b).abs() <= self.absolute.max(self.relative * a.abs().max(b.abs()))
    }

    fn close_opt(&self, a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => self.close(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether every metric of `a` is within the tolerance of `b`'s.
    pub fn metrics_within(&self, a: &EdgeMetrics, b: &EdgeMetrics) -> bool {
        let sr = match (a.success_rate, b.success_rate) {
            (Some(x), Some(y)) => (x - y).abs() <= self.success_rate,
            (None, None) => true,
            _ => false,
        };
        sr && self.close(a.rps, b.rps)
            && self.close_opt(a.latency_p50_ms, b.latency_p50_ms)
            && self.close_opt(a.latency_p95_ms, b.latency_p95_ms)
            && self.close_opt(a.latency_p99_ms, b.latency_p99_ms)
            && self.close(a.tcp_open_connections, b.tcp_open_connections)
            && self.close(a.read_bytes_per_sec, b.read_bytes_per_sec)
            && self.close(a.write_bytes_per_sec, b.write_bytes_per_sec)
    }

    /// Whether two verdicts are the same up to observed rates within the tolerance.
    pub fn policy_within(&self, a: &PolicyVerdict, b: &PolicyVerdict) -> bool {
        a.decision == b.decision
            && a.server == b.server
            && a.default_policy == b.default_policy
            && a.authorization_policies == b.authorization_policies
            && a.http_route == b.http_route
            && a.chain == b.chain
            && a.disagreement == b.disagreement
            && self.close_opt(a.observed_allow_rps, b.observed_allow_rps)
            && self.close_opt(a.observed_deny_rps, b.observed_deny_rps)
            && self.close_opt(a.observed_audit_rps, b.observed_audit_rps)
            && a.rate_limit == b.rate_limit
            && self.close_opt(a.observed_rate_limited_rps, b.observed_rate_limited_rps)
    }

    /// Whether two route breakdowns name the same routes with metrics within the tolerance.
    pub fn routes_within(&self, a: &[RouteStats], b: &[RouteStats]) -> bool {
        a.len() == b.len()
            && a.iter().all(|x| {
                b.iter().find(|y| y.id == x.id).is_some_and(|y| {
                    let sr = match (x.success_rate, y.success_rate) {
                        (Some(p), Some(q)) => (p - q).abs() <= self.success_rate,
                        (None, None) => true,
                        _ => false,
                    };
                    sr && self.close(x.rps, y.rps)
                        && self.close(x.rate_limited_rps, y.rate_limited_rps)
                        && self.close_opt(x.latency_p50_ms, y.latency_p50_ms)
                        && self.close_opt(x.latency_p95_ms, y.latency_p95_ms)
                        && self.close_opt(x.latency_p99_ms, y.latency_p99_ms)
                })
            })
    }

    /// Whether `a` and `b` differ only by metrics within the tolerance.
    pub fn edge_unchanged(&self, a: &Edge, b: &Edge) -> bool {
        a.key == b.key
            && a.tls == b.tls
            && a.no_tls_reason == b.no_tls_reason
            && a.client_identity == b.client_identity
            && a.server_identity == b.server_identity
            && self.policy_within(&a.policy, &b.policy)
            && self.metrics_within(&a.metrics, &b.metrics)
            && self.routes_within(&a.routes, &b.routes)
    }
}

/// The change from graph version `from_version` to `to_version`.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphDelta {
    /// The version this delta applies to.
    pub from_version: u64,
    /// The version it produces.
    pub to_version: u64,
    /// The writer's epoch.
    pub epoch: u64,
    /// When the new version was built.
    pub generated_at: SystemTime,
    /// New or changed workloads.
    pub upserted_workloads: Vec<Workload>,
    /// Workloads gone.
    pub removed_workloads: Vec<WorkloadRef>,
    /// New or changed edges (whole edges, not field patches).
    pub upserted_edges: Vec<Edge>,
    /// Edges gone.
    pub removed_edges: Vec<EdgeKey>,
    /// New or changed policy objects.
    pub upserted_policies: Vec<PolicyObject>,
    /// Policy objects gone.
    pub removed_policies: Vec<PolicyKey>,
    /// Source health of the new version (always carried: it is small).
    pub sources: Vec<SourceHealth>,
}

/// Why a delta could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The graph is not at the delta's base version: reload the snapshot.
    #[error("delta from version {from} cannot apply to graph at version {have}")]
    VersionGap {
        /// The delta's base.
        from: u64,
        /// The graph's version.
        have: u64,
    },
}

/// Upserts of what is new or changed (per `same`), removals of what is gone.
fn diff_map<K: Ord + Clone, V: Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> (Vec<V>, Vec<K>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| !same(o, v)))
        .map(|(_, v)| v.clone())
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (upserts, removals)
}

// === impl GraphDelta ===

impl GraphDelta {
    /// What turns `old` into `new`, leaving out edges whose only change is metrics within `tol`.
    pub fn between(old: &MeshGraph, new: &MeshGraph, tol: &MetricTolerance) -> Self {
        let (upserted_workloads, removed_workloads) =
            diff_map(&old.workloads, &new.workloads, |a, b| a == b);
        let (upserted_edges, removed_edges) =
            diff_map(&old.edges, &new.edges, |a, b| tol.edge_unchanged(a, b));
        let (upserted_policies, removed_policies) =
            diff_map(&old.policies, &new.policies, |a, b| a == b);
        Self {
            from_version: old.version,
            to_version: new.version,
            epoch: new.epoch,
            generated_at: new.generated_at,
            upserted_workloads,
            removed_workloads,
            upserted_edges,
            removed_edges,
            upserted_policies,
            removed_policies,
            sources: new.sources.clone(),
        }
    }

    /// How many workloads, edges and policy objects it upserts or removes: its size, in the
    /// units of [`MeshGraph::items`].
    pub fn items(&self) -> usize {
        self.upserted_workloads.len()
            + self.removed_workloads.len()
            + self.upserted_edges.len()
            + self.removed_edges.len()
            + self.upserted_policies.len()
            + self.removed_policies.len()
    }

    /// Whether it changes no workload, edge or policy.
    pub fn is_topology_empty(&self) -> bool {
        self.upserted_workloads.is_empty()
            && self.removed_workloads.is_empty()
            && self.upserted_edges.is_empty()
            && self.removed_edges.is_empty()
            && self.upserted_policies.is_empty()
            && self.removed_policies.is_empty()
    }

    /// One delta that takes a reader of a filtered view from `from_version` to `view` (the
    /// same filter applied at `view.version`), given every whole-graph delta in between. Each
    /// key those deltas touched (and the workloads at both ends of touched edges, whose place in
    /// a filtered view follows their edges) is upserted from `view`, or removed when `view`
    /// lacks it; nothing else can have changed. Removing what the reader never had is harmless.
    pub fn catch_up<'a>(
        from_version: u64,
        deltas: impl IntoIterator<Item = &'a GraphDelta>,
        view: &MeshGraph,
    ) -> Self {
        let mut workloads: BTreeSet<&WorkloadRef> = BTreeSet::new();
        let mut edges: BTreeSet<&EdgeKey> = BTreeSet::new();
        let mut policies: BTreeSet<&PolicyKey> = BTreeSet::new();
        for d in deltas {
            workloads.extend(d.upserted_workloads.iter().map(|w| &w.id));
            workloads.extend(&d.removed_workloads);
            edges.extend(d.upserted_edges.iter().map(|e| &e.key));
            edges.extend(&d.removed_edges);
            policies.extend(d.upserted_policies.iter().map(|p| &p.key));
            policies.extend(&d.removed_policies);
        }
        for k in &edges {
            workloads.insert(&k.src);
            if let crate::Destination::Workload(w) = &k.dst {
                workloads.insert(w);
            }
        }
        let mut out = Self {
            from_version,
            to_version: view.version,
            epoch: view.epoch,
            generated_at: view.generated_at,
            upserted_workloads: Vec::new(),
            removed_workloads: Vec::new(),
            upserted_edges: Vec::new(),
            removed_edges: Vec::new(),
            upserted_policies: Vec::new(),
            removed_policies: Vec::new(),
            sources: view.sources.clone(),
        };
        for k in workloads {
            match view.workloads.get(k) {
                Some(w) => out.upserted_workloads.push(w.clone()),
                None => out.removed_workloads.push(k.clone()),
            }
        }
        for k in edges {
            match view.edges.get(k) {
                Some(e) => out.upserted_edges.push(e.clone()),
                None => out.removed_edges.push(k.clone()),
            }
        }
        for k in policies {
            match view.policies.get(k) {
                Some(p) => out.upserted_policies.push(p.clone()),
                None => out.removed_policies.push(k.clone()),
            }
        }
        out
    }

    /// Applies it to `graph`, which must be at `from_version`. On error `graph` is untouched.
    pub fn apply(&self, graph: &mut MeshGraph) -> Result<(), DeltaError> {
        if graph.version != self.from_version {
            return Err(DeltaError::VersionGap {
                from: self.from_version,
                have: graph.version,
            });
        }
        for id in &self.removed_workloads {
            graph.workloads.remove(id);
        }
        for w in &self.upserted_workloads {
            graph.workloads.insert(w.id.clone(), w.clone());
        }
        for k in &self.removed_edges {
            graph.edges.remove(k);
        }
        for e in &self.upserted_edges {
            graph.edges.insert(e.key.clone(), e.clone());
        }
        for k in &self.removed_policies {
            graph.policies.remove(k);
        }
        for p in &self.upserted_policies {
            graph.policies.insert(p.key.clone(), p.clone());
        }
        graph.sources.clone_from(&self.sources);
        graph.version = self.to_version;
        graph.epoch = self.epoch;
        graph.generated_at = self.generated_at;
        Ok(())
    }
}

/// The writer's copy of what readers hold: the last published snapshot plus every delta since.
#[derive(Clone, Debug)]
pub struct PublishedView {
    graph: MeshGraph,
    tolerance: MetricTolerance,
}

impl PublishedView {
    /// Starts from a first published graph (its version and epoch are kept).
    pub fn new(first: MeshGraph, tolerance: MetricTolerance) -> Self {
        Self {
            graph: first,
            tolerance,
        }
    }

    /// What readers hold now; this is also what a snapshot must contain.
    pub fn graph(&self) -> &MeshGraph {
        &self.graph
    }

    /// Diffs a new build against the view. When anything readers should see changed, the view
    /// moves to the next version and the delta is returned; otherwise `None`.
    pub fn advance(&mut self, mut build: MeshGraph) -> Option<GraphDelta> {
        build.version = self.graph.version + 1;
        build.epoch = self.graph.epoch;
        let delta = GraphDelta::between(&self.graph, &build, &self.tolerance);
        if delta.is_topology_empty() && delta.sources == self.graph.sources {
            return None;
        }
        delta
            .apply(&mut self.graph)
            .expect("a delta computed from the view must apply to it");
        Some(delta)
    }
}

#[cfg(test)]
mod tests;
