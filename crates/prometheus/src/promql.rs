//! Every PromQL string the collector sends, built from the templates `linkerd viz` uses
//! (reference section 2), in one place so tests can hold them against the reference.
//!
//! Where we differ from viz, on purpose:
//! - Edges come from `increase(...[window])` of counters, so an edge that carried traffic at any
//!   time in the window appears; `viz edges` reads the instant `tcp_open_connections` gauge and
//!   misses edges with no connection open at that moment.
//! - TLS comes from the `tls` label (`tls="true"` with `server_id`); `viz edges` treats a missing
//!   `no_tls_reason` as secured, which reports `tls="disabled"` traffic as mTLS.
//! - One query covers every workload kind: we group by all owner labels at once instead of
//!   issuing one query per resource type.

use std::{fmt::Write as _, time::Duration};

/// Owner labels the linkerd-viz scrape config sets, and the Kubernetes kind each names.
pub const OWNER_LABELS: [(&str, &str); 6] = [
    ("deployment", "Deployment"),
    ("statefulset", "StatefulSet"),
    ("daemonset", "DaemonSet"),
    ("replicationcontroller", "ReplicationController"),
    ("cronjob", "CronJob"),
    ("k8s_job", "Job"),
];

/// The latency quantiles viz asks for.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// A label matcher: `name op "value"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    name: &'static str,
    op: &'static str,
    value: String,
}

/// `name="value"`.
pub fn eq(name: &'static str, value: &str) -> Matcher {
    Matcher {
        name,
        op: "=",
        value: value.to_owned(),
    }
}

/// `name!="value"`.
pub fn ne(name: &'static str, value: &str) -> Matcher {
    Matcher {
        name,
        op: "!=",
        value: value.to_owned(),
    }
}

/// `name=~"regex"`.
pub fn re(name: &'static str, value: &str) -> Matcher {
    Matcher {
        name,
        op: "=~",
        value: value.to_owned(),
    }
}

/// `{a="1", b!=""}` with matchers sorted by label name, as viz renders them.
pub fn selector(matchers: &[Matcher]) -> String {
    let mut m = matchers.to_vec();
    m.sort_by(|a, b| a.name.cmp(b.name));
    let mut out = String::from("{");
    for (i, x) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let v = x.value.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(out, "{}{}\"{v}\"", x.name, x.op);
    }
    out.push('}');
    out
}

/// A Prometheus duration for a window: `1m`, `30s`, `1h`, `1500ms`.
pub fn window(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// viz's `sum(increase(<metric><selector>[<window>])) by (<by>)`.
pub fn sum_increase(metric: &str, sel: &str, w: &str, by: &[&str]) -> String {
    format!("sum(increase({metric}{sel}[{w}])) by ({})", by.join(", "))
}

/// viz's `histogram_quantile(<q>, sum(irate(<metric>_bucket<selector>[<window>])) by (le, <by>))`.
pub fn quantile(q: f64, metric: &str, sel: &str, w: &str, by: &[&str]) -> String {
    format!(
        "histogram_quantile({q}, sum(irate({metric}_bucket{sel}[{w}])) by (le, {}))",
        by.join(", ")
    )
}

/// viz's `sum(<metric><selector>) by (<by>)` for gauges.
pub fn sum_gauge(metric: &str, sel: &str, by: &[&str]) -> String {
    format!("sum({metric}{sel}) by ({})", by.join(", "))
}

/// Labels naming the source workload of an outbound series.
pub fn src_labels() -> Vec<&'static str> {
    let mut v = vec!["namespace"];
    v.extend(OWNER_LABELS.iter().map(|(l, _)| *l));
    v
}

/// Labels naming the destination of an outbound series.
pub fn dst_labels() -> Vec<&'static str> {
    vec![
        "dst_namespace",
        "dst_deployment",
        "dst_statefulset",
        "dst_daemonset",
        "dst_replicationcontroller",
        "dst_cronjob",
        "dst_k8s_job",
        "dst_service",
        "dst_control_plane_ns",
    ]
}

/// One edge's golden metrics over time (the console's plots): requests per second, success
/// rate and p99 latency, each a `rate` over `w` of viz's outbound series for the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSeries {
    /// `sum(rate(response_total{..}[w]))`.
    pub rps: String,
    /// Successful responses over all responses (`classification="success"`).
    pub success: String,
    /// `histogram_quantile(0.99, sum(irate(response_latency_ms_bucket{..}[w])) by (le))`.
    pub p99: String,
}

/// The label naming a workload of `kind` (`deployment` for a Deployment, ...), if viz's scrape
/// config sets one.
pub fn owner_label(kind: &str) -> Option<&'static str> {
    OWNER_LABELS
        .iter()
        .find(|(_, k)| k.eq_ignore_ascii_case(kind))
        .map(|(l, _)| *l)
}

impl EdgeSeries {
    /// The queries for calls from `src` to `dst`, each `(namespace, kind, name)`; `None` when a
    /// kind has no owner label (the series do not name it).
    pub fn new(src: (&str, &str, &str), dst: (&str, &str, &str), w: Duration) -> Option<Self> {
        let (sl, dl) = (owner_label(src.1)?, owner_label(dst.1)?);
        let dst_label: &'static str = match dl {
            "deployment" => "dst_deployment",
            "statefulset" => "dst_statefulset",
            "daemonset" => "dst_daemonset",
            "replicationcontroller" => "dst_replicationcontroller",
            "cronjob" => "dst_cronjob",
            _ => "dst_k8s_job",
        };
        let base = vec![
            eq("direction", "outbound"),
            eq("namespace", src.0),
            eq(sl, src.2),
            eq("dst_namespace", dst.0),
            eq(dst_label, dst.2),
        ];
        let all = selector(&base);
        let mut ok = base;
        ok.push(eq("classification", "success"));
        let ok = selector(&ok);
        let w = window(w);
        Some(Self {
            rps: format!("sum(rate(response_total{all}[{w}]))"),
            success: format!(
                "sum(rate(response_total{ok}[{w}])) / sum(rate(response_total{all}[{w}]))"
            ),
            p99: format!(
                "histogram_quantile(0.99, sum(irate(response_latency_ms_bucket{all}[{w}])) by (le))"
            ),
        })
    }
}

/// The queries one graph build sends.
#[derive(Clone, Debug)]
pub struct GraphQueries {
    /// Outbound responses by edge, classification and TLS.
    pub responses: String,
    /// Outbound latency quantiles by edge, in [`QUANTILES`] order.
    pub latency: [String; 3],
    /// Open outbound connections by edge and TLS.
    pub tcp_open: String,
    /// Outbound connections opened in the window.
    pub tcp_opened: String,
    /// Outbound bytes read in the window.
    pub tcp_read: String,
    /// Outbound bytes written in the window.
    pub tcp_write: String,
    /// Inbound HTTP/gRPC client identities by destination.
    pub identities_http: String,
    /// Inbound TCP client identities by destination.
    pub identities_tcp: String,
    /// Series per pod, to count pods per workload.
    pub pods: String,
    /// Inbound authorization decisions by destination and client identity:
    /// `inbound_http_authz_allow_total`, `..._deny_total`, then the `tcp` pair.
    pub authz: [String; 4],
    /// Route responses by route, backend and status, in [`ROUTE_FAMILIES`] order (HTTP, gRPC).
    pub route_statuses: [String; 2],
    /// Route latency quantiles by route and backend, in [`ROUTE_FAMILIES`] order, each in
    /// [`QUANTILES`] order; seconds.
    pub route_latency: [[String; 3]; 2],
    /// Requests to EgressNetworks by route, host and status, in [`EGRESS_FAMILIES`] order.
    pub egress_statuses: [String; 2],
    /// Their latency quantiles, as `route_latency`.
    pub egress_latency: [[String; 3]; 2],
}

/// The route-level families, for traffic to EgressNetworks: a request the caller's own proxy
/// refuses (`*-egress-deny`) never reaches a backend, so only these count it, and only these
/// carry `hostname`. As (family prefix, status label, is gRPC).
pub const EGRESS_FAMILIES: [(&str, &str, bool); 2] = [
    ("outbound_http_route_request", "http_status", false),
    ("outbound_grpc_route_request", "grpc_status", true),
];

/// Labels naming an egress route: its EgressNetwork parent, the route, the host called.
pub const EGRESS_LABELS: [&str; 8] = [
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "parent_port",
    "route_kind",
    "route_namespace",
    "route_name",
    "hostname",
];

/// The route metric families of Linkerd 2.14+ proxies (what `linkerd viz stat-outbound` reads),
/// as (family prefix, status label, is gRPC).
pub const ROUTE_FAMILIES: [(&str, &str, bool); 2] = [
    ("outbound_http_route_backend_response", "http_status", false),
    ("outbound_grpc_route_backend_response", "grpc_status", true),
];

/// Labels naming a route, its parent and its backend on the route families.
pub const ROUTE_LABELS: [&str; 11] = [
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "parent_port",
    "route_kind",
    "route_namespace",
    "route_name",
    "backend_kind",
    "backend_namespace",
    "backend_name",
    "backend_port",
];

/// The authorization counters, in [`GraphQueries::authz`] order: (metric, tcp, allowed).
pub const AUTHZ_METRICS: [(&str, bool, bool); 4] = [
    ("inbound_http_authz_allow_total", false, true),
    ("inbound_http_authz_deny_total", false, false),
    ("inbound_tcp_authz_allow_total", true, true),
    ("inbound_tcp_authz_deny_total", true, false),
];

impl GraphQueries {
    /// The queries for a metrics window.
    pub fn new(win: Duration) -> Self {
        Self::scoped(win, None)
    }

    /// The queries for calls into namespace `ns` only (what a proposal for it reads): outbound
    /// series by `dst_namespace`, inbound and authorization series by the receiving pod's
    /// `namespace`, route series by `parent_namespace`. Over a long window on a big mesh, a
    /// fraction of the series.
    pub fn into_namespace(win: Duration, ns: &str) -> Self {
        Self::scoped(win, Some(ns))
    }

    fn scoped(win: Duration, ns: Option<&str>) -> Self {
        let w = window(win);
        // `matchers`, and the namespace on label `name` when scoped; "" for no matcher at all.
        let scoped = |name: &'static str, mut matchers: Vec<Matcher>| {
            matchers.extend(ns.map(|ns| eq(name, ns)));
            if matchers.is_empty() {
                String::new()
            } else {
                selector(&matchers)
            }
        };
        let out = scoped("dst_namespace", vec![eq("direction", "outbound")]);
        let out_dst = scoped(
            "dst_namespace",
            vec![eq("direction", "outbound"), eq("peer", "dst")],
        );
        let egress = scoped("parent_namespace", vec![eq("parent_kind", "EgressNetwork")]);
        // stat-outbound's queries, grouped by every owner label and the whole route, parent
        // and backend (viz groups by one resource and names only); for egress, the route-level
        // families of EgressNetwork parents.
        let (route_statuses, route_latency) = route_family_queries(
            &ROUTE_FAMILIES,
            &ROUTE_LABELS,
            &scoped("parent_namespace", Vec::new()),
            &w,
        );
        let (egress_statuses, egress_latency) =
            route_family_queries(&EGRESS_FAMILIES, &EGRESS_LABELS, &egress, &w);
        let edge: Vec<&str> = [src_labels(), dst_labels()].concat();
        let with = |extra: &[&'static str]| [edge.clone(), extra.to_vec()].concat();
        let tls = ["tls", "server_id", "no_tls_reason"];
        let ident: Vec<&str> = [src_labels(), vec!["client_id"]].concat();
        let mut pods = src_labels();
        pods.push("pod");
        Self {
            responses: sum_increase(
                "response_total",
                &out,
                &w,
                &with(&[
                    "authority",
                    "classification",
                    "tls",
                    "server_id",
                    "no_tls_reason",
                    "grpc_status",
                ]),
            ),
            latency: QUANTILES
                .map(|q| quantile(q, "response_latency_ms", &out, &w, &with(&["authority"]))),
            tcp_open: sum_gauge("tcp_open_connections", &out_dst, &with(&tls)),
            tcp_opened: sum_increase("tcp_open_total", &out_dst, &w, &with(&tls)),
            tcp_read: sum_increase("tcp_read_bytes_total", &out_dst, &w, &with(&tls)),
            tcp_write: sum_increase("tcp_write_bytes_total", &out_dst, &w, &with(&tls)),
            identities_http: sum_increase(
                "response_total",
                &scoped(
                    "namespace",
                    vec![eq("direction", "inbound"), eq("tls", "true")],
                ),
                &w,
                &ident,
            ),
            identities_tcp: sum_increase(
                "tcp_open_total",
                &scoped(
                    "namespace",
                    vec![
                        eq("direction", "inbound"),
                        eq("peer", "src"),
                        eq("tls", "true"),
                    ],
                ),
                &w,
                &ident,
            ),
            pods: format!("count(tcp_open_total) by ({})", pods.join(", ")),
            // No `direction` label on these (reference 1.3); like viz, no selector at all.
            // Allowed ones by authorization too, to tell audit-mode admissions apart.
            authz: AUTHZ_METRICS.map(|(m, _, allowed)| {
                let by: Vec<&str> = if allowed {
                    [ident.clone(), vec!["authz_kind", "authz_name"]].concat()
                } else {
                    ident.clone()
                };
                sum_increase(m, &scoped("namespace", Vec::new()), &w, &by)
            }),
            route_statuses,
            route_latency,
            egress_statuses,
            egress_latency,
        }
    }
}

/// For each route family, the statuses query (`<family>_statuses_total` by owner labels,
/// `labels`, status and error) and the three latency quantiles (`<family>_duration_seconds`),
/// over series matching `sel`.
fn route_family_queries(
    families: &[(&str, &str, bool); 2],
    labels: &[&'static str],
    sel: &str,
    w: &str,
) -> ([String; 2], [[String; 3]; 2]) {
    let by: Vec<&str> = [src_labels(), labels.to_vec()].concat();
    let statuses = families.map(|(family, status, _)| {
        let by: Vec<&str> = [by.clone(), vec![status, "error"]].concat();
        sum_increase(&format!("{family}_statuses_total"), sel, w, &by)
    });
    let latency = families.map(|(family, _, _)| {
        QUANTILES.map(|q| quantile(q, &format!("{family}_duration_seconds"), sel, w, &by))
    });
    (statuses, latency)
}

#[cfg(test)]
mod tests;
