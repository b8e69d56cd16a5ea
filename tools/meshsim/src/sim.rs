//! The simulation: per pod pair counters that advance in real time, rendered as the
//! linkerd-proxy exposition (reference section 1) with the labels linkerd-viz's scrape config
//! adds (section 1.5), so Prometheus and every query built for Linkerd see a real mesh.
//!
//! Traffic of an edge is spread evenly over (source pod, destination pod) pairs. Every counter
//! has its own accumulator advanced by `rate * elapsed`, so counters stay monotonic when a new
//! topology changes rates at run time. Series are aggregated by label set before rendering, as
//! the proxy does: pods of different workloads with one service account share inbound series.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc, time::Instant};

use mesh_policy::cluster::Cluster;

use crate::{
    authz::{self, EdgeAuthz},
    topology::{EdgeSpec, Latency, RouteMix, Topology, WorkloadSpec},
};

/// Which Linkerd's proxies meshsim impersonates: the metric families and labels differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkerdVersion {
    /// Linkerd 2.12: the legacy families only (`response_total`, `tcp_*`, `*_authz_*`).
    #[default]
    V2_12,
    /// Linkerd 2.20 (edge-26.8): also the route families `outbound_{http,grpc}_route_*`, with
    /// the proxy's labels and seconds buckets.
    V2_20,
}

impl LinkerdVersion {
    /// The versions `--linkerd-version` takes, as written.
    pub const NAMES: [&'static str; 2] = ["2.12", "2.20"];

    /// `2.12` or `2.20`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "2.12" => Some(Self::V2_12),
            "2.20" => Some(Self::V2_20),
            _ => None,
        }
    }
}

/// `outbound_*_route_request_duration_seconds` bucket bounds (the proxy's `REQUEST_BUCKETS`).
pub const ROUTE_REQUEST_BUCKETS_S: [f64; 4] = [0.05, 0.5, 1.0, 10.0];
/// `outbound_*_route_backend_response_duration_seconds` bucket bounds (`RESPONSE_BUCKETS`).
pub const ROUTE_RESPONSE_BUCKETS_S: [f64; 7] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

/// `response_latency_ms` bucket bounds, in ms (the proxy's, reference section 1.1).
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// The control plane namespace every simulated proxy reports.
pub const CONTROL_PLANE_NS: &str = "linkerd";
const BYTES_PER_REQUEST: (f64, f64) = (820.0, 310.0); // (response read, request written)
const BYTES_PER_TCP_CONN: (f64, f64) = (16_384.0, 2_048.0);
const CONN_CHURN_PER_SEC: f64 = 1.0 / 30.0;
/// A refused request is answered by the destination's proxy itself, in well under 1 ms.
const DENIED_LATENCY_MS: f64 = 0.5;

/// A simulated pod.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Pod name, e.g. `web-5f7b8c9d4-x2k9q`.
    pub name: String,
    /// Pod IP (a label value only; nothing connects to it).
    pub ip: String,
    /// `pod-template-hash` for Deployment pods.
    pub template_hash: Option<String>,
}

/// Pods of a workload, deterministically named.
pub fn pods_of(w: &WorkloadSpec) -> Vec<Pod> {
    let template = hash_name(&format!("{}/{}", w.namespace, w.name), 10);
    (0..w.replicas)
        .map(|i| {
            let h = fnv(&format!("{}/{}/{i}", w.namespace, w.name));
            let name = match w.kind.as_str() {
                "StatefulSet" => format!("{}-{i}", w.name),
                "DaemonSet" => format!("{}-{}", w.name, hash_name(&h.to_string(), 5)),
                _ => format!("{}-{template}-{}", w.name, hash_name(&h.to_string(), 5)),
            };
            Pod {
                name,
                ip: format!(
                    "10.{}.{}.{}",
                    (h >> 16) & 0xff,
                    (h >> 8) & 0xff,
                    (h & 0xfd) + 2
                ),
                template_hash: (w.kind == "Deployment").then(|| template.clone()),
            }
        })
        .collect()
}

/// The Prometheus label for a workload kind (`deployment`, `statefulset`, `daemonset`).
pub fn owner_label(kind: &str) -> &'static str {
    match kind {
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        _ => "deployment",
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hash_name(s: &str, len: usize) -> String {
    // The alphabet Kubernetes uses for generated names.
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = fnv(s);
    (0..len)
        .map(|_| {
            let c = ALPHA[(h % ALPHA.len() as u64) as usize] as char;
            h /= ALPHA.len() as u64;
            if h == 0 {
                h = fnv(&format!("{s}{c}"));
            }
            c
        })
        .collect()
}

/// Cumulative share of responses at or under `le` ms, for an edge's quantiles: piecewise linear
/// through (0, 0), (p50, .5), (p95, .95), (p99, .99), (1.5 * p99, 1).
fn latency_cdf(l: Latency, le: f64) -> f64 {
    let pts = [
        (0.0, 0.0),
        (l.p50, 0.5),
        (l.p95, 0.95),
        (l.p99, 0.99),
        (l.p99 * 1.5, 1.0),
    ];
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if le < x1 {
            return if x1 > x0 {
                y0 + (y1 - y0) * (le - x0) / (x1 - x0)
            } else {
                y1
            };
        }
    }
    1.0
}

/// The `q` quantile (0..1) of a mix of routes' latencies, in ms: where their share-weighted
/// distribution functions reach `q`.
pub fn mixture_quantile(mix: &[RouteMix], q: f64) -> f64 {
    let cdf = |x: f64| -> f64 {
        mix.iter()
            .map(|r| r.share * latency_cdf(r.latency, x))
            .sum()
    };
    let total: f64 = mix.iter().map(|r| r.share).sum();
    let (mut lo, mut hi) = (
        0.0,
        mix.iter().map(|r| r.latency.p99 * 1.5).fold(0.0, f64::max),
    );
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) < q * total {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn latency_mean(l: Latency) -> f64 {
    0.5 * l.p50 * 0.5
        + 0.45 * (l.p50 + l.p95) / 2.0
        + 0.04 * (l.p95 + l.p99) / 2.0
        + 0.01 * (l.p99 + l.p99 * 1.5) / 2.0
}

/// Per-second rates of one pod pair.
#[derive(Clone, Debug, Default)]
struct Rates {
    success: f64,
    failure: f64,
    cdf: Vec<f64>,
    mean_ms: f64,
    opened: f64,
    read: f64,
    write: f64,
    open_connections: f64,
    /// Requests (HTTP) or connections (TCP) the destination's proxy refuses.
    denied: f64,
    /// Requests the destination's proxy answers 429: over a rate limit.
    limited: f64,
    /// Per route of the edge (HTTP and gRPC), in `route_mix` order.
    routes: Vec<RouteRates>,
}

/// Per-second rates of one route of a pod pair.
#[derive(Clone, Debug, Default)]
struct RouteRates {
    success: f64,
    failure: f64,
    denied: f64,
    limited: f64,
    /// Share at or under each `ROUTE_REQUEST_BUCKETS_S` bound.
    request_cdf: Vec<f64>,
    /// Share at or under each `ROUTE_RESPONSE_BUCKETS_S` bound.
    response_cdf: Vec<f64>,
    mean_s: f64,
}

/// Accumulated counters of one route of a pod pair.
#[derive(Clone, Debug, Default)]
struct RouteCounters {
    success: f64,
    failure: f64,
    denied: f64,
    limited: f64,
    request_buckets: Vec<f64>,
    response_buckets: Vec<f64>,
    sum_s: f64,
}

/// Accumulated counters of one pod pair.
#[derive(Clone, Debug, Default)]
struct Counters {
    success: f64,
    failure: f64,
    buckets_success: Vec<f64>,
    buckets_failure: Vec<f64>,
    sum_success: f64,
    sum_failure: f64,
    opened: f64,
    read: f64,
    write: f64,
    denied: f64,
    limited: f64,
    routes: Vec<RouteCounters>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PairKey {
    from: String,
    to: String,
    protocol: String,
    src_pod: usize,
    dst_pod: usize,
}

#[derive(Clone, Debug)]
struct Pair {
    edge: usize,
    rates: Rates,
    counters: Counters,
}

/// A running simulation.
#[derive(Debug)]
pub struct Sim {
    topology: Topology,
    pods: BTreeMap<String, Vec<Pod>>,
    workloads: BTreeMap<String, usize>,
    pairs: BTreeMap<PairKey, Pair>,
    /// The cluster whose policy decides each edge, once meshsim watches one.
    cluster: Option<Arc<Cluster>>,
    /// Per edge, what the destination's proxy does with its traffic.
    authz: Vec<EdgeAuthz>,
    last: Instant,
    version: LinkerdVersion,
    /// Per egress flow and caller pod: its routes' rates and counters.
    egress: BTreeMap<EgressKey, EgressFlow>,
}

/// (caller, EgressNetwork, protocol, caller pod).
type EgressKey = (String, String, String, usize);

/// One caller pod's traffic out through an EgressNetwork.
#[derive(Clone, Debug)]
struct EgressFlow {
    spec: usize,
    mix: Vec<RouteMix>,
    /// Per route: refused by the caller's own proxy (`*-egress-deny`).
    refused: Vec<bool>,
    rates: Vec<RouteRates>,
    counters: Vec<RouteCounters>,
}

// === impl Sim ===

impl Sim {
    /// Starts simulating `topology` at `now`; every counter starts at zero.
    pub fn new(topology: Topology, now: Instant) -> Self {
        let mut sim = Self {
            topology: Topology::default(),
            pods: BTreeMap::new(),
            workloads: BTreeMap::new(),
            pairs: BTreeMap::new(),
            cluster: None,
            authz: Vec::new(),
            last: now,
            version: LinkerdVersion::default(),
            egress: BTreeMap::new(),
        };
        sim.set_topology(topology, now);
        sim
    }

    /// Impersonates `version`'s proxies from now on (2.12's know no rate limits).
    pub fn set_version(&mut self, version: LinkerdVersion) {
        self.version = version;
        let (topology, now) = (std::mem::take(&mut self.topology), self.last);
        self.set_topology(topology, now);
    }

    /// The topology being simulated.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Advances every counter to `now` at the current rates.
    pub fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        if dt == 0.0 {
            return;
        }
        for p in self.pairs.values_mut() {
            let (r, c) = (&p.rates, &mut p.counters);
            c.success += r.success * dt;
            c.failure += r.failure * dt;
            for (i, share) in r.cdf.iter().enumerate() {
                c.buckets_success[i] += r.success * share * dt;
                c.buckets_failure[i] += r.failure * share * dt;
            }
            c.sum_success += r.success * r.mean_ms * dt;
            c.sum_failure += r.failure * r.mean_ms * dt;
            c.opened += r.opened * dt;
            c.read += r.read * dt;
            c.write += r.write * dt;
            c.denied += r.denied * dt;
            c.limited += r.limited * dt;
            advance_routes(&r.routes, &mut c.routes, dt);
        }
        for flow in self.egress.values_mut() {
            advance_routes(&flow.rates, &mut flow.counters, dt);
        }
    }

    /// Decides every edge under `cluster`'s policy from `now` on, and on each later topology.
    pub fn set_cluster(&mut self, cluster: Arc<Cluster>, now: Instant) {
        self.cluster = Some(cluster);
        let topology = std::mem::take(&mut self.topology);
        self.set_topology(topology, now);
    }

    /// Per edge of the topology, in order, whether its traffic is admitted, and by what.
    pub fn authz(&self) -> &[EdgeAuthz] {
        &self.authz
    }

    /// Switches to a new topology at `now`. Counters of pod pairs that exist in both keep
    /// their values (so they stay monotonic); pairs that vanish stop being reported.
    pub fn set_topology(&mut self, topology: Topology, now: Instant) {
        self.advance(now);
        let pods: BTreeMap<String, Vec<Pod>> = topology
            .workloads
            .iter()
            .map(|w| (format!("{}/{}", w.namespace, w.name), pods_of(w)))
            .collect();
        self.authz = match &self.cluster {
            Some(c) => authz::decide(&topology, c),
            None => vec![EdgeAuthz::default(); topology.edges.len()],
        };
        if self.version == LinkerdVersion::V2_12 {
            // HTTPLocalRateLimitPolicy came with Linkerd 2.17.
            for a in &mut self.authz {
                a.limited = None;
            }
        }
        let mut pairs = BTreeMap::new();
        for (edge, e) in topology.edges.iter().enumerate() {
            let (ns, nd) = (pods[&e.from].len(), pods[&e.to].len());
            let n = ns * nd;
            for j in 0..n {
                let key = PairKey {
                    from: e.from.clone(),
                    to: e.to.clone(),
                    protocol: e.protocol.clone(),
                    src_pod: j / nd,
                    dst_pod: j % nd,
                };
                let rates = pair_rates(e, n, j, &self.authz[edge]);
                let mut counters = self.pairs.remove(&key).map_or_else(
                    || Counters {
                        buckets_success: vec![0.0; LATENCY_BUCKETS_MS.len()],
                        buckets_failure: vec![0.0; LATENCY_BUCKETS_MS.len()],
                        // A pair's open connections were opened at some point.
                        opened: rates.open_connections,
                        ..Counters::default()
                    },
                    |p| p.counters,
                );
                // A route keeps its counters while it stays at the same place in the mix.
                counters
                    .routes
                    .resize_with(rates.routes.len(), new_route_counters);
                pairs.insert(
                    key,
                    Pair {
                        edge,
                        rates,
                        counters,
                    },
                );
            }
        }
        self.workloads = topology
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("{}/{}", w.namespace, w.name), i))
            .collect();
        let mut egress = BTreeMap::new();
        for (i, x) in topology.egress.iter().enumerate() {
            let Some(src_pods) = pods.get(&x.from) else {
                continue;
            };
            let (ns, name) = x.network.split_once('/').unwrap_or_default();
            // Following a cluster, its EgressNetwork's trafficPolicy decides.
            let policy = self
                .cluster
                .as_ref()
                .and_then(|c| c.policy.egress_network(ns, name))
                .map_or(x.traffic_policy.as_str(), |n| n.traffic_policy.as_str());
            let (mix, refused) = x.route_mix(policy);
            let rps = x.rps / src_pods.len() as f64;
            for pod in 0..src_pods.len() {
                let key = (x.from.clone(), x.network.clone(), x.protocol.clone(), pod);
                let rates = egress_rates(&mix, &refused, rps);
                let mut counters = self
                    .egress
                    .remove(&key)
                    .map(|f| f.counters)
                    .unwrap_or_default();
                counters.resize_with(rates.len(), new_route_counters);
                egress.insert(
                    key,
                    EgressFlow {
                        spec: i,
                        mix: mix.clone(),
                        refused: refused.clone(),
                        rates,
                        counters,
                    },
                );
            }
        }
        self.egress = egress;
        self.topology = topology;
        self.pods = pods;
        self.pairs = pairs;
    }

    /// The exposition text of every simulated proxy, as one scrape target.
    pub fn render(&self) -> String {
        let mut f = Families::default();
        let ws = &self.topology.workloads;
        for (k, p) in &self.pairs {
            let e = &self.topology.edges[p.edge];
            let (src, dst) = (&ws[self.workloads[&k.from]], &ws[self.workloads[&k.to]]);
            let ctx = PairCtx {
                edge: e,
                authz: &self.authz[p.edge],
                src,
                dst,
                sp: &self.pods[&k.from][k.src_pod],
                dp: &self.pods[&k.to][k.dst_pod],
            };
            if src.meshed {
                ctx.outbound(&mut f, p);
                if self.version == LinkerdVersion::V2_20 && e.protocol != "tcp" {
                    ctx.routes(&mut f, p);
                }
            }
            if dst.meshed {
                ctx.inbound(&mut f, p);
            }
        }
        if self.version == LinkerdVersion::V2_20 {
            for ((from, network, _, pod), flow) in &self.egress {
                let x = &self.topology.egress[flow.spec];
                let src = &ws[self.workloads[from]];
                if !src.meshed {
                    continue;
                }
                let (ns, name) = network.split_once('/').unwrap_or_default();
                let at = Parent {
                    group: "policy.linkerd.io",
                    kind: "EgressNetwork",
                    namespace: ns,
                    name,
                    port: x.port,
                };
                emit_routes(
                    &mut f,
                    x.protocol == "grpc",
                    &at,
                    x.hostname.as_deref().unwrap_or_default(),
                    &flow.mix,
                    &flow.refused,
                    &flow.counters,
                    &PairCtx::scrape(src, &self.pods[from][*pod]),
                );
            }
        }
        f.render(self.version)
    }
}

fn new_route_counters() -> RouteCounters {
    RouteCounters {
        request_buckets: vec![0.0; ROUTE_REQUEST_BUCKETS_S.len()],
        response_buckets: vec![0.0; ROUTE_RESPONSE_BUCKETS_S.len()],
        ..RouteCounters::default()
    }
}

fn advance_routes(rates: &[RouteRates], counters: &mut [RouteCounters], dt: f64) {
    for (rr, rc) in rates.iter().zip(counters) {
        rc.success += rr.success * dt;
        rc.failure += rr.failure * dt;
        rc.denied += rr.denied * dt;
        rc.limited += rr.limited * dt;
        let answered = rr.success + rr.failure;
        for (b, share) in rc.request_buckets.iter_mut().zip(&rr.request_cdf) {
            *b += answered * share * dt;
        }
        for (b, share) in rc.response_buckets.iter_mut().zip(&rr.response_cdf) {
            *b += answered * share * dt;
        }
        rc.sum_s += answered * rr.mean_s * dt;
    }
}

/// Rates of one caller pod's egress routes: refused routes (`*-egress-deny`) are answered by
/// the caller's own proxy at once.
fn egress_rates(mix: &[RouteMix], refused: &[bool], rps: f64) -> Vec<RouteRates> {
    mix.iter()
        .zip(refused)
        .map(|(m, &deny)| {
            let one = RouteMix {
                share: 1.0,
                ..m.clone()
            };
            route_rates(std::slice::from_ref(&one), rps * m.share, !deny, 0.0)
                .pop()
                .expect("one route in, one out")
        })
        .collect()
}

fn route_rates(mix: &[RouteMix], rps: f64, allowed: bool, limited: f64) -> Vec<RouteRates> {
    let secs = |bounds: &[f64], l: Latency| -> Vec<f64> {
        bounds
            .iter()
            .map(|&le| latency_cdf(l, le * 1000.0))
            .collect()
    };
    mix.iter()
        .map(|r| {
            let n = rps * r.share;
            if !allowed {
                // Answered by the destination's proxy at once.
                return RouteRates {
                    denied: n,
                    request_cdf: vec![1.0; ROUTE_REQUEST_BUCKETS_S.len()],
                    response_cdf: vec![1.0; ROUTE_RESPONSE_BUCKETS_S.len()],
                    mean_s: DENIED_LATENCY_MS / 1000.0,
                    ..RouteRates::default()
                };
            }
            let served = n * (1.0 - limited);
            RouteRates {
                success: served * r.success_rate,
                failure: served * (1.0 - r.success_rate),
                denied: 0.0,
                limited: n * limited,
                request_cdf: secs(&ROUTE_REQUEST_BUCKETS_S, r.latency),
                response_cdf: secs(&ROUTE_RESPONSE_BUCKETS_S, r.latency),
                mean_s: latency_mean(r.latency) / 1000.0,
            }
        })
        .collect()
}

fn pair_rates(e: &EdgeSpec, pairs: usize, j: usize, authz: &EdgeAuthz) -> Rates {
    let allowed = authz.allowed();
    let limited = authz.limited.as_ref().map_or(0.0, |l| l.share);
    let share = 1.0 / pairs as f64;
    let rps = e.rps * share;
    let c = u64::from(e.tcp_connections);
    let conns = (c / pairs as u64 + u64::from((j as u64) < c % pairs as u64)) as f64;
    let none = || vec![0.0; LATENCY_BUCKETS_MS.len()];
    if !allowed && e.protocol == "tcp" {
        // Each connection is accepted, refused and closed at once: nothing stays open.
        return Rates {
            opened: rps,
            denied: rps,
            cdf: none(),
            ..Rates::default()
        };
    }
    if !allowed {
        // The client keeps its connections; every request is answered by the proxy.
        return Rates {
            denied: rps,
            cdf: none(),
            opened: conns * CONN_CHURN_PER_SEC,
            read: rps * 100.0,
            write: rps * BYTES_PER_REQUEST.1,
            open_connections: conns,
            routes: route_rates(&e.route_mix(), rps, false, 0.0),
            ..Rates::default()
        };
    }
    if e.protocol == "tcp" {
        return Rates {
            opened: rps,
            read: rps * BYTES_PER_TCP_CONN.0,
            write: rps * BYTES_PER_TCP_CONN.1,
            open_connections: conns,
            cdf: none(),
            ..Rates::default()
        };
    }
    // The edge's legacy series are the sum of its routes.
    let mix = e.route_mix();
    let success_rate = e.overall_success_rate();
    let served = rps * (1.0 - limited);
    Rates {
        success: served * success_rate,
        failure: served * (1.0 - success_rate),
        cdf: LATENCY_BUCKETS_MS
            .iter()
            .map(|&le| {
                mix.iter()
                    .map(|r| r.share * latency_cdf(r.latency, le))
                    .sum()
            })
            .collect(),
        mean_ms: mix.iter().map(|r| r.share * latency_mean(r.latency)).sum(),
        opened: conns * CONN_CHURN_PER_SEC,
        read: rps * BYTES_PER_REQUEST.0,
        write: rps * BYTES_PER_REQUEST.1,
        open_connections: conns,
        denied: 0.0,
        limited: rps * limited,
        routes: route_rates(&mix, rps, true, limited),
    }
}

// === Rendering ===

type Labels = Vec<(&'static str, String)>;

fn fmt_labels(labels: &[(&'static str, String)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

#[derive(Default)]
struct Hist {
    buckets: Vec<f64>,
    sum: f64,
    count: f64,
}

/// Metric families, each a map from rendered label set to value, summed on collision.
#[derive(Default)]
struct Families {
    scalars: BTreeMap<&'static str, BTreeMap<String, f64>>,
    hists: BTreeMap<&'static str, BTreeMap<String, Hist>>,
}

/// The families a 2.20 proxy adds (routes, rate limits), (name, type, help), in output order.
const ROUTE_FAMILIES: [(&str, &str, &str); 11] = [
    (
        "outbound_http_route_request_duration_seconds",
        "histogram",
        "The time between request initialization and response completion.",
    ),
    (
        "outbound_http_route_request_statuses_total",
        "counter",
        "Completed request-response streams.",
    ),
    (
        "outbound_http_route_backend_requests_total",
        "counter",
        "The total number of requests dispatched.",
    ),
    (
        "outbound_http_route_backend_response_duration_seconds",
        "histogram",
        "The time between request initialization and response completion.",
    ),
    (
        "outbound_http_route_backend_response_statuses_total",
        "counter",
        "Completed responses.",
    ),
    (
        "outbound_grpc_route_request_duration_seconds",
        "histogram",
        "The time between request initialization and response completion.",
    ),
    (
        "outbound_grpc_route_request_statuses_total",
        "counter",
        "Completed request-response streams.",
    ),
    (
        "outbound_grpc_route_backend_requests_total",
        "counter",
        "The total number of requests dispatched.",
    ),
    (
        "outbound_grpc_route_backend_response_duration_seconds",
        "histogram",
        "The time between request initialization and response completion.",
    ),
    (
        "outbound_grpc_route_backend_response_statuses_total",
        "counter",
        "Completed responses.",
    ),
    (
        "inbound_http_local_ratelimit_total",
        "counter",
        "The total number of inbound HTTP requests that were rate-limited.",
    ),
];

/// Bucket bounds of a histogram family, and how its `le` values are written: the legacy
/// families as integers (`le="10"`), the route families as `prometheus-client` writes floats
/// (`le="1.0"`).
fn bounds_of(family: &str) -> (&'static [f64], fn(f64) -> String) {
    if family == "response_latency_ms" {
        (&LATENCY_BUCKETS_MS, |b| b.to_string())
    } else if family.ends_with("_route_request_duration_seconds") {
        (&ROUTE_REQUEST_BUCKETS_S, |b| format!("{b:?}"))
    } else {
        (&ROUTE_RESPONSE_BUCKETS_S, |b| format!("{b:?}"))
    }
}

/// (name, type, help) of every family meshsim emits, in output order.
const FAMILIES: [(&str, &str, &str); 11] = [
    ("request_total", "counter", "Total count of HTTP requests."),
    (
        "response_total",
        "counter",
        "Total count of HTTP responses.",
    ),
    (
        "response_latency_ms",
        "histogram",
        "Elapsed times between a request's headers being received and its response stream completing",
    ),
    (
        "tcp_open_total",
        "counter",
        "Total count of opened connections",
    ),
    (
        "tcp_open_connections",
        "gauge",
        "Number of currently-open connections",
    ),
    (
        "tcp_read_bytes_total",
        "counter",
        "Total count of bytes read from peers",
    ),
    (
        "tcp_write_bytes_total",
        "counter",
        "Total count of bytes written to peers",
    ),
    (
        "inbound_http_authz_allow_total",
        "counter",
        "The total number of inbound HTTP requests that were authorized",
    ),
    (
        "inbound_http_authz_deny_total",
        "counter",
        "The total number of inbound HTTP requests that were denied",
    ),
    (
        "inbound_tcp_authz_allow_total",
        "counter",
        "The total number of inbound TCP connections that were authorized",
    ),
    (
        "inbound_tcp_authz_deny_total",
        "counter",
        "The total number of inbound TCP connections that were denied",
    ),
];

impl Families {
    fn add(&mut self, family: &'static str, labels: &[(&'static str, String)], v: f64) {
        *self
            .scalars
            .entry(family)
            .or_default()
            .entry(fmt_labels(labels))
            .or_default() += v;
    }

    fn add_hist(
        &mut self,
        family: &'static str,
        labels: &[(&'static str, String)],
        buckets: &[f64],
        sum: f64,
        count: f64,
    ) {
        let h = self
            .hists
            .entry(family)
            .or_default()
            .entry(fmt_labels(labels))
            .or_insert_with(|| Hist {
                buckets: vec![0.0; buckets.len()],
                ..Hist::default()
            });
        for (a, b) in h.buckets.iter_mut().zip(buckets) {
            *a += b;
        }
        h.sum += sum;
        h.count += count;
    }

    fn render(&self, version: LinkerdVersion) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let route: &[(&str, &str, &str)] = match version {
            LinkerdVersion::V2_12 => &[],
            LinkerdVersion::V2_20 => &ROUTE_FAMILIES,
        };
        for &(name, kind, help) in FAMILIES.iter().chain(route) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if kind == "histogram" {
                let (bounds, le_of) = bounds_of(name);
                for (labels, h) in self.hists.get(name).into_iter().flatten() {
                    for (le, v) in bounds.iter().zip(&h.buckets) {
                        let le = le_of(*le);
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {}", num(*v));
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                        num(h.count)
                    );
                    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", num(h.sum));
                    let _ = writeln!(out, "{name}_count{{{labels}}} {}", num(h.count));
                }
                continue;
            }
            for (labels, v) in self.scalars.get(name).into_iter().flatten() {
                let _ = writeln!(out, "{name}{{{labels}}} {}", num(*v));
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    // Millisecond-level precision keeps slow series moving between 1 s scrapes.
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

struct PairCtx<'a> {
    edge: &'a EdgeSpec,
    authz: &'a EdgeAuthz,
    src: &'a WorkloadSpec,
    dst: &'a WorkloadSpec,
    sp: &'a Pod,
    dp: &'a Pod,
}

impl PairCtx<'_> {
    fn mtls(&self) -> bool {
        self.edge.tls.unwrap_or(self.src.meshed && self.dst.meshed)
    }

    fn target(&self) -> Labels {
        let port = self.edge.port;
        vec![
            ("target_addr", format!("{}:{port}", self.dp.ip)),
            ("target_ip", self.dp.ip.clone()),
            ("target_port", port.to_string()),
        ]
    }

    /// The labels linkerd-viz's scrape config adds for the pod the series came from.
    fn scrape(w: &WorkloadSpec, pod: &Pod) -> Labels {
        let mut l = vec![
            ("namespace", w.namespace.clone()),
            ("pod", pod.name.clone()),
            (owner_label(&w.kind), w.name.clone()),
            ("control_plane_ns", CONTROL_PLANE_NS.to_owned()),
            ("workload_ns", w.namespace.clone()),
        ];
        if let Some(h) = &pod.template_hash {
            l.push(("pod_template_hash", h.clone()));
        }
        l
    }

    fn tls_outbound(&self) -> Labels {
        if self.mtls() {
            return vec![("tls", "true".into()), ("server_id", self.dst.identity())];
        }
        match self.edge.no_tls_reason.as_deref() {
            Some("disabled") => vec![("tls", "disabled".into())],
            Some(r) => vec![("tls", "no_identity".into()), ("no_tls_reason", r.into())],
            None => vec![
                ("tls", "no_identity".into()),
                ("no_tls_reason", "not_provided_by_service_discovery".into()),
            ],
        }
    }

    fn tls_inbound(&self) -> Labels {
        if self.mtls() {
            vec![("tls", "true".into()), ("client_id", self.src.identity())]
        } else {
            vec![
                ("tls", "no_identity".into()),
                ("no_tls_reason", "no_tls_from_remote".into()),
            ]
        }
    }

    fn dst_labels(&self) -> Labels {
        let d = self.dst;
        let mut l = Vec::new();
        if d.meshed {
            l.push(("dst_control_plane_ns", CONTROL_PLANE_NS.to_owned()));
        }
        l.push((dst_owner_label(&d.kind), d.name.clone()));
        l.push(("dst_namespace", d.namespace.clone()));
        l.push(("dst_pod", self.dp.name.clone()));
        if let Some(h) = &self.dp.template_hash {
            l.push(("dst_pod_template_hash", h.clone()));
        }
        l.push(("dst_service", d.service().to_owned()));
        l.push(("dst_serviceaccount", d.service_account().to_owned()));
        l
    }

    fn server_labels(&self) -> Labels {
        let [group, kind, name] = self.authz.server.clone();
        vec![
            ("srv_group", group),
            ("srv_kind", kind),
            ("srv_name", name),
            ("srv_port", self.edge.port.to_string()),
        ]
    }

    fn route_labels(&self) -> Labels {
        let [group, kind, name] = self.authz.route.clone();
        vec![
            ("route_group", group),
            ("route_kind", kind),
            ("route_name", name),
        ]
    }

    fn authz_labels(&self) -> Labels {
        let [group, kind, name] = self.authz.authz.clone();
        vec![
            ("authz_group", group),
            ("authz_kind", kind),
            ("authz_name", name),
        ]
    }

    /// Series reported by the source pod's proxy.
    fn outbound(&self, f: &mut Families, p: &Pair) {
        let c = &p.counters;
        let mut base: Labels = vec![("direction", "outbound".into())];
        let http = self.edge.protocol != "tcp";
        let authority = format!(
            "{}.{}.svc.cluster.local:{}",
            self.dst.service(),
            self.dst.namespace,
            self.edge.port
        );
        let scrape = Self::scrape(self.src, self.sp);
        let tail: Labels = [self.tls_outbound(), self.dst_labels(), scrape].concat();

        let mut tcp = base.clone();
        tcp.push(("peer", "dst".into()));
        tcp.extend(self.target());
        tcp.extend(tail.iter().cloned());
        self.transport(f, &tcp, p);

        if http {
            base.push(("authority", authority));
            base.extend(self.target());
            base.extend(tail);
            self.http(f, &base, c);
        }
    }

    /// Series reported by the destination pod's proxy.
    fn inbound(&self, f: &mut Families, p: &Pair) {
        let c = &p.counters;
        let scrape = Self::scrape(self.dst, self.dp);
        let tls = self.tls_inbound();
        let srv = self.server_labels();

        let tcp: Labels = [
            vec![("direction", "inbound".into()), ("peer", "src".into())],
            self.target(),
            tls.clone(),
            srv.clone(),
            scrape.clone(),
        ]
        .concat();
        self.transport(f, &tcp, p);

        if self.edge.protocol == "tcp" {
            let denied: Labels = [self.target(), tls, srv, scrape].concat();
            let allowed = c.opened - c.denied;
            if self.authz.allowed() || allowed > 0.0 {
                let labels = [denied.clone(), self.authz_labels()].concat();
                f.add("inbound_tcp_authz_allow_total", &labels, allowed);
            }
            if c.denied > 0.0 {
                f.add("inbound_tcp_authz_deny_total", &denied, c.denied);
            }
            return;
        }
        let http: Labels = [
            vec![("direction", "inbound".into())],
            self.target(),
            tls.clone(),
            srv.clone(),
            self.route_labels(),
            self.authz_labels(),
            scrape.clone(),
        ]
        .concat();
        self.http(f, &http, c);
        if let Some(l) = self.authz.limited.as_ref().filter(|_| c.limited > 0.0) {
            let labels: Labels = [
                self.target(),
                srv.clone(),
                vec![
                    ("ratelimit_group", "policy.linkerd.io".into()),
                    ("ratelimit_kind", "httplocalratelimitpolicy".into()),
                    ("ratelimit_name", l.name.clone()),
                    ("ratelimit_scope", l.scope.into()),
                ],
                tls.clone(),
                scrape.clone(),
            ]
            .concat();
            f.add("inbound_http_local_ratelimit_total", &labels, c.limited);
        }
        let denied: Labels = [self.target(), tls, srv, self.route_labels(), scrape].concat();
        // Rate limiting follows authorization: limited requests were authorized.
        let allowed = c.success + c.failure + c.limited;
        if self.authz.allowed() || allowed > 0.0 {
            let labels = [denied.clone(), self.authz_labels()].concat();
            f.add("inbound_http_authz_allow_total", &labels, allowed);
        }
        if c.denied > 0.0 {
            f.add("inbound_http_authz_deny_total", &denied, c.denied);
        }
    }

    /// The route families of a 2.20 proxy: per route of the edge, at the route level (with
    /// `hostname`) and the backend level, each with the labels `linkerd viz stat-outbound` reads.
    fn routes(&self, f: &mut Families, p: &Pair) {
        let d = self.dst;
        let at = Parent {
            group: "core",
            kind: "Service",
            namespace: &d.namespace,
            name: d.service(),
            port: self.edge.port,
        };
        emit_routes(
            f,
            self.edge.protocol == "grpc",
            &at,
            "",
            &self.edge.route_mix(),
            &vec![false; p.counters.routes.len()],
            &p.counters.routes,
            &Self::scrape(self.src, self.sp),
        );
    }

    fn transport(&self, f: &mut Families, labels: &[(&'static str, String)], p: &Pair) {
        f.add("tcp_open_total", labels, p.counters.opened);
        f.add("tcp_open_connections", labels, p.rates.open_connections);
        f.add("tcp_read_bytes_total", labels, p.counters.read);
        f.add("tcp_write_bytes_total", labels, p.counters.write);
    }

    /// `request_total`, `response_total` and `response_latency_ms` on a base label set.
    fn http(&self, f: &mut Families, base: &[(&'static str, String)], c: &Counters) {
        f.add(
            "request_total",
            base,
            c.success + c.failure + c.denied + c.limited,
        );
        if c.limited > 0.0 {
            // Over a rate limit: 429 from the destination's proxy, at once; a success to
            // Linkerd's classifier (only 5xx fail).
            let mut l = base.to_vec();
            l.push(("status_code", "429".into()));
            let all = vec![c.limited; LATENCY_BUCKETS_MS.len()];
            f.add_hist(
                "response_latency_ms",
                &l,
                &all,
                c.limited * DENIED_LATENCY_MS,
                c.limited,
            );
            l.push(("classification", "success".into()));
            f.add("response_total", &l, c.limited);
        }
        let grpc = self.edge.protocol == "grpc";
        if c.denied > 0.0 {
            // Refused by the destination's proxy: HTTP 403, which Linkerd classifies as a
            // success (only 5xx fail), or gRPC PERMISSION_DENIED (7), a failure.
            let mut l = base.to_vec();
            l.push(("status_code", if grpc { "200" } else { "403" }.into()));
            let all = vec![c.denied; LATENCY_BUCKETS_MS.len()];
            f.add_hist(
                "response_latency_ms",
                &l,
                &all,
                c.denied * DENIED_LATENCY_MS,
                c.denied,
            );
            l.push((
                "classification",
                if grpc { "failure" } else { "success" }.into(),
            ));
            if grpc {
                l.push(("grpc_status", "7".into()));
            }
            f.add("response_total", &l, c.denied);
        }
        let rows = [
            (true, c.success, &c.buckets_success, c.sum_success),
            (false, c.failure, &c.buckets_failure, c.sum_failure),
        ];
        for (ok, count, buckets, sum) in rows {
            // gRPC failures still answer HTTP 200; the status is in grpc-status (2, UNKNOWN).
            let status = if ok || grpc { "200" } else { "500" };
            let mut l = base.to_vec();
            l.push(("status_code", status.into()));
            f.add_hist("response_latency_ms", &l, buckets, sum, count);
            l.push((
                "classification",
                if ok { "success" } else { "failure" }.into(),
            ));
            if grpc {
                l.push(("grpc_status", if ok { "0" } else { "2" }.into()));
            }
            f.add("response_total", &l, count);
        }
    }
}

/// What a route attaches to (and, for the routes meshsim simulates, sends to): a Service, or an
/// EgressNetwork.
struct Parent<'a> {
    group: &'static str,
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    port: u16,
}

/// The route families of one caller pod's traffic to `at`, per route of `mix`: at the route
/// level (with `hostname`) and the backend level, each with the labels `linkerd viz
/// stat-outbound` reads. Refusals (by the destination's policy, or the client's own egress
/// policy) come back at once as 403 or gRPC `PERMISSION_DENIED`; rate limits as 429.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per kind of parent, each naming all"
)]
fn emit_routes(
    f: &mut Families,
    grpc: bool,
    at: &Parent<'_>,
    hostname: &str,
    mix: &[RouteMix],
    refused_here: &[bool],
    counters: &[RouteCounters],
    scrape: &Labels,
) {
    let (proto, status_label) = if grpc {
        ("grpc", "grpc_status")
    } else {
        ("http", "http_status")
    };
    let ref_labels = |prefix: &'static [&'static str; 6]| -> Labels {
        vec![
            (prefix[0], at.group.into()),
            (prefix[1], at.kind.into()),
            (prefix[2], at.namespace.to_owned()),
            (prefix[3], at.name.to_owned()),
            (prefix[4], at.port.to_string()),
            (prefix[5], String::new()),
        ]
    };
    let parent = ref_labels(&[
        "parent_group",
        "parent_kind",
        "parent_namespace",
        "parent_name",
        "parent_port",
        "parent_section_name",
    ]);
    let backend = ref_labels(&[
        "backend_group",
        "backend_kind",
        "backend_namespace",
        "backend_name",
        "backend_port",
        "backend_section_name",
    ]);
    let names = family_names(proto);
    for ((mix, c), &here) in mix.iter().zip(counters).zip(refused_here) {
        let default = mix.kind == "default";
        // Simulated routes are Gateway API's, as Linkerd 2.20 recommends.
        let group = if default {
            ""
        } else {
            "gateway.networking.k8s.io"
        };
        let route: Labels = vec![
            ("route_group", group.into()),
            ("route_kind", mix.kind.into()),
            (
                "route_namespace",
                if default {
                    String::new()
                } else {
                    at.namespace.to_owned()
                },
            ),
            ("route_name", mix.name.clone()),
        ];
        let at_route: Labels = [
            parent.clone(),
            route.clone(),
            vec![("hostname", hostname.to_owned())],
        ]
        .concat();
        let at_backend: Labels = [parent.clone(), route, backend.clone()].concat();
        let answered = c.success + c.failure;
        let total = answered + c.denied + c.limited;
        let (ok, failed, refused) = if grpc {
            ("OK", "UNKNOWN", "PERMISSION_DENIED")
        } else {
            ("200", "500", "403")
        };
        let rows = [
            (ok, c.success),
            (failed, c.failure),
            (refused, c.denied),
            ("429", c.limited),
        ];
        // What the caller's own proxy refuses (an egress route's failure filter) never reaches
        // a backend: only the route-level families count it.
        let levels: &[_] = if here {
            &[(&at_route, names[1], &c.request_buckets, names[0])]
        } else {
            &[
                (&at_route, names[1], &c.request_buckets, names[0]),
                (&at_backend, names[4], &c.response_buckets, names[3]),
            ]
        };
        for &(labels, family, buckets, hist) in levels {
            for (status, n) in rows {
                if n > 0.0 {
                    let l = [
                        labels.clone(),
                        vec![(status_label, status.into()), ("error", String::new())],
                        scrape.clone(),
                    ]
                    .concat();
                    f.add(family, &l, n);
                }
            }
            let l = [labels.clone(), scrape.clone()].concat();
            // Refusals come back at once: in the first bucket.
            let b: Vec<f64> = buckets.iter().map(|x| x + c.denied + c.limited).collect();
            f.add_hist(
                hist,
                &l,
                &b,
                c.sum_s + (c.denied + c.limited) * DENIED_LATENCY_MS / 1000.0,
                total,
            );
        }
        if !here {
            let l = [at_backend, scrape.clone()].concat();
            f.add(names[2], &l, total);
        }
    }
}

/// The five route family names of a protocol, in `ROUTE_FAMILIES` order.
fn family_names(proto: &str) -> [&'static str; 5] {
    let at = if proto == "grpc" { 5 } else { 0 };
    std::array::from_fn(|i| ROUTE_FAMILIES[at + i].0)
}

fn dst_owner_label(kind: &str) -> &'static str {
    match kind {
        "StatefulSet" => "dst_statefulset",
        "DaemonSet" => "dst_daemonset",
        _ => "dst_deployment",
    }
}

#[cfg(test)]
mod tests;
