//! The Kubernetes watchers. One kube-rs watcher per kind of [`mesh_policy::kinds::WATCHED`] (with
//! kube's backoff) sends its events to a single index task, which owns every object and, after
//! each burst of changes, publishes a typed [`Cluster`] (the policy core's cluster index).
//!
//! Objects are stored slimmed (no `managedFields`; Pods keep only what policy and topology read).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use mesh_model::SourceHealth;
use mesh_policy::{
    cluster::{Cluster, RUNNING_MARK},
    kinds::{Kind, WATCHED},
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// The kube-rs resource of a kind.
fn api_resource(k: &Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(k.group, k.version, k.kind), k.plural)
}

/// Keeps what the index reads. Pods shrink to what policy and topology need (a 10,000-pod
/// cluster's full pod specs would dominate the collector's memory); `managedFields` shrinks to
/// the manager of the last write that was not to the status, which the change log records.
fn slim(k: &Kind, mut v: Value) -> Value {
    v["apiVersion"] = Value::from(k.api_version());
    v["kind"] = Value::from(k.kind);
    let manager = mesh_policy::history::field_manager(&v);
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
        if !manager.is_empty() {
            m.insert(
                "managedFields".into(),
                serde_json::json!([{ "manager": manager }]),
            );
        }
    }
    if k.kind != "Pod" {
        return v;
    }
    let m = &v["metadata"];
    let mut meta = serde_json::Map::new();
    for f in [
        "name",
        "namespace",
        "labels",
        "annotations",
        "ownerReferences",
        "managedFields",
    ] {
        if !m[f].is_null() {
            meta.insert(f.into(), m[f].clone());
        }
    }
    if v["status"]["phase"] == "Running" {
        let a = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        a[RUNNING_MARK] = Value::from("true");
    }
    let containers: Vec<Value> = v["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut out = serde_json::json!({"name": c["name"]});
            if c["ports"].is_array() {
                out["ports"] = c["ports"].clone();
            }
            out
        })
        .collect();
    let mut spec = serde_json::json!({"containers": containers});
    if let Some(sa) = v["spec"]["serviceAccountName"].as_str() {
        spec["serviceAccountName"] = Value::from(sa);
    }
    serde_json::json!({
        "apiVersion": v["apiVersion"],
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
    })
}

enum Msg {
    Event(usize, watcher::Event<Value>),
    Error(usize, String),
    /// The API server does not serve the kind (its CRD is not installed).
    Missing(usize),
}

/// How long a watch error counts after it happened. kube's backoff retries at most every 30 s
/// and a successful restart of a watch says nothing, so a kind with no new error for longer
/// than two retries is taken as recovered.
const ERROR_HOLD: Duration = Duration::from_secs(65);

/// Starts the watchers and the index; the receiver sees a new [`Cluster`] after each burst of
/// changes. Everything stops when the receiver (and its clones) are dropped.
pub fn spawn(client: &Client) -> watch::Receiver<Arc<Cluster>> {
    let (tx, rx) = watch::channel(Arc::new(Cluster::unsynced(
        "waiting for the first list of every watched kind",
    )));
    let (events, inbox) = mpsc::channel(1024);
    let mut watchers = tokio::task::JoinSet::new();
    for (i, k) in WATCHED.iter().enumerate() {
        let api = Api::<DynamicObject>::all_with(client.clone(), &api_resource(k));
        let config = if k.kind == "ConfigMap" {
            watcher::Config::default().fields("metadata.name=linkerd-config")
        } else {
            watcher::Config::default()
        };
        let events = events.clone();
        let k = *k;
        watchers.spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(item) = stream.next().await {
                let msg = match item {
                    Ok(ev) => {
                        let v = |o: DynamicObject| {
                            slim(&k, serde_json::to_value(o).unwrap_or_default())
                        };
                        Msg::Event(
                            i,
                            match ev {
                                watcher::Event::Apply(o) => watcher::Event::Apply(v(o)),
                                watcher::Event::Delete(o) => watcher::Event::Delete(v(o)),
                                watcher::Event::Init => watcher::Event::Init,
                                watcher::Event::InitApply(o) => watcher::Event::InitApply(v(o)),
                                watcher::Event::InitDone => watcher::Event::InitDone,
                            },
                        )
                    }
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                        if status.is_not_found() =>
                    {
                        Msg::Missing(i)
                    }
                    Err(e) => Msg::Error(i, e.to_string()),
                };
                if events.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(events);
    tokio::spawn(index(inbox, tx, watchers));
    rx
}

#[derive(Default)]
struct Index {
    /// The policy core's index, kept current one event at a time.
    cluster: mesh_policy::index::Index,
    /// Objects listed since the last `Init`, per kind, swapped in at `InitDone`.
    relisting: BTreeMap<usize, Vec<Value>>,
    /// A complete list waiting to be swapped in (see [`Index::take`]).
    listed: Vec<(usize, Vec<Value>)>,
    synced: BTreeSet<usize>,
    /// The last error of each kind, and when.
    errors: BTreeMap<usize, (String, std::time::Instant)>,
    /// Kinds the API server does not serve: empty, not failing.
    missing: BTreeSet<usize>,
    last_success: Option<SystemTime>,
    logged: BTreeSet<String>,
}

impl Index {
    /// Takes one message, a completed list included, before the next one can touch the same
    /// objects; whether the objects changed.
    async fn take(&mut self, msg: Msg) -> bool {
        let changed = self.apply(msg);
        for (i, objects) in std::mem::take(&mut self.listed) {
            relist(&mut self.cluster, WATCHED[i], objects).await;
        }
        changed
    }

    /// Applies one message; whether the objects changed (a completed list is left in
    /// `listed` for [`Index::take`]).
    fn apply(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Error(i, e) => {
                let what = WATCHED[i].describe();
                if !self.failing(i) {
                    tracing::warn!(kind = %what, error = %e, "Kubernetes watch failed; retrying with backoff");
                }
                self.errors.insert(i, (e, std::time::Instant::now()));
                false
            }
            Msg::Missing(i) => {
                if self.missing.insert(i) {
                    tracing::info!(kind = %WATCHED[i].describe(), "not served by this cluster (CRD not installed); indexed as empty");
                }
                self.errors.remove(&i);
                let k = WATCHED[i];
                self.cluster.relist(k.group, k.kind, Vec::new())
            }
            Msg::Event(i, ev) => {
                // `Init` comes before the list is even asked for: only data proves recovery.
                if !matches!(ev, watcher::Event::Init) {
                    self.missing.remove(&i);
                    if self.errors.remove(&i).is_some() {
                        tracing::info!(kind = %WATCHED[i].describe(), "Kubernetes watch recovered");
                    }
                }
                match ev {
                    watcher::Event::Init => {
                        self.relisting.insert(i, Vec::new());
                        false
                    }
                    watcher::Event::InitApply(v) => {
                        self.relisting.entry(i).or_default().push(v);
                        false
                    }
                    watcher::Event::InitDone => {
                        let listed = self.relisting.remove(&i).unwrap_or_default();
                        self.listed.push((i, listed));
                        self.synced.insert(i);
                        // A relist is news even when it changed nothing: the kind is synced.
                        true
                    }
                    watcher::Event::Apply(v) => self.cluster.apply(v),
                    watcher::Event::Delete(v) => self.cluster.delete(&v),
                }
            }
        }
    }

    fn failing(&self, i: usize) -> bool {
        self.errors
            .get(&i)
            .is_some_and(|(_, at)| at.elapsed() < ERROR_HOLD)
    }

    /// Every kind was listed, is not served, or has failed: publishing is honest (missing CRDs
    /// or a forbidden kind must not hide everything else).
    fn settled(&self) -> bool {
        (0..WATCHED.len()).all(|i| {
            self.synced.contains(&i) || self.missing.contains(&i) || self.errors.contains_key(&i)
        })
    }

    fn health(&mut self) -> SourceHealth {
        let now = SystemTime::now();
        let unsynced: Vec<String> = (0..WATCHED.len())
            .filter(|i| !self.synced.contains(i) && !self.missing.contains(i) && !self.failing(*i))
            .map(|i| WATCHED[i].describe())
            .collect();
        let mut error: Vec<String> = self
            .errors
            .iter()
            .filter(|(i, _)| self.failing(**i))
            .map(|(i, (e, _))| format!("{}: {e}", WATCHED[*i].describe()))
            .collect();
        if !unsynced.is_empty() {
            error.push(format!("not listed yet: {}", unsynced.join(", ")));
        }
        if error.is_empty() {
            self.last_success = Some(now);
        }
        SourceHealth {
            source: "kubernetes".into(),
            ok: error.is_empty(),
            last_success: self.last_success,
            error: error.join("; "),
            detail: String::new(),
        }
    }
}

/// How long a burst of changes is gathered before a snapshot is published.
const COALESCE: Duration = Duration::from_millis(100);
/// Least time between two snapshots.
const REBUILD_EVERY: Duration = Duration::from_secs(1);
/// How often health is looked at when nothing arrives (errors age out).
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Swaps a kind's new list into the index, giving the async workers back every few hundred
/// objects: typing 10,000 pods takes a good part of a second, and with an embedded collector
/// the same workers serve gRPC.
async fn relist(cluster: &mut mesh_policy::index::Index, k: Kind, objects: Vec<Value>) {
    let listed = objects
        .iter()
        .map(mesh_policy::index::ObjectKey::of)
        .collect();
    cluster.retain_listed(k.group, k.kind, &listed);
    for (n, v) in objects.into_iter().enumerate() {
        cluster.apply(v);
        if n % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
}

async fn index(
    mut inbox: mpsc::Receiver<Msg>,
    out: watch::Sender<Arc<Cluster>>,
    _watchers: tokio::task::JoinSet<()>,
) {
    let mut idx = Index::default();
    let now = tokio::time::Instant::now();
    let mut last_rebuild = now.checked_sub(REBUILD_EVERY).unwrap_or(now);
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut changed = tokio::select! {
            m = inbox.recv() => match m { Some(m) => idx.take(m).await, None => return },
            _ = tick.tick() => false,
            () = out.closed() => return,
        };
        // Coalesce a burst (a relist, a rollout) into one snapshot, and publish at most once per
        // REBUILD_EVERY: each snapshot makes the collector join the graph with policy again.
        let deadline = (tokio::time::Instant::now() + COALESCE).max(last_rebuild + REBUILD_EVERY);
        if changed {
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, inbox.recv()).await {
                changed |= idx.take(m).await;
            }
        }
        if !idx.settled() {
            continue;
        }
        let health = idx.health();
        if !changed {
            let same = {
                let before = out.borrow();
                health.ok == before.health.ok && health.error == before.health.error
            };
            if same {
                continue;
            }
        }
        // Only what changed since the last snapshot is derived again.
        let (cluster, problems) = idx.cluster.snapshot(health);
        for p in problems {
            if idx.logged.insert(p.clone()) {
                tracing::warn!(problem = %p, "skipping a Kubernetes object that cannot be read");
            }
        }
        last_rebuild = tokio::time::Instant::now();
        out.send_replace(Arc::new(cluster));
    }
}

#[cfg(test)]
mod tests {
    use mesh_model::WorkloadRef;
    use serde_json::json;

    use super::*;

    fn health() -> SourceHealth {
        Cluster::unsynced("").health
    }

    fn kind_of(name: &str) -> Kind {
        *WATCHED.iter().find(|k| k.kind == name).expect("watched")
    }

    #[test]
    fn pods_count_for_their_owner_and_lend_it_their_labels() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "x"}]},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"linkerd.io/inject": "enabled"}},
                "spec": {"serviceAccountName": "web", "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}}}
        });
        let pod = |name: &str, phase: &str| {
            json!({
                "metadata": {"name": name, "namespace": "shop",
                             "labels": {"app": "web", "pod-template-hash": "5d8f", "track": "canary"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "u"}]},
                "spec": {"serviceAccountName": "web", "nodeName": "n1",
                         "containers": [{"name": "web", "image": "big", "env": [{"name": "A", "value": "b"}],
                                         "ports": [{"name": "http", "containerPort": 8080}]},
                                        {"name": "linkerd-proxy", "image": "proxy"}]},
                "status": {"phase": phase, "podIP": "10.0.0.1"}
            })
        };
        let slim_pod = slim(&kind_of("Pod"), pod("web-5d8f-a", "Running"));
        // Only what policy and topology read is kept.
        assert!(slim_pod.get("status").is_none());
        assert!(slim_pod["spec"]["containers"][0].get("env").is_none());
        // Only the last writer is kept, for the change log.
        assert_eq!(
            slim(&kind_of("Deployment"), deploy.clone())["metadata"]["managedFields"],
            json!([{"manager": "x"}])
        );
        let objects = vec![
            slim(&kind_of("Deployment"), deploy),
            slim_pod,
            slim(&kind_of("Pod"), pod("web-5d8f-b", "Pending")),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
        ];
        let (c, problems) = Cluster::from_objects(objects, health());
        assert!(problems.is_empty(), "{problems:?}");
        let id = WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        };
        let w = &c.workloads[&id];
        assert_eq!(w.running_pods, 1, "the Pending pod does not count");
        assert!(w.meshed);
        assert_eq!(
            w.pod.labels["track"], "canary",
            "a running pod's labels win"
        );
        assert_eq!(w.port, Some(8080), "named targetPort resolved");
    }
}
