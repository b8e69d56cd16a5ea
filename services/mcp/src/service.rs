//! The gRPC `MeshService`: reads from the in-memory graph, never from the store per request.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use futures_util::Stream;
use mesh_model::{GraphDelta, GraphFilter, MeshGraph, MetricTolerance, SourceHealth};
use mesh_proto::{
    EncodedEvent, EncodedGraph,
    pb::{self, mesh_graph_event::Event},
    server::mesh_service_server::MeshService,
};
use prost::bytes::Bytes;
use tokio::sync::{Mutex, mpsc, watch};
use tonic::{Request, Response, Status};

use crate::{
    Caller,
    apply::{Applier, Rpc},
};

/// A filtered graph as an in-process caller gets it.
#[derive(Clone, Debug)]
pub struct GraphView {
    /// The filtered graph (shared: never modified).
    pub graph: Arc<MeshGraph>,
    /// Its sources' health, with the store's while it is down.
    pub sources: Vec<SourceHealth>,
    /// For a graph of a past moment: how it was made.
    pub point: Option<pb::PointInTime>,
}

impl GraphView {
    /// The view as `GetMeshGraph`'s message (for JSON and in-process callers that need it).
    pub fn to_pb(&self) -> pb::MeshGraph {
        let mut out = pb::MeshGraph::from(&*self.graph);
        out.sources = self.sources.iter().map(Into::into).collect();
        out.point_in_time.clone_from(&self.point);
        out
    }
}

/// The latest published graph, shared by every handler.
pub type GraphWatch = watch::Receiver<Option<Arc<MeshGraph>>>;

/// Serves the graph, and policy changes when an [`Applier`] is configured.
#[derive(Clone, Debug)]
pub struct GraphService {
    pub(crate) graph: GraphWatch,
    history: History,
    heartbeat: Duration,
    views: Arc<Mutex<ViewCache>>,
    pub(crate) applier: Result<Applier, String>,
    /// linkerd-viz's Prometheus, for proposals over a window of the caller's choosing.
    pub(crate) prometheus: Option<String>,
    /// Where staged rollouts and approval requests live (shared by replicas on Redis).
    pub(crate) records: mesh_store::Backend,
    /// Bumped whenever this replica changes an approval request: wakes its watchers at once
    /// (other replicas' changes reach them by polling).
    pub(crate) approvals_changed: Arc<watch::Sender<u64>>,
    /// The time rollouts are stamped and gated with.
    pub(crate) clock: crate::rollout::SharedClock,
    /// The collector's change log, for graphs of past moments and diffs.
    pub(crate) past: Option<crate::past::Past>,
}

impl GraphService {
    /// The graph being served, as it changes.
    pub fn graph_watch(&self) -> GraphWatch {
        self.graph.clone()
    }

    /// A service over `graph` (and the deltas that led to it, for resumed watches), sending
    /// watch heartbeats every `heartbeat`.
    pub fn new(graph: GraphWatch, history: History, heartbeat: Duration) -> Self {
        let s = Self {
            graph,
            history,
            heartbeat,
            views: Arc::default(),
            applier: Err("this server was started without a Kubernetes configuration".into()),
            prometheus: None,
            records: mesh_store::Backend::memory(),
            approvals_changed: Arc::new(watch::channel(0).0),
            clock: crate::rollout::SharedClock::default(),
            past: None,
        };
        s.encode_each_version();
        s
    }

    /// Encodes the whole graph as soon as each version is published, so that no reader of it
    /// waits for the encoding (about 25 ms at 10,000 workloads). Runs while the graph does.
    fn encode_each_version(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (svc, mut graph) = (self.clone(), self.graph.clone());
        rt.spawn(async move {
            loop {
                if graph.borrow_and_update().is_some()
                    && let Ok((key, v)) = svc.keyed_view(pb::GetMeshGraphRequest::default()).await
                {
                    // A failure here is a reader's to see: it encodes again and says why.
                    let _ = svc.encoded(&key, &v.graph).await;
                }
                if graph.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Reads linkerd-viz's Prometheus at `url` when a proposal asks for a window (`since`) other
    /// than the served graph's.
    pub fn with_prometheus(mut self, url: Option<String>) -> Self {
        self.prometheus = url;
        self
    }

    /// Reads the collector's change log from `store`, for graphs of past moments (`at`) and
    /// diffs.
    pub fn with_history(mut self, store: mesh_store::Backend) -> Self {
        self.past = Some(crate::past::Past { store });
        self
    }

    /// The metrics window of past graphs: the served graph's, so a past graph reads as the
    /// collector built it then.
    fn window(&self) -> Duration {
        self.graph
            .borrow()
            .as_ref()
            .map_or(Duration::from_secs(60), |g| g.window)
    }

    fn past(&self, what: &str) -> Result<&crate::past::Past, Status> {
        self.past.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "{what}: this mesh-mcp keeps no history (it reads no change log)"
            ))
        })
    }

    /// The graph at `at`, filtered as `r` says.
    async fn view_at(
        &self,
        r: pb::GetMeshGraphRequest,
        at: &pbjson_types::Timestamp,
    ) -> Result<GraphView, Status> {
        let at = instant("at", at)?;
        let f = filter(
            r.namespaces,
            &r.workload,
            r.tls,
            r.min_rps,
            r.include_policies,
        )?;
        let past = self.past("at")?;
        let prom = crate::past::source_at(
            self.prometheus.as_deref(),
            self.window(),
            "at",
            at,
            std::time::SystemTime::now(),
        )
        .await?;
        let timeline = past.timeline(at).await?;
        let p = past.graph_at(&timeline, &prom, at, &f).await?;
        Ok(GraphView {
            sources: p.graph.sources.clone(),
            graph: Arc::new(p.graph),
            point: Some(p.point),
        })
    }

    /// What changed between two moments (`DiffMeshGraph`).
    pub async fn diff(&self, r: pb::DiffMeshGraphRequest) -> Result<pb::MeshGraphDiff, Status> {
        let now = std::time::SystemTime::now();
        let from = r
            .from
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("from: required (the earlier moment)"))
            .and_then(|t| instant("from", t))?;
        let to = match &r.to {
            Some(t) => instant("to", t)?,
            None => now,
        };
        if from >= to {
            return Err(Status::invalid_argument(format!(
                "from ({}) is not before to ({})",
                crate::past::rfc3339(from),
                crate::past::rfc3339(to)
            )));
        }
        let defaults = mesh_model::history::Thresholds::default();
        let pick = |v: f64, field: &str, d: f64| -> Result<f64, Status> {
            if !v.is_finite() || v < 0.0 {
                return Err(Status::invalid_argument(format!(
                    "{field}: {v} is not a threshold (0 for the default)"
                )));
            }
            Ok(if v == 0.0 { d } else { v })
        };
        let thresholds = mesh_model::history::Thresholds {
            success_drop: pick(r.success_drop, "success_drop", defaults.success_drop)?,
            p99_factor: pick(r.p99_factor, "p99_factor", defaults.p99_factor)?,
            rps_share: pick(r.rps_share, "rps_share", defaults.rps_share)?,
            ..defaults
        };
        let f = filter(r.namespaces, "", 0, 0.0, true)?;
        let past = self.past("from")?;
        let window = self.window();
        let prometheus = self.prometheus.as_deref();
        let prom = crate::past::source_at(prometheus, window, "from", from, now).await?;
        crate::past::source_at(prometheus, window, "to", to, now).await?;
        let d = past.diff(&prom, from, to, &f, &thresholds).await?;
        let graph = |g: &MeshGraph| r.include_graphs.then(|| pb::MeshGraph::from(g));
        Ok(pb::MeshGraphDiff {
            from: Some(mesh_proto::timestamp_to_pb(from)),
            to: Some(mesh_proto::timestamp_to_pb(to)),
            changes: d.changes.iter().map(Into::into).collect(),
            from_graph: graph(&d.from.graph),
            to_graph: graph(&d.to.graph),
            from_point: Some(d.from.point),
            to_point: Some(d.to.point),
            notes: d.notes,
        })
    }

    /// Keeps staged rollouts and approval requests in `store` (Redis: shared by replicas, kept
    /// across restarts).
    pub fn with_records(mut self, store: mesh_store::Backend) -> Self {
        self.records = store;
        self
    }

    /// Stamps and gates rollouts with `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn mesh_model::Clock>) -> Self {
        self.clock = crate::rollout::SharedClock(clock);
        self
    }

    /// Least-privilege policy for a namespace or workload from the traffic observed (the served
    /// graph, or Prometheus over `since`), proved against that traffic. Changes nothing.
    pub async fn propose(
        &self,
        r: pb::ProposePolicyRequest,
    ) -> Result<pb::ProposePolicyResponse, Status> {
        use mesh_policy::propose::{Access, Options, Target, propose};
        if !mesh_model::is_dns_label(&r.namespace) {
            return Err(Status::invalid_argument(format!(
                "namespace: {:?} is not a namespace name",
                r.namespace
            )));
        }
        if !r.workload.is_empty() && !mesh_model::is_dns_subdomain(&r.workload) {
            return Err(Status::invalid_argument(format!(
                "workload: {:?} is not a workload name",
                r.workload
            )));
        }
        let applier = self.applier.as_ref().map_err(|why| {
            Status::unavailable(format!("proposing policy needs the cluster: {why}"))
        })?;
        let cluster = applier.ready_cluster().map_err(Status::from)?;
        let mut notes = Vec::new();
        let graph: Arc<MeshGraph> = match r.since {
            Some(since) if since.seconds > 0 => {
                let mut since = Duration::from_secs(u64::try_from(since.seconds).unwrap_or(0));
                if since > Duration::from_secs(90 * 24 * 3600) {
                    return Err(Status::invalid_argument(
                        "since: longer than 90 days; Prometheus keeps 15 days by default",
                    ));
                }
                let url = self.prometheus.as_deref().ok_or_else(|| {
                    Status::failed_precondition(
                        "since: this mesh-mcp reads no Prometheus (--prometheus-url); \
                         leave since out to use the served graph's window",
                    )
                })?;
                // Longer than Prometheus keeps: say so, and use what exists.
                let probe =
                    mesh_prometheus::PrometheusSource::new(url, since, Duration::from_secs(10))
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if let Ok(Some(kept)) = probe.retention().await
                    && kept < since
                {
                    notes.push(format!(
                        "Prometheus keeps {} of history, less than the {} asked for: the proposal rests on the {} that exist",
                        humantime::format_duration(kept),
                        humantime::format_duration(since),
                        humantime::format_duration(kept)
                    ));
                    since = kept;
                }
                // Long windows are one range-free query each: increase() over the window, of
                // the series of calls into the namespace only.
                let source =
                    mesh_prometheus::PrometheusSource::new(url, since, Duration::from_secs(60))
                        .map_err(|e| Status::invalid_argument(e.to_string()))?
                        .into_namespace(&r.namespace);
                let seen = source
                    .observe(std::time::SystemTime::now())
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                let mut g = seen.graph;
                mesh_policy::overlay::apply(
                    &mut g,
                    &cluster,
                    &seen.authz,
                    &mut mesh_policy::overlay::Verdicts::default(),
                );
                Arc::new(g)
            }
            _ => current(&self.graph)?,
        };
        let target = Target {
            namespace: r.namespace.clone(),
            workload: (!r.workload.is_empty()).then(|| r.workload.clone()),
        };
        let access = if r.audit { Access::Audit } else { Access::Deny };
        let options = Options {
            access,
            per_route: r.per_route,
        };
        let p = propose(&graph, &cluster, &target, options)
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(pb::ProposePolicyResponse {
            objects: p
                .objects
                .iter()
                .map(|o| pb::ProposedObject {
                    kind: o.manifest["kind"].as_str().unwrap_or_default().to_owned(),
                    namespace: o.manifest["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    name: o.manifest["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    manifest_json: o.manifest.to_string(),
                    justification: o.why.clone(),
                })
                .collect(),
            needs_action: p
                .needs_action
                .iter()
                .map(|n| pb::CallerNeedingAction {
                    caller: n.caller.clone(),
                    callee: Some((&n.callee).into()),
                    rps: n.rps,
                    advice: n.advice.clone(),
                })
                .collect(),
            newly_denied: p.newly_denied.clone(),
            notes: notes.into_iter().chain(p.notes.iter().cloned()).collect(),
            yaml: p.to_yaml(),
            window: Some(pbjson_types::Duration {
                seconds: i64::try_from(graph.window.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        })
    }

    /// Serves `ApplyAuthorizationPolicy` and `ApplyHTTPRoute` through `applier`, or answers
    /// them `UNAVAILABLE` with the reason it could not be made.
    pub fn with_applier(mut self, applier: Result<Applier, String>) -> Self {
        self.applier = applier;
        self
    }

    /// The graph `GetMeshGraph` would answer `r` with, not encoded: for in-process callers
    /// (MCP tools), which read a few figures of it. Views are shared per filter and version.
    pub async fn view(&self, mut r: pb::GetMeshGraphRequest) -> Result<GraphView, Status> {
        if let Some(at) = r.at.take() {
            return self.view_at(r, &at).await;
        }
        self.keyed_view(r).await.map(|(_, v)| v)
    }

    /// [`Self::view`], and the key its filter is cached under.
    async fn keyed_view(&self, r: pb::GetMeshGraphRequest) -> Result<(String, GraphView), Status> {
        let f = filter(
            r.namespaces,
            &r.workload,
            r.tls,
            r.min_rps,
            r.include_policies,
        )?;
        let g = current(&self.graph)?;
        // An empty answer would read as "no traffic"; a name the graph does not hold is a
        // different answer (a typo, another namespace, a workload with no pods).
        if let Some((ns, name)) = &f.workload {
            // Workloads are ordered by namespace first: only that namespace is looked at.
            let first = mesh_model::WorkloadRef {
                namespace: ns.clone(),
                ..Default::default()
            };
            let known = g
                .workloads
                .range(first..)
                .take_while(|(w, _)| w.namespace == *ns)
                .any(|(w, _)| w.name == *name);
            if !known {
                return Err(Status::not_found(format!(
                    "workload {ns}/{name} is not in the graph: no traffic in the window and not \
                     known to Kubernetes"
                )));
            }
        }
        // Repeated questions (dashboards, agents polling one namespace) share one filtering
        // per version with the watches.
        let key = format!("{f:?}");
        let graph = self.views.lock().await.view(&key, &f, &g);
        let store = self.history.store_health();
        let sources = graph.sources.iter().cloned().chain(store).collect();
        Ok((
            key,
            GraphView {
                graph,
                sources,
                point: None,
            },
        ))
    }

    /// `view` (of filter `key`) encoded without its sources, once per version: a whole graph
    /// at 10,000 workloads is megabytes, and readers ask for the same one again and again.
    async fn encoded(&self, key: &str, view: &Arc<MeshGraph>) -> Result<Bytes, Status> {
        if let Some(b) = self.views.lock().await.encoded(key, view) {
            return Ok(b);
        }
        // Encoded outside the lock and off the async workers: readers of other filters, and
        // every other request, are not held up.
        let v = view.clone();
        let b = tokio::task::spawn_blocking(move || {
            let mut g = pb::MeshGraph::from(&*v);
            g.sources.clear();
            Bytes::from(prost::Message::encode_to_vec(&g))
        })
        .await
        .map_err(|e| Status::internal(format!("encoding the graph: {e}")))?;
        self.views.lock().await.keep_encoded(key, view, b.clone());
        Ok(b)
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
        rpc: Rpc,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let applier = self.applier.as_ref().map_err(|why| {
            Status::unavailable(format!("policy changes are not available: {why}"))
        })?;
        let caller = caller_of(&req);
        applier
            .apply(caller, rpc, req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// What the follower knows beyond the graph itself: the whole-graph deltas most recently
/// applied (at most [`History::KEPT`], and together no larger than the graph), so a watch that
/// resumes from a recent version gets one catch-up delta instead of a whole snapshot; and
/// whether the store can be followed now.
#[derive(Clone, Debug)]
pub struct History {
    /// The deltas, and how many items they hold together.
    deltas: Arc<Mutex<(VecDeque<Arc<GraphDelta>>, usize)>>,
    /// The `store` source while the store cannot be followed; `None` while it can.
    store: Arc<watch::Sender<Option<SourceHealth>>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            deltas: Arc::default(),
            store: Arc::new(watch::channel(None).0),
        }
    }
}

impl History {
    /// Deltas kept.
    pub const KEPT: usize = 1024;

    /// Records that the store cannot be followed: served graphs and heartbeats carry `health`
    /// (source `store`), so readers know what they get may be stale, and since when.
    pub fn store_down(&self, health: SourceHealth) {
        self.store.send_replace(Some(health));
    }

    /// Records that the store is followed again.
    pub fn store_up(&self) {
        self.store.send_if_modified(|h| h.take().is_some());
    }

    /// The `store` source while it is down.
    pub fn store_health(&self) -> Option<SourceHealth> {
        self.store.borrow().clone()
    }

    /// Appends applied deltas that led to a graph of `graph_items` items, dropping the oldest
    /// past [`Self::KEPT`] or once the kept deltas hold more items than the graph (from there a
    /// resuming watch is better served a snapshot, and memory stays within about one graph
    /// however busy the mesh is).
    pub async fn record(&self, deltas: Vec<GraphDelta>, graph_items: usize) {
        let mut guard = self.deltas.lock().await;
        let (h, items) = &mut *guard;
        for d in deltas {
            *items += d.items();
            h.push_back(Arc::new(d));
        }
        let budget = graph_items.max(Self::KEPT);
        while h.len() > Self::KEPT || (*items > budget && h.len() > 1) {
            if let Some(d) = h.pop_front() {
                *items -= d.items();
            }
        }
    }

    /// Forgets everything: continuity was broken (a snapshot reload).
    pub async fn reset(&self) {
        *self.deltas.lock().await = (VecDeque::new(), 0);
    }

    /// The unbroken chain of deltas from `from` to `to` in `epoch`, if all of it is kept.
    async fn between(&self, epoch: u64, from: u64, to: u64) -> Option<Vec<Arc<GraphDelta>>> {
        let guard = self.deltas.lock().await;
        let h = &guard.0;
        let start = h
            .iter()
            .position(|d| d.epoch == epoch && d.from_version == from)?;
        let mut out = Vec::new();
        let mut at = from;
        for d in h.iter().skip(start) {
            if at == to {
                break;
            }
            if d.epoch != epoch || d.from_version != at {
                return None;
            }
            at = d.to_version;
            out.push(d.clone());
        }
        (at == to).then_some(out)
    }
}

/// Filtered views and their deltas, shared by every watch with the same filter: thousands of
/// watchers of one namespace cost one filtering and one diff per version, and one copy of the
/// view, instead of one each.
///
/// Only views of the current version are kept, and together they hold at most twice the
/// graph's edges: a caller varying its filter (any `min_rps`) cannot make the cache grow past
/// that; views beyond it are computed and not kept.
#[derive(Debug, Default)]
struct ViewCache {
    /// (epoch, version) of the cached views.
    at: (u64, u64),
    views: HashMap<String, Arc<MeshGraph>>,
    cached_edges: usize,
    deltas: HashMap<String, Vec<CachedDelta>>,
    /// Encoded views of this version (without their sources), and their total size.
    encoded: HashMap<String, Bytes>,
    encoded_bytes: usize,
}

/// Most bytes of encoded views kept per version (a whole graph at 10,000 workloads is 6 MB).
const MAX_ENCODED_BYTES: usize = 128 << 20;

/// (epoch, from version, to version, delta, the delta as an encoded event) of one filtered view.
type CachedDelta = (u64, u64, u64, Arc<GraphDelta>, EncodedEvent);

/// Most filters kept per version (distinct filters are few in practice).
const MAX_FILTERS: usize = 1_000;

impl ViewCache {
    fn view(&mut self, key: &str, f: &GraphFilter, g: &MeshGraph) -> Arc<MeshGraph> {
        if let Some(v) = self.views.get(key)
            && (v.epoch, v.version) == (g.epoch, g.version)
        {
            return v.clone();
        }
        if (g.epoch, g.version) != self.at {
            self.at = (g.epoch, g.version);
            self.views.clear();
            self.deltas.clear();
            self.cached_edges = 0;
            self.encoded.clear();
            self.encoded_bytes = 0;
        }
        let v = Arc::new(f.apply(g));
        let budget = 2 * g.edges.len().max(1024);
        if self.views.len() < MAX_FILTERS && self.cached_edges + v.edges.len() <= budget {
            self.cached_edges += v.edges.len();
            self.views.insert(key.to_owned(), v.clone());
        }
        v
    }

    /// The encoded view of filter `key`, if it is the encoding of `view`'s version.
    fn encoded(&self, key: &str, view: &MeshGraph) -> Option<Bytes> {
        (self.at == (view.epoch, view.version))
            .then(|| self.encoded.get(key).cloned())
            .flatten()
    }

    /// Keeps the encoding of `view` while it is current and the budget allows.
    fn keep_encoded(&mut self, key: &str, view: &MeshGraph, b: Bytes) {
        if self.at == (view.epoch, view.version)
            && self.encoded_bytes + b.len() <= MAX_ENCODED_BYTES
            && !self.encoded.contains_key(key)
        {
            self.encoded_bytes += b.len();
            self.encoded.insert(key.to_owned(), b);
        }
    }

    /// The delta of filter `key` from `from` to `to`, stated as starting at version
    /// `delivered` (what the stream's client holds: `from`'s version, or an older one whose view
    /// was the same), and the same as an encoded event: computed and encoded once, whatever the
    /// number of streams watching that filter from that version.
    fn delta(
        &mut self,
        key: &str,
        delivered: u64,
        from: &MeshGraph,
        to: &MeshGraph,
    ) -> (Arc<GraphDelta>, EncodedEvent) {
        let list = self.deltas.entry(key.to_owned()).or_default();
        if let Some((.., d, e)) = list
            .iter()
            .find(|(e, f, t, ..)| (*e, *f, *t) == (to.epoch, delivered, to.version))
        {
            return (d.clone(), e.clone());
        }
        let mut d = GraphDelta::between(from, to, &MetricTolerance::EXACT);
        d.from_version = delivered;
        let d = Arc::new(d);
        let e = EncodedEvent::shared(&event(Event::Delta(pb::GraphDelta::from(&*d))));
        list.push((to.epoch, delivered, to.version, d.clone(), e.clone()));
        if list.len() > 4 {
            list.remove(0);
        }
        (d, e)
    }
}

fn filter(
    namespaces: Vec<String>,
    workload: &str,
    tls: i32,
    min_rps: f64,
    include_policies: bool,
) -> Result<GraphFilter, Status> {
    let workload = if workload.is_empty() {
        None
    } else {
        let (ns, name) = workload
            .split_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| {
                Status::invalid_argument(format!("workload {workload:?}: want namespace/name"))
            })?;
        Some((ns.to_owned(), name.to_owned()))
    };
    let tls = pb::TlsStatus::try_from(tls)
        .map_err(|_| Status::invalid_argument(format!("tls: {tls} is not a TlsStatus")))?;
    if !(min_rps.is_finite() && min_rps >= 0.0) {
        return Err(Status::invalid_argument(format!(
            "min_rps: {min_rps} must be 0 or more"
        )));
    }
    if let Some(bad) = namespaces.iter().find(|n| n.is_empty() || n.contains('/')) {
        return Err(Status::invalid_argument(format!(
            "namespaces: {bad:?} is not a namespace name"
        )));
    }
    Ok(GraphFilter {
        namespaces,
        workload,
        tls: mesh_proto::tls_status(tls),
        min_rps,
        include_policies,
    })
}

/// A caller's timestamp as a time; `INVALID_ARGUMENT` naming `field` when out of range.
fn instant(field: &str, t: &pbjson_types::Timestamp) -> Result<std::time::SystemTime, Status> {
    mesh_proto::timestamp_from_pb(t).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

pub(crate) fn current(graph: &GraphWatch) -> Result<Arc<MeshGraph>, Status> {
    graph.borrow().clone().ok_or_else(|| {
        Status::unavailable(
            "no graph published yet: is a collector running and writing to this store?",
        )
    })
}

fn event(e: Event) -> pb::MeshGraphEvent {
    pb::MeshGraphEvent { event: Some(e) }
}

/// `sources` plus the `store` source while it is down.
fn with_store(sources: &[SourceHealth], store: Option<&SourceHealth>) -> Vec<pb::SourceHealth> {
    sources.iter().chain(store).map(Into::into).collect()
}

fn heartbeat(g: &MeshGraph, store: Option<&SourceHealth>) -> pb::MeshGraphEvent {
    heartbeat_at(g, g.version, store)
}

/// A heartbeat with `g`'s sources at position (`g`'s epoch, `version`): the version a stream
/// delivered, which is older than `g` when the versions since changed nothing it sees.
fn heartbeat_at(g: &MeshGraph, version: u64, store: Option<&SourceHealth>) -> pb::MeshGraphEvent {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    event(Event::Heartbeat(pb::Heartbeat {
        position: Some(pb::GraphPosition {
            epoch: g.epoch,
            version,
        }),
        sent_at: Some(pbjson_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(0),
            nanos: 0,
        }),
        sources: with_store(&g.sources, store),
    }))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<EncodedEvent, Status>> + Send>>;

/// The authenticated caller of a request, with the agent an agent front end names
/// ([`crate::auth::AGENT_HEADER`]).
fn caller_of<T>(req: &Request<T>) -> Option<Caller> {
    let mut caller = req.extensions().get::<Caller>().cloned()?;
    if let Some(agent) = req
        .metadata()
        .get(crate::auth::AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::agent_name)
    {
        caller.agent = Some(agent);
    }
    Some(caller)
}

#[tonic::async_trait]
impl MeshService for GraphService {
    async fn get_mesh_graph(
        &self,
        req: Request<pb::GetMeshGraphRequest>,
    ) -> Result<Response<EncodedGraph>, Status> {
        let req = req.into_inner();
        if req.at.is_some() {
            // A past graph is built for its one answer: nothing to share.
            let v = self.view(req).await?;
            let bytes = prost::Message::encode_to_vec(&v.to_pb());
            return Ok(Response::new(EncodedGraph::new(bytes.into(), Vec::new())));
        }
        let (key, v) = self.keyed_view(req).await?;
        let graph = self.encoded(&key, &v.graph).await?;
        let sources = v.sources.iter().map(Into::into).collect();
        Ok(Response::new(EncodedGraph::new(graph, sources)))
    }

    async fn diff_mesh_graph(
        &self,
        req: Request<pb::DiffMeshGraphRequest>,
    ) -> Result<Response<pb::MeshGraphDiff>, Status> {
        self.diff(req.into_inner()).await.map(Response::new)
    }

    async fn apply_authorization_policy(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.apply(req, Rpc::AuthorizationPolicy).await
    }

    async fn apply_http_route(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.apply(req, Rpc::HttpRoute).await
    }

    async fn propose_policy(
        &self,
        req: Request<pb::ProposePolicyRequest>,
    ) -> Result<Response<pb::ProposePolicyResponse>, Status> {
        self.propose(req.into_inner()).await.map(Response::new)
    }

    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller_of(&req);
        self.start_rollout(caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_rollout(
        &self,
        req: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        GraphService::get_rollout(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_rollouts(
        &self,
        _req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        GraphService::list_rollouts(self).await.map(Response::new)
    }

    async fn request_approval(
        &self,
        req: Request<pb::RequestApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let caller = caller_of(&req);
        GraphService::request_approval(self, caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_approval(
        &self,
        req: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        GraphService::get_approval(self, &req.get_ref().id)
            .await
            .map(Response::new)
    }

    async fn list_approvals(
        &self,
        req: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        GraphService::list_approvals(self, req.get_ref())
            .await
            .map(Response::new)
    }

    async fn approve(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let caller = caller_of(&req);
        GraphService::approve(self, caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reject(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let caller = caller_of(&req);
        GraphService::reject(self, caller, req.into_inner())
            .await
            .map(Response::new)
    }

    type WatchApprovalsStream = crate::approvals::ApprovalStream;

    async fn watch_approvals(
        &self,
        req: Request<pb::WatchApprovalsRequest>,
    ) -> Result<Response<Self::WatchApprovalsStream>, Status> {
        Ok(Response::new(GraphService::watch_approvals(
            self,
            req.into_inner(),
        )))
    }

    async fn advance_rollout(
        &self,
        req: Request<pb::AdvanceRolloutRequest>,
    ) -> Result<Response<pb::AdvanceRolloutResponse>, Status> {
        let caller = caller_of(&req);
        self.advance_rollout(caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn explain_access(
        &self,
        req: Request<pb::ExplainAccessRequest>,
    ) -> Result<Response<pb::PolicyVerdict>, Status> {
        // The applier holds the cluster view; without Kubernetes there is no policy to read.
        let applier = self.applier.as_ref().map_err(|why| {
            Status::unavailable(format!("explaining access needs the cluster: {why}"))
        })?;
        applier
            .explain(req.get_ref())
            .map(Response::new)
            .map_err(Status::from)
    }

    type WatchMeshGraphStream = EventStream;

    async fn watch_mesh_graph(
        &self,
        req: Request<pb::WatchMeshGraphRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let f = filter(
            r.namespaces,
            &r.workload,
            r.tls,
            r.min_rps,
            r.include_policies,
        )?;
        let g = current(&self.graph)?;
        let resume = r.resume_from.unwrap_or_default();
        if resume.epoch == g.epoch && resume.version > g.version {
            return Err(Status::invalid_argument(format!(
                "resume_from version {} is ahead of the current version {} in epoch {}",
                resume.version, g.version, g.epoch
            )));
        }
        // A small buffer: a slow consumer holds the sender back, and the graph watch coalesces
        // versions meanwhile, so the next send is one delta covering everything it missed.
        let (tx, rx) = mpsc::channel(8);
        let mut graph = self.graph.clone();
        let every = self.heartbeat;
        let views = self.views.clone();
        let history = self.history.clone();
        let key = format!("{f:?}");
        tokio::spawn(async move {
            // The newest view this stream has seen, and the version its client holds: older
            // than `last` when the versions since changed nothing this stream sees (they were
            // not sent, so the next delta starts from `delivered`).
            let mut last = views.lock().await.view(&key, &f, &g);
            let mut delivered = last.version;
            let kept = if resume.epoch == g.epoch && resume.version > 0 {
                history.between(g.epoch, resume.version, g.version).await
            } else {
                None
            };
            let first =
                match kept {
                    _ if (resume.epoch, resume.version) == (g.epoch, g.version) => {
                        heartbeat(&g, history.store_health().as_ref())
                    }
                    // One delta from the resume point, computed on this stream's filtered view.
                    Some(deltas) => event(Event::Delta(pb::GraphDelta::from(
                        &GraphDelta::catch_up(resume.version, deltas.iter().map(|d| &**d), &last),
                    ))),
                    // Another epoch, or older than what is kept: continuity cannot be proven.
                    None => event(Event::Snapshot(pb::MeshGraph::from(&*last))),
                };
            drop(g);
            if tx.send(Ok(EncodedEvent::own(first))).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut store = history.store.subscribe();
            loop {
                tokio::select! {
                    changed = graph.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let Some(g) = graph.borrow_and_update().clone() else { continue };
                        let (view, delta) = {
                            let mut cache = views.lock().await;
                            let view = cache.view(&key, &f, &g);
                            // Whether anything changed is asked of the delta every stream
                            // at `last` shares; only one to send is stated from `delivered`.
                            let delta = (view.epoch == last.epoch).then(|| {
                                let shared = cache.delta(&key, last.version, &last, &view);
                                let empty = shared.0.is_topology_empty() && shared.0.sources == last.sources;
                                if empty || delivered == last.version {
                                    shared
                                } else {
                                    cache.delta(&key, delivered, &last, &view)
                                }
                            });
                            (view, delta)
                        };
                        let msg = match delta {
                            None => EncodedEvent::own(event(Event::Snapshot(pb::MeshGraph::from(&*view)))),
                            // Nothing this stream sees changed: send nothing; its client still
                            // holds `delivered` (a client checks `from_version` against it).
                            Some((d, _)) if d.is_topology_empty() && d.sources == last.sources => {
                                last = view;
                                continue;
                            }
                            // The same bytes for every stream of this filter.
                            Some((_, encoded)) => encoded,
                        };
                        delivered = view.version;
                        last = view;
                        if tx.send(Ok(msg)).await.is_err() {
                            break;
                        }
                    }
                    // The store going down or coming back is news: a heartbeat says so at once.
                    r = store.changed() => {
                        if r.is_err() {
                            break;
                        }
                        let health = store.borrow_and_update().clone();
                        let beat = EncodedEvent::own(heartbeat_at(&last, delivered, health.as_ref()));
                        if tx.send(Ok(beat)).await.is_err() {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        // The position this stream has delivered, not the newest graph: a
                        // client resuming from it must not skip a delta still on its way.
                        let health = history.store_health();
                        let beat = EncodedEvent::own(heartbeat_at(&last, delivered, health.as_ref()));
                        if tx.send(Ok(beat)).await.is_err() {
                            break;
                        }
                    }
                    () = tx.closed() => break,
                }
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    /// The delta from `from` to `from + 1` in epoch 1, removing `n` edges.
    fn delta(from: u64, n: usize) -> GraphDelta {
        let edge = |i: usize| mesh_model::EdgeKey {
            src: mesh_model::WorkloadRef::default(),
            dst: mesh_model::Destination::Authority(format!("host-{i}:80")),
            protocol: mesh_model::Protocol::Http,
        };
        GraphDelta {
            from_version: from,
            to_version: from + 1,
            epoch: 1,
            generated_at: std::time::SystemTime::UNIX_EPOCH,
            upserted_workloads: Vec::new(),
            removed_workloads: Vec::new(),
            upserted_edges: Vec::new(),
            removed_edges: (0..n).map(edge).collect(),
            upserted_policies: Vec::new(),
            removed_policies: Vec::new(),
            sources: Vec::new(),
        }
    }

    #[tokio::test]
    async fn history_holds_no_more_than_the_graph_it_leads_to() {
        let h = History::default();
        // 300 deltas of 10 items leading to a graph of 2,000: the newest 200 are kept.
        h.record((0..300).map(|v| delta(v, 10)).collect(), 2_000)
            .await;
        assert_eq!(h.deltas.lock().await.0.len(), 200);
        assert_eq!(h.deltas.lock().await.1, 2_000);
        assert!(h.between(1, 99, 300).await.is_none(), "older than kept");
        assert_eq!(h.between(1, 100, 300).await.unwrap().len(), 200);
        // Small deltas: the count bound applies (and a one-delta history is always kept).
        h.reset().await;
        h.record((0..2_000).map(|v| delta(v, 0)).collect(), 10)
            .await;
        assert_eq!(h.deltas.lock().await.0.len(), History::KEPT);
        h.reset().await;
        h.record(vec![delta(0, 5_000)], 10).await;
        assert_eq!(h.deltas.lock().await.0.len(), 1, "the newest delta is kept");
    }
}
