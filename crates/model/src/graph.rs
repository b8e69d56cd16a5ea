//! The graph's nouns. Collections are keyed by stable ids in `BTreeMap`s, so iteration order
//! is deterministic (stable output, cheap ordered diffs).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::{Duration, SystemTime},
};

/// Identifies a workload: (namespace, kind, name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadRef {
    /// Kubernetes namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Pod`, ...
    pub kind: String,
    /// Object name.
    pub name: String,
}

/// A workload in the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Its id.
    pub id: WorkloadRef,
    /// Kubernetes service account its pods run as (empty when unknown).
    pub service_account: String,
    /// Linkerd identity of its proxies (empty when unknown or unmeshed).
    pub identity: String,
    /// Whether its pods run a Linkerd proxy.
    pub meshed: bool,
    /// Ready pods (from Prometheus: pods seen reporting in the window).
    pub ready_replicas: u32,
}

/// How an edge's traffic was secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsStatus {
    /// Mutual TLS with proxy identities on both ends.
    Mtls,
    /// At least part of the traffic went without mTLS.
    Plaintext,
    /// Nothing observed says either way.
    #[default]
    Unknown,
}

/// Application protocol of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1 or HTTP/2 (not gRPC).
    Http,
    /// gRPC (responses carried a `grpc_status`).
    Grpc,
    /// Opaque TCP: only transport metrics.
    Tcp,
}

impl Protocol {
    /// The wire spelling: `http`, `grpc`, `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "grpc" => Some(Self::Grpc),
            "tcp" => Some(Self::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Is `s` a DNS-1123 label, as Kubernetes names namespaces and most workloads?
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` a DNS-1123 subdomain, as Kubernetes names most objects? Apimachinery's
/// `IsDNS1123Subdomain`: at most 253 bytes of dot-separated parts, each lowercase alphanumerics
/// and `-`, starting and ending alphanumeric (no per-part length limit). The one check every
/// crate uses: admission rules, the apply path, kube-sim.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where an edge goes: a known workload, or only an authority (unmeshed or external).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A workload in the graph.
    Workload(WorkloadRef),
    /// Known only by its `host:port` authority.
    Authority(String),
}

impl Destination {
    /// Traffic leaving the mesh through EgressNetwork `namespace/name` on `port`: an external
    /// node named by the EgressNetwork, and by the host called when the proxy reports it
    /// (`EgressNetwork egress/internet:443 (api.github.com)`).
    pub fn egress(namespace: &str, name: &str, port: &str, hostname: &str) -> Self {
        Self::Authority(if hostname.is_empty() {
            format!("EgressNetwork {namespace}/{name}:{port}")
        } else {
            format!("EgressNetwork {namespace}/{name}:{port} ({hostname})")
        })
    }

    /// The EgressNetwork `(namespace, name, port)` of a destination made by
    /// [`Destination::egress`].
    pub fn as_egress(&self) -> Option<(&str, &str, &str)> {
        let Self::Authority(a) = self else {
            return None;
        };
        let a = a.split_once(" (").map_or(a.as_str(), |(n, _)| n);
        let (ns, rest) = a.strip_prefix("EgressNetwork ")?.split_once('/')?;
        let (name, port) = rest.rsplit_once(':')?;
        Some((ns, name, port))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(w) => w.fmt(f),
            Self::Authority(a) => f.write_str(a),
        }
    }
}

/// Identifies an edge: (src, dst, protocol).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// The calling workload.
    pub src: WorkloadRef,
    /// The called workload or authority.
    pub dst: Destination,
    /// The protocol spoken.
    pub protocol: Protocol,
}

/// Golden metrics of an edge over the graph's window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeMetrics {
    /// Requests per second (HTTP/gRPC), or connections opened per second (TCP).
    pub rps: f64,
    /// 0..1; `None` when no HTTP/gRPC responses were seen.
    pub success_rate: Option<f64>,
    /// Median latency in milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// TCP connections open now.
    pub tcp_open_connections: f64,
    /// Bytes per second read by the source's proxy from the destination.
    pub read_bytes_per_sec: f64,
    /// Bytes per second written by the source's proxy to the destination.
    pub write_bytes_per_sec: f64,
}

/// Outcome of evaluating Linkerd's authorization for an edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decision {
    /// Not evaluated yet, or not enough information.
    #[default]
    Unknown,
    /// Policy admits this traffic.
    Allowed,
    /// Policy refuses this traffic.
    Denied,
    /// Policy admits it in audit mode.
    Audit,
}

impl Decision {
    /// The lower-case word tables, logs and simulators use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Audit => "audit",
        }
    }
}

/// Which policy admits or denies an edge, and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyVerdict {
    /// The decision.
    pub decision: Decision,
    /// The Server that applies, if any.
    pub server: String,
    /// The default policy in force when no Server applies, and where it came from.
    pub default_policy: String,
    /// AuthorizationPolicies (or ServerAuthorizations) that admit the edge.
    pub authorization_policies: Vec<String>,
    /// The HTTPRoute that matched, if any.
    pub http_route: String,
    /// The explain-access steps, each a short sentence naming an object.
    pub chain: Vec<String>,
    /// Observed authorized requests per second (`inbound_http_authz_allow_total`).
    pub observed_allow_rps: Option<f64>,
    /// Observed denied requests per second (`inbound_http_authz_deny_total`).
    pub observed_deny_rps: Option<f64>,
    /// Of the allowed, those admitted only by audit mode (the proxies' `authz_name="audit"`):
    /// what enforcing the policy would refuse.
    pub observed_audit_rps: Option<f64>,
    /// Why what the proxies report disagrees with the computed decision; empty when it agrees.
    pub disagreement: String,
    /// The HTTPLocalRateLimitPolicy on the Server, with its limits; empty when none applies.
    pub rate_limit: String,
    /// Requests per second the callee's proxies answered 429 (rate limited), as the caller's
    /// route metrics report them.
    pub observed_rate_limited_rps: Option<f64>,
}

impl PolicyVerdict {
    /// Whether policy was evaluated at all: a verdict never computed (no cluster known) is
    /// `Unknown` with no explain steps, unlike one that policy leaves undecided.
    pub fn is_evaluated(&self) -> bool {
        self.decision != Decision::Unknown || !self.chain.is_empty()
    }

    /// Why an evaluated verdict is `Unknown`: its last explain step, introduced as per-route
    /// policy when a Server applies (its HTTPRoutes decide each request by method and path).
    pub fn why_unknown(&self) -> Option<String> {
        if self.decision != Decision::Unknown {
            return None;
        }
        let why = self.chain.last()?;
        Some(if self.server.is_empty() {
            why.clone()
        } else {
            format!("per-route policy, needs a method and path: {why}")
        })
    }
}

/// Which route a request took: the route the caller's proxy matched and the parent it is
/// attached to. Linkerd's own routes (no HTTPRoute or GRPCRoute attached) have kind `default`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    /// `HTTPRoute`, `GRPCRoute`, or `default` (`route_kind` as the proxy reports it).
    pub kind: String,
    /// The route's namespace (empty for default routes).
    pub namespace: String,
    /// The route's name (`http`, `grpc`, `http-egress-deny`, ... for default routes).
    pub name: String,
    /// The parent it is attached to, as `Kind namespace/name:port` (`Service emojivoto/web-svc:80`,
    /// `EgressNetwork egress/internet:443`).
    pub parent: String,
}

impl RouteId {
    /// Linkerd's own route as `[default http]`, else the route's name alone.
    pub fn short_name(&self) -> String {
        if self.is_default() {
            format!("[default {}]", self.name)
        } else {
            self.name.clone()
        }
    }

    /// Linkerd's own route as `[default http]`, else `namespace/name`.
    pub fn qualified_name(&self) -> String {
        if self.is_default() {
            self.short_name()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    fn is_default(&self) -> bool {
        self.kind == "default"
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            write!(f, "{} on {}", self.short_name(), self.parent)
        } else {
            write!(
                f,
                "{} {} on {}",
                self.kind,
                self.qualified_name(),
                self.parent
            )
        }
    }
}

/// One route's share of an edge's traffic, as `linkerd viz stat-outbound` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteStats {
    /// The route.
    pub id: RouteId,
    /// Requests per second.
    pub rps: f64,
    /// 0..1, viz's rule: HTTP fails on 5xx or a proxy error, gRPC on a status other than OK or a
    /// proxy error (so a 429 or 403 counts as a success).
    pub success_rate: Option<f64>,
    /// Median latency in milliseconds (from the proxy's seconds histogram).
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Responses per second by status class: `2xx`..`5xx` for HTTP, the grpc-status name for
    /// gRPC, `error:<KIND>` when the proxy failed the request itself (`error:FAIL_FAST`).
    pub status_rps: BTreeMap<String, f64>,
    /// HTTP 429 (Too Many Requests) per second: what a rate limit refused.
    pub rate_limited_rps: f64,
}

impl RouteStats {
    /// Failed requests per second, by the same rule as [`RouteStats::success_rate`].
    pub fn failure_rps(&self) -> f64 {
        self.success_rate.map_or(0.0, |s| self.rps * (1.0 - s))
    }
}

/// A directed edge of the mesh graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Its id.
    pub key: EdgeKey,
    /// How it is secured.
    pub tls: TlsStatus,
    /// Why it is not mTLS (empty when it is).
    pub no_tls_reason: String,
    /// The source proxy's identity; empty when it cannot be attributed unambiguously.
    pub client_identity: String,
    /// The destination proxy's identity, as the source saw it.
    pub server_identity: String,
    /// Golden metrics.
    pub metrics: EdgeMetrics,
    /// The policy verdict.
    pub policy: PolicyVerdict,
    /// Per-route breakdown (Linkerd 2.14+ proxies), busiest first; empty when the proxies do not
    /// report route metrics.
    pub routes: Vec<RouteStats>,
}

impl Edge {
    /// An edge with no traffic observed yet.
    pub fn new(key: EdgeKey) -> Self {
        Self {
            key,
            tls: TlsStatus::Unknown,
            no_tls_reason: String::new(),
            client_identity: String::new(),
            server_identity: String::new(),
            metrics: EdgeMetrics::default(),
            policy: PolicyVerdict::default(),
            routes: Vec::new(),
        }
    }

    /// The route failing the most requests per second, if any fails.
    pub fn worst_route(&self) -> Option<&RouteStats> {
        self.routes
            .iter()
            .filter(|r| r.failure_rps() > 0.0)
            .max_by(|a, b| a.failure_rps().total_cmp(&b.failure_rps()))
    }
}

/// Identifies a policy object: (kind, namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Kubernetes kind, e.g. `AuthorizationPolicy`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A Linkerd policy object as stored in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyObject {
    /// `apiVersion`.
    pub api_version: String,
    /// Its id.
    pub key: PolicyKey,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The spec as JSON text.
    pub spec_json: String,
}

/// Health of one input source, so readers see staleness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceHealth {
    /// `prometheus` or `kubernetes`.
    pub source: String,
    /// Whether the last attempt succeeded.
    pub ok: bool,
    /// When it last succeeded.
    pub last_success: Option<SystemTime>,
    /// The last error, empty when ok.
    pub error: String,
    /// How the source is read, when there is more than one way (Prometheus: through the
    /// recording rules, or the raw series and why); empty otherwise.
    pub detail: String,
}

/// The whole mesh graph: topology, golden metrics and policy, with its position in history.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshGraph {
    /// Increases by one with every published change.
    pub version: u64,
    /// The writer's lease epoch.
    pub epoch: u64,
    /// When the graph was built.
    pub generated_at: SystemTime,
    /// The metrics window.
    pub window: Duration,
    /// Workloads by id.
    pub workloads: BTreeMap<WorkloadRef, Workload>,
    /// Edges by id.
    pub edges: BTreeMap<EdgeKey, Edge>,
    /// Policy objects by id.
    pub policies: BTreeMap<PolicyKey, PolicyObject>,
    /// Per-source health.
    pub sources: Vec<SourceHealth>,
}

impl MeshGraph {
    /// How many workloads, edges and policy objects it holds.
    pub fn items(&self) -> usize {
        self.workloads.len() + self.edges.len() + self.policies.len()
    }

    /// An empty graph at version 0.
    pub fn empty(window: Duration, generated_at: SystemTime) -> Self {
        Self {
            version: 0,
            epoch: 0,
            generated_at,
            window,
            workloads: BTreeMap::new(),
            edges: BTreeMap::new(),
            policies: BTreeMap::new(),
            sources: Vec::new(),
        }
    }

    /// Namespaces that hold at least one workload, sorted.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .workloads
            .keys()
            .map(|w| w.namespace.as_str())
            .collect();
        out.dedup();
        out
    }

    /// The subgraph of edges with an end in one of `namespaces`, and the workloads they touch
    /// plus every workload in those namespaces. An empty filter keeps everything.
    pub fn filter_namespaces(&self, namespaces: &[String]) -> Self {
        GraphFilter {
            namespaces: namespaces.to_vec(),
            include_policies: true,
            ..GraphFilter::default()
        }
        .apply(self)
    }

    fn clone_meta(&self) -> Self {
        Self {
            version: self.version,
            epoch: self.epoch,
            generated_at: self.generated_at,
            window: self.window,
            workloads: BTreeMap::new(),
            edges: BTreeMap::new(),
            policies: BTreeMap::new(),
            sources: self.sources.clone(),
        }
    }
}

/// A view of the graph: which edges (and the workloads they touch) a reader asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphFilter {
    /// Keep edges with an end in one of these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Keep edges touching this workload (namespace, name).
    pub workload: Option<(String, String)>,
    /// Keep edges with this TLS status.
    pub tls: Option<TlsStatus>,
    /// Keep edges with at least this many requests per second.
    pub min_rps: f64,
    /// Include policy objects.
    pub include_policies: bool,
}

impl GraphFilter {
    fn keeps(&self, e: &Edge) -> bool {
        let dst = match &e.key.dst {
            Destination::Workload(w) => Some(w),
            Destination::Authority(_) => None,
        };
        let in_ns = |w: &WorkloadRef| self.namespaces.contains(&w.namespace);
        let is =
            |w: &WorkloadRef, (ns, name): &(String, String)| w.namespace == *ns && w.name == *name;
        (self.namespaces.is_empty() || in_ns(&e.key.src) || dst.is_some_and(in_ns))
            && self
                .workload
                .as_ref()
                .is_none_or(|id| is(&e.key.src, id) || dst.is_some_and(|d| is(d, id)))
            && self.tls.is_none_or(|t| e.tls == t)
            && e.metrics.rps >= self.min_rps
    }

    /// The filtered view, keeping the graph's version, epoch and sources.
    pub fn apply(&self, g: &MeshGraph) -> MeshGraph {
        let edges: BTreeMap<EdgeKey, Edge> = g
            .edges
            .iter()
            .filter(|(_, e)| self.keeps(e))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut touched: BTreeSet<&WorkloadRef> = BTreeSet::new();
        for k in edges.keys() {
            touched.insert(&k.src);
            if let Destination::Workload(d) = &k.dst {
                touched.insert(d);
            }
        }
        let edge_filter_only = self.tls.is_some() || self.min_rps > 0.0;
        let workloads = g
            .workloads
            .iter()
            .filter(|(id, _)| {
                touched.contains(id)
                    || (!edge_filter_only
                        && (self.namespaces.is_empty() || self.namespaces.contains(&id.namespace))
                        && self
                            .workload
                            .as_ref()
                            .is_none_or(|(ns, n)| id.namespace == *ns && id.name == *n))
            })
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        let policies = if self.include_policies {
            g.policies
                .iter()
                .filter(|(k, _)| {
                    self.namespaces.is_empty() || self.namespaces.contains(&k.namespace)
                })
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect()
        } else {
            BTreeMap::new()
        };
        MeshGraph {
            workloads,
            edges,
            policies,
            ..g.clone_meta()
        }
    }
}
