//! The topology file: which workloads exist and how they call each other.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A simulated mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The workloads.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Who calls whom.
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
    /// Traffic leaving the mesh through EgressNetworks (reported by 2.20 proxies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressSpec>,
}

/// Requests from a workload out of the mesh, captured by an EgressNetwork (Linkerd 2.17+).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    /// Caller, `namespace/name`.
    pub from: String,
    /// The EgressNetwork, `namespace/name`.
    pub network: String,
    /// `http` (default) or `grpc`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Destination port (default 443).
    #[serde(default = "egress_port")]
    pub port: u16,
    /// Requests per second.
    pub rps: f64,
    /// The host called; reported as `hostname` (the proxy's opt-in hostname labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `Allow` (default) or `Deny`: the EgressNetwork's trafficPolicy, unless meshsim follows a
    /// cluster that has it.
    #[serde(default = "allow")]
    pub traffic_policy: String,
    /// Routes attached to the EgressNetwork, with their shares; the rest matches no route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteTraffic>,
    /// Response latency quantiles.
    #[serde(default)]
    pub latency_ms: Latency,
}

fn egress_port() -> u16 {
    443
}

fn allow() -> String {
    "Allow".into()
}

/// One workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Deployment` (default), `StatefulSet` or `DaemonSet`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Service account; defaults to the workload's name.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Whether pods run a Linkerd proxy (default true).
    #[serde(default = "yes")]
    pub meshed: bool,
    /// Pods (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// The Service in front of it (default: the workload's name).
    #[serde(default)]
    pub service: Option<String>,
}

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            p50: 2.0,
            p95: 8.0,
            p99: 15.0,
        }
    }
}

/// One edge: `from` calls `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// Caller, `namespace/name`.
    pub from: String,
    /// Callee, `namespace/name`.
    pub to: String,
    /// `http` (default), `grpc` or `tcp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Requests per second (connections per second for `tcp`).
    pub rps: f64,
    /// Share of successful responses, 0..1 (default 1).
    #[serde(default = "one_f")]
    pub success_rate: f64,
    /// Response latency quantiles.
    #[serde(default)]
    pub latency_ms: Latency,
    /// mTLS (default: true when both ends are meshed).
    #[serde(default)]
    pub tls: Option<bool>,
    /// Why there is no TLS when `tls` is false (default `not_provided_by_service_discovery`;
    /// `disabled` emits `tls="disabled"`).
    #[serde(default)]
    pub no_tls_reason: Option<String>,
    /// Open TCP connections (default 1).
    #[serde(default = "one")]
    pub tcp_connections: u32,
    /// Destination port (default 8080).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Routes (HTTPRoutes, GRPCRoutes) and their shares of the traffic; the rest takes Linkerd's
    /// default route. Reported only by `--linkerd-version 2.20` proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteTraffic>,
}

/// One route of an edge and how its requests fare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTraffic {
    /// The HTTPRoute's (or GRPCRoute's) name, in the destination's namespace.
    pub name: String,
    /// Share of the edge's requests, 0..1; the shares of an edge add up to 1 at most.
    pub share: f64,
    /// Share of successful responses (default: the edge's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Latency quantiles (default: the edge's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
}

fn default_kind() -> String {
    "Deployment".into()
}

fn default_protocol() -> String {
    "http".into()
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn one_f() -> f64 {
    1.0
}

fn default_port() -> u16 {
    8080
}

/// Why a topology was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Not YAML, or not the topology's shape (the message names the line and column).
    #[error("topology is not valid YAML for a topology: {0}")]
    Syntax(#[from] serde_yaml_ng::Error),
    /// Too large or too deep to parse safely.
    #[error("topology refused: {0}")]
    Bounds(#[from] mesh_model::input::InputError),
    /// A field has a value that makes no sense.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `edges[2].rps`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: String, reason: impl Into<String>) -> TopologyError {
    TopologyError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_latency(l: Latency, at: &str) -> Result<(), TopologyError> {
    if l.p50 > 0.0 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99.is_finite() {
        return Ok(());
    }
    Err(invalid(
        at.to_owned(),
        format!(
            "need 0 < p50 <= p95 <= p99, got {} / {} / {}",
            l.p50, l.p95, l.p99
        ),
    ))
}

/// The routes of an edge or egress flow at `at`: named, unique, shares 0..1 adding up to 1 at
/// most, success rates 0..1, latencies ordered.
fn check_routes(routes: &[RouteTraffic], at: &str) -> Result<(), TopologyError> {
    let mut names = BTreeSet::new();
    let mut total = 0.0;
    for (r, route) in routes.iter().enumerate() {
        let at = |f: &str| format!("{at}.routes[{r}].{f}");
        if !mesh_model::is_dns_subdomain(&route.name) {
            return Err(invalid(
                at("name"),
                format!("{:?} is not a Kubernetes name", route.name),
            ));
        }
        if !names.insert(route.name.as_str()) {
            return Err(invalid(
                at("name"),
                format!("duplicate route {}", route.name),
            ));
        }
        if !(0.0..=1.0).contains(&route.share) {
            return Err(invalid(
                at("share"),
                format!("{} is outside 0..1", route.share),
            ));
        }
        total += route.share;
        if let Some(sr) = route.success_rate
            && !(0.0..=1.0).contains(&sr)
        {
            return Err(invalid(at("success_rate"), format!("{sr} is outside 0..1")));
        }
        if let Some(l) = route.latency_ms {
            check_latency(l, &at("latency_ms"))?;
        }
    }
    if total > 1.0 + 1e-9 {
        return Err(invalid(
            format!("{at}.routes"),
            format!("the shares add up to {total}, more than 1"),
        ));
    }
    Ok(())
}

// === impl Topology ===

impl Topology {
    /// Parses and validates a YAML topology.
    pub fn from_yaml(text: &str) -> Result<Self, TopologyError> {
        mesh_model::input::check(text, mesh_model::input::InputLimits::TOPOLOGY)?;
        let t: Self = serde_yaml_ng::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    /// The YAML form.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a topology always serializes")
    }

    /// Finds a workload by `namespace/name`.
    pub fn workload(&self, id: &str) -> Option<&WorkloadSpec> {
        let (ns, name) = id.split_once('/')?;
        self.workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == name)
    }

    /// Checks every rule, naming the first offending field.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut seen = BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let at = |f: &str| format!("workloads[{i}].{f}");
            for (f, v) in [("namespace", &w.namespace), ("name", &w.name)] {
                if !is_dns_label(v) {
                    return Err(invalid(
                        at(f),
                        format!("{v:?} is not a DNS label (lower case letters, digits, '-')"),
                    ));
                }
            }
            if !matches!(w.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
                return Err(invalid(
                    at("kind"),
                    format!(
                        "{:?} is not one of Deployment, StatefulSet, DaemonSet",
                        w.kind
                    ),
                ));
            }
            if w.replicas == 0 {
                return Err(invalid(at("replicas"), "must be at least 1"));
            }
            if !seen.insert((w.namespace.as_str(), w.name.as_str())) {
                return Err(invalid(
                    format!("workloads[{i}]"),
                    format!("duplicate workload {}/{}", w.namespace, w.name),
                ));
            }
        }
        let mut edges = BTreeSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            let at = |f: &str| format!("edges[{i}].{f}");
            for (f, v) in [("from", &e.from), ("to", &e.to)] {
                if self.workload(v).is_none() {
                    return Err(invalid(
                        at(f),
                        format!(
                            "unknown workload {v:?} (expected namespace/name of a listed workload)"
                        ),
                    ));
                }
            }
            if !matches!(e.protocol.as_str(), "http" | "grpc" | "tcp") {
                return Err(invalid(
                    at("protocol"),
                    format!("{:?} is not one of http, grpc, tcp", e.protocol),
                ));
            }
            if !(e.rps.is_finite() && e.rps >= 0.0) {
                return Err(invalid(
                    at("rps"),
                    format!("{} is not a rate (must be 0 or more)", e.rps),
                ));
            }
            if !(0.0..=1.0).contains(&e.success_rate) {
                return Err(invalid(
                    at("success_rate"),
                    format!("{} is outside 0..1", e.success_rate),
                ));
            }
            check_latency(e.latency_ms, &at("latency_ms"))?;
            if e.port == 0 {
                return Err(invalid(at("port"), "must be 1..65535"));
            }
            if e.tls == Some(true) && !self.both_meshed(e) {
                return Err(invalid(at("tls"), "mTLS needs both ends meshed"));
            }
            check_routes(&e.routes, &format!("edges[{i}]"))?;
            if !e.routes.is_empty() && e.protocol == "tcp" {
                return Err(invalid(
                    at("routes"),
                    "a tcp edge has no HTTP or gRPC routes",
                ));
            }
            if !edges.insert((e.from.as_str(), e.to.as_str(), e.protocol.as_str())) {
                return Err(invalid(
                    format!("edges[{i}]"),
                    format!("duplicate edge {} -> {} ({})", e.from, e.to, e.protocol),
                ));
            }
        }
        for (i, x) in self.egress.iter().enumerate() {
            let at = |f: &str| format!("egress[{i}].{f}");
            if self.workload(&x.from).is_none() {
                return Err(invalid(
                    at("from"),
                    format!("unknown workload {:?}", x.from),
                ));
            }
            let Some((ns, name)) = x.network.split_once('/') else {
                return Err(invalid(
                    at("network"),
                    "expected namespace/name of an EgressNetwork",
                ));
            };
            if !is_dns_label(ns) || !mesh_model::is_dns_subdomain(name) {
                return Err(invalid(
                    at("network"),
                    format!("{:?} is not namespace/name", x.network),
                ));
            }
            if !matches!(x.protocol.as_str(), "http" | "grpc") {
                return Err(invalid(
                    at("protocol"),
                    format!("{:?} is not http or grpc", x.protocol),
                ));
            }
            if !matches!(x.traffic_policy.as_str(), "Allow" | "Deny") {
                return Err(invalid(
                    at("traffic_policy"),
                    format!("{:?} is not Allow or Deny", x.traffic_policy),
                ));
            }
            if !(x.rps.is_finite() && x.rps >= 0.0) || x.port == 0 {
                return Err(invalid(
                    at("rps"),
                    "needs a rate of 0 or more and a port 1..65535",
                ));
            }
            check_routes(&x.routes, &format!("egress[{i}]"))?;
        }
        Ok(())
    }

    fn both_meshed(&self, e: &EdgeSpec) -> bool {
        [&e.from, &e.to]
            .iter()
            .all(|id| self.workload(id).is_some_and(|w| w.meshed))
    }

    /// Whether an edge is mTLS, after defaults.
    pub fn edge_tls(&self, e: &EdgeSpec) -> bool {
        e.tls.unwrap_or_else(|| self.both_meshed(e))
    }
}

// === impl EdgeSpec ===

/// What one route of an edge carries, after defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMix {
    /// `HTTPRoute`, `GRPCRoute`, or `default` for Linkerd's own route.
    pub kind: &'static str,
    /// The route's name (`http` or `grpc` for the default route).
    pub name: String,
    /// Share of the edge's requests.
    pub share: f64,
    /// Share of successful responses.
    pub success_rate: f64,
    /// Latency quantiles.
    pub latency: Latency,
}

impl EdgeSpec {
    /// Its routes with their shares; what the listed routes leave takes Linkerd's default route
    /// (`route_kind="default"`, `route_name="http"` or `"grpc"`), with the edge's own success
    /// rate and latency.
    pub fn route_mix(&self) -> Vec<RouteMix> {
        let grpc = self.protocol == "grpc";
        let mut mix: Vec<RouteMix> = self
            .routes
            .iter()
            .map(|r| RouteMix {
                kind: if grpc { "GRPCRoute" } else { "HTTPRoute" },
                name: r.name.clone(),
                share: r.share,
                success_rate: r.success_rate.unwrap_or(self.success_rate),
                latency: r.latency_ms.unwrap_or(self.latency_ms),
            })
            .collect();
        let rest = 1.0 - mix.iter().map(|r| r.share).sum::<f64>();
        if rest > 1e-9 {
            mix.push(RouteMix {
                kind: "default",
                name: if grpc { "grpc" } else { "http" }.into(),
                share: rest,
                success_rate: self.success_rate,
                latency: self.latency_ms,
            });
        }
        mix
    }

    /// The success rate over all its routes.
    pub fn overall_success_rate(&self) -> f64 {
        if self.routes.is_empty() {
            return self.success_rate;
        }
        self.route_mix()
            .iter()
            .map(|r| r.share * r.success_rate)
            .sum()
    }
}

// === impl EgressSpec ===

impl EgressSpec {
    /// Its routes under `traffic_policy`: the listed routes (always admitted), and what they
    /// leave on Linkerd's default egress route, `http-egress-allow` or `http-egress-deny`
    /// (`grpc-...` for gRPC), which the second value says is refused.
    pub fn route_mix(&self, traffic_policy: &str) -> (Vec<RouteMix>, Vec<bool>) {
        let grpc = self.protocol == "grpc";
        let mut mix: Vec<RouteMix> = self
            .routes
            .iter()
            .map(|r| RouteMix {
                kind: if grpc { "GRPCRoute" } else { "HTTPRoute" },
                name: r.name.clone(),
                share: r.share,
                success_rate: r.success_rate.unwrap_or(1.0),
                latency: r.latency_ms.unwrap_or(self.latency_ms),
            })
            .collect();
        let mut refused = vec![false; mix.len()];
        let rest = 1.0 - mix.iter().map(|r| r.share).sum::<f64>();
        if rest > 1e-9 {
            let deny = traffic_policy != "Allow";
            mix.push(RouteMix {
                kind: "default",
                name: format!(
                    "{}-egress-{}",
                    if grpc { "grpc" } else { "http" },
                    if deny { "deny" } else { "allow" }
                ),
                share: rest,
                success_rate: 1.0,
                latency: self.latency_ms,
            });
            refused.push(deny);
        }
        (mix, refused)
    }
}

// === impl WorkloadSpec ===

impl WorkloadSpec {
    /// The service account, after defaults.
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or(&self.name)
    }

    /// The Service name, after defaults.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }

    /// The Linkerd identity of its proxies.
    pub fn identity(&self) -> String {
        format!(
            "{}.{}.serviceaccount.identity.linkerd.cluster.local",
            self.service_account(),
            self.namespace
        )
    }
}

use mesh_model::is_dns_label;

#[cfg(test)]
mod tests;
