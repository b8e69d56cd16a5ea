//! The Prometheus source: runs [`GraphQueries`] against linkerd-viz's Prometheus and turns the
//! result vectors into `mesh-model` samples.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use mesh_model::{
    Destination, GraphBuilder, IdentitySample, LatencyQuantile, LatencySample, MeshGraph, Protocol,
    ResponseSample, RouteId, RouteLatencySample, RouteSample, TcpSample, TlsObservation,
    WorkloadRef, WorkloadSample,
};
use serde::Deserialize;

use mesh_policy::overlay::AuthzSample;

use crate::promql::{AUTHZ_METRICS, EGRESS_FAMILIES, GraphQueries, OWNER_LABELS, ROUTE_FAMILIES};

/// Why Prometheus could not give us a graph.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The base URL is not a usable http(s) URL.
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Nothing answered (refused, DNS, TLS).
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// It did not answer in time.
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The base URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// It answered with an error.
    #[error("Prometheus refused a query ({status}, {error_type}): {error}\n  query: {query}")]
    Query {
        /// HTTP status.
        status: u16,
        /// Prometheus `errorType`.
        error_type: String,
        /// Prometheus `error`.
        error: String,
        /// The query sent.
        query: String,
    },
    /// It answered something that is not the query API's JSON.
    #[error(
        "Prometheus at {url} answered {status} with a body that is not a query result: {snippet}"
    )]
    NotPrometheus {
        /// The base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        snippet: String,
    },
    /// The queries worked but found no Linkerd proxy traffic.
    #[error(
        "Prometheus at {url} has no linkerd-proxy traffic metrics in the last {window}: \
         is it linkerd-viz's Prometheus, and is meshed traffic flowing?"
    )]
    NoData {
        /// The base URL.
        url: String,
        /// The window, as sent.
        window: String,
    },
}

/// Reads the mesh graph from Prometheus.
#[derive(Clone, Debug)]
pub struct PrometheusSource {
    client: reqwest::Client,
    base: String,
    window: Duration,
    timeout: Duration,
    queries: GraphQueries,
    /// Evaluate every query at this moment (PromQL's `time`) instead of now.
    at: Option<SystemTime>,
}

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct ApiResponse<T = Series> {
    status: String,
    #[serde(default = "none")]
    data: Option<ApiData<T>>,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct ApiData<T> {
    #[serde(default = "Vec::new")]
    result: Vec<T>,
}

/// One series of a range query (a matrix): its labels and `[timestamp, "value"]` points.
#[derive(Clone, Debug, Deserialize)]
pub struct RangeSeries {
    /// Labels.
    pub metric: HashMap<String, String>,
    /// The points, oldest first.
    pub values: Vec<(f64, String)>,
}

/// One series of an instant vector: its labels and value.
#[derive(Clone, Debug, Deserialize)]
pub struct Series {
    /// Labels.
    pub metric: HashMap<String, String>,
    /// `[timestamp, "value"]`.
    pub value: (f64, String),
}

impl Series {
    fn label(&self, k: &str) -> &str {
        self.metric.get(k).map_or("", String::as_str)
    }

    fn number(&self) -> Option<f64> {
        self.value.1.parse::<f64>().ok().filter(|v| v.is_finite())
    }
}

// === impl PrometheusSource ===

impl PrometheusSource {
    /// A source for `base_url` (e.g. `http://prometheus.linkerd-viz.svc:9090`) over `window`,
    /// with `timeout` for each query.
    pub fn new(base_url: &str, window: Duration, timeout: Duration) -> Result<Self, PromError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| PromError::BadUrl {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PromError::BadUrl {
                url: base_url.to_owned(),
                reason: format!("scheme {:?} is not http or https", url.scheme()),
            });
        }
        if window < Duration::from_secs(1) {
            return Err(PromError::BadUrl {
                url: base_url.to_owned(),
                reason: "the window must be at least 1s".into(),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .map_err(|e| PromError::BadUrl {
                url: base_url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            base,
            window,
            timeout,
            queries: GraphQueries::new(window),
            at: None,
        })
    }

    /// The metrics window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Reads only calls into namespace `ns` ([`GraphQueries::into_namespace`]).
    #[must_use]
    pub fn into_namespace(mut self, ns: &str) -> Self {
        self.queries = GraphQueries::into_namespace(self.window, ns);
        self
    }

    /// Evaluates every query at `t` (PromQL's `time` parameter): the window ending then.
    #[must_use]
    pub fn at(mut self, t: SystemTime) -> Self {
        self.at = Some(t);
        self
    }

    /// The queries it sends.
    pub fn queries(&self) -> &GraphQueries {
        &self.queries
    }

    /// Runs one instant query.
    pub async fn query(&self, query: &str) -> Result<Vec<Series>, PromError> {
        self.post("query", query, &self.form(query)).await
    }

    /// Runs one range query from `start` to `end` every `step` (a matrix: one series per
    /// label set, each with its points).
    pub async fn query_range(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let form = [
            ("query", std::borrow::Cow::Borrowed(query)),
            ("start", format!("{:.3}", secs(start)).into()),
            ("end", format!("{:.3}", secs(end)).into()),
            ("step", format!("{:.3}", step.as_secs_f64()).into()),
        ];
        self.post("query_range", query, &form).await
    }

    /// POSTs `form` to `/api/v1/<api>` and reads the result of `query`.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        api: &str,
        query: &str,
        form: &[(&'static str, std::borrow::Cow<'_, str>)],
    ) -> Result<Vec<T>, PromError> {
        let url = format!("{}/api/v1/{api}", self.base);
        let resp = self
            .client
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| self.transport_error(&e))?;
        let parsed: ApiResponse<T> =
            serde_json::from_str(&body).map_err(|_| PromError::NotPrometheus {
                url: self.base.clone(),
                status,
                snippet: body.chars().take(120).collect(),
            })?;
        if parsed.status != "success" {
            return Err(PromError::Query {
                status,
                error_type: parsed.error_type,
                error: parsed.error,
                query: query.to_owned(),
            });
        }
        Ok(parsed.data.map(|d| d.result).unwrap_or_default())
    }

    /// An instant query's form: the query, and its time when evaluated in the past.
    fn form<'a>(&self, query: &'a str) -> Vec<(&'static str, std::borrow::Cow<'a, str>)> {
        let mut form = vec![("query", std::borrow::Cow::Borrowed(query))];
        if let Some(t) = self.at {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            form.push(("time", std::borrow::Cow::Owned(format!("{secs:.3}"))));
        }
        form
    }

    /// How much history Prometheus keeps (`--storage.tsdb.retention.time`, from
    /// `/api/v1/status/flags`; its default, 15 days, when unset). `None` when it does not say.
    pub async fn retention(&self) -> Result<Option<Duration>, PromError> {
        #[derive(Deserialize)]
        struct Flags {
            #[serde(default)]
            data: HashMap<String, String>,
        }
        let url = format!("{}/api/v1/status/flags", self.base);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let Ok(flags) = resp.json::<Flags>().await else {
            return Ok(None);
        };
        Ok(flags
            .data
            .get("storage.tsdb.retention.time")
            .and_then(|v| match v.as_str() {
                // Unset: Prometheus's default.
                "0s" | "" => Some(Duration::from_secs(15 * 86_400)),
                v => humantime::parse_duration(v).ok(),
            }))
    }

    fn transport_error(&self, e: &reqwest::Error) -> PromError {
        if e.is_timeout() {
            return PromError::Timeout {
                url: self.base.clone(),
                timeout: self.timeout,
            };
        }
        // The innermost cause says what really happened (refused, DNS, ...).
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        PromError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Runs every query, feeds the samples to `builder` and returns the authorization samples.
    pub async fn collect(&self, builder: &mut GraphBuilder) -> Result<Vec<AuthzSample>, PromError> {
        let q = &self.queries;
        let queries = [
            &q.responses,
            &q.latency[0],
            &q.latency[1],
            &q.latency[2],
            &q.tcp_open,
            &q.tcp_opened,
            &q.tcp_read,
            &q.tcp_write,
            &q.identities_http,
            &q.identities_tcp,
            &q.pods,
        ]
        .into_iter()
        .chain(&q.authz);
        let route_queries = q
            .route_statuses
            .iter()
            .zip(&q.route_latency)
            .chain(q.egress_statuses.iter().zip(&q.egress_latency))
            .flat_map(|(s, l)| std::iter::once(s).chain(l));
        let (rows, route_rows) = futures_util::future::try_join(
            futures_util::future::try_join_all(queries.map(|x| self.query(x))),
            futures_util::future::try_join_all(route_queries.map(|x| self.query(x))),
        )
        .await?;
        let Ok(
            [
                responses,
                p50,
                p95,
                p99,
                open,
                opened,
                read,
                write,
                id_http,
                id_tcp,
                pods,
                a0,
                a1,
                a2,
                a3,
            ],
        ) = <[Vec<Series>; 15]>::try_from(rows)
        else {
            unreachable!("fifteen queries give fifteen answers");
        };
        if responses.is_empty() && opened.is_empty() && open.is_empty() {
            return Err(PromError::NoData {
                url: self.base.clone(),
                window: crate::promql::window(self.window),
            });
        }
        let mut samples = Vec::new();
        for ((_, tcp, allowed), rows) in AUTHZ_METRICS.iter().zip([a0, a1, a2, a3]) {
            for s in &rows {
                if let (Some(dst), Some(count)) = (src_of(s), s.number()) {
                    samples.push(AuthzSample {
                        audit: s.label("authz_kind") == "default"
                            && s.label("authz_name") == "audit",
                        dst,
                        client_id: s.label("client_id").to_owned(),
                        tcp: *tcp,
                        allowed: *allowed,
                        count,
                    });
                }
            }
        }

        // Which destination each (caller, Service) reached, to join route backends to edges.
        let mut by_service: BTreeMap<(WorkloadRef, String, String), Destination> = BTreeMap::new();
        for s in responses.iter().chain(&opened) {
            let (svc, ns) = (s.label("dst_service"), s.label("dst_namespace"));
            if let (Some(src), Some(dst), false) = (src_of(s), dst_of(s), svc.is_empty()) {
                by_service.insert((src, ns.to_owned(), svc.to_owned()), dst);
            }
        }
        self.add_routes(builder, &route_rows, &by_service);

        for s in &responses {
            let (Some(src), Some(dst), Some(v)) = (src_of(s), dst_of(s), s.number()) else {
                continue;
            };
            let ok = s.label("classification") == "success";
            builder.add_responses(ResponseSample {
                src,
                dst,
                dst_meshed: !s.label("dst_control_plane_ns").is_empty(),
                protocol: if s.label("grpc_status").is_empty() {
                    Protocol::Http
                } else {
                    Protocol::Grpc
                },
                tls: tls_of(s),
                success: if ok { v } else { 0.0 },
                failure: if ok { 0.0 } else { v },
            });
        }

        for (quantile, rows) in LatencyQuantile::ALL.into_iter().zip([p50, p95, p99]) {
            for s in &rows {
                if let (Some(src), Some(dst), Some(v)) = (src_of(s), dst_of(s), s.number()) {
                    builder.add_latency(LatencySample {
                        src,
                        dst,
                        quantile,
                        value_ms: v,
                    });
                }
            }
        }

        // Join the four transport queries on their labels (they share the same grouping).
        type TcpKey = (WorkloadRef, Destination, bool, TlsObservation);
        let mut tcp: BTreeMap<TcpKey, [f64; 4]> = BTreeMap::new();
        for (i, rows) in [open, opened, read, write].iter().enumerate() {
            for s in rows {
                if let (Some(src), Some(dst), Some(v)) = (src_of(s), dst_of(s), s.number()) {
                    let meshed = !s.label("dst_control_plane_ns").is_empty();
                    tcp.entry((src, dst, meshed, tls_of(s))).or_default()[i] += v;
                }
            }
        }
        for ((src, dst, dst_meshed, tls), [open, opened, read, write]) in tcp {
            builder.add_tcp(TcpSample {
                src,
                dst,
                dst_meshed,
                tls,
                open_connections: open,
                opened,
                read_bytes: read,
                write_bytes: write,
            });
        }

        for s in id_http.iter().chain(&id_tcp) {
            if let (Some(dst), Some(v)) = (src_of(s), s.number()) {
                builder.add_identity(IdentitySample {
                    dst,
                    client_id: s.label("client_id").to_owned(),
                    count: v,
                });
            }
        }

        let mut pod_counts: BTreeMap<WorkloadRef, u32> = BTreeMap::new();
        for s in &pods {
            if let Some(w) = src_of(s) {
                *pod_counts.entry(w).or_default() += 1;
            }
        }
        for (id, pods) in pod_counts {
            builder.add_workload(WorkloadSample {
                id,
                meshed: true,
                pods,
            });
        }
        Ok(samples)
    }

    /// Feeds the route families' answers (per family: statuses, then three quantiles): the
    /// backend-level ones for traffic inside the mesh, the route-level ones for egress.
    fn add_routes(
        &self,
        builder: &mut GraphBuilder,
        rows: &[Vec<Series>],
        by_service: &BTreeMap<(WorkloadRef, String, String), Destination>,
    ) {
        let families = ROUTE_FAMILIES
            .iter()
            .map(|f| (f, false))
            .chain(EGRESS_FAMILIES.iter().map(|f| (f, true)));
        for (((_, status_label, grpc), egress), answers) in families.zip(rows.chunks(4)) {
            let protocol = if *grpc {
                Protocol::Grpc
            } else {
                Protocol::Http
            };
            let [statuses, p50, p95, p99] = answers else {
                continue;
            };
            let to_egress =
                |s: &Series| s.label("parent_kind").eq_ignore_ascii_case("EgressNetwork");
            for s in statuses {
                let (Some(src), Some(count)) = (src_of(s), s.number()) else {
                    continue;
                };
                if to_egress(s) != egress {
                    continue;
                }
                let dst = backend_of(s, &src, by_service);
                builder.add_route(RouteSample {
                    src,
                    dst,
                    protocol,
                    route: route_of(s),
                    status: s.label(status_label).to_owned(),
                    error: s.label("error").to_owned(),
                    count,
                });
            }
            for (quantile, rows) in LatencyQuantile::ALL.into_iter().zip([p50, p95, p99]) {
                for s in rows {
                    let (Some(src), Some(v)) = (src_of(s), s.number()) else {
                        continue;
                    };
                    if to_egress(s) != egress {
                        continue;
                    }
                    let dst = backend_of(s, &src, by_service);
                    builder.add_route_latency(RouteLatencySample {
                        src,
                        dst,
                        protocol,
                        route: route_of(s),
                        quantile,
                        // The route histograms are in seconds.
                        value_ms: v * 1000.0,
                    });
                }
            }
        }
    }

    /// Reads the current window: the graph (version 0) and the authorization samples, which
    /// are attached to edges once Kubernetes has named the edges' client identities.
    pub async fn observe(&self, now: SystemTime) -> Result<Observation, PromError> {
        let mut b = GraphBuilder::new(self.window);
        let authz = self.collect(&mut b).await?;
        Ok(Observation {
            graph: b.finish(now),
            authz,
        })
    }

    /// Builds a graph (version 0) from the current window, with observed authorization rates.
    pub async fn graph(&self, now: SystemTime) -> Result<MeshGraph, PromError> {
        let Observation { mut graph, authz } = self.observe(now).await?;
        mesh_policy::overlay::attach_observed(&mut graph, &authz);
        Ok(graph)
    }
}

/// One read of Prometheus.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The graph as Prometheus shows it.
    pub graph: MeshGraph,
    /// Inbound authorization decisions, not yet attributed to edges.
    pub authz: Vec<AuthzSample>,
}

/// The workload a series was reported from (or, for inbound series, received by).
fn src_of(s: &Series) -> Option<WorkloadRef> {
    owner(s, "namespace", "")
}

fn owner(s: &Series, ns_label: &str, prefix: &str) -> Option<WorkloadRef> {
    let namespace = s.label(ns_label);
    if namespace.is_empty() {
        return None;
    }
    OWNER_LABELS.iter().find_map(|(label, kind)| {
        let name = s
            .metric
            .get(&format!("{prefix}{label}"))
            .filter(|n| !n.is_empty())?;
        Some(WorkloadRef {
            namespace: namespace.to_owned(),
            kind: (*kind).to_owned(),
            name: name.clone(),
        })
    })
}

/// Where an outbound series went: a workload, else a Service, else the raw authority.
fn dst_of(s: &Series) -> Option<Destination> {
    if let Some(w) = owner(s, "dst_namespace", "dst_") {
        return Some(Destination::Workload(w));
    }
    let (svc, ns) = (s.label("dst_service"), s.label("dst_namespace"));
    if !svc.is_empty() && !ns.is_empty() {
        return Some(Destination::Authority(format!("{svc}.{ns}.svc")));
    }
    let authority = s.label("authority");
    (!authority.is_empty()).then(|| Destination::Authority(authority.to_owned()))
}

/// The route of a route-family series: kind, namespace and name, and the parent it attached to.
fn route_of(s: &Series) -> RouteId {
    RouteId {
        kind: s.label("route_kind").to_owned(),
        namespace: s.label("route_namespace").to_owned(),
        name: s.label("route_name").to_owned(),
        parent: format!(
            "{} {}/{}:{}",
            s.label("parent_kind"),
            s.label("parent_namespace"),
            s.label("parent_name"),
            s.label("parent_port")
        ),
    }
}

/// Where a route-family series went: traffic to an EgressNetwork parent is an external
/// destination named by it (and the host, when reported); otherwise the destination the
/// caller's legacy series show behind the backend Service, else the Service's name as `dst_of`
/// spells it.
fn backend_of(
    s: &Series,
    src: &WorkloadRef,
    by_service: &BTreeMap<(WorkloadRef, String, String), Destination>,
) -> Destination {
    if s.label("parent_kind").eq_ignore_ascii_case("EgressNetwork") {
        return Destination::egress(
            s.label("parent_namespace"),
            s.label("parent_name"),
            s.label("parent_port"),
            s.label("hostname"),
        );
    }
    let (ns, name) = (s.label("backend_namespace"), s.label("backend_name"));
    by_service
        .get(&(src.clone(), ns.to_owned(), name.to_owned()))
        .cloned()
        .unwrap_or_else(|| Destination::Authority(format!("{name}.{ns}.svc")))
}

fn tls_of(s: &Series) -> TlsObservation {
    match s.label("tls") {
        "true" => TlsObservation::Mtls {
            server_id: s.label("server_id").to_owned(),
        },
        "disabled" => TlsObservation::Disabled,
        "" => TlsObservation::NoIdentity {
            reason: "no tls label".into(),
        },
        _ => TlsObservation::NoIdentity {
            reason: s.label("no_tls_reason").to_owned(),
        },
    }
}

#[cfg(test)]
mod tests;
