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
        Self::read(win, &Scope::default(), Reads::Raw)
    }

    /// The queries for calls into namespace `ns` only (what a proposal for it reads): outbound
    /// series by `dst_namespace`, inbound and authorization series by the receiving pod's
    /// `namespace`, route series by `parent_namespace`. Over a long window on a big mesh, a
    /// fraction of the series.
    pub fn into_namespace(win: Duration, ns: &str) -> Self {
        Self::read(
            win,
            &Scope {
                into_namespace: Some(ns.to_owned()),
                shard: None,
            },
            Reads::Raw,
        )
    }

    /// The queries for `scope`, read from the raw proxy series or from the series
    /// [`recording_rules`] keep.
    pub fn read(win: Duration, scope: &Scope, reads: Reads) -> Self {
        let p = Parts::new(win);
        let r = |part: &Part| part.read(scope, reads);
        let q = |part: &Part| QUANTILES.map(|x| format!("histogram_quantile({x}, {})", r(part)));
        Self {
            responses: r(&p.responses),
            latency: q(&p.latency),
            tcp_open: r(&p.tcp_open),
            tcp_opened: r(&p.tcp_opened),
            tcp_read: r(&p.tcp_read),
            tcp_write: r(&p.tcp_write),
            identities_http: r(&p.identities_http),
            identities_tcp: r(&p.identities_tcp),
            pods: r(&p.pods),
            authz: p.authz.each_ref().map(r),
            route_statuses: p.route_statuses.each_ref().map(r),
            route_latency: p.route_buckets.each_ref().map(q),
            egress_statuses: p.egress_statuses.each_ref().map(r),
            egress_latency: p.egress_buckets.each_ref().map(q),
        }
    }
}

impl GraphQueries {
    /// Every query of a build, in the order a build reads them: the edge queries, then per
    /// route family its statuses and three quantiles ([`GraphQueries::EDGE_QUERIES`] first).
    pub fn all(&self) -> Vec<&str> {
        let mut v: Vec<&str> = vec![
            &self.responses,
            &self.latency[0],
            &self.latency[1],
            &self.latency[2],
            &self.tcp_open,
            &self.tcp_opened,
            &self.tcp_read,
            &self.tcp_write,
            &self.identities_http,
            &self.identities_tcp,
            &self.pods,
        ];
        v.extend(self.authz.iter().map(String::as_str));
        for (s, l) in self
            .route_statuses
            .iter()
            .zip(&self.route_latency)
            .chain(self.egress_statuses.iter().zip(&self.egress_latency))
        {
            v.push(s);
            v.extend(l.iter().map(String::as_str));
        }
        v
    }

    /// How many of [`GraphQueries::all`] come before the route families'.
    pub const EDGE_QUERIES: usize = 15;
}

/// Where a build's queries read: viz's queries over the proxies' own series, or the series
/// the recording rules of [`recording_rules`] keep (one per edge, computed by Prometheus at
/// each rule evaluation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reads {
    /// The proxies' series, as `linkerd viz` reads them.
    #[default]
    Raw,
    /// The recorded series, `linkerd_mcp:*`.
    Recorded,
}

/// Which series a build reads: all, calls into one namespace, and one shard of namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only calls into this namespace ([`GraphQueries::into_namespace`]).
    pub into_namespace: Option<String>,
    /// Only series whose `namespace` label falls in this shard.
    pub shard: Option<Shard>,
}

/// The characters a Kubernetes namespace starts with (a DNS label), in order.
const NAMESPACE_FIRST: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The namespaces whose name starts with one of a run of characters: how a query the store
/// refuses as too large is split. Every query groups by `namespace` (the caller's, or the
/// receiver's for inbound series), so the answers of disjoint shards add up to the whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Index of the first character in the run.
    from: usize,
    /// One past the last.
    to: usize,
}

impl Shard {
    /// Every namespace.
    pub fn all() -> Self {
        Self {
            from: 0,
            to: NAMESPACE_FIRST.len(),
        }
    }

    /// The two halves, or `None` when it is a single character already.
    pub fn split(self) -> Option<(Self, Self)> {
        (self.to - self.from > 1).then(|| {
            let mid = self.from + (self.to - self.from) / 2;
            (
                Self {
                    from: self.from,
                    to: mid,
                },
                Self {
                    from: mid,
                    to: self.to,
                },
            )
        })
    }

    /// `namespace=~"[a-m].*"`.
    pub fn matcher(self) -> Matcher {
        let first = &NAMESPACE_FIRST[self.from..self.to];
        let class = match first {
            [one] => char::from(*one).to_string(),
            _ => format!(
                "[{}-{}]",
                char::from(first[0]),
                char::from(first[first.len() - 1])
            ),
        };
        re("namespace", &format!("{class}.*"))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.matcher();
        write!(f, "{}{}\"{}\"", m.name, m.op, m.value)
    }
}

/// The version of the rules [`recording_rules`] writes; a collector reads only rules of its
/// own version (an older set may lack a series or group by fewer labels).
pub const RULES_VERSION: u32 = 1;

/// The series the rules keep to say they are loaded: `version`, `window` and `interval`
/// labels, value 1.
pub const RULES_INFO: &str = "linkerd_mcp:rules_info";

/// What a build aggregates, and the operation its recorded series is named after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agg {
    /// `sum(increase(m[w])) by (..)` of a counter.
    Increase,
    /// `sum(m) by (..)` of a gauge.
    Sum,
    /// `count(m) by (..)`.
    Count,
    /// `sum(irate(m_bucket[w])) by (le, ..)`, read through `histogram_quantile`.
    Buckets,
}

/// One aggregation a build reads: viz's query for it, or the series a recording rule keeps.
#[derive(Clone, Debug)]
struct Part {
    /// The recorded series' name, between `linkerd_mcp:` and the operation.
    name: String,
    metric: String,
    /// The query's own matchers (`direction`, `peer`, `tls`, ...).
    base: Vec<Matcher>,
    /// The label [`Scope::into_namespace`] matches; `None`: the query is never scoped.
    scope: Option<&'static str>,
    by: Vec<&'static str>,
    agg: Agg,
    window: String,
}

impl Part {
    /// The scope's matchers: the namespace called into, and the shard.
    fn scoped(&self, s: &Scope) -> Vec<Matcher> {
        let mut m = Vec::new();
        if let (Some(label), Some(ns)) = (self.scope, &s.into_namespace) {
            m.push(eq(label, ns));
        }
        m.extend(s.shard.map(Shard::matcher));
        m
    }

    /// viz's query over the raw series.
    fn raw(&self, s: &Scope) -> String {
        let mut m = self.base.clone();
        m.extend(self.scoped(s));
        let sel = if m.is_empty() {
            String::new()
        } else {
            selector(&m)
        };
        let (metric, w, by) = (&self.metric, &self.window, self.by.join(", "));
        match self.agg {
            Agg::Increase => sum_increase(metric, &sel, w, &self.by),
            Agg::Sum => sum_gauge(metric, &sel, &self.by),
            Agg::Count => format!("count({metric}{sel}) by ({by})"),
            Agg::Buckets => format!("sum(irate({metric}_bucket{sel}[{w}])) by (le, {by})"),
        }
    }

    /// The recorded series' name: `linkerd_mcp:<name>:<operation><window>`.
    fn record(&self) -> String {
        let op = match self.agg {
            Agg::Increase => "increase",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Buckets => "irate",
        };
        format!("linkerd_mcp:{}:{op}{}", self.name, self.window)
    }

    fn read(&self, s: &Scope, reads: Reads) -> String {
        match reads {
            Reads::Raw => self.raw(s),
            Reads::Recorded => {
                let m = self.scoped(s);
                if m.is_empty() {
                    self.record()
                } else {
                    format!("{}{}", self.record(), selector(&m))
                }
            }
        }
    }
}

/// Every aggregation of a build, in [`GraphQueries`]' terms.
struct Parts {
    responses: Part,
    latency: Part,
    tcp_open: Part,
    tcp_opened: Part,
    tcp_read: Part,
    tcp_write: Part,
    identities_http: Part,
    identities_tcp: Part,
    pods: Part,
    authz: [Part; 4],
    route_statuses: [Part; 2],
    route_buckets: [Part; 2],
    egress_statuses: [Part; 2],
    egress_buckets: [Part; 2],
}

impl Parts {
    fn new(win: Duration) -> Self {
        let w = window(win);
        let part = |name: &str,
                    metric: &str,
                    base: Vec<Matcher>,
                    scope: Option<&'static str>,
                    by: Vec<&'static str>,
                    agg: Agg| Part {
            name: name.to_owned(),
            metric: metric.to_owned(),
            base,
            scope,
            by,
            agg,
            window: w.clone(),
        };
        let out = || vec![eq("direction", "outbound")];
        let out_dst = || vec![eq("direction", "outbound"), eq("peer", "dst")];
        let edge: Vec<&'static str> = [src_labels(), dst_labels()].concat();
        let with = |extra: &[&'static str]| [edge.clone(), extra.to_vec()].concat();
        let tls = ["tls", "server_id", "no_tls_reason"];
        let ident: Vec<&'static str> = [src_labels(), vec!["client_id"]].concat();
        let mut pods = src_labels();
        pods.push("pod");
        let dst = Some("dst_namespace");
        let tcp =
            |name: &str, metric: &str, agg| part(name, metric, out_dst(), dst, with(&tls), agg);
        // stat-outbound's queries, grouped by every owner label and the whole route, parent
        // and backend (viz groups by one resource and names only); for egress, the route-level
        // families of EgressNetwork parents.
        let family = |(family, status, _): &(&str, &'static str, bool),
                      labels: &[&'static str],
                      base: Vec<Matcher>|
         -> (Part, Part) {
            let by: Vec<&'static str> = [src_labels(), labels.to_vec()].concat();
            let statuses = format!("{family}_statuses_total");
            let duration = format!("{family}_duration_seconds");
            let bucket = format!("{duration}_bucket");
            let with_status = [by.clone(), vec![*status, "error"]].concat();
            let s = part(
                statuses.as_str(),
                statuses.as_str(),
                base.clone(),
                Some("parent_namespace"),
                with_status,
                Agg::Increase,
            );
            let b = part(
                bucket.as_str(),
                duration.as_str(),
                base,
                Some("parent_namespace"),
                by,
                Agg::Buckets,
            );
            (s, b)
        };
        let routes = ROUTE_FAMILIES
            .each_ref()
            .map(|f| family(f, &ROUTE_LABELS, Vec::new()));
        let egress = EGRESS_FAMILIES
            .each_ref()
            .map(|f| family(f, &EGRESS_LABELS, vec![eq("parent_kind", "EgressNetwork")]));
        let [(rs0, rb0), (rs1, rb1)] = routes;
        let [(es0, eb0), (es1, eb1)] = egress;
        Self {
            responses: part(
                "outbound_response_total",
                "response_total",
                out(),
                dst,
                with(&[
                    "authority",
                    "classification",
                    "tls",
                    "server_id",
                    "no_tls_reason",
                    "grpc_status",
                ]),
                Agg::Increase,
            ),
            latency: part(
                "outbound_response_latency_ms_bucket",
                "response_latency_ms",
                out(),
                dst,
                with(&["authority"]),
                Agg::Buckets,
            ),
            tcp_open: tcp(
                "outbound_tcp_open_connections",
                "tcp_open_connections",
                Agg::Sum,
            ),
            tcp_opened: tcp("outbound_tcp_open_total", "tcp_open_total", Agg::Increase),
            tcp_read: tcp(
                "outbound_tcp_read_bytes_total",
                "tcp_read_bytes_total",
                Agg::Increase,
            ),
            tcp_write: tcp(
                "outbound_tcp_write_bytes_total",
                "tcp_write_bytes_total",
                Agg::Increase,
            ),
            identities_http: part(
                "inbound_tls_response_total",
                "response_total",
                vec![eq("direction", "inbound"), eq("tls", "true")],
                Some("namespace"),
                ident.clone(),
                Agg::Increase,
            ),
            identities_tcp: part(
                "inbound_tls_tcp_open_total",
                "tcp_open_total",
                vec![
                    eq("direction", "inbound"),
                    eq("peer", "src"),
                    eq("tls", "true"),
                ],
                Some("namespace"),
                ident.clone(),
                Agg::Increase,
            ),
            pods: part(
                "pod_tcp_open_total",
                "tcp_open_total",
                Vec::new(),
                None,
                pods,
                Agg::Count,
            ),
            // No `direction` label on these (reference 1.3); like viz, no selector at all.
            // Allowed ones by authorization too, to tell audit-mode admissions apart.
            authz: AUTHZ_METRICS.map(|(m, _, allowed)| {
                let by: Vec<&'static str> = if allowed {
                    [ident.clone(), vec!["authz_kind", "authz_name"]].concat()
                } else {
                    ident.clone()
                };
                part(m, m, Vec::new(), Some("namespace"), by, Agg::Increase)
            }),
            route_statuses: [rs0, rs1],
            route_buckets: [rb0, rb1],
            egress_statuses: [es0, es1],
            egress_buckets: [eb0, eb1],
        }
    }

    fn all(&self) -> Vec<&Part> {
        let mut v = vec![
            &self.responses,
            &self.latency,
            &self.tcp_open,
            &self.tcp_opened,
            &self.tcp_read,
            &self.tcp_write,
            &self.identities_http,
            &self.identities_tcp,
            &self.pods,
        ];
        v.extend(&self.authz);
        v.extend(&self.route_statuses);
        v.extend(&self.route_buckets);
        v.extend(&self.egress_statuses);
        v.extend(&self.egress_buckets);
        v
    }
}

/// One recording rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordingRule {
    /// The series it writes.
    pub record: String,
    /// What it evaluates.
    pub expr: String,
    /// Labels it adds.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The recording rules that keep, per edge, what a build over window `win` reads: each
/// aggregation of viz's queries once per rule evaluation (the latency buckets once, where a
/// build asks for three quantiles of them), so that a build reads one series per edge instead
/// of every proxy's. First comes [`RULES_INFO`], which tells a collector they are there.
pub fn recording_rules(win: Duration, every: Duration) -> Vec<RecordingRule> {
    let w = window(win);
    let mut rules = vec![RecordingRule {
        record: RULES_INFO.to_owned(),
        expr: "vector(1)".to_owned(),
        labels: [
            ("version".to_owned(), RULES_VERSION.to_string()),
            ("window".to_owned(), w),
            // How often they run: a collector stops reading rules three evaluations late.
            ("interval".to_owned(), window(every)),
        ]
        .into(),
    }];
    let parts = Parts::new(win);
    rules.extend(parts.all().into_iter().map(|p| RecordingRule {
        record: p.record(),
        expr: p.raw(&Scope::default()),
        labels: Default::default(),
    }));
    rules
}

/// A Prometheus rules file holding [`recording_rules`] for `win` as one group evaluated every
/// `every` (what `mesh-collector print-rules` prints and the chart ships).
pub fn rules_file(win: Duration, every: Duration) -> String {
    #[derive(serde::Serialize)]
    struct File {
        groups: Vec<Group>,
    }
    #[derive(serde::Serialize)]
    struct Group {
        name: String,
        interval: String,
        rules: Vec<RecordingRule>,
    }
    let w = window(win);
    let file = File {
        groups: vec![Group {
            name: format!("linkerd-mcp-{w}"),
            interval: window(every),
            rules: recording_rules(win, every),
        }],
    };
    let yaml = serde_yaml_ng::to_string(&file).unwrap_or_else(|e| {
        unreachable!("strings and maps always serialize: {e}");
    });
    format!(
        "# linkerd-mcp recording rules, version {RULES_VERSION}, for a {w} window: per edge, \
         what the collector\n# reads on every build. Generated by `mesh-collector print-rules \
         --window {w} --interval {}`.\n{yaml}",
        window(every)
    )
}

#[cfg(test)]
mod tests;
