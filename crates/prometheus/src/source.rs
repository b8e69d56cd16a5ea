//! The Prometheus source: runs [`GraphQueries`] against linkerd-viz's Prometheus and turns the
//! result vectors into `mesh-model` samples.

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use mesh_model::{
    Destination, GraphBuilder, IdentitySample, LatencyQuantile, LatencySample, MeshGraph, Protocol,
    ResponseSample, RouteId, RouteLatencySample, RouteSample, TcpSample, TlsObservation,
    WorkloadRef, WorkloadSample,
};
use serde::Deserialize;

use mesh_policy::overlay::AuthzSample;

use crate::promql::{
    AUTHZ_METRICS, EGRESS_FAMILIES, GraphQueries, OWNER_LABELS, ROUTE_FAMILIES, RULES_INFO,
    RULES_VERSION, Reads, Scope, Shard,
};

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
    /// `--recording-rules require`, and the rules cannot be read.
    #[error(
        "recording rules are required, but {reason}: load the output of `mesh-collector \
         print-rules --window {window}` into the Prometheus that scrapes the proxies"
    )]
    RulesRequired {
        /// Why they are unusable (absent, another version, another window).
        reason: String,
        /// The window, as the rules name it.
        window: String,
    },
    /// The store refused a query as too large even for a single shard of namespaces.
    #[error(
        "Prometheus refused a query as too large even when split down to the namespaces \
         {shard}: {error}\n  query: {query}"
    )]
    TooLarge {
        /// The smallest shard tried (`namespace=~"k.*"`).
        shard: String,
        /// The store's error.
        error: String,
        /// The query, for that shard.
        query: String,
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

/// Whether a source reads the series the recording rules keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RulesMode {
    /// When rules of this version and window are loaded; otherwise the raw series, saying why.
    #[default]
    Auto,
    /// Always; a build fails while they are not loaded.
    Require,
    /// Never: always the raw series, as `linkerd viz` reads them.
    Off,
}

impl std::str::FromStr for RulesMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "require" => Ok(Self::Require),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "{other:?} is not one of auto, require, off (whether to read the recording rules)"
            )),
        }
    }
}

/// How one read went: the path taken and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadReport {
    /// The raw series or the recorded ones.
    pub reads: Reads,
    /// Why the raw series were read although rules were wanted; `None` when they were read,
    /// or not wanted.
    pub fallback: Option<String>,
    /// When what was read was computed: the rules' last evaluation, or the query time.
    pub data_time: SystemTime,
    /// Queries sent (a split query counts each part).
    pub queries: u64,
    /// Series the answers held.
    pub series: u64,
    /// Samples the store loaded to answer, where it says (Prometheus 2.35+); 0 otherwise.
    pub samples: u64,
    /// Wall time of the read.
    pub seconds: f64,
    /// Queries the store refused as too large and that were split by namespace.
    pub splits: u64,
}

impl ReadReport {
    /// What source health says of the read: "recording rules v1 (1m)", or "raw series: why".
    pub fn detail(&self, window: Duration) -> String {
        match (&self.reads, &self.fallback) {
            (Reads::Recorded, _) => format!(
                "recording rules v{RULES_VERSION} ({})",
                crate::promql::window(window)
            ),
            (Reads::Raw, Some(why)) => format!("raw series ({why})"),
            (Reads::Raw, None) => "raw series".to_owned(),
        }
    }
}

/// What one read's queries cost, added up as they answer.
#[derive(Default)]
struct Stats {
    queries: AtomicU64,
    series: AtomicU64,
    samples: AtomicU64,
    splits: AtomicU64,
}

impl PromError {
    /// Whether the store refused the query for its size (Prometheus' `--query.max-samples`,
    /// VictoriaMetrics' `-search.maxUniqueTimeseries` and `-search.maxSamplesPerQuery`, Mimir's
    /// and Thanos' series limits): worth splitting, unlike other refusals.
    pub fn too_large(&self) -> bool {
        let Self::Query { error, .. } = self else {
            return false;
        };
        let e = error.to_ascii_lowercase();
        // A store out of time is not helped by more queries.
        if e.contains("deadline") || e.contains("timeout") || e.contains("timed out") {
            return false;
        }
        [
            "too many samples",
            // VictoriaMetrics 1.79: "the number of matching timeseries exceeds N; either
            // narrow down the search or increase -search.max* command-line flag values".
            "-search.max",
            "number of matching timeseries exceeds",
            "number of matching unique timeseries exceeds",
            "maximum number of series",
            "maximum number of chunks",
            "series limit",
        ]
        .iter()
        .any(|m| e.contains(m))
    }
}

/// Reads the mesh graph from Prometheus.
#[derive(Clone, Debug)]
pub struct PrometheusSource {
    client: reqwest::Client,
    base: String,
    window: Duration,
    timeout: Duration,
    scope: Scope,
    rules: RulesMode,
    concurrency: usize,
    /// Evaluate every query at this moment (PromQL's `time`) instead of now.
    at: Option<SystemTime>,
}

/// Queries of one build in flight at once: enough to overlap round trips, few enough that a
/// build never takes every core of the Prometheus that linkerd-viz also depends on.
pub const DEFAULT_CONCURRENCY: u16 = 4;

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
    /// With `stats=all` (Prometheus 2.35+); other stores leave it out.
    #[serde(default)]
    stats: Option<ApiStats>,
}

#[derive(Default, Deserialize)]
struct ApiStats {
    #[serde(default)]
    samples: Option<ApiSamples>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiSamples {
    #[serde(default)]
    total_queryable_samples: u64,
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
            scope: Scope::default(),
            rules: RulesMode::default(),
            concurrency: usize::from(DEFAULT_CONCURRENCY),
            at: None,
        })
    }

    /// Whether to read the recording rules.
    #[must_use]
    pub fn with_rules(mut self, mode: RulesMode) -> Self {
        self.rules = mode;
        self
    }

    /// At most `n` queries in flight at once (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The base URL, as given (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The metrics window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Reads only calls into namespace `ns` ([`GraphQueries::into_namespace`]).
    #[must_use]
    pub fn into_namespace(mut self, ns: &str) -> Self {
        self.scope.into_namespace = Some(ns.to_owned());
        self
    }

    /// Evaluates every query at `t` (PromQL's `time` parameter): the window ending then.
    #[must_use]
    pub fn at(mut self, t: SystemTime) -> Self {
        self.at = Some(t);
        self
    }

    /// The queries it sends over the raw series.
    pub fn queries(&self) -> GraphQueries {
        GraphQueries::read(self.window, &self.scope, Reads::Raw)
    }

    /// Runs one instant query.
    pub async fn query(&self, query: &str) -> Result<Vec<Series>, PromError> {
        Ok(self.post("query", query, &self.form(query)).await?.0)
    }

    /// Runs one instant query, with the samples the store loaded for it (0 when it does not
    /// say).
    async fn query_counted(&self, query: &str) -> Result<(Vec<Series>, u64), PromError> {
        let mut form = self.form(query);
        form.push(("stats", std::borrow::Cow::Borrowed("all")));
        self.post("query", query, &form).await
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
        Ok(self.post("query_range", query, &form).await?.0)
    }

    /// POSTs `form` to `/api/v1/<api>` and reads the result of `query`.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        api: &str,
        query: &str,
        form: &[(&'static str, std::borrow::Cow<'_, str>)],
    ) -> Result<(Vec<T>, u64), PromError> {
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
        Ok(parsed.data.map_or_else(Default::default, |d| {
            let samples = d
                .stats
                .and_then(|s| s.samples)
                .map_or(0, |s| s.total_queryable_samples);
            (d.result, samples)
        }))
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

    /// Which series to read this time: the recorded ones when wanted, loaded for this window
    /// and version, evaluated lately and not failing; else the raw ones and why. With when the
    /// data was computed.
    async fn choose(
        &self,
        now: SystemTime,
        stats: &Stats,
    ) -> Result<(Reads, Option<String>, SystemTime), PromError> {
        if self.rules == RulesMode::Off {
            return Ok((Reads::Raw, None, now));
        }
        let w = crate::promql::window(self.window);
        stats.queries.fetch_add(1, Relaxed);
        let why = match self.query(&format!("timestamp({RULES_INFO})")).await {
            // The raw series may still answer: a failed check is a reason, not a failed build.
            Err(e) => format!("the recording rules could not be checked: {e}"),
            Ok(found) => {
                let version = RULES_VERSION.to_string();
                let ours = found
                    .iter()
                    .find(|s| s.label("window") == w && s.label("version") == version);
                match ours.map(|s| (s.number(), s.label("interval"))) {
                    Some((Some(t), every)) => {
                        let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
                        match self.unhealthy(at, now, every, &w).await {
                            None => return Ok((Reads::Recorded, None, at)),
                            Some(why) => why,
                        }
                    }
                    _ if found.is_empty() => "no recording rules are loaded".to_owned(),
                    _ => {
                        let mut seen: Vec<String> = found
                            .iter()
                            .map(|s| format!("v{} ({})", s.label("version"), s.label("window")))
                            .collect();
                        seen.sort();
                        seen.dedup();
                        format!(
                            "the recording rules loaded are {}, not v{RULES_VERSION} ({w})",
                            seen.join(", ")
                        )
                    }
                }
            }
        };
        if self.rules == RulesMode::Require {
            return Err(PromError::RulesRequired {
                reason: why,
                window: w,
            });
        }
        Ok((Reads::Raw, Some(why), now))
    }

    /// Why rules evaluated last at `at`, every `every` (the info series' label), must not be
    /// read at `now`: they stopped being evaluated, or one of them fails (a rule that fails,
    /// e.g. on `--query.max-samples`, leaves its series stale while the info series goes on).
    async fn unhealthy(
        &self,
        at: SystemTime,
        now: SystemTime,
        every: &str,
        w: &str,
    ) -> Option<String> {
        let every = crate::parse_window(every).unwrap_or(Duration::from_secs(60));
        let age = now.duration_since(at).unwrap_or_default();
        // Three evaluations missed, and a scrape's worth of slack.
        if age > every * 3 + Duration::from_secs(15) {
            return Some(format!(
                "the recording rules were last evaluated {}s ago, though every {}",
                age.as_secs(),
                crate::promql::window(every)
            ));
        }
        // Only now can the rules API say how they are doing.
        if self.at.is_some() {
            return None;
        }
        self.failing_rule(&format!("linkerd-mcp-{w}")).await
    }

    /// The first rule of group `group` the rules API reports failing, with its error; `None`
    /// when none fails, or the store has no rules API (VictoriaMetrics, where vmalert has it).
    async fn failing_rule(&self, group: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Rules {
            data: RuleGroups,
        }
        #[derive(Deserialize)]
        struct RuleGroups {
            #[serde(default)]
            groups: Vec<RuleGroup>,
        }
        #[derive(Deserialize)]
        struct RuleGroup {
            name: String,
            #[serde(default)]
            rules: Vec<Rule>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Rule {
            #[serde(default)]
            name: String,
            #[serde(default)]
            health: String,
            #[serde(default)]
            last_error: String,
        }
        let resp = self
            .client
            .get(format!("{}/api/v1/rules", self.base))
            .query(&[("type", "record")])
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let rules: Rules = resp.json().await.ok()?;
        let g = rules.data.groups.into_iter().find(|g| g.name == group)?;
        g.rules.into_iter().find(|r| r.health == "err").map(|r| {
            format!(
                "the recording rule {} fails: {}",
                r.name,
                r.last_error.chars().take(300).collect::<String>()
            )
        })
    }

    /// Runs query `i` of [`GraphQueries::all`]; when the store refuses it as too large, again
    /// for halves of the namespaces, and halves of those, down to one first character.
    async fn run_split(
        &self,
        i: usize,
        whole: &str,
        reads: Reads,
        stats: &Stats,
    ) -> Result<Vec<Series>, PromError> {
        let count = |r: &(Vec<Series>, u64)| {
            stats.series.fetch_add(r.0.len() as u64, Relaxed);
            stats.samples.fetch_add(r.1, Relaxed);
        };
        stats.queries.fetch_add(1, Relaxed);
        match self.query_counted(whole).await {
            Ok(r) => {
                count(&r);
                return Ok(r.0);
            }
            Err(e) if e.too_large() => {}
            Err(e) => return Err(e),
        }
        stats.splits.fetch_add(1, Relaxed);
        let mut rows = Vec::new();
        let (low, high) = Shard::all().split().unwrap_or_else(|| {
            unreachable!("every namespace is more than one first character");
        });
        let mut todo = vec![high, low];
        while let Some(shard) = todo.pop() {
            let scope = Scope {
                shard: Some(shard),
                ..self.scope.clone()
            };
            let queries = GraphQueries::read(self.window, &scope, reads);
            let query = queries.all()[i];
            stats.queries.fetch_add(1, Relaxed);
            match self.query_counted(query).await {
                Ok(r) => {
                    count(&r);
                    rows.extend(r.0);
                }
                Err(e) if e.too_large() => match shard.split() {
                    Some((a, b)) => todo.extend([b, a]),
                    None => {
                        return Err(PromError::TooLarge {
                            shard: shard.to_string(),
                            error: e.to_string(),
                            query: query.to_owned(),
                        });
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Ok(rows)
    }

    /// Runs every query, feeds the samples to `builder` and returns the authorization samples.
    pub async fn collect(&self, builder: &mut GraphBuilder) -> Result<Vec<AuthzSample>, PromError> {
        Ok(self.collect_read(builder, SystemTime::now()).await?.0)
    }

    /// As [`PrometheusSource::collect`], with how the read went.
    pub async fn collect_read(
        &self,
        builder: &mut GraphBuilder,
        now: SystemTime,
    ) -> Result<(Vec<AuthzSample>, ReadReport), PromError> {
        use futures_util::{StreamExt as _, TryStreamExt as _};
        let started = std::time::Instant::now();
        let stats = Stats::default();
        let (reads, fallback, data_time) = self.choose(self.at.unwrap_or(now), &stats).await?;
        let queries = GraphQueries::read(self.window, &self.scope, reads);
        // Owned strings: a stream of futures borrowing from the item trips the compiler's
        // `Send` check in callers (rust-lang/rust#100013).
        let all: Vec<(usize, String)> = queries
            .all()
            .into_iter()
            .map(str::to_owned)
            .enumerate()
            .collect();
        let stats = &stats;
        let mut rows: Vec<Vec<Series>> = futures_util::stream::iter(all)
            .map(|(i, q)| async move { self.run_split(i, &q, reads, stats).await })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let route_rows = rows.split_off(GraphQueries::EDGE_QUERIES);
        let report = ReadReport {
            reads,
            fallback,
            data_time,
            queries: stats.queries.load(Relaxed),
            series: stats.series.load(Relaxed),
            samples: stats.samples.load(Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            splits: stats.splits.load(Relaxed),
        };
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
        ) = <[Vec<Series>; GraphQueries::EDGE_QUERIES]>::try_from(rows)
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
        Ok((samples, report))
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
        let (authz, read) = self.collect_read(&mut b, now).await?;
        Ok(Observation {
            graph: b.finish(now),
            authz,
            read,
        })
    }

    /// Builds a graph (version 0) from the current window, with observed authorization rates.
    pub async fn graph(&self, now: SystemTime) -> Result<MeshGraph, PromError> {
        let Observation {
            mut graph, authz, ..
        } = self.observe(now).await?;
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
    /// How it was read, and what it cost.
    pub read: ReadReport,
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
