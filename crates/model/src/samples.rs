//! Building a [`MeshGraph`] from metric samples.
//!
//! Samples are plain rows, already aggregated per workload pair over the window: whoever reads
//! Prometheus (the collector) or simulates it (meshsim, benches) produces them. The builder joins
//! them into edges and decides TLS status and identities with rules that never guess:
//!
//! - TLS comes from what the source's proxy reported (`tls="true"` with a `server_id`), never
//!   from the absence of a `no_tls_reason`. Any request without mTLS makes the edge plaintext.
//! - Outbound series carry no client identity. An edge's client identity is taken from the
//!   destination's inbound `client_id`s only when it can be matched to the source: the source's
//!   own identity is known (it was seen as a `server_id`), or it is the only unattributed caller
//!   from its namespace and exactly one unattributed identity of that namespace remains.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use crate::graph::{
    Destination, Edge, EdgeKey, EdgeMetrics, MeshGraph, Protocol, RouteId, RouteStats, TlsStatus,
    Workload, WorkloadRef,
};

/// What the source proxy said about TLS for some traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsObservation {
    /// `tls="true"`, with the `server_id` the destination proved.
    Mtls {
        /// The destination's identity.
        server_id: String,
    },
    /// `tls="no_identity"` with its `no_tls_reason`.
    NoIdentity {
        /// Why there was no identity.
        reason: String,
    },
    /// `tls="disabled"`: the proxy had TLS off.
    Disabled,
}

/// HTTP/gRPC responses from `src` to `dst` over the window, as counted by the source's proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseSample {
    /// Caller.
    pub src: WorkloadRef,
    /// Callee.
    pub dst: Destination,
    /// Whether the callee runs a proxy (it reported a control plane).
    pub dst_meshed: bool,
    /// `Http` or `Grpc`.
    pub protocol: Protocol,
    /// TLS as observed.
    pub tls: TlsObservation,
    /// Responses classified `success` in the window.
    pub success: f64,
    /// Responses classified `failure` in the window.
    pub failure: f64,
}

/// Which latency quantile a [`LatencySample`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LatencyQuantile {
    /// 0.5
    P50,
    /// 0.95
    P95,
    /// 0.99
    P99,
}

impl LatencyQuantile {
    /// All three, in order.
    pub const ALL: [Self; 3] = [Self::P50, Self::P95, Self::P99];

    /// The quantile as a number.
    pub fn value(self) -> f64 {
        match self {
            Self::P50 => 0.5,
            Self::P95 => 0.95,
            Self::P99 => 0.99,
        }
    }
}

/// A response latency quantile for `src -> dst`, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencySample {
    /// Caller.
    pub src: WorkloadRef,
    /// Callee.
    pub dst: Destination,
    /// Which quantile.
    pub quantile: LatencyQuantile,
    /// Milliseconds; must be finite.
    pub value_ms: f64,
}

/// Transport metrics of connections from `src`'s proxy to `dst`.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpSample {
    /// Caller.
    pub src: WorkloadRef,
    /// Callee.
    pub dst: Destination,
    /// Whether the callee runs a proxy.
    pub dst_meshed: bool,
    /// TLS as observed.
    pub tls: TlsObservation,
    /// Connections open now.
    pub open_connections: f64,
    /// Connections opened in the window.
    pub opened: f64,
    /// Bytes read in the window.
    pub read_bytes: f64,
    /// Bytes written in the window.
    pub write_bytes: f64,
}

/// Responses on one route of `src -> dst` over the window, by status, as counted by the
/// source's proxy (`outbound_{http,grpc}_route_backend_response_statuses_total`).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSample {
    /// Caller.
    pub src: WorkloadRef,
    /// The backend the route sent to: a workload, or an authority (egress).
    pub dst: Destination,
    /// `Http` or `Grpc`.
    pub protocol: Protocol,
    /// The route.
    pub route: RouteId,
    /// `http_status` (`"200"`, or empty when no response came) or `grpc_status` (`"OK"`).
    pub status: String,
    /// `error`: empty, or why the proxy failed the request (`FAIL_FAST`, `REQUEST_TIMEOUT`).
    pub error: String,
    /// Responses in the window.
    pub count: f64,
}

/// A latency quantile of one route of `src -> dst`, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteLatencySample {
    /// Caller.
    pub src: WorkloadRef,
    /// The backend.
    pub dst: Destination,
    /// `Http` or `Grpc`.
    pub protocol: Protocol,
    /// The route.
    pub route: RouteId,
    /// Which quantile.
    pub quantile: LatencyQuantile,
    /// Milliseconds; must be finite.
    pub value_ms: f64,
}

/// A client identity seen by `dst`'s inbound proxy in the window.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentitySample {
    /// The receiving workload.
    pub dst: WorkloadRef,
    /// The `client_id` it saw.
    pub client_id: String,
    /// How many requests (or connections) carried it.
    pub count: f64,
}

/// A workload seen reporting metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSample {
    /// The workload.
    pub id: WorkloadRef,
    /// Whether it runs a proxy.
    pub meshed: bool,
    /// Distinct pods seen.
    pub pods: u32,
}

/// Splits a Linkerd identity `<sa>.<ns>.serviceaccount.identity.<cp-ns>.<trust-domain>` into
/// `(service account, namespace)`. Other forms (SPIFFE ids, wildcards) give `None`.
pub fn service_account_of(identity: &str) -> Option<(&str, &str)> {
    let mut parts = identity.splitn(4, '.');
    let sa = parts.next()?;
    let ns = parts.next()?;
    let marker = parts.next()?;
    (marker == "serviceaccount" && !sa.is_empty() && !ns.is_empty()).then_some((sa, ns))
}

#[derive(Default)]
struct ResponseAcc {
    success: f64,
    failure: f64,
    mtls: f64,
    plain: f64,
    server_ids: BTreeSet<String>,
    reasons: BTreeSet<String>,
}

#[derive(Default)]
struct TcpAcc {
    open: f64,
    opened: f64,
    read: f64,
    write: f64,
    dst_meshed: bool,
    mtls: f64,
    plain: f64,
    server_ids: BTreeSet<String>,
    reasons: BTreeSet<String>,
}

#[derive(Default)]
struct RouteAcc {
    total: f64,
    failed: f64,
    rate_limited: f64,
    by_class: BTreeMap<String, f64>,
    latency: [Option<f64>; 3],
}

type Pair = (WorkloadRef, Destination);

/// The status class viz's stat-outbound would count a response in, and whether it failed.
fn route_class(protocol: Protocol, status: &str, error: &str) -> (String, bool) {
    if !error.is_empty() {
        return (format!("error:{error}"), true);
    }
    match protocol {
        Protocol::Grpc => {
            let s = if status.is_empty() { "UNKNOWN" } else { status };
            (s.to_owned(), s != "OK")
        }
        _ => match status.as_bytes().first() {
            Some(c @ b'1'..=b'5') => (format!("{}xx", *c as char), *c == b'5'),
            _ => ("no-response".to_owned(), false),
        },
    }
}

/// Accumulates samples, then joins them into a [`MeshGraph`].
pub struct GraphBuilder {
    window: Duration,
    responses: BTreeMap<EdgeKey, ResponseAcc>,
    tcp: BTreeMap<Pair, TcpAcc>,
    latency: BTreeMap<Pair, [Option<f64>; 3]>,
    identities: BTreeMap<WorkloadRef, BTreeMap<String, f64>>,
    workloads: BTreeMap<WorkloadRef, Workload>,
    routes: BTreeMap<(EdgeKey, RouteId), RouteAcc>,
}

// === impl GraphBuilder ===

impl GraphBuilder {
    /// A builder for samples aggregated over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            responses: BTreeMap::new(),
            tcp: BTreeMap::new(),
            latency: BTreeMap::new(),
            identities: BTreeMap::new(),
            workloads: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }

    /// Adds responses of one route. Samples of the same route and status add up.
    pub fn add_route(&mut self, s: RouteSample) {
        if s.count <= 0.0 || !s.count.is_finite() {
            return;
        }
        self.note_workload(&s.src, true);
        let key = EdgeKey {
            src: s.src,
            dst: s.dst,
            protocol: s.protocol,
        };
        let (class, failed) = route_class(s.protocol, &s.status, &s.error);
        let acc = self.routes.entry((key, s.route)).or_default();
        acc.total += s.count;
        if failed {
            acc.failed += s.count;
        }
        if s.status == "429" {
            acc.rate_limited += s.count;
        }
        *acc.by_class.entry(class).or_default() += s.count;
    }

    /// Adds a route latency quantile. NaN or infinite values (no data) are ignored.
    pub fn add_route_latency(&mut self, s: RouteLatencySample) {
        if !s.value_ms.is_finite() {
            return;
        }
        let key = EdgeKey {
            src: s.src,
            dst: s.dst,
            protocol: s.protocol,
        };
        self.routes.entry((key, s.route)).or_default().latency[s.quantile as usize] =
            Some(s.value_ms);
    }

    /// Adds responses. Several samples for the same edge (by classification, TLS) add up.
    pub fn add_responses(&mut self, s: ResponseSample) {
        self.note_dst(&s.dst, s.dst_meshed);
        self.note_workload(&s.src, true);
        let key = EdgeKey {
            src: s.src,
            dst: s.dst,
            protocol: s.protocol,
        };
        let acc = self.responses.entry(key).or_default();
        acc.success += s.success;
        acc.failure += s.failure;
        tally_tls(
            s.tls,
            s.success + s.failure,
            &mut acc.mtls,
            &mut acc.plain,
            &mut acc.server_ids,
            &mut acc.reasons,
        );
    }

    /// Adds a latency quantile. NaN or infinite values (no data) are ignored.
    pub fn add_latency(&mut self, s: LatencySample) {
        if !s.value_ms.is_finite() {
            return;
        }
        let slot = self.latency.entry((s.src, s.dst)).or_default();
        slot[s.quantile as usize] = Some(s.value_ms);
    }

    /// Adds transport metrics.
    pub fn add_tcp(&mut self, s: TcpSample) {
        self.note_dst(&s.dst, s.dst_meshed);
        self.note_workload(&s.src, true);
        let acc = self.tcp.entry((s.src, s.dst)).or_default();
        acc.open += s.open_connections;
        acc.opened += s.opened;
        acc.read += s.read_bytes;
        acc.write += s.write_bytes;
        acc.dst_meshed |= s.dst_meshed;
        let weight = s.opened.max(s.open_connections);
        tally_tls(
            s.tls,
            weight,
            &mut acc.mtls,
            &mut acc.plain,
            &mut acc.server_ids,
            &mut acc.reasons,
        );
    }

    /// Adds an inbound client identity.
    pub fn add_identity(&mut self, s: IdentitySample) {
        if s.client_id.is_empty() || s.count <= 0.0 {
            return;
        }
        *self
            .identities
            .entry(s.dst)
            .or_default()
            .entry(s.client_id)
            .or_default() += s.count;
    }

    /// Adds a workload seen reporting.
    pub fn add_workload(&mut self, s: WorkloadSample) {
        let WorkloadSample { id, meshed, pods } = s;
        let w = self.workloads.entry(id).or_insert_with_key(|id| Workload {
            id: id.clone(),
            ..Workload::default()
        });
        w.meshed |= meshed;
        w.ready_replicas = w.ready_replicas.max(pods);
    }

    fn note_workload(&mut self, id: &WorkloadRef, meshed: bool) {
        let w = self
            .workloads
            .entry(id.clone())
            .or_insert_with(|| Workload {
                id: id.clone(),
                ..Workload::default()
            });
        w.meshed |= meshed;
    }

    fn note_dst(&mut self, dst: &Destination, meshed: bool) {
        if let Destination::Workload(d) = dst {
            self.note_workload(d, meshed);
        }
    }

    /// Joins everything into a graph at version 0, epoch 0.
    pub fn finish(mut self, generated_at: SystemTime) -> MeshGraph {
        let secs = self.window.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut edges: BTreeMap<EdgeKey, Edge> = BTreeMap::new();

        for (key, acc) in std::mem::take(&mut self.responses) {
            let total = acc.success + acc.failure;
            let mut e = Edge::new(key);
            e.metrics.rps = total / secs;
            e.metrics.success_rate = (total > 0.0).then(|| acc.success / total);
            (e.tls, e.no_tls_reason, e.server_identity) =
                tls_verdict(acc.mtls, acc.plain, &acc.server_ids, &acc.reasons);
            edges.insert(e.key.clone(), e);
        }

        for ((src, dst), acc) in std::mem::take(&mut self.tcp) {
            let lo = EdgeKey {
                src: src.clone(),
                dst: dst.clone(),
                protocol: Protocol::Http,
            };
            // Transport metrics belong to the pair's application edge when there is one: the
            // proxy counts HTTP and gRPC connections there too. Only pure TCP gets its own edge.
            let app = edges
                .range_mut(lo..)
                .take_while(|(k, _)| k.src == src && k.dst == dst)
                .map(|(_, e)| e)
                .find(|e| e.key.protocol != Protocol::Tcp);
            let e = match app {
                Some(e) => e,
                None => {
                    let key = EdgeKey {
                        src,
                        dst,
                        protocol: Protocol::Tcp,
                    };
                    let mut e = Edge::new(key.clone());
                    e.metrics.rps = acc.opened / secs;
                    (e.tls, e.no_tls_reason, e.server_identity) =
                        tls_verdict(acc.mtls, acc.plain, &acc.server_ids, &acc.reasons);
                    edges.entry(key).or_insert(e)
                }
            };
            e.metrics.tcp_open_connections = acc.open;
            e.metrics.read_bytes_per_sec = acc.read / secs;
            e.metrics.write_bytes_per_sec = acc.write / secs;
        }

        for ((src, dst), q) in std::mem::take(&mut self.latency) {
            for protocol in [Protocol::Http, Protocol::Grpc] {
                let key = EdgeKey {
                    src: src.clone(),
                    dst: dst.clone(),
                    protocol,
                };
                if let Some(e) = edges.get_mut(&key) {
                    set_latency(&mut e.metrics, q);
                }
            }
        }

        // Routes join their edge; traffic seen only on route families (egress to a host no
        // legacy series names) makes its own edge.
        for ((key, id), acc) in std::mem::take(&mut self.routes) {
            if acc.total <= 0.0 {
                continue;
            }
            let e = edges.entry(key.clone()).or_insert_with(|| {
                let mut e = Edge::new(key);
                e.metrics.rps = acc.total / secs;
                e.metrics.success_rate = Some(1.0 - acc.failed / acc.total);
                e
            });
            let [p50, p95, p99] = acc.latency;
            e.routes.push(RouteStats {
                id,
                rps: acc.total / secs,
                success_rate: Some(1.0 - acc.failed / acc.total),
                latency_p50_ms: p50,
                latency_p95_ms: p95,
                latency_p99_ms: p99,
                status_rps: acc
                    .by_class
                    .into_iter()
                    .map(|(k, v)| (k, v / secs))
                    .collect(),
                rate_limited_rps: acc.rate_limited / secs,
            });
        }
        for e in edges.values_mut() {
            e.routes
                .sort_by(|a, b| b.rps.total_cmp(&a.rps).then_with(|| a.id.cmp(&b.id)));
        }

        self.assign_identities(&mut edges);

        MeshGraph {
            version: 0,
            epoch: 0,
            generated_at,
            window: self.window,
            workloads: self.workloads,
            edges,
            policies: BTreeMap::new(),
            sources: Vec::new(),
        }
    }

    /// Workload identities from `server_id`s, then edge client identities from inbound
    /// `client_id`s (see the module docs for the rules).
    fn assign_identities(&mut self, edges: &mut BTreeMap<EdgeKey, Edge>) {
        let mut server_ids: BTreeMap<&WorkloadRef, BTreeSet<&str>> = BTreeMap::new();
        for e in edges.values() {
            if let (Destination::Workload(d), false) = (&e.key.dst, e.server_identity.is_empty()) {
                server_ids
                    .entry(d)
                    .or_default()
                    .insert(e.server_identity.as_str());
            }
        }
        for (id, ids) in server_ids {
            if let ([only], Some(w)) = (
                ids.into_iter().collect::<Vec<_>>().as_slice(),
                self.workloads.get_mut(id),
            ) {
                w.identity = (*only).to_owned();
            }
        }

        // Per destination: match its inbound client ids to the edges that reach it over mTLS.
        let mut callers_of: BTreeMap<&WorkloadRef, Vec<EdgeKey>> = BTreeMap::new();
        for (k, e) in edges.iter() {
            if let (Destination::Workload(d), TlsStatus::Mtls) = (&k.dst, e.tls)
                && let Some((d, _)) = self.identities.get_key_value(d)
            {
                callers_of.entry(d).or_default().push(k.clone());
            }
        }
        for (dst, seen) in &self.identities {
            let callers = callers_of.remove(dst).unwrap_or_default();
            let mut free_ids: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
            let mut unresolved: Vec<&EdgeKey> = Vec::new();
            for k in &callers {
                let known = self
                    .workloads
                    .get(&k.src)
                    .map(|w| w.identity.as_str())
                    .unwrap_or_default();
                if !known.is_empty() && seen.contains_key(known) {
                    free_ids.remove(known);
                    edges.get_mut(k).expect("caller").client_identity = known.to_owned();
                } else {
                    unresolved.push(k);
                }
            }
            // Several protocols from one source are one caller.
            let mut by_ns: BTreeMap<&str, BTreeSet<&WorkloadRef>> = BTreeMap::new();
            for k in &unresolved {
                by_ns
                    .entry(k.src.namespace.as_str())
                    .or_default()
                    .insert(&k.src);
            }
            for (ns, srcs) in by_ns {
                let ids: Vec<&str> = free_ids
                    .iter()
                    .copied()
                    .filter(|id| service_account_of(id).is_some_and(|(_, n)| n == ns))
                    .collect();
                let srcs: Vec<&WorkloadRef> = srcs.into_iter().collect();
                let ([id], [src]) = (ids.as_slice(), srcs.as_slice()) else {
                    continue;
                };
                for k in unresolved.iter().filter(|k| k.src == **src) {
                    edges.get_mut(*k).expect("caller").client_identity = (*id).to_owned();
                }
                if let Some(w) = self.workloads.get_mut(src)
                    && w.identity.is_empty()
                {
                    w.identity = (*id).to_owned();
                }
            }
        }

        for w in self.workloads.values_mut() {
            if w.service_account.is_empty()
                && let Some((sa, _)) = service_account_of(&w.identity)
            {
                w.service_account = sa.to_owned();
            }
        }
    }
}

fn tally_tls(
    tls: TlsObservation,
    weight: f64,
    mtls: &mut f64,
    plain: &mut f64,
    server_ids: &mut BTreeSet<String>,
    reasons: &mut BTreeSet<String>,
) {
    match tls {
        TlsObservation::Mtls { server_id } => {
            *mtls += weight;
            if !server_id.is_empty() {
                server_ids.insert(server_id);
            }
        }
        TlsObservation::NoIdentity { reason } => {
            *plain += weight;
            reasons.insert(if reason.is_empty() {
                "no_identity".to_owned()
            } else {
                reason
            });
        }
        TlsObservation::Disabled => {
            *plain += weight;
            reasons.insert("disabled".to_owned());
        }
    }
}

fn tls_verdict(
    mtls: f64,
    plain: f64,
    server_ids: &BTreeSet<String>,
    reasons: &BTreeSet<String>,
) -> (TlsStatus, String, String) {
    let server_id = match server_ids.iter().collect::<Vec<_>>().as_slice() {
        [only] => (*only).clone(),
        _ => String::new(),
    };
    if plain > 0.0 {
        let reason = reasons.iter().cloned().collect::<Vec<_>>().join(",");
        let reason = if mtls > 0.0 {
            let share = 100.0 * plain / (plain + mtls);
            format!("{reason} ({share:.0}% of traffic without mTLS)")
        } else {
            reason
        };
        (TlsStatus::Plaintext, reason, server_id)
    } else if mtls > 0.0 || !server_id.is_empty() {
        (TlsStatus::Mtls, String::new(), server_id)
    } else {
        (TlsStatus::Unknown, String::new(), server_id)
    }
}

fn set_latency(m: &mut EdgeMetrics, q: [Option<f64>; 3]) {
    m.latency_p50_ms = q[LatencyQuantile::P50 as usize];
    m.latency_p95_ms = q[LatencyQuantile::P95 as usize];
    m.latency_p99_ms = q[LatencyQuantile::P99 as usize];
}

#[cfg(test)]
mod tests;
