//! History: what changed in the mesh between two moments. The graph-level differences
//! ([`graph_changes`]: edges that appeared or vanished, lost or gained mTLS, turned verdict or
//! regressed) come from two graphs; the object changes (a policy applied, a workload scaled)
//! from the collector's change log. Both end up as [`Change`]s in one time-ordered list.

use std::time::SystemTime;

use crate::{Decision, Edge, EdgeKey, MeshGraph, TlsStatus};

/// What happened to a Kubernetes object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// It appeared.
    Created,
    /// Its content changed (not only its status or resourceVersion).
    Changed,
    /// It went away.
    Deleted,
    /// It existed when the change log began (the log's first record of it, not a change).
    Listed,
}

impl Operation {
    /// The lower-case word the change log, tables and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Changed => "changed",
            Self::Deleted => "deleted",
            Self::Listed => "listed",
        }
    }

    /// The operation a word names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(Self::Created),
            "changed" => Some(Self::Changed),
            "deleted" => Some(Self::Deleted),
            "listed" => Some(Self::Listed),
            _ => None,
        }
    }
}

/// One change of a watched Kubernetes object, as the change log holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectChange {
    /// API group (empty for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub operation: Operation,
    /// The object's resourceVersion after the change (empty for a deletion).
    pub resource_version: String,
    /// The field manager of the last write (from `managedFields`), empty when unknown.
    pub field_manager: String,
    /// Who asked for a change made through linkerd-mcp: the person it acted as
    /// (`linkerd-mcp.io/acted-as`).
    pub requested_by: String,
    /// The caller that made the change for them when it was not them, e.g. the chat bot
    /// (`linkerd-mcp.io/requested-by`).
    pub via: String,
    /// `linkerd-mcp.io/approved-by`: who approved it.
    pub approved_by: String,
    /// `linkerd-mcp.io/audit-id`: the audit record of the change.
    pub audit_id: String,
    /// A compact diff, one `path: before -> after` line per changed field (bounded).
    pub diff: Vec<String>,
}

impl ObjectChange {
    /// `Kind namespace/name` (or `Kind name` when cluster-scoped).
    pub fn object(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// Who made the change, as well as it is known: requester and approver when it came
    /// through linkerd-mcp, else the field manager.
    pub fn actor(&self) -> String {
        let who = match (self.requested_by.as_str(), self.approved_by.as_str()) {
            ("", _) if self.field_manager.is_empty() => return "by an unknown writer".into(),
            ("", _) => return format!("by field manager {}", self.field_manager),
            (r, "") => format!("requested by {r}"),
            (r, a) => format!("requested by {r}, approved by {a}"),
        };
        if self.via.is_empty() {
            who
        } else {
            format!("{who} (through {})", self.via)
        }
    }
}

/// Which golden metric regressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Success rate (0..1) fell.
    SuccessRate,
    /// p99 latency (ms) rose.
    LatencyP99,
    /// Requests per second fell.
    Rps,
}

impl Metric {
    /// The word tables and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SuccessRate => "success_rate",
            Self::LatencyP99 => "latency_p99_ms",
            Self::Rps => "rps",
        }
    }
}

/// One difference between two moments.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeKind {
    /// An edge that carries traffic now and did not before.
    EdgeAdded(Box<Edge>),
    /// An edge that carried traffic before and does not now.
    EdgeRemoved(Box<Edge>),
    /// An edge whose TLS status changed.
    TlsChanged {
        /// The edge.
        edge: EdgeKey,
        /// Before.
        from: TlsStatus,
        /// After.
        to: TlsStatus,
        /// The proxy's reason when the edge is no longer mTLS.
        reason: String,
    },
    /// An edge whose policy verdict changed.
    VerdictChanged {
        /// The edge.
        edge: EdgeKey,
        /// Before.
        from: Decision,
        /// After.
        to: Decision,
        /// The policies that decide it now (or the default policy).
        by: String,
    },
    /// An edge whose golden metric got worse beyond the thresholds.
    Regression {
        /// The edge.
        edge: EdgeKey,
        /// Which metric.
        metric: Metric,
        /// Before.
        from: f64,
        /// After.
        to: f64,
    },
    /// A watched Kubernetes object was created, changed or deleted.
    Object(Box<ObjectChange>),
}

impl ChangeKind {
    /// The edge the change is about, if it is about one.
    pub fn edge(&self) -> Option<&EdgeKey> {
        match self {
            Self::EdgeAdded(e) | Self::EdgeRemoved(e) => Some(&e.key),
            Self::TlsChanged { edge, .. }
            | Self::VerdictChanged { edge, .. }
            | Self::Regression { edge, .. } => Some(edge),
            Self::Object(_) => None,
        }
    }

    /// A short word for the kind of change: `edge-added`, `tls`, `verdict`, `regression`, ...
    pub fn label(&self) -> &'static str {
        match self {
            Self::EdgeAdded(_) => "edge-added",
            Self::EdgeRemoved(_) => "edge-removed",
            Self::TlsChanged { .. } => "tls",
            Self::VerdictChanged { .. } => "verdict",
            Self::Regression { .. } => "regression",
            Self::Object(_) => "object",
        }
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn edge_name(k: &EdgeKey) -> String {
    format!("{} -> {} ({})", k.src, k.dst, k.protocol)
}

fn tls_word(t: TlsStatus) -> &'static str {
    match t {
        TlsStatus::Mtls => "mTLS",
        TlsStatus::Plaintext => "plaintext",
        TlsStatus::Unknown => "unknown TLS",
    }
}

/// One line a person reads: what changed, on which edge or object, and who changed it.
impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EdgeAdded(e) => write!(
                f,
                "new edge {} at {:.2} rps, {}",
                edge_name(&e.key),
                e.metrics.rps,
                tls_word(e.tls)
            ),
            Self::EdgeRemoved(e) => write!(
                f,
                "edge gone {} (was {:.2} rps)",
                edge_name(&e.key),
                e.metrics.rps
            ),
            Self::TlsChanged {
                edge,
                from,
                to,
                reason,
            } => {
                write!(
                    f,
                    "{}: {} -> {}",
                    edge_name(edge),
                    tls_word(*from),
                    tls_word(*to)
                )?;
                if !reason.is_empty() && *to != TlsStatus::Mtls {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            Self::VerdictChanged { edge, from, to, by } => {
                write!(
                    f,
                    "{}: policy {} -> {}",
                    edge_name(edge),
                    from.as_str(),
                    to.as_str()
                )?;
                if !by.is_empty() {
                    write!(f, " (by {by})")?;
                }
                Ok(())
            }
            Self::Regression {
                edge,
                metric,
                from,
                to,
            } => match metric {
                Metric::SuccessRate => write!(
                    f,
                    "{}: success rate {} -> {}",
                    edge_name(edge),
                    pct(*from),
                    pct(*to)
                ),
                Metric::LatencyP99 => {
                    write!(f, "{}: p99 {from:.0} ms -> {to:.0} ms", edge_name(edge))
                }
                Metric::Rps => write!(f, "{}: {from:.2} rps -> {to:.2} rps", edge_name(edge)),
            },
            Self::Object(o) => {
                write!(f, "{} {}, {}", o.object(), o.operation.as_str(), o.actor())?;
                if let Some(first) = o.diff.first() {
                    write!(f, ": {first}")?;
                    if o.diff.len() > 1 {
                        write!(f, " (+{} more)", o.diff.len() - 1)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A change and when it happened (for a graph-level difference: the first moment it was seen).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// When.
    pub at: SystemTime,
    /// What.
    pub what: ChangeKind,
}

/// How much worse a metric must get to count as a regression. Metrics move a little between
/// any two reads; a diff that listed every wobble would hide the change that matters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Success rate must fall by more than this (absolute, 0..1).
    pub success_drop: f64,
    /// p99 must grow by more than this factor (and by more than `p99_floor_ms`).
    pub p99_factor: f64,
    /// Least p99 growth in milliseconds that counts.
    pub p99_floor_ms: f64,
    /// Requests per second must fall below this share of before (0..1).
    pub rps_share: f64,
    /// Edges with less traffic than this (rps) before and after are not judged on metrics.
    pub min_rps: f64,
}

impl Default for Thresholds {
    /// A drop of 5 points of success rate, p99 up by half (and at least 10 ms), traffic down
    /// by half; edges under 0.1 rps are too quiet to judge.
    fn default() -> Self {
        Self {
            success_drop: 0.05,
            p99_factor: 1.5,
            p99_floor_ms: 10.0,
            rps_share: 0.5,
            min_rps: 0.1,
        }
    }
}

/// The graph-level differences from `before` to `after`, in edge order (not yet timed).
/// Edges with no traffic in the window count as absent: a metrics window that empties is
/// an edge that stopped.
pub fn graph_changes(before: &MeshGraph, after: &MeshGraph, t: &Thresholds) -> Vec<ChangeKind> {
    let live = |g: &MeshGraph, k: &EdgeKey| g.edges.get(k).filter(|e| carries_traffic(e)).cloned();
    let mut keys: Vec<&EdgeKey> = before.edges.keys().chain(after.edges.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        match (live(before, k), live(after, k)) {
            (None, Some(a)) => out.push(ChangeKind::EdgeAdded(Box::new(a))),
            (Some(b), None) => out.push(ChangeKind::EdgeRemoved(Box::new(b))),
            (Some(b), Some(a)) => edge_changes(&b, &a, t, &mut out),
            (None, None) => {}
        }
    }
    out
}

fn carries_traffic(e: &Edge) -> bool {
    e.metrics.rps > 0.0 || e.metrics.tcp_open_connections > 0.0
}

fn edge_changes(b: &Edge, a: &Edge, t: &Thresholds, out: &mut Vec<ChangeKind>) {
    let edge = || a.key.clone();
    if b.tls != a.tls && b.tls != TlsStatus::Unknown && a.tls != TlsStatus::Unknown {
        out.push(ChangeKind::TlsChanged {
            edge: edge(),
            from: b.tls,
            to: a.tls,
            reason: a.no_tls_reason.clone(),
        });
    }
    // An edge whose verdict was never computed on one side (no cluster known) did not turn.
    if b.policy.decision != a.policy.decision && b.policy.is_evaluated() && a.policy.is_evaluated()
    {
        // What decides it now: the authorizations that admit it, else the explain chain's last
        // step (why a Server refuses it), else the default policy.
        let by = if a.policy.authorization_policies.is_empty() {
            a.policy
                .chain
                .last()
                .cloned()
                .unwrap_or_else(|| a.policy.default_policy.clone())
        } else {
            a.policy.authorization_policies.join(", ")
        };
        out.push(ChangeKind::VerdictChanged {
            edge: edge(),
            from: b.policy.decision,
            to: a.policy.decision,
            by,
        });
    }
    let (mb, ma) = (&b.metrics, &a.metrics);
    if mb.rps < t.min_rps && ma.rps < t.min_rps {
        return;
    }
    let regress = |metric, from, to| ChangeKind::Regression {
        edge: edge(),
        metric,
        from,
        to,
    };
    if let (Some(sb), Some(sa)) = (mb.success_rate, ma.success_rate)
        && sb - sa > t.success_drop
    {
        out.push(regress(Metric::SuccessRate, sb, sa));
    }
    if let (Some(pb), Some(pa)) = (mb.latency_p99_ms, ma.latency_p99_ms)
        && pa > pb * t.p99_factor
        && pa - pb > t.p99_floor_ms
    {
        out.push(regress(Metric::LatencyP99, pb, pa));
    }
    if mb.rps >= t.min_rps && ma.rps < mb.rps * t.rps_share {
        out.push(regress(Metric::Rps, mb.rps, ma.rps));
    }
}

/// Whether the graph-level change `c` (from [`graph_changes`]) holds in `g` relative to
/// `before`: used to find when it first appeared, by probing graphs between two moments.
pub fn holds(c: &ChangeKind, before: &MeshGraph, g: &MeshGraph, t: &Thresholds) -> bool {
    let Some(key) = c.edge() else {
        return true;
    };
    let now = g.edges.get(key).filter(|e| carries_traffic(e));
    match c {
        ChangeKind::EdgeAdded(_) => now.is_some(),
        ChangeKind::EdgeRemoved(_) => now.is_none(),
        ChangeKind::TlsChanged { to, .. } => now.is_some_and(|e| e.tls == *to),
        ChangeKind::VerdictChanged { to, .. } => now.is_some_and(|e| e.policy.decision == *to),
        ChangeKind::Regression { metric, .. } => {
            let (Some(b), Some(n)) = (before.edges.get(key), now) else {
                return false;
            };
            let mut found = Vec::new();
            edge_changes(b, n, t, &mut found);
            found
                .iter()
                .any(|f| matches!(f, ChangeKind::Regression { metric: m, .. } if m == metric))
        }
        ChangeKind::Object(_) => true,
    }
}

/// Orders changes by time; at the same moment object changes come first (they cause the
/// graph's), then in edge order.
pub fn sort_changes(changes: &mut [Change]) {
    changes.sort_by(|a, b| {
        a.at.cmp(&b.at).then_with(|| {
            let rank = |c: &Change| u8::from(!matches!(c.what, ChangeKind::Object(_)));
            rank(a).cmp(&rank(b))
        })
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{Destination, PolicyVerdict, Protocol, WorkloadRef};

    fn wl(name: &str) -> WorkloadRef {
        WorkloadRef {
            namespace: "emojivoto".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    fn edge(src: &str, dst: &str, rps: f64, sr: f64, tls: TlsStatus) -> Edge {
        let mut e = Edge::new(EdgeKey {
            src: wl(src),
            dst: Destination::Workload(wl(dst)),
            protocol: Protocol::Http,
        });
        e.tls = tls;
        e.metrics.rps = rps;
        e.metrics.success_rate = Some(sr);
        e.metrics.latency_p99_ms = Some(20.0);
        e
    }

    fn graph(edges: Vec<Edge>) -> MeshGraph {
        let mut g = MeshGraph::empty(Duration::from_secs(60), UNIX_EPOCH);
        for e in edges {
            g.edges.insert(e.key.clone(), e);
        }
        g
    }

    #[test]
    fn added_removed_tls_verdict_and_regressions_are_found_and_wobbles_are_not() {
        let mut denied = edge("web", "voting", 10.0, 0.6, TlsStatus::Plaintext);
        denied.policy = PolicyVerdict {
            decision: Decision::Denied,
            default_policy: "deny (namespace default)".into(),
            chain: vec!["deny".into()],
            ..PolicyVerdict::default()
        };
        let mut allowed = edge("web", "voting", 10.0, 0.99, TlsStatus::Mtls);
        allowed.policy = PolicyVerdict {
            decision: Decision::Allowed,
            authorization_policies: vec!["voting-policy".into()],
            chain: vec!["allow".into()],
            ..PolicyVerdict::default()
        };
        let before = graph(vec![
            allowed,
            edge("web", "emoji", 10.0, 0.99, TlsStatus::Mtls),
            edge("vote-bot", "web", 2.0, 0.99, TlsStatus::Mtls),
        ]);
        let after = graph(vec![
            denied,
            // A wobble: under every threshold.
            edge("web", "emoji", 9.0, 0.97, TlsStatus::Mtls),
            edge("web", "new", 1.0, 1.0, TlsStatus::Mtls),
            // No traffic in the window: gone.
            edge("vote-bot", "web", 0.0, 0.99, TlsStatus::Mtls),
        ]);
        let found = graph_changes(&before, &after, &Thresholds::default());
        let labels: Vec<&str> = found.iter().map(ChangeKind::label).collect();
        assert!(
            found
                .iter()
                .any(|c| matches!(c, ChangeKind::VerdictChanged { by, .. } if by == "deny")),
            "a denial says why: {found:#?}"
        );
        assert_eq!(
            labels,
            ["edge-removed", "edge-added", "tls", "verdict", "regression"],
            "{found:#?}"
        );
        for c in &found {
            assert!(holds(c, &before, &after, &Thresholds::default()), "{c:?}");
            assert!(
                !holds(c, &before, &before, &Thresholds::default()),
                "{c:?} holds before"
            );
        }
    }

    #[test]
    fn object_changes_sort_before_the_graph_changes_of_the_same_moment() {
        let at = UNIX_EPOCH + Duration::from_secs(5);
        let obj = ChangeKind::Object(Box::new(ObjectChange {
            group: String::new(),
            kind: "Deployment".into(),
            namespace: "emojivoto".into(),
            name: "web".into(),
            operation: Operation::Changed,
            resource_version: "7".into(),
            field_manager: "kubectl".into(),
            requested_by: String::new(),
            via: String::new(),
            approved_by: String::new(),
            audit_id: String::new(),
            diff: vec![],
        }));
        let e = edge("web", "voting", 1.0, 1.0, TlsStatus::Mtls);
        let mut list = vec![
            Change {
                at,
                what: ChangeKind::EdgeAdded(Box::new(e)),
            },
            Change { at, what: obj },
            Change {
                at: UNIX_EPOCH,
                what: ChangeKind::EdgeRemoved(Box::new(edge("a", "b", 1.0, 1.0, TlsStatus::Mtls))),
            },
        ];
        sort_changes(&mut list);
        let labels: Vec<&str> = list.iter().map(|c| c.what.label()).collect();
        assert_eq!(labels, ["edge-removed", "object", "edge-added"]);
    }
}
