//! The mesh at a past moment and what changed between two: `GetMeshGraph` with `at` and
//! `DiffMeshGraph`. Metrics are Prometheus evaluated at that moment (PromQL's `time`);
//! workloads, policy objects and so verdicts are the collector's change log replayed back to
//! it (`mesh_policy::history`), joined exactly as the collector joins a live build.
//!
//! A graph-level change (an edge that appeared, lost mTLS, turned verdict or regressed) is
//! dated by bisection: graphs between the two moments are built until the change's first
//! appearance is known to within [`resolution`]; changes that appear together share every
//! probe.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::{
    GraphFilter, MeshGraph, SourceHealth,
    history::{self, Change, ChangeKind, Thresholds},
};
use mesh_policy::history::Record;
use mesh_proto::pb;
use mesh_store::{Backend, HistoryStore};
use tonic::Status;

/// How far in the future a moment may be and still count as now (clock skew).
const SKEW: Duration = Duration::from_secs(5);
/// Most changes read from the log to replay back to a moment.
pub(crate) const MAX_REPLAY: usize = 200_000;
/// Changes read per store call.
const PAGE: usize = 5_000;
/// Most graphs built to date the changes of one diff, and the most time spent building them:
/// what is left undated then is dated at the end of the span, and the answer says so.
const MAX_PROBES: usize = 48;
const PROBE_BUDGET: Duration = Duration::from_secs(60);
/// Longest a Prometheus query of a past graph may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where past graphs come from.
#[derive(Clone, Debug)]
pub(crate) struct Past {
    /// The change log.
    pub(crate) store: Backend,
}

/// `RFC 3339` for messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A graph at a moment and how it was made.
pub(crate) struct PastGraph {
    /// The graph, filtered.
    pub(crate) graph: MeshGraph,
    /// How exact each part is.
    pub(crate) point: pb::PointInTime,
}

/// What the change log says from one moment on, read once for every graph built from it.
pub(crate) struct Timeline {
    /// Since when the log is complete (`None`: no log).
    start: Option<SystemTime>,
    /// The objects as last logged.
    current: HashMap<String, String>,
    /// Every change after the moment it was read from, oldest first, with its time.
    later: Vec<(SystemTime, Record)>,
}

impl Timeline {
    /// The objects as they were at `at` (not before the moment the timeline was read from).
    fn objects_at(&self, at: SystemTime) -> Vec<serde_json::Value> {
        let undo: Vec<Record> = self
            .later
            .iter()
            .filter(|(t, _)| *t > at)
            .map(|(_, r)| r.clone())
            .collect();
        mesh_policy::history::objects_before(self.current.clone(), &undo)
    }
}

/// Refuses a moment in the future or before Prometheus's retention.
async fn check_moment(
    what: &str,
    at: SystemTime,
    now: SystemTime,
    prom: &mesh_prometheus::PrometheusSource,
) -> Result<(), Status> {
    if at > now + SKEW {
        return Err(Status::invalid_argument(format!(
            "{what}: {} is in the future (it is {} now)",
            rfc3339(at),
            rfc3339(now)
        )));
    }
    if let Ok(Some(kept)) = prom.retention().await
        && now.duration_since(at).unwrap_or_default() > kept
    {
        return Err(Status::invalid_argument(format!(
            "{what}: {} is before Prometheus's retention (it keeps {}: nothing before {})",
            rfc3339(at),
            humantime::format_duration(kept),
            rfc3339(now - kept)
        )));
    }
    Ok(())
}

impl Past {
    /// Every object change after `after`, oldest first, with its time.
    async fn changes_after(&self, after: SystemTime) -> Result<Vec<(SystemTime, Record)>, Status> {
        let mut from = mesh_store::history::id_after(after);
        let mut out = Vec::new();
        loop {
            let page = self
                .store
                .changes_after(&from, PAGE)
                .await
                .map_err(|e| Status::unavailable(format!("the change log: {e}")))?;
            let n = page.len();
            for c in page {
                let r: Record = serde_json::from_str(&c.record).map_err(|e| {
                    Status::internal(format!("change {} cannot be read: {e}", c.id))
                })?;
                out.push((c.at, r));
                from = c.id;
            }
            if out.len() > MAX_REPLAY {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_REPLAY} changes since {}: too far back to replay; ask for \
                     a later moment",
                    rfc3339(after)
                )));
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// The change log from `from` on.
    pub(crate) async fn timeline(&self, from: SystemTime) -> Result<Timeline, Status> {
        let unavailable =
            |e: mesh_store::StoreError| Status::unavailable(format!("the change log: {e}"));
        let start = self.store.history_start().await.map_err(unavailable)?;
        // The objects first: a change appended after this read is read below too, and undoing
        // it from the objects read here gives the same state as before it.
        let current: HashMap<String, String> = self
            .store
            .logged_objects()
            .await
            .map_err(unavailable)?
            .into_iter()
            .collect();
        let later = self.changes_after(from).await?;
        Ok(Timeline {
            start,
            current,
            later,
        })
    }

    /// The graph at `at` (a moment already checked, not before the timeline's), namespaces
    /// filtered as `filter` says.
    pub(crate) async fn graph_at(
        &self,
        timeline: &Timeline,
        prom: &mesh_prometheus::PrometheusSource,
        at: SystemTime,
        filter: &GraphFilter,
    ) -> Result<PastGraph, Status> {
        let start = timeline.start;
        let objects = timeline.objects_at(at);
        let (objects_exact, objects_note) = match start {
            None => (
                false,
                "no change log (no collector has logged this cluster): workloads and verdicts \
                 unknown"
                    .to_owned(),
            ),
            Some(s) if s <= at => (
                true,
                format!(
                    "workloads and policy replayed from the change log (complete since {})",
                    rfc3339(s)
                ),
            ),
            Some(s) => (
                false,
                format!(
                    "approximate: the change log starts at {}; workloads and policy are as of \
                     then, earlier changes are not known",
                    rfc3339(s)
                ),
            ),
        };
        let health = SourceHealth {
            source: "kubernetes".into(),
            ok: start.is_some(),
            last_success: Some(at),
            error: if start.is_some() {
                String::new()
            } else {
                objects_note.clone()
            },
            detail: String::new(),
        };
        let (cluster, _problems) = mesh_policy::cluster::Cluster::from_objects(objects, health);
        let cluster = Arc::new(cluster);
        let read = tokio::time::timeout(QUERY_TIMEOUT, prom.observe(at))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "Prometheus did not answer within {}s",
                    QUERY_TIMEOUT.as_secs()
                ))
            })?;
        let mut metrics_note = format!(
            "Prometheus evaluated at {} over the {} before it",
            rfc3339(at),
            humantime::format_duration(prom.window())
        );
        let (graph, authz, detail) = match read {
            Ok(seen) => (seen.graph, seen.authz, seen.read.detail(prom.window())),
            // Before the mesh had traffic (or Prometheus scraped it): an empty mesh then, which
            // is what a diff from that moment should start from.
            Err(mesh_prometheus::PromError::NoData { .. }) => {
                metrics_note = format!(
                    "Prometheus holds no linkerd-proxy traffic in the {} before {}: no traffic \
                     then, or not scraped yet",
                    humantime::format_duration(prom.window()),
                    rfc3339(at)
                );
                (
                    MeshGraph::empty(prom.window(), at),
                    Vec::new(),
                    String::new(),
                )
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let mut g = graph;
        g.generated_at = at;
        mesh_policy::overlay::apply(
            &mut g,
            &cluster,
            &authz,
            &mut mesh_policy::overlay::Verdicts::default(),
        );
        g.sources = vec![
            SourceHealth {
                source: "prometheus".into(),
                ok: true,
                last_success: Some(at),
                error: String::new(),
                detail,
            },
            cluster.health.clone(),
        ];
        let graph = filter.apply(&g);
        let point = pb::PointInTime {
            at: Some(mesh_proto::timestamp_to_pb(at)),
            objects_exact,
            objects_note,
            history_start: start.map(mesh_proto::timestamp_to_pb),
            metrics_note,
        };
        Ok(PastGraph { graph, point })
    }

    /// What changed from `from` to `to` (moments already checked, `from < to`).
    pub(crate) async fn diff(
        &self,
        prom: &mesh_prometheus::PrometheusSource,
        from: SystemTime,
        to: SystemTime,
        filter: &GraphFilter,
        t: &Thresholds,
    ) -> Result<Diff, Status> {
        // One diff at a time per replica: each reads Prometheus tens of times.
        let _turn = DIFFS
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let timeline = self.timeline(from).await?;
        let (at_from, at_to) = (prom.clone().at(from), prom.clone().at(to));
        let (a, b) = tokio::try_join!(
            self.graph_at(&timeline, &at_from, from, filter),
            self.graph_at(&timeline, &at_to, to, filter)
        )?;
        let mut changes: Vec<Change> = timeline
            .later
            .iter()
            // Pods come and go with every rollout: their workloads' changes say it. What
            // the log listed when it began existed already: no change.
            .filter(|(at, r)| {
                *at <= to && r.kind != "Pod" && r.op != "listed" && in_namespaces(r, filter)
            })
            .map(|(at, r)| Change {
                at: *at,
                what: ChangeKind::Object(Box::new(r.to_change())),
            })
            .collect();
        let found = history::graph_changes(&a.graph, &b.graph, t);
        let mut probes = Probes {
            graphs: BTreeMap::new(),
            until: Instant::now() + PROBE_BUDGET,
        };
        let mut undated = 0;
        for c in found {
            let at = match self
                .first_seen(
                    &timeline,
                    prom,
                    &c,
                    &a.graph,
                    (from, to),
                    filter,
                    t,
                    &mut probes,
                )
                .await?
            {
                Some(at) => at,
                None => {
                    undated += 1;
                    to
                }
            };
            changes.push(Change { at, what: c });
        }
        history::sort_changes(&mut changes);
        let mut notes = Vec::new();
        if undated > 0 {
            notes.push(format!(
                "{undated} edge changes are dated at the end of the span: dating them would have \
                 taken more than {} graphs or {}s of Prometheus reads; narrow the span or the \
                 namespaces",
                MAX_PROBES,
                PROBE_BUDGET.as_secs()
            ));
        }
        Ok(Diff {
            changes,
            from: a,
            to: b,
            notes,
        })
    }

    /// When `c` (true at `to`, not at `from`) first held, to within [`resolution`]; `None`
    /// when this diff's probes are spent before it is known.
    #[allow(clippy::too_many_arguments, reason = "one bisection's whole context")]
    async fn first_seen(
        &self,
        timeline: &Timeline,
        prom: &mesh_prometheus::PrometheusSource,
        c: &ChangeKind,
        before: &MeshGraph,
        (from, to): (SystemTime, SystemTime),
        filter: &GraphFilter,
        t: &Thresholds,
        probes: &mut Probes,
    ) -> Result<Option<SystemTime>, Status> {
        let step = resolution(to.duration_since(from).unwrap_or_default());
        let (mut lo, mut hi) = (from, to);
        while hi.duration_since(lo).unwrap_or_default() > step {
            let mid = lo + hi.duration_since(lo).unwrap_or_default() / 2;
            // Probes at whole seconds, so changes bisecting the same span share them.
            let mid = SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    mid.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                );
            if mid <= lo || mid >= hi {
                break;
            }
            let g = match probes.graphs.get(&mid) {
                Some(g) => g.clone(),
                None if probes.graphs.len() >= MAX_PROBES || Instant::now() >= probes.until => {
                    return Ok(None);
                }
                None => {
                    let at_mid = prom.clone().at(mid);
                    let g = Arc::new(self.graph_at(timeline, &at_mid, mid, filter).await?.graph);
                    probes.graphs.insert(mid, g.clone());
                    g
                }
            };
            if history::holds(c, before, &g, t) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(Some(hi))
    }
}

/// The graphs built to date one diff's changes, and until when more may be built.
struct Probes {
    graphs: BTreeMap<SystemTime, Arc<MeshGraph>>,
    until: Instant,
}

/// What changed between two moments, the graphs at both, and what the answer should say.
pub(crate) struct Diff {
    /// Every change, earliest first.
    pub(crate) changes: Vec<Change>,
    /// The graph at the start.
    pub(crate) from: PastGraph,
    /// The graph at the end.
    pub(crate) to: PastGraph,
    /// What is approximate about the answer.
    pub(crate) notes: Vec<String>,
}

/// Diffs running at once in this process.
static DIFFS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How finely a diff over `span` dates graph-level changes: a 64th of it, at least a second.
pub(crate) fn resolution(span: Duration) -> Duration {
    (span / 64).max(Duration::from_secs(1))
}

fn in_namespaces(r: &Record, f: &GraphFilter) -> bool {
    f.namespaces.is_empty()
        || f.namespaces.contains(&r.namespace)
        || (r.kind == "Namespace" && f.namespaces.contains(&r.name))
}

/// Checks `at` for a past graph and the source that reads it.
pub(crate) async fn source_at(
    prometheus: Option<&str>,
    window: Duration,
    what: &str,
    at: SystemTime,
    now: SystemTime,
) -> Result<mesh_prometheus::PrometheusSource, Status> {
    let url = prometheus.ok_or_else(|| {
        Status::failed_precondition(format!(
            "{what}: this mesh-mcp reads no Prometheus (--prometheus-url): it can serve only \
             the current graph"
        ))
    })?;
    let prom = mesh_prometheus::PrometheusSource::new(url, window, QUERY_TIMEOUT)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    check_moment(what, at, now, &prom).await?;
    Ok(prom.at(at))
}

/// The span of a diff from a reader's words: `since` (a duration back from `now`) or `from`,
/// and `to` (default now); moments in RFC 3339 or a duration ago (`-1h`).
pub(crate) fn span(
    since: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now: SystemTime,
) -> Result<(pbjson_types::Timestamp, Option<pbjson_types::Timestamp>), String> {
    let from = match (
        since.filter(|s| !s.is_empty()),
        from.filter(|f| !f.is_empty()),
    ) {
        (Some(_), Some(_)) => return Err("give since or from, not both".into()),
        (None, None) => return Err("give since (e.g. 1h) or from".into()),
        (Some(s), None) => mesh_proto::timestamp_to_pb(
            now - mesh_telemetry::parse_since(s).map_err(|e| format!("since: {e}"))?,
        ),
        (None, Some(f)) => moment("from", f, now)?,
    };
    let to = to
        .filter(|t| !t.is_empty())
        .map(|t| moment("to", t, now))
        .transpose()?;
    Ok((from, to))
}

/// A moment in a reader's words (RFC 3339, or a duration ago such as `-1h`) as a wire
/// timestamp; the error names `field`.
pub(crate) fn moment(
    field: &str,
    v: &str,
    now: SystemTime,
) -> Result<pbjson_types::Timestamp, String> {
    mesh_telemetry::parse_moment(v, now)
        .map(mesh_proto::timestamp_to_pb)
        .map_err(|e| format!("{field}: {e}"))
}
