//! Alerts from `WatchMeshGraph`: an edge turns plaintext, a workload gets a new caller, an
//! edge stays below a success rate, authorization denies appear. Each alert is sent once and
//! followed by one "resolved" message: which alerts are active lives in the store, so a
//! second replica or a restarted one never repeats them. Of several replicas, the one holding
//! the alert lease sends.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use mesh_model::{Decision, Destination, MeshGraph, TlsStatus};
use mesh_proto::pb;
use mesh_store::{AlertStore, GraphStore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    command::AlertFilter,
    core::Mcp,
    mcp_error::McpError,
    metrics::Metrics,
    reply::{Reply, Tone},
};

/// What triggers alerts.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// An edge below this success rate ...
    pub failing_below: f64,
    /// ... for this long is failing.
    pub failing_for: Duration,
    /// At most this many messages per channel per minute; the rest are counted and reported.
    pub max_per_minute: usize,
    /// The alert lease: held this long without renewal.
    pub lease_ttl: Duration,
    /// Renewed this often.
    pub lease_renew: Duration,
    /// This replica's name in the lease.
    pub holder: String,
}

/// An active condition, as stored (its JSON is the member of the `active` set).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Condition {
    /// `plaintext`, `failing`, `denied` (proxies refused requests), `policy-denies` (the policy
    /// now refuses an edge with traffic; no refusal observed yet). `new-caller` alerts are never
    /// active: they happen.
    pub kind: String,
    /// What it is about: `emojivoto/web -> emojivoto/voting (grpc)`.
    pub subject: String,
    /// The namespaces involved (for channel filters).
    pub namespaces: Vec<String>,
}

/// An alert to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The condition.
    pub condition: Condition,
    /// Facts at the time (rate, reason).
    pub detail: String,
    /// A resolution rather than a firing.
    pub resolved: bool,
}

impl Alert {
    /// The chat message.
    pub fn reply(&self, held_back: usize) -> Reply {
        let c = &self.condition;
        let what = match c.kind.as_str() {
            "plaintext" => "edge is not mTLS",
            "failing" => "edge is failing",
            "denied" => "requests denied by policy",
            "policy-denies" => "policy now denies this edge (no denied traffic observed yet)",
            "new-caller" => "new caller",
            _ => "alert",
        };
        let mut r = if self.resolved {
            let what = if c.kind == "policy-denies" {
                "policy no longer denies this edge"
            } else {
                what
            };
            let mut r = Reply::new(format!("Resolved: {what}: {}", c.subject));
            r.tone = Tone::Good;
            r
        } else {
            let mut r = Reply::new(format!("Alert: {what}: {}", c.subject));
            r.tone = if c.kind == "new-caller" || c.kind == "policy-denies" {
                Tone::Info
            } else {
                Tone::Warn
            };
            r
        };
        r = r.field("Kind", c.kind.clone());
        if !self.detail.is_empty() {
            r = r.text(self.detail.clone());
        }
        if held_back > 0 {
            r = r.note(format!(
                "{held_back} alert messages were held back by this channel's rate limit"
            ));
        }
        r
    }
}

fn namespaces(e: &mesh_model::Edge) -> Vec<String> {
    let mut ns = vec![e.key.src.namespace.clone()];
    if let Destination::Workload(d) = &e.key.dst
        && d.namespace != e.key.src.namespace
    {
        ns.push(d.namespace.clone());
    }
    ns
}

fn subject(e: &mesh_model::Edge) -> String {
    format!("{} -> {} ({})", e.key.src, e.key.dst, e.key.protocol)
}

/// Decides alerts from successive graphs; the store remembers what was sent.
#[derive(Debug)]
pub struct Detector<S> {
    store: S,
    config: AlertConfig,
    below_since: HashMap<String, Instant>,
    callers: HashMap<String, HashSet<String>>,
}

const ACTIVE: &str = "active";

impl<S: AlertStore> Detector<S> {
    /// A detector over `store`.
    pub fn new(store: S, config: AlertConfig) -> Self {
        Self {
            store,
            config,
            below_since: HashMap::new(),
            callers: HashMap::new(),
        }
    }

    /// Keeps the time each edge has been below the threshold, without alerting: standbys do
    /// this so that a new leader knows how long an edge has been failing.
    pub fn track(&mut self, g: &MeshGraph, now: Instant) {
        let mut below = HashSet::new();
        for e in g.edges.values() {
            if e.metrics
                .success_rate
                .is_some_and(|sr| sr < self.config.failing_below)
                && e.metrics.rps > 0.0
            {
                let s = subject(e);
                self.below_since.entry(s.clone()).or_insert(now);
                below.insert(s);
            }
        }
        self.below_since.retain(|s, _| below.contains(s));
    }

    /// The alerts `g` raises or resolves, each once (as recorded in the store).
    pub async fn observe(
        &mut self,
        g: &MeshGraph,
        now: Instant,
    ) -> Result<Vec<Alert>, mesh_store::StoreError> {
        let mut current: BTreeMap<Condition, String> = BTreeMap::new();
        let mut below = HashSet::new();
        for e in g.edges.values() {
            let m = &e.metrics;
            if e.tls == TlsStatus::Plaintext && m.rps > 0.0 {
                let reason = if e.no_tls_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.no_tls_reason)
                };
                current.insert(
                    Condition {
                        kind: "plaintext".into(),
                        subject: subject(e),
                        namespaces: namespaces(e),
                    },
                    format!("{:.2} rps without mTLS{reason}.", m.rps),
                );
            }
            if let Some(sr) = m.success_rate
                && sr < self.config.failing_below
                && m.rps > 0.0
            {
                let s = subject(e);
                below.insert(s.clone());
                let since = *self.below_since.entry(s.clone()).or_insert(now);
                if now.duration_since(since) >= self.config.failing_for {
                    current.insert(
                        Condition {
                            kind: "failing".into(),
                            subject: s,
                            namespaces: namespaces(e),
                        },
                        format!(
                            "{:.1}% success at {:.2} rps (below {:.0}% for {}).",
                            sr * 100.0,
                            m.rps,
                            self.config.failing_below * 100.0,
                            humantime::format_duration(self.config.failing_for)
                        ),
                    );
                }
            }
            // Alarm only on what the proxies report refusing; a verdict that turned to deny
            // is news of its own, calmer kind until traffic is really refused.
            let by_server = if e.policy.server.is_empty() {
                String::new()
            } else {
                format!(" by server {}", e.policy.server)
            };
            if let Some(denied) = e.policy.observed_deny_rps.filter(|d| *d > 0.0) {
                current.insert(
                    Condition {
                        kind: "denied".into(),
                        subject: subject(e),
                        namespaces: namespaces(e),
                    },
                    format!("{denied:.2} rps denied{by_server}."),
                );
            }
            if e.policy.decision == Decision::Denied && m.rps > 0.0 {
                current.insert(
                    Condition {
                        kind: "policy-denies".into(),
                        subject: subject(e),
                        namespaces: namespaces(e),
                    },
                    format!(
                        "The policy{by_server} refuses the {:.2} rps this edge carries; the \
                         proxies enforce it as they learn the change.",
                        m.rps
                    ),
                );
            }
        }
        self.below_since.retain(|s, _| below.contains(s));

        let mut out = Vec::new();
        for (c, detail) in &current {
            let member = serde_json::to_string(c).unwrap_or_default();
            if self.store.mark(ACTIVE, &member, true).await? {
                out.push(Alert {
                    condition: c.clone(),
                    detail: detail.clone(),
                    resolved: false,
                });
            }
        }
        for member in self.store.members(ACTIVE).await? {
            let Ok(c) = serde_json::from_str::<Condition>(&member) else {
                self.store.mark(ACTIVE, &member, false).await?;
                continue;
            };
            // A failing edge still below the threshold stays active even before this process
            // has seen it below for `failing_for` (a new leader, a restart).
            let still_failing = c.kind == "failing" && below.contains(&c.subject);
            if !current.contains_key(&c)
                && !still_failing
                && self.store.mark(ACTIVE, &member, false).await?
            {
                out.push(Alert {
                    condition: c,
                    detail: String::new(),
                    resolved: true,
                });
            }
        }
        out.extend(self.new_callers(g).await?);
        Ok(out)
    }

    async fn new_callers(&mut self, g: &MeshGraph) -> Result<Vec<Alert>, mesh_store::StoreError> {
        let mut by_dst: BTreeMap<String, Vec<&mesh_model::Edge>> = BTreeMap::new();
        for e in g.edges.values() {
            if let Destination::Workload(d) = &e.key.dst {
                by_dst.entry(d.to_string()).or_default().push(e);
            }
        }
        let mut out = Vec::new();
        for (dst, edges) in by_dst {
            let set = format!("callers:{dst}");
            if !self.callers.contains_key(&dst) {
                // First sight in this process: what the store knows, and a first-ever
                // destination is learnt without alerts (its callers are not news).
                let known: HashSet<String> = self.store.members(&set).await?.into_iter().collect();
                let primed = !known.is_empty();
                self.callers.insert(dst.clone(), known);
                if !primed {
                    for e in &edges {
                        let src = e.key.src.to_string();
                        self.store.mark(&set, &src, true).await?;
                        self.callers.entry(dst.clone()).or_default().insert(src);
                    }
                    continue;
                }
            }
            for e in edges {
                let src = e.key.src.to_string();
                let known = self.callers.entry(dst.clone()).or_default();
                if known.contains(&src) {
                    continue;
                }
                known.insert(src.clone());
                if self.store.mark(&set, &src, true).await? {
                    out.push(Alert {
                        condition: Condition {
                            kind: "new-caller".into(),
                            subject: format!("{src} -> {dst}"),
                            namespaces: namespaces(e),
                        },
                        detail: format!(
                            "{src} started calling {dst} ({}, {:.2} rps).",
                            e.key.protocol, e.metrics.rps
                        ),
                        resolved: false,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Does a subscription's filter take this alert?
pub fn wants(filter: &AlertFilter, alert: &Alert) -> bool {
    (filter.kinds.is_empty() || filter.kinds.contains(&alert.condition.kind))
        && (filter.namespaces.is_empty()
            || alert
                .condition
                .namespaces
                .iter()
                .any(|n| filter.namespaces.contains(n)))
}

/// Where alerts go: `slack:<channel>` or `discord:<channel>`.
pub trait Deliver: Send + Sync + 'static {
    /// Posts `reply` to `target`.
    fn deliver(
        &self,
        target: &str,
        reply: &Reply,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// A per-channel limit of messages per minute.
#[derive(Debug, Default)]
struct RateLimit {
    sent: HashMap<String, VecDeque<Instant>>,
    held: HashMap<String, usize>,
}

impl RateLimit {
    /// `Some(held back before)` when `target` may get a message now.
    fn admit(&mut self, target: &str, max: usize, now: Instant) -> Option<usize> {
        let q = self.sent.entry(target.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= max {
            *self.held.entry(target.to_owned()).or_default() += 1;
            return None;
        }
        q.push_back(now);
        Some(self.held.remove(target).unwrap_or(0))
    }
}

/// Holds the alert lease while the process runs: `true` on the channel while this replica
/// sends alerts.
pub fn keep_lease<L: GraphStore>(
    lease_store: L,
    config: AlertConfig,
    metrics: Metrics,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut held: Option<mesh_store::Lease> = None;
        let mut tick = tokio::time::interval(config.lease_renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                if let Some(l) = &held {
                    let _ = lease_store.release(l).await;
                }
                return;
            }
            // Deadline taken before the call: never believe in a lease past its TTL.
            let bound = config.lease_ttl / 2;
            held = match held.take() {
                Some(l) => {
                    match tokio::time::timeout(bound, lease_store.renew(&l, config.lease_ttl)).await
                    {
                        Ok(Ok(true)) => Some(l),
                        _ => None,
                    }
                }
                None => tokio::time::timeout(
                    bound,
                    lease_store.acquire(&config.holder, config.lease_ttl, 0),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            };
            let leader = held.is_some();
            if *tx.borrow() != leader {
                tracing::info!(leader, holder = %config.holder, "alert lease");
            }
            metrics.set_alert_leader(leader);
            tx.send_if_modified(|v| std::mem::replace(v, leader) != leader);
        }
    });
    rx
}

/// Follows `WatchMeshGraph` and, while `leader`, sends alerts to the subscribed channels.
pub async fn run<S: AlertStore + Clone, D: Deliver>(
    mcp: Mcp,
    store: S,
    deliver: Arc<D>,
    config: AlertConfig,
    leader: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let mut detector = Detector::new(store.clone(), config.clone());
    let mut limit = RateLimit::default();
    let mut backoff = Duration::from_millis(500);
    loop {
        let stream = async {
            let mut c = mcp.client();
            let req = mcp.stream_request(pb::WatchMeshGraphRequest::default())?;
            c.watch_mesh_graph(req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(McpError::from)
        };
        let mut stream = match tokio::time::timeout(Duration::from_secs(10), stream).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(%e, "alerts: cannot watch the mesh graph; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(_) => {
                tracing::warn!("alerts: the watch did not open in 10s; retrying");
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let mut graph: Option<MeshGraph> = None;
        loop {
            // Heartbeats come at least every 30 s on an idle watch; three missed: reconnect.
            let ev = match tokio::time::timeout(Duration::from_secs(90), stream.message()).await {
                Ok(Ok(Some(ev))) => ev,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(%e, "alerts: watch ended");
                    break;
                }
                Err(_) => {
                    tracing::warn!("alerts: watch silent for 90s; reconnecting");
                    break;
                }
            };
            match ev.event {
                Some(pb::mesh_graph_event::Event::Snapshot(s)) => match MeshGraph::try_from(s) {
                    Ok(g) => graph = Some(g),
                    Err(e) => {
                        tracing::warn!(%e, "alerts: bad snapshot");
                        break;
                    }
                },
                Some(pb::mesh_graph_event::Event::Delta(d)) => {
                    let applied = match (graph.as_mut(), mesh_model::GraphDelta::try_from(d)) {
                        (Some(g), Ok(d)) => d.apply(g).is_ok(),
                        _ => false,
                    };
                    if !applied {
                        break;
                    }
                }
                _ => continue,
            }
            let Some(g) = graph.as_ref() else { continue };
            'handled: {
                if !*leader.borrow() {
                    detector.track(g, Instant::now());
                    break 'handled;
                }
                let alerts = match detector.observe(g, Instant::now()).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%e, "alerts: store unavailable; will retry on the next update");
                        break 'handled;
                    }
                };
                if alerts.is_empty() {
                    break 'handled;
                }
                let subs = match store.subscriptions().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%e, "alerts: cannot read subscriptions");
                        break 'handled;
                    }
                };
                for alert in &alerts {
                    for (target, filter) in &subs {
                        let filter: AlertFilter =
                            serde_json::from_slice(filter).unwrap_or_default();
                        if !wants(&filter, alert) {
                            continue;
                        }
                        let Some(held) = limit.admit(target, config.max_per_minute, Instant::now())
                        else {
                            metrics.alert_dropped();
                            continue;
                        };
                        match deliver.deliver(target, &alert.reply(held)).await {
                            Ok(()) => metrics.alert(&alert.condition.kind),
                            Err(e) => tracing::warn!(%target, %e, "alert not delivered"),
                        }
                    }
                }
            }
            metrics.set_alerts_version(g.version);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    fn config() -> AlertConfig {
        AlertConfig {
            failing_below: 0.9,
            failing_for: Duration::from_secs(60),
            max_per_minute: 2,
            lease_ttl: Duration::from_secs(4),
            lease_renew: Duration::from_secs(1),
            holder: "t".into(),
        }
    }

    fn emojivoto() -> MeshGraph {
        let t = meshsim::builtin("emojivoto").unwrap();

        meshsim::graph(&t, Duration::from_secs(60), std::time::SystemTime::now())
    }

    fn edge_mut<'a>(g: &'a mut MeshGraph, src: &str, dst: &str) -> &'a mut mesh_model::Edge {
        g.edges
            .values_mut()
            .find(|e| {
                e.key.src.name == src
                    && matches!(&e.key.dst, Destination::Workload(d) if d.name == dst)
            })
            .unwrap()
    }

    #[tokio::test]
    async fn each_condition_alerts_once_and_resolves_once() {
        let store = Arc::new(mesh_store::MemoryStore::new(10));
        let mut d = Detector::new(store.clone(), config());
        let t0 = Instant::now();
        let mut g = emojivoto();
        assert!(
            d.observe(&g, t0).await.unwrap().is_empty(),
            "a healthy mesh is quiet"
        );
        edge_mut(&mut g, "web", "voting").tls = TlsStatus::Plaintext;
        let a = d.observe(&g, t0).await.unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].condition.kind, "plaintext");
        assert!(!a[0].resolved);
        assert!(d.observe(&g, t0).await.unwrap().is_empty(), "sent once");
        // Another replica (a new detector on the same store) does not repeat it.
        let mut d2 = Detector::new(store.clone(), config());
        assert!(d2.observe(&g, t0).await.unwrap().is_empty());
        edge_mut(&mut g, "web", "voting").tls = TlsStatus::Mtls;
        let a = d.observe(&g, t0).await.unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].resolved);
        assert!(d.observe(&g, t0).await.unwrap().is_empty(), "resolved once");
    }

    #[tokio::test]
    async fn failing_must_last_and_new_callers_are_news_only_after_the_first_sight() {
        let store = Arc::new(mesh_store::MemoryStore::new(10));
        let mut d = Detector::new(store, config());
        let t0 = Instant::now();
        let mut g = emojivoto();
        d.observe(&g, t0).await.unwrap();
        edge_mut(&mut g, "web", "voting").metrics.success_rate = Some(0.5);
        assert!(
            d.observe(&g, t0 + Duration::from_secs(10))
                .await
                .unwrap()
                .is_empty()
        );
        let a = d.observe(&g, t0 + Duration::from_secs(80)).await.unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].condition.kind, "failing");
        // A new caller of voting.
        let mut e = edge_mut(&mut g, "web", "voting").clone();
        e.key.src.name = "vote-bot-2".into();
        g.edges.insert(e.key.clone(), e);
        let a = d.observe(&g, t0 + Duration::from_secs(81)).await.unwrap();
        let kinds: Vec<_> = a.iter().map(|a| a.condition.kind.as_str()).collect();
        assert!(kinds.contains(&"new-caller"), "{a:?}");
        // A new leader (fresh process, same store) neither resolves nor repeats it.
        let mut fresh = Detector::new(d.store.clone(), config());
        let a = fresh
            .observe(&g, t0 + Duration::from_secs(82))
            .await
            .unwrap();
        assert!(a.is_empty(), "{a:?}");
    }

    #[tokio::test]
    async fn a_verdict_turning_to_deny_is_a_calm_note_until_proxies_refuse() {
        let store = Arc::new(mesh_store::MemoryStore::new(10));
        let mut d = Detector::new(store, config());
        let t0 = Instant::now();
        let mut g = emojivoto();
        d.observe(&g, t0).await.unwrap();
        let e = edge_mut(&mut g, "web", "voting");
        e.policy.decision = Decision::Denied;
        e.policy.server = "emojivoto/voting-grpc".into();
        e.policy.observed_deny_rps = Some(0.0);
        let a = d.observe(&g, t0).await.unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].condition.kind, "policy-denies");
        let r = a[0].reply(0);
        assert!(
            r.title
                .contains("policy now denies this edge (no denied traffic observed yet)"),
            "{r:?}"
        );
        assert!(matches!(r.tone, Tone::Info), "calm, not a warning: {r:?}");
        assert!(!format!("{r:?}").contains("0.00 rps denied"), "{r:?}");
        // The proxies report refusals: now it is an alarm, with the observed rate.
        edge_mut(&mut g, "web", "voting").policy.observed_deny_rps = Some(1.0);
        let a = d.observe(&g, t0).await.unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].condition.kind, "denied");
        assert!(
            a[0].detail.starts_with("1.00 rps denied by server"),
            "{a:?}"
        );
        // The policy is reverted and refusals stop: each resolves once.
        let e = edge_mut(&mut g, "web", "voting");
        e.policy.decision = Decision::Allowed;
        e.policy.observed_deny_rps = Some(0.0);
        let a = d.observe(&g, t0).await.unwrap();
        let mut kinds: Vec<_> = a
            .iter()
            .filter(|a| a.resolved)
            .map(|a| a.condition.kind.as_str())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["denied", "policy-denies"], "{a:?}");
    }

    #[test]
    fn filters_and_rate_limits() {
        let alert = Alert {
            condition: Condition {
                kind: "plaintext".into(),
                subject: "a/b -> a/c (http)".into(),
                namespaces: vec!["a".into()],
            },
            detail: String::new(),
            resolved: false,
        };
        assert!(wants(&AlertFilter::default(), &alert));
        let f = |ns: &[&str], k: &[&str]| AlertFilter {
            namespaces: ns.iter().map(|s| (*s).to_owned()).collect(),
            kinds: k.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(wants(&f(&["a"], &["plaintext"]), &alert));
        assert!(!wants(&f(&["b"], &[]), &alert));
        assert!(!wants(&f(&[], &["denied"]), &alert));
        let mut l = RateLimit::default();
        let t = Instant::now();
        assert_eq!(l.admit("c", 2, t), Some(0));
        assert_eq!(l.admit("c", 2, t), Some(0));
        assert_eq!(l.admit("c", 2, t), None);
        assert_eq!(l.admit("c", 2, t), None);
        assert_eq!(l.admit("d", 2, t), Some(0), "per channel");
        assert_eq!(
            l.admit("c", 2, t + Duration::from_secs(61)),
            Some(2),
            "held back, reported"
        );
    }
}
