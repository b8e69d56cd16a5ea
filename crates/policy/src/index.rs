//! The cluster index kept current one watch event at a time, as linkerd2's policy controller
//! keeps its index: each event types one object and marks what it can change; a snapshot
//! re-derives only that. At 10,000 workloads a full rebuild types 70,000 objects (about a
//! second); one event costs what its own object and the workloads it touches cost.
//!
//! What each kind can change:
//! - a Deployment, StatefulSet or DaemonSet: itself;
//! - a Pod: the workload that owns it (running pods, labels, ports, meshed);
//! - a Service or a Namespace: the workloads of its namespace (ports; default policy, injection);
//! - a policy object or the `linkerd-config` ConfigMap: the policy set, re-typed from the few
//!   policy objects (hundreds, not tens of thousands).
//!
//! Objects are kept typed, not as JSON: the index is most of the collector's memory.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::BuildHasher,
    sync::Arc,
};

use mesh_model::{PolicyKey, PolicyObject, SourceHealth, WorkloadRef};
use serde_json::Value;

use crate::{
    DEFAULT_POLICY_ANNOTATION, Manifests,
    cluster::{
        Cluster, ClusterWorkload, INJECT, RUNNING_MARK, ServiceInfo, owner_of, policy_object,
        port_of, service, split, template_annotation,
    },
    document::Document,
    resources::{self, Resource},
};

/// Which object: API group, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group (empty for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an object as the API server returns it.
    pub fn of(v: &Value) -> Self {
        let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        Self {
            group: api_version
                .split_once('/')
                .map_or("", |(g, _)| g)
                .to_owned(),
            kind: s(&v["kind"]),
            namespace: s(&v["metadata"]["namespace"]),
            name: s(&v["metadata"]["name"]),
        }
    }

    fn is_workload(&self) -> bool {
        self.group == "apps"
            && matches!(
                self.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet"
            )
    }

    fn is_core(&self, kind: &str) -> bool {
        self.group.is_empty() && self.kind == kind
    }
}

/// A Namespace's settings that workloads inherit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NamespaceSettings {
    /// `config.linkerd.io/default-inbound-policy`.
    default_policy: Option<String>,
    /// `linkerd.io/inject: enabled`.
    inject: bool,
}

/// What the index keeps of a Deployment, StatefulSet or DaemonSet: its pods as its template
/// describes them (the namespace's default policy is added when derived, as it can change).
#[derive(Clone, Debug)]
struct Template {
    pod: crate::eval::PodInfo,
    service_account: String,
    /// `linkerd.io/inject` on the template.
    inject: Option<String>,
}

/// What the index keeps of a Pod.
#[derive(Clone, Debug)]
struct PodFacts {
    owner: Option<WorkloadRef>,
    running: bool,
    has_proxy: bool,
    labels: BTreeMap<String, String>,
    ports: Vec<(String, u16)>,
}

/// The index. [`Index::apply`], [`Index::delete`] and [`Index::relist`] take watch events;
/// [`Index::snapshot`] publishes what Kubernetes says now as a [`Cluster`].
#[derive(Debug, Default)]
pub struct Index {
    /// A fingerprint of every object held, to tell a real change from a resync.
    seen: HashMap<ObjectKey, u64>,
    /// Policy objects and the `linkerd-config` ConfigMap, as read (few; re-typed together).
    policy_objects: BTreeMap<ObjectKey, Value>,
    namespaces: BTreeMap<String, NamespaceSettings>,
    /// Workloads, kept as policy reads them (typed objects are large; 10,000 of them were
    /// most of the collector's memory).
    templates: BTreeMap<WorkloadRef, Template>,
    /// Pods by namespace and name.
    pods: BTreeMap<(String, String), PodFacts>,
    /// Pod names of each owner, in name order (the first running one lends its labels).
    pods_of: BTreeMap<WorkloadRef, BTreeSet<String>>,
    services: BTreeMap<(String, String), ServiceInfo>,
    /// Objects that could not be typed: what is wrong with each.
    problems: BTreeMap<ObjectKey, String>,
    /// What the last snapshot held, and what has changed since.
    workloads: Arc<BTreeMap<WorkloadRef, Arc<ClusterWorkload>>>,
    dirty_workloads: BTreeSet<WorkloadRef>,
    dirty_namespaces: BTreeSet<String>,
    /// The policy objects typed, as of the last change to one of them.
    policy: Option<PolicyPart>,
    /// Every object in its change-log form (shared with the last snapshot until one changes).
    logged: Arc<crate::history::Objects>,
}

/// What the policy objects make, kept between snapshots until one of them changes.
#[derive(Debug)]
struct PolicyPart {
    policy: crate::eval::PolicySet,
    by_namespace: HashMap<String, Arc<crate::eval::PolicySet>>,
    policies: Arc<BTreeMap<PolicyKey, PolicyObject>>,
    /// What could not be read of them.
    problems: Vec<String>,
}

/// An object as the API server returned it, as a document of the policy core.
fn document(value: Value) -> Document {
    Document {
        file: "kubernetes".into(),
        line: 0,
        value,
    }
}

/// `Kind ns/name: field why`, as the collector logs an object it skips.
fn problem_line(p: &crate::document::Problem) -> String {
    format!("{}: {} {}", p.object, p.field, p.message)
}

fn fingerprint(v: &Value) -> u64 {
    // A fixed hasher: the same object must give the same fingerprint on every event.
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(v.to_string())
}

impl Index {
    /// An object was added or changed. Whether anything the index holds changed.
    pub fn apply(&mut self, v: Value) -> bool {
        let key = ObjectKey::of(&v);
        let print = fingerprint(&v);
        if self.seen.get(&key) == Some(&print) {
            return false;
        }
        self.remove(&key);
        self.seen.insert(key.clone(), print);
        Arc::make_mut(&mut self.logged)
            .insert(key.clone(), Arc::new(crate::history::Logged::of(&v)));
        self.insert(key, v);
        true
    }

    /// An object was deleted. Whether the index held it.
    pub fn delete(&mut self, v: &Value) -> bool {
        let key = ObjectKey::of(v);
        let held = self.seen.remove(&key).is_some();
        if held {
            Arc::make_mut(&mut self.logged).remove(&key);
        }
        self.remove(&key);
        held
    }

    /// Every object of `group`/`kind` was listed again: `objects` replace what the index held
    /// of that kind (an empty list when the kind is not served). Whether anything changed.
    pub fn relist(&mut self, group: &str, kind: &str, objects: Vec<Value>) -> bool {
        let listed: BTreeSet<ObjectKey> = objects.iter().map(ObjectKey::of).collect();
        let mut changed = self.retain_listed(group, kind, &listed);
        for v in objects {
            changed |= self.apply(v);
        }
        changed
    }

    /// The first half of [`Index::relist`], for a caller that applies a long list itself (in
    /// pieces, between other work): forgets the objects of `group`/`kind` not in `listed`.
    /// Whether it forgot any.
    pub fn retain_listed(&mut self, group: &str, kind: &str, listed: &BTreeSet<ObjectKey>) -> bool {
        let gone: Vec<ObjectKey> = self
            .seen
            .keys()
            .filter(|k| k.group == group && k.kind == kind && !listed.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.seen.remove(k);
            Arc::make_mut(&mut self.logged).remove(k);
            self.remove(k);
        }
        !gone.is_empty()
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the index holds no object.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn insert(&mut self, key: ObjectKey, v: Value) {
        if key.is_core("Namespace") {
            let a = &v["metadata"]["annotations"];
            let settings = NamespaceSettings {
                default_policy: a[DEFAULT_POLICY_ANNOTATION].as_str().map(str::to_owned),
                inject: a[INJECT] == "enabled",
            };
            self.namespaces.insert(key.name.clone(), settings);
            self.dirty_namespaces.insert(key.name);
            return;
        }
        if key.is_core("Service") {
            if let Some(s) = service(&v) {
                self.services.insert((key.namespace.clone(), key.name), s);
            }
            self.dirty_namespaces.insert(key.namespace);
            return;
        }
        if key.is_workload() || key.is_core("Pod") {
            let w = match resources::classify(&document(v)) {
                Ok(Resource::Workload(w)) => *w,
                Ok(_) => return,
                Err(p) => {
                    self.problems.insert(key, problem_line(&p));
                    return;
                }
            };
            if key.is_core("Pod") {
                let owner = owner_of(&w);
                if let Some(o) = &owner {
                    self.pods_of
                        .entry(o.clone())
                        .or_default()
                        .insert(key.name.clone());
                    self.dirty_workloads.insert(o.clone());
                }
                let (info, _) = crate::pod_info(&w, None);
                let facts =
                    PodFacts {
                        owner,
                        running: w.meta.annotations.contains_key(RUNNING_MARK),
                        has_proxy: w.pod.spec.as_ref().is_some_and(|s| {
                            s.containers.iter().any(|c| c.name == "linkerd-proxy")
                        }),
                        labels: info.labels,
                        ports: info.ports,
                    };
                self.pods.insert((key.namespace, key.name), facts);
            } else {
                let id = WorkloadRef {
                    namespace: key.namespace,
                    kind: key.kind,
                    name: key.name,
                };
                let (pod, service_account) = crate::pod_info(&w, None);
                let t = Template {
                    pod,
                    service_account,
                    inject: template_annotation(&w, INJECT),
                };
                self.dirty_workloads.insert(id.clone());
                self.templates.insert(id, t);
            }
            return;
        }
        // Policy kinds and the linkerd-config ConfigMap; any other kind is not read.
        self.policy_objects.insert(key, v);
        self.policy = None;
    }

    fn remove(&mut self, key: &ObjectKey) {
        self.problems.remove(key);
        if key.is_core("Namespace") {
            if self.namespaces.remove(&key.name).is_some() {
                self.dirty_namespaces.insert(key.name.clone());
            }
        } else if key.is_core("Service") {
            if self
                .services
                .remove(&(key.namespace.clone(), key.name.clone()))
                .is_some()
            {
                self.dirty_namespaces.insert(key.namespace.clone());
            }
        } else if key.is_core("Pod") {
            if let Some(PodFacts {
                owner: Some(owner), ..
            }) = self.pods.remove(&(key.namespace.clone(), key.name.clone()))
            {
                if let Some(names) = self.pods_of.get_mut(&owner) {
                    names.remove(&key.name);
                    if names.is_empty() {
                        self.pods_of.remove(&owner);
                    }
                }
                self.dirty_workloads.insert(owner);
            }
        } else if key.is_workload() {
            let id = WorkloadRef {
                namespace: key.namespace.clone(),
                kind: key.kind.clone(),
                name: key.name.clone(),
            };
            if self.templates.remove(&id).is_some() {
                self.dirty_workloads.insert(id);
            }
        } else if self.policy_objects.remove(key).is_some() {
            self.policy = None;
        }
    }

    /// The workload `id` as the cluster describes it now, if it exists.
    fn derive(&self, id: &WorkloadRef) -> Option<ClusterWorkload> {
        let t = self.templates.get(id)?;
        let settings = self
            .namespaces
            .get(&id.namespace)
            .cloned()
            .unwrap_or_default();
        let mut pod = t.pod.clone();
        pod.namespace_default_policy = settings.default_policy;
        let meshed = match t.inject.as_deref() {
            Some("enabled") => true,
            Some(_) => false,
            None => settings.inject,
        };
        let mut out = ClusterWorkload {
            pod,
            service_account: t.service_account.clone(),
            meshed,
            running_pods: 0,
            port: None,
            service_ports: Vec::new(),
        };
        // Running pods count, and the first running pod's labels and ports (by name) are what
        // the proxies enforce now; during a rollout the template is ahead of them.
        let mut lent = false;
        for name in self.pods_of.get(id).into_iter().flatten() {
            let Some(p) = self.pods.get(&(id.namespace.clone(), name.clone())) else {
                continue;
            };
            if !p.running {
                continue;
            }
            out.running_pods += 1;
            out.meshed |= p.has_proxy;
            if !lent {
                lent = true;
                out.pod.labels.clone_from(&p.labels);
                if !p.ports.is_empty() {
                    out.pod.ports.clone_from(&p.ports);
                }
            }
        }
        let in_ns: Vec<&ServiceInfo> = self
            .services
            .range((id.namespace.clone(), String::new())..)
            .take_while(|((ns, _), _)| *ns == id.namespace)
            .map(|(_, s)| s)
            .collect();
        // Resolved once: the first is the workload's own port, all are its calls' ports.
        out.service_ports = crate::cluster::service_ports(&in_ns, &out.pod);
        out.port = port_of(&out.service_ports, &out.pod);
        Some(out)
    }

    /// What Kubernetes says now, with `health`, and every object that could not be read
    /// (`Kind ns/name: why`). Re-derives only what changed since the last snapshot.
    pub fn snapshot(&mut self, health: SourceHealth) -> (Cluster, Vec<String>) {
        let mut dirty = std::mem::take(&mut self.dirty_workloads);
        // Workloads that went away were marked when their template was removed: the
        // templates of a changed namespace are all there is to re-derive.
        for ns in std::mem::take(&mut self.dirty_namespaces) {
            let first = WorkloadRef {
                namespace: ns.clone(),
                kind: String::new(),
                name: String::new(),
            };
            dirty.extend(
                self.templates
                    .range(first..)
                    .take_while(|(id, _)| id.namespace == ns)
                    .map(|(id, _)| id.clone()),
            );
        }
        if !dirty.is_empty() {
            let derived: Vec<(WorkloadRef, Option<ClusterWorkload>)> = dirty
                .into_iter()
                .map(|id| {
                    let w = self.derive(&id);
                    (id, w)
                })
                .collect();
            // Shallow when the last snapshot still holds the map: workloads are shared.
            let map = Arc::make_mut(&mut self.workloads);
            for (id, w) in derived {
                match w {
                    Some(w) => {
                        if map.get(&id).is_none_or(|old| **old != w) {
                            map.insert(id, Arc::new(w));
                        }
                    }
                    None => {
                        map.remove(&id);
                    }
                }
            }
        }
        let part = self.policy.get_or_insert_with(|| {
            let docs = self
                .policy_objects
                .values()
                .cloned()
                .map(document)
                .collect();
            let m = Manifests::from_documents(docs, Vec::new());
            let policies = m
                .resources
                .iter()
                .filter(|(_, r)| !matches!(r, Resource::ConfigMap(..) | Resource::Other))
                .map(|(doc, _)| {
                    let o = policy_object(&doc.value);
                    (o.key.clone(), o)
                })
                .collect();
            let policy = m.policy_set();
            PolicyPart {
                by_namespace: split(&policy),
                policy,
                policies: Arc::new(policies),
                problems: m.problems.iter().map(problem_line).collect(),
            }
        });
        let cluster = Cluster {
            policy: part.policy.clone(),
            by_namespace: part.by_namespace.clone(),
            workloads: self.workloads.clone(),
            policies: part.policies.clone(),
            objects: self.logged.clone(),
            health,
        };
        let mut problems: Vec<String> = self.problems.values().cloned().collect();
        problems.extend(part.problems.iter().cloned());
        (cluster, problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use serde_json::json;

    use super::*;

    fn health() -> SourceHealth {
        Cluster::unsynced("").health
    }

    fn objects() -> Vec<Value> {
        let mut out = vec![
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "annotations": {"linkerd.io/inject": "enabled"}}}),
            json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                   "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
                   "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": "http"}}),
            json!({"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web"},
                            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "api"}]}}),
        ];
        for app in ["web", "api", "db"] {
            out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {
                    "metadata": {"labels": {"app": app, "track": "template"}},
                    "spec": {"serviceAccountName": app, "containers": [{"name": "app",
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}}}));
            out.push(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": app, "namespace": "shop"},
                "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": "http"}]}}));
            for (i, running) in [(1, true), (2, false)] {
                out.push(pod(app, i, running));
            }
        }
        out
    }

    fn pod(app: &str, i: u32, running: bool) -> Value {
        let mut annotations = serde_json::Map::new();
        if running {
            annotations.insert(RUNNING_MARK.into(), json!("true"));
        }
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{app}-5d8f-{i}"), "namespace": "shop",
                         "labels": {"app": app, "pod-template-hash": "5d8f", "track": format!("pod{i}")},
                         "annotations": annotations,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{app}-5d8f")}]},
            "spec": {"serviceAccountName": app, "containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 9090}]},
                {"name": "linkerd-proxy"}]}})
    }

    /// The index after events must say what a full rebuild from the same objects says.
    fn same_as_rebuilt(ix: &mut Index, objects: &[Value]) {
        let (inc, p1) = ix.snapshot(health());
        let (full, p2) = Cluster::from_objects(objects.to_vec(), health());
        assert_eq!(inc.workloads, full.workloads);
        assert_eq!(inc.policy, full.policy);
        assert_eq!(inc.policies, full.policies);
        assert_eq!(p1, p2);
        for ns in ["shop", "other"] {
            assert_eq!(inc.policy_for(ns), full.policy_for(ns));
        }
    }

    #[test]
    fn every_kind_of_event_leaves_the_index_as_a_rebuild_would() {
        let mut objs = objects();
        let mut ix = Index::default();
        for o in &objs {
            assert!(ix.apply(o.clone()));
        }
        same_as_rebuilt(&mut ix, &objs);
        let (c, _) = ix.snapshot(health());
        let web = &c.workloads[&WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        }];
        assert_eq!(
            (web.running_pods, web.port, web.meshed),
            (1, Some(9090), true)
        );
        assert_eq!(
            web.pod.labels["track"], "pod1",
            "the running pod lends its labels"
        );

        // A resync of an unchanged object changes nothing.
        assert!(!ix.apply(objs[1].clone()));
        // The second pod starts running.
        let i = objs
            .iter()
            .position(|o| o["metadata"]["name"] == "web-5d8f-2")
            .unwrap();
        objs[i] = pod("web", 2, true);
        assert!(ix.apply(objs[i].clone()));
        same_as_rebuilt(&mut ix, &objs);
        // A Service goes: the port falls back to the pod's first named port.
        let i = objs
            .iter()
            .position(|o| o["kind"] == "Service" && o["metadata"]["name"] == "api")
            .unwrap();
        let gone = objs.remove(i);
        assert!(ix.delete(&gone));
        same_as_rebuilt(&mut ix, &objs);
        // The Namespace turns injection off and denies by default.
        objs[0] = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
            "annotations": {"config.linkerd.io/default-inbound-policy": "deny"}}});
        assert!(ix.apply(objs[0].clone()));
        same_as_rebuilt(&mut ix, &objs);
        // A policy object changes, and a broken one is named, not fatal.
        objs[1]["spec"]["port"] = json!(8080);
        objs.push(
            json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
            "metadata": {"name": "broken", "namespace": "shop"}, "spec": {"podSelector": "all"}}),
        );
        assert!(ix.apply(objs[1].clone()));
        assert!(ix.apply(objs.last().unwrap().clone()));
        same_as_rebuilt(&mut ix, &objs);
        assert!(
            ix.snapshot(health())
                .1
                .iter()
                .any(|p| p.contains("Server shop/broken"))
        );
        // A Deployment is deleted; its pods stay (orphans count for nothing).
        let i = objs
            .iter()
            .position(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "db")
            .unwrap();
        let gone = objs.remove(i);
        assert!(ix.delete(&gone));
        same_as_rebuilt(&mut ix, &objs);
        // Pods are listed again without api's pods.
        let pods: Vec<Value> = objs
            .iter()
            .filter(|o| o["kind"] == "Pod" && o["metadata"]["labels"]["app"] != "api")
            .cloned()
            .collect();
        objs.retain(|o| !(o["kind"] == "Pod" && o["metadata"]["labels"]["app"] == "api"));
        assert!(ix.relist("", "Pod", pods));
        same_as_rebuilt(&mut ix, &objs);
        assert_eq!(ix.len(), objs.len());
    }

    #[test]
    fn an_unchanged_workload_is_shared_between_snapshots() {
        let mut objs = objects();
        let mut ix = Index::default();
        for o in &objs {
            ix.apply(o.clone());
        }
        let (before, _) = ix.snapshot(health());
        let i = objs
            .iter()
            .position(|o| o["metadata"]["name"] == "web-5d8f-2")
            .unwrap();
        objs[i] = pod("web", 2, true);
        ix.apply(objs[i].clone());
        let (after, _) = ix.snapshot(health());
        let id = |name: &str| WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: name.into(),
        };
        assert!(Arc::ptr_eq(
            &before.workloads[&id("api")],
            &after.workloads[&id("api")]
        ));
        assert!(!Arc::ptr_eq(
            &before.workloads[&id("web")],
            &after.workloads[&id("web")]
        ));
        assert_eq!(after.workloads[&id("web")].running_pods, 2);
        assert_eq!(
            before.workloads[&id("web")].running_pods,
            1,
            "a snapshot never changes"
        );
    }
}
