//! The Kubernetes side of the graph. One kube-rs watcher per kind (with kube's backoff) sends
//! its events to a single index task, which owns every object and, after each burst of changes,
//! publishes a typed [`Cluster`]: the policy set, workloads as policy sees their pods, Services,
//! the policy objects themselves, and the health of the watches.
//!
//! Objects are stored slimmed (no `managedFields`; Pods keep only what policy and topology read),
//! and a malformed object is logged once and skipped, never fatal: Linkerd's policy controller
//! does the same.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use mesh_k8s::{
    DEFAULT_POLICY_ANNOTATION, Manifests,
    manifest::Document,
    resources::{Resource, Workload as K8sWorkload},
};
use mesh_model::{
    PolicyKey, PolicyObject, SourceHealth, WorkloadRef,
    policy::{PodInfo, PolicySet},
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// A kind the collector watches.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// API group (empty for core).
    pub group: &'static str,
    /// Version watched.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

/// Everything the collector watches: what its RBAC role must allow to `list` and `watch`.
pub const WATCHED: [Kind; 15] = [
    kind("apps", "v1", "Deployment", "deployments"),
    kind("apps", "v1", "StatefulSet", "statefulsets"),
    kind("apps", "v1", "DaemonSet", "daemonsets"),
    kind("", "v1", "Pod", "pods"),
    kind("", "v1", "Service", "services"),
    kind("", "v1", "Namespace", "namespaces"),
    kind("", "v1", "ConfigMap", "configmaps"),
    kind("policy.linkerd.io", "v1beta3", "Server", "servers"),
    kind(
        "policy.linkerd.io",
        "v1beta1",
        "ServerAuthorization",
        "serverauthorizations",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "MeshTLSAuthentication",
        "meshtlsauthentications",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "NetworkAuthentication",
        "networkauthentications",
    ),
    kind("policy.linkerd.io", "v1beta3", "HTTPRoute", "httproutes"),
    kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    kind("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
];

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }

    /// `servers.policy.linkerd.io`, as kubectl names it.
    fn describe(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A workload as the cluster describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterWorkload {
    /// Its pods as policy sees them (a running pod's labels when one exists, else the template's).
    pub pod: PodInfo,
    /// Service account its pods run as.
    pub service_account: String,
    /// Whether its pods get (or have) a Linkerd proxy.
    pub meshed: bool,
    /// Running pods, when Pods are visible.
    pub running_pods: u32,
    /// The port traffic to it arrives on (see [`Cluster::from_objects`]).
    pub port: Option<u16>,
}

/// A Service: which pods it selects and the ports it forwards.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod selector (a Service without one selects nothing).
    pub selector: BTreeMap<String, String>,
    /// `(port, targetPort)`; targetPort is a number or a container port name.
    pub ports: Vec<(u16, Value)>,
}

/// What Kubernetes says, typed, at one moment.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The policy set (with cluster settings from `linkerd-config`).
    pub policy: PolicySet,
    /// The same, split by namespace: what explaining access to a pod of that namespace can
    /// consult (its Servers, authorizations and routes, the authentications they name).
    by_namespace: HashMap<String, Arc<PolicySet>>,
    /// Deployments, StatefulSets and DaemonSets.
    pub workloads: Arc<BTreeMap<WorkloadRef, ClusterWorkload>>,
    /// Services.
    pub services: Arc<Vec<ServiceInfo>>,
    /// Linkerd policy objects, as the graph carries them.
    pub policies: Arc<BTreeMap<PolicyKey, PolicyObject>>,
    /// Health of the watches.
    pub health: SourceHealth,
}

impl Cluster {
    /// The cluster before anything was listed.
    pub fn unsynced(error: impl Into<String>) -> Self {
        Self {
            policy: PolicySet::default(),
            by_namespace: HashMap::new(),
            workloads: Arc::default(),
            services: Arc::default(),
            policies: Arc::default(),
            health: SourceHealth {
                source: "kubernetes".into(),
                ok: false,
                last_success: None,
                error: error.into(),
            },
        }
    }

    /// A healthy cluster typed from manifests (YAML, several documents each), for tests,
    /// tools and benchmarks that hold objects rather than an API server. Returns the cluster
    /// and what could not be read.
    pub fn from_manifests(texts: &[&str]) -> (Self, Vec<String>) {
        let mut objects = Vec::new();
        let mut problems = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let (docs, p) = mesh_k8s::manifest::parse_text(&format!("manifest {i}"), text);
            objects.extend(docs.into_iter().map(|d| d.value));
            problems.extend(p.iter().map(ToString::to_string));
        }
        let health = SourceHealth {
            source: "kubernetes".into(),
            ok: true,
            last_success: Some(std::time::SystemTime::now()),
            error: String::new(),
        };
        let (cluster, unreadable) = Self::from_objects(objects, health);
        problems.extend(unreadable);
        (cluster, problems)
    }

    /// Types a set of objects (as the API server returns them). Returns the cluster and the
    /// objects that could not be read, each `Kind ns/name: why`.
    pub fn from_objects(objects: Vec<Value>, health: SourceHealth) -> (Self, Vec<String>) {
        let docs = objects
            .into_iter()
            .map(|value| Document {
                file: "kubernetes".into(),
                line: 0,
                value,
            })
            .collect();
        let m = Manifests::from_documents(docs, Vec::new());
        let problems = m
            .problems
            .iter()
            .map(|p| format!("{}: {} {}", p.object, p.field, p.message))
            .collect();
        let mut ns_default = BTreeMap::new();
        let mut ns_inject = BTreeSet::new();
        for (_, r) in &m.resources {
            if let Resource::Namespace(meta) = r {
                if let Some(p) = meta.annotations.get(DEFAULT_POLICY_ANNOTATION) {
                    ns_default.insert(meta.name.clone(), p.clone());
                }
                if meta.annotations.get(INJECT).map(String::as_str) == Some("enabled") {
                    ns_inject.insert(meta.name.clone());
                }
            }
        }
        let mut workloads = BTreeMap::new();
        let mut pods = Vec::new();
        let mut services = Vec::new();
        let mut policies = BTreeMap::new();
        for (doc, r) in &m.resources {
            match r {
                Resource::Workload(w) if w.kind == "Pod" => pods.push(w),
                Resource::Workload(w) => {
                    let namespace = w.meta.namespace.clone().unwrap_or_default();
                    let (pod, service_account) =
                        mesh_k8s::pod_info(w, ns_default.get(&namespace).cloned());
                    let inject = template_annotation(w, INJECT);
                    let meshed = match inject.as_deref() {
                        Some("enabled") => true,
                        Some(_) => false,
                        None => ns_inject.contains(&namespace),
                    };
                    let id = WorkloadRef {
                        namespace,
                        kind: w.kind.clone(),
                        name: w.meta.name.clone(),
                    };
                    workloads.insert(
                        id,
                        ClusterWorkload {
                            pod,
                            service_account,
                            meshed,
                            running_pods: 0,
                            port: None,
                        },
                    );
                }
                Resource::Other if doc.value["kind"] == "Service" => {
                    services.extend(service(&doc.value));
                }
                Resource::Server(_)
                | Resource::AuthorizationPolicy(_)
                | Resource::MeshTlsAuthentication(_)
                | Resource::NetworkAuthentication(_)
                | Resource::ServerAuthorization(_)
                | Resource::HttpRoute(_)
                | Resource::GrpcRoute(_) => {
                    let o = policy_object(&doc.value);
                    policies.insert(o.key.clone(), o);
                }
                _ => {}
            }
        }
        // Pods: running ones count, and a running pod's labels and ports (the first by name)
        // are what the proxies enforce now; during a rollout the template is ahead of them.
        let mut seen = BTreeSet::new();
        for p in pods {
            let Some(owner) = owner_of(p) else { continue };
            let Some(w) = workloads.get_mut(&owner) else {
                continue;
            };
            if !p.meta.annotations.contains_key(RUNNING_MARK) {
                continue;
            }
            w.running_pods += 1;
            if p.pod
                .spec
                .as_ref()
                .is_some_and(|s| s.containers.iter().any(|c| c.name == "linkerd-proxy"))
            {
                w.meshed = true;
            }
            if seen.insert(owner) {
                let namespace = w.pod.namespace.clone();
                let (pod, _) = mesh_k8s::pod_info(p, ns_default.get(&namespace).cloned());
                w.pod.labels = pod.labels;
                if !pod.ports.is_empty() {
                    w.pod.ports = pod.ports;
                }
            }
        }
        let mut by_ns: BTreeMap<&str, Vec<&ServiceInfo>> = BTreeMap::new();
        for svc in &services {
            by_ns.entry(svc.namespace.as_str()).or_default().push(svc);
        }
        for (id, w) in &mut workloads {
            let in_ns = by_ns
                .get(id.namespace.as_str())
                .map_or(&[][..], Vec::as_slice);
            w.port = port_of(in_ns, &w.pod);
        }
        let policy = m.policy_set();
        (
            Self {
                by_namespace: split(&policy),
                policy,
                workloads: Arc::new(workloads),
                services: Arc::new(services),
                policies: Arc::new(policies),
                health,
            },
            problems,
        )
    }
}

impl Cluster {
    /// The cluster as it would be with `proposed` applied: each proposed policy object replaces
    /// the one of the same kind, namespace and name, or is added. For what-if questions.
    pub fn with_proposed(&self, proposed: &PolicySet) -> Self {
        fn merge<T: Clone>(old: &[T], new: &[T], key: impl Fn(&T) -> (String, String)) -> Vec<T> {
            let mut out: Vec<T> = old
                .iter()
                .filter(|o| !new.iter().any(|n| key(n) == key(o)))
                .cloned()
                .collect();
            out.extend(new.iter().cloned());
            out
        }
        let (a, b) = (&self.policy, proposed);
        let policy = PolicySet {
            servers: merge(&a.servers, &b.servers, |x| {
                (x.namespace.clone(), x.name.clone())
            }),
            authorization_policies: merge(
                &a.authorization_policies,
                &b.authorization_policies,
                |x| (x.namespace.clone(), x.name.clone()),
            ),
            mesh_tls_authentications: merge(
                &a.mesh_tls_authentications,
                &b.mesh_tls_authentications,
                |x| (x.namespace.clone(), x.name.clone()),
            ),
            network_authentications: merge(
                &a.network_authentications,
                &b.network_authentications,
                |x| (x.namespace.clone(), x.name.clone()),
            ),
            server_authorizations: merge(&a.server_authorizations, &b.server_authorizations, |x| {
                (x.namespace.clone(), x.name.clone())
            }),
            routes: merge(&a.routes, &b.routes, |x| {
                (
                    x.namespace.clone(),
                    format!("{}/{}/{}", x.group, x.kind, x.name),
                )
            }),
            ..a.clone()
        };
        // Only the namespaces the proposal reaches are split anew; the rest are shared.
        let mut by_namespace = self.by_namespace.clone();
        for ns in self.namespaces_affected_by(proposed) {
            by_namespace.insert(ns.clone(), Arc::new(part_for(&policy, &ns)));
        }
        Self {
            by_namespace,
            policy,
            ..self.clone()
        }
    }

    /// Namespaces whose pods' verdicts `proposed` can change: its own, and those whose
    /// AuthorizationPolicies name authentications in them. Edges into other namespaces keep
    /// their verdicts, so a what-if looks at these only.
    pub fn namespaces_affected_by(&self, proposed: &PolicySet) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        out.extend(proposed.servers.iter().map(|x| x.namespace.clone()));
        out.extend(
            proposed
                .authorization_policies
                .iter()
                .map(|x| x.namespace.clone()),
        );
        out.extend(
            proposed
                .mesh_tls_authentications
                .iter()
                .map(|x| x.namespace.clone()),
        );
        out.extend(
            proposed
                .network_authentications
                .iter()
                .map(|x| x.namespace.clone()),
        );
        out.extend(
            proposed
                .server_authorizations
                .iter()
                .map(|x| x.namespace.clone()),
        );
        out.extend(proposed.routes.iter().map(|x| x.namespace.clone()));
        let referring: Vec<String> = self
            .policy
            .authorization_policies
            .iter()
            .chain(&proposed.authorization_policies)
            .filter(|ap| {
                ap.required_authentication_refs
                    .iter()
                    .any(|r| r.namespace.as_ref().is_some_and(|n| out.contains(n)))
            })
            .map(|ap| ap.namespace.clone())
            .collect();
        out.extend(referring);
        out
    }

    /// The policy that governs pods of `namespace`.
    pub fn policy_for(&self, namespace: &str) -> &PolicySet {
        self.by_namespace
            .get(namespace)
            .map_or(&self.policy, |p| p.as_ref())
    }
}

/// Splits a policy set by namespace. Authorizations only ever apply to Servers, routes and
/// Namespaces of their own namespace; authentications can be named across namespaces, so each
/// part also holds those its policies name.
/// One namespace's part of a policy set (see [`split`]).
fn part_for(all: &PolicySet, ns: &str) -> PolicySet {
    let in_ns = |x: &str| x == ns;
    let named_from_here = |m_ns: &str, m_name: &str| {
        all.authorization_policies.iter().any(|ap| {
            in_ns(&ap.namespace)
                && ap
                    .required_authentication_refs
                    .iter()
                    .any(|r| r.namespace.as_deref() == Some(m_ns) && r.name == m_name)
        })
    };
    PolicySet {
        servers: all
            .servers
            .iter()
            .filter(|x| in_ns(&x.namespace))
            .cloned()
            .collect(),
        authorization_policies: all
            .authorization_policies
            .iter()
            .filter(|x| in_ns(&x.namespace))
            .cloned()
            .collect(),
        mesh_tls_authentications: all
            .mesh_tls_authentications
            .iter()
            .filter(|x| in_ns(&x.namespace) || named_from_here(&x.namespace, &x.name))
            .cloned()
            .collect(),
        network_authentications: all
            .network_authentications
            .iter()
            .filter(|x| in_ns(&x.namespace) || named_from_here(&x.namespace, &x.name))
            .cloned()
            .collect(),
        server_authorizations: all
            .server_authorizations
            .iter()
            .filter(|x| in_ns(&x.namespace))
            .cloned()
            .collect(),
        routes: all
            .routes
            .iter()
            .filter(|x| in_ns(&x.namespace))
            .cloned()
            .collect(),
        ..all.clone()
    }
}

fn split(all: &PolicySet) -> HashMap<String, Arc<PolicySet>> {
    let empty = PolicySet {
        servers: Vec::new(),
        authorization_policies: Vec::new(),
        mesh_tls_authentications: Vec::new(),
        network_authentications: Vec::new(),
        server_authorizations: Vec::new(),
        routes: Vec::new(),
        ..all.clone()
    };
    let mut out: HashMap<String, PolicySet> = HashMap::new();
    fn part<'a>(
        out: &'a mut HashMap<String, PolicySet>,
        empty: &PolicySet,
        ns: &str,
    ) -> &'a mut PolicySet {
        out.entry(ns.to_owned()).or_insert_with(|| empty.clone())
    }
    for x in &all.servers {
        part(&mut out, &empty, &x.namespace).servers.push(x.clone());
    }
    for x in &all.server_authorizations {
        part(&mut out, &empty, &x.namespace)
            .server_authorizations
            .push(x.clone());
    }
    for x in &all.routes {
        part(&mut out, &empty, &x.namespace).routes.push(x.clone());
    }
    for x in &all.authorization_policies {
        part(&mut out, &empty, &x.namespace)
            .authorization_policies
            .push(x.clone());
    }
    for x in &all.mesh_tls_authentications {
        part(&mut out, &empty, &x.namespace)
            .mesh_tls_authentications
            .push(x.clone());
    }
    for x in &all.network_authentications {
        part(&mut out, &empty, &x.namespace)
            .network_authentications
            .push(x.clone());
    }
    // Authentications named from another namespace.
    for ap in &all.authorization_policies {
        for r in &ap.required_authentication_refs {
            let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != ap.namespace) else {
                continue;
            };
            let p = out
                .entry(ap.namespace.clone())
                .or_insert_with(|| empty.clone());
            p.mesh_tls_authentications.extend(
                all.mesh_tls_authentications
                    .iter()
                    .filter(|m| m.namespace == ns && m.name == r.name)
                    .cloned(),
            );
            p.network_authentications.extend(
                all.network_authentications
                    .iter()
                    .filter(|n| n.namespace == ns && n.name == r.name)
                    .cloned(),
            );
        }
    }
    out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// The port traffic to a pod arrives on: the first port of the first Service (of its namespace)
/// that selects it, a named targetPort resolved against the pod's ports; else the pod's first
/// named port. Edges carry no port, so this is the best the cluster can say.
fn port_of(services: &[&ServiceInfo], pod: &PodInfo) -> Option<u16> {
    let selects = |s: &&&ServiceInfo| {
        !s.selector.is_empty() && s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    };
    let from_service = services.iter().find(selects).and_then(|s| {
        let (port, target) = s.ports.first()?;
        match target {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(name) => pod.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
            _ => Some(*port),
        }
    });
    from_service.or_else(|| pod.ports.first().map(|(_, p)| *p))
}

const INJECT: &str = "linkerd.io/inject";
/// Set on slimmed pods whose phase is Running (the phase itself is dropped with the status).
const RUNNING_MARK: &str = "linkerd-mcp.io/running";

fn template_annotation(w: &K8sWorkload, key: &str) -> Option<String> {
    w.pod
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

/// The Deployment, StatefulSet or DaemonSet that owns a pod (via its ReplicaSet for Deployments).
fn owner_of(p: &K8sWorkload) -> Option<WorkloadRef> {
    let namespace = p.meta.namespace.clone()?;
    let o = p.meta.owner_references.first()?;
    let (kind, name) = match o.kind.as_str() {
        "ReplicaSet" => {
            let hash = p.meta.labels.get("pod-template-hash")?;
            let name = o.name.strip_suffix(&format!("-{hash}"))?;
            ("Deployment", name.to_owned())
        }
        "StatefulSet" | "DaemonSet" => (o.kind.as_str(), o.name.clone()),
        _ => return None,
    };
    Some(WorkloadRef {
        namespace,
        kind: kind.to_owned(),
        name,
    })
}

fn service(v: &Value) -> Option<ServiceInfo> {
    let meta = &v["metadata"];
    let selector = v["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let ports = v["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let port = u16::try_from(p["port"].as_u64()?).ok()?;
                    let target = match &p["targetPort"] {
                        Value::Null => Value::from(port),
                        t => t.clone(),
                    };
                    Some((port, target))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ServiceInfo {
        namespace: meta["namespace"].as_str()?.to_owned(),
        name: meta["name"].as_str()?.to_owned(),
        selector,
        ports,
    })
}

/// The object as the graph carries it. Gateway API kinds are qualified with their group
/// (`HTTPRoute.gateway.networking.k8s.io`, as kubectl names them): Linkerd's own HTTPRoute of the
/// same namespace and name is a different object.
fn policy_object(v: &Value) -> PolicyObject {
    let meta = &v["metadata"];
    let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    let api_version = s(&v["apiVersion"]);
    let kind = match api_version.split_once('/') {
        Some(("gateway.networking.k8s.io", _)) => {
            format!("{}.gateway.networking.k8s.io", s(&v["kind"]))
        }
        _ => s(&v["kind"]),
    };
    PolicyObject {
        api_version,
        key: PolicyKey {
            kind,
            namespace: s(&meta["namespace"]),
            name: s(&meta["name"]),
        },
        resource_version: s(&meta["resourceVersion"]),
        spec_json: v["spec"].to_string(),
    }
}

/// Keeps what the index reads. Pods shrink to what policy and topology need (a 10,000-pod
/// cluster's full pod specs would dominate the collector's memory); everything loses
/// `managedFields`.
fn slim(k: &Kind, mut v: Value) -> Value {
    v["apiVersion"] = Value::from(k.api_version());
    v["kind"] = Value::from(k.kind);
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
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

type Key = (usize, String, String);

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
        let api = Api::<DynamicObject>::all_with(client.clone(), &k.api_resource());
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
    objects: BTreeMap<Key, Value>,
    /// Objects listed since the last `Init`, per kind, swapped in at `InitDone`.
    relisting: BTreeMap<usize, BTreeMap<Key, Value>>,
    synced: BTreeSet<usize>,
    /// The last error of each kind, and when.
    errors: BTreeMap<usize, (String, std::time::Instant)>,
    /// Kinds the API server does not serve: empty, not failing.
    missing: BTreeSet<usize>,
    last_success: Option<SystemTime>,
    logged: BTreeSet<String>,
}

fn key(i: usize, v: &Value) -> Key {
    let m = &v["metadata"];
    (
        i,
        m["namespace"].as_str().unwrap_or_default().to_owned(),
        m["name"].as_str().unwrap_or_default().to_owned(),
    )
}

impl Index {
    /// Applies one message; whether the objects changed.
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
                let before = self.objects.len();
                self.objects.retain(|k, _| k.0 != i);
                before != self.objects.len()
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
                        self.relisting.insert(i, BTreeMap::new());
                        false
                    }
                    watcher::Event::InitApply(v) => {
                        self.relisting.entry(i).or_default().insert(key(i, &v), v);
                        false
                    }
                    watcher::Event::InitDone => {
                        let listed = self.relisting.remove(&i).unwrap_or_default();
                        self.objects.retain(|k, _| k.0 != i);
                        self.objects.extend(listed);
                        self.synced.insert(i);
                        true
                    }
                    watcher::Event::Apply(v) => {
                        let k = key(i, &v);
                        self.objects.get(&k) != Some(&v) && {
                            self.objects.insert(k, v);
                            true
                        }
                    }
                    watcher::Event::Delete(v) => self.objects.remove(&key(i, &v)).is_some(),
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
        }
    }
}

/// How long a burst of changes is gathered before the index is rebuilt.
const COALESCE: Duration = Duration::from_millis(100);
/// Least time between two rebuilds.
const REBUILD_EVERY: Duration = Duration::from_secs(1);
/// How often health is looked at when nothing arrives (errors age out).
const HEALTH_EVERY: Duration = Duration::from_secs(10);

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
            m = inbox.recv() => match m { Some(m) => idx.apply(m), None => return },
            _ = tick.tick() => false,
            () = out.closed() => return,
        };
        // Coalesce a burst (a relist, a rollout) into one rebuild, and rebuild at most once per
        // REBUILD_EVERY: typing a 10,000-workload cluster costs about a second of CPU.
        let deadline = (tokio::time::Instant::now() + COALESCE).max(last_rebuild + REBUILD_EVERY);
        if changed {
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, inbox.recv()).await {
                changed |= idx.apply(m);
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
        let objects: Vec<Value> = idx.objects.values().cloned().collect();
        // Off the async workers: with an embedded collector they also serve gRPC.
        let built =
            tokio::task::spawn_blocking(move || Cluster::from_objects(objects, health)).await;
        let Ok((cluster, problems)) = built else {
            tracing::error!("typing the cluster failed; keeping the previous index");
            continue;
        };
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
        assert!(
            slim(&kind_of("Deployment"), deploy.clone())["metadata"]
                .get("managedFields")
                .is_none()
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

    #[test]
    fn a_malformed_policy_object_is_skipped_and_named() {
        let objects = vec![
            json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                   "metadata": {"name": "broken", "namespace": "shop"},
                   "spec": {"podSelector": "everything", "port": 80}}),
            json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                   "metadata": {"name": "fine", "namespace": "shop", "resourceVersion": "7"},
                   "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": 80}}),
        ];
        let (c, problems) = Cluster::from_objects(objects, health());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("Server shop/broken"), "{problems:?}");
        assert_eq!(c.policy.servers.len(), 1);
        assert_eq!(c.policy.servers[0].name, "fine");
        let p = c.policies.values().next().expect("one object");
        assert_eq!(
            (p.key.name.as_str(), p.resource_version.as_str()),
            ("fine", "7")
        );
    }
}
