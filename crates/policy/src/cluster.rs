//! What Kubernetes says, typed, at one moment ([`Cluster`]): the policy set (with cluster
//! settings from `linkerd-config`), workloads as policy sees their pods (and the port their
//! Services send to), the policy objects themselves, and the health of the source that listed
//! them. Snapshots come from [`crate::index::Index`], which the collector's watchers keep
//! current one event at a time; tests and tools build one from objects or manifests; a what-if
//! overlays proposed policy on one.
//!
//! A malformed object is named and skipped, never fatal: Linkerd's policy controller does the same.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use mesh_model::{PolicyKey, PolicyObject, SourceHealth, WorkloadRef};
use serde_json::Value;

use crate::{
    eval::{PodInfo, PolicySet},
    resources::Workload as K8sWorkload,
};

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
    /// The port traffic to it arrives on: the first port of the first Service of its namespace
    /// that selects it, else its pods' first named port.
    pub port: Option<u16>,
    /// Every port of every Service of its namespace that selects it: (Service, Service port,
    /// the container port it forwards to). How a call to `Service svc:80` (a route's parent)
    /// finds the port it reaches.
    pub service_ports: Vec<(String, u16, u16)>,
}

impl ClusterWorkload {
    /// The container port a call to port `port` of Service `service` reaches, if that Service
    /// selects this workload.
    pub fn target_port(&self, service: &str, port: u16) -> Option<u16> {
        self.service_ports
            .iter()
            .find(|(s, p, _)| s == service && *p == port)
            .map(|(_, _, t)| *t)
    }
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
    pub(crate) by_namespace: HashMap<String, Arc<PolicySet>>,
    /// Deployments, StatefulSets and DaemonSets (each shared between snapshots until it changes).
    pub workloads: Arc<BTreeMap<WorkloadRef, Arc<ClusterWorkload>>>,
    /// Linkerd policy objects, as the graph carries them.
    pub policies: Arc<BTreeMap<PolicyKey, PolicyObject>>,
    /// Every object it was built from, in its change-log form (what the collector logs).
    pub objects: Arc<crate::history::Objects>,
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
            policies: Arc::default(),
            objects: Arc::default(),
            health: SourceHealth {
                source: "kubernetes".into(),
                ok: false,
                last_success: None,
                error: error.into(),
                detail: String::new(),
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
            let (docs, p) = crate::document::parse_text(&format!("manifest {i}"), text);
            objects.extend(docs.into_iter().map(|d| d.value));
            problems.extend(p.iter().map(ToString::to_string));
        }
        let health = SourceHealth {
            source: "kubernetes".into(),
            ok: true,
            last_success: Some(std::time::SystemTime::now()),
            error: String::new(),
            detail: String::new(),
        };
        let (cluster, unreadable) = Self::from_objects(objects, health);
        problems.extend(unreadable);
        (cluster, problems)
    }

    /// Types a set of objects (as the API server returns them). Returns the cluster and the
    /// objects that could not be read, each `Kind ns/name: why`.
    pub fn from_objects(objects: Vec<Value>, health: SourceHealth) -> (Self, Vec<String>) {
        let mut index = crate::index::Index::default();
        for v in objects {
            index.apply(v);
        }
        index.snapshot(health)
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
            egress_networks: merge(&a.egress_networks, &b.egress_networks, |x| {
                (x.namespace.clone(), x.name.clone())
            }),
            rate_limits: merge(&a.rate_limits, &b.rate_limits, |x| {
                (x.namespace.clone(), x.name.clone())
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
        out.extend(proposed.rate_limits.iter().map(|x| x.namespace.clone()));
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

pub(crate) fn split(all: &PolicySet) -> HashMap<String, Arc<PolicySet>> {
    let empty = PolicySet {
        servers: Vec::new(),
        authorization_policies: Vec::new(),
        mesh_tls_authentications: Vec::new(),
        network_authentications: Vec::new(),
        server_authorizations: Vec::new(),
        routes: Vec::new(),
        egress_networks: Vec::new(),
        rate_limits: Vec::new(),
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
    for x in &all.rate_limits {
        part(&mut out, &empty, &x.namespace)
            .rate_limits
            .push(x.clone());
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

/// The port traffic to a pod arrives on when a call says nothing of its port: the first
/// resolved port of the Services that select it ([`service_ports`]); else the pod's first named
/// port.
pub(crate) fn port_of(service_ports: &[(String, u16, u16)], pod: &PodInfo) -> Option<u16> {
    service_ports
        .first()
        .map(|(_, _, t)| *t)
        .or_else(|| pod.ports.first().map(|(_, p)| *p))
}

/// Each port of each Service that selects `pod`, with the container port it forwards to (a
/// named targetPort resolved against the pod's ports; one that does not resolve is left out).
pub(crate) fn service_ports(services: &[&ServiceInfo], pod: &PodInfo) -> Vec<(String, u16, u16)> {
    let selects = |s: &&&ServiceInfo| {
        !s.selector.is_empty() && s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    };
    services
        .iter()
        .filter(selects)
        .flat_map(|s| {
            s.ports.iter().filter_map(|(port, target)| {
                let t = match target {
                    Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Value::String(name) => {
                        pod.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
                    }
                    _ => Some(*port),
                }?;
                Some((s.name.clone(), *port, t))
            })
        })
        .collect()
}

/// Annotation that asks for a proxy.
pub const INJECT: &str = "linkerd.io/inject";
/// Set on slimmed pods whose phase is Running (the phase itself is dropped with the status).
pub const RUNNING_MARK: &str = "linkerd-mcp.io/running";

pub(crate) fn template_annotation(w: &K8sWorkload, key: &str) -> Option<String> {
    w.pod
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

/// The Deployment, StatefulSet or DaemonSet that owns a pod (via its ReplicaSet for Deployments).
pub(crate) fn owner_of(p: &K8sWorkload) -> Option<WorkloadRef> {
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

pub(crate) fn service(v: &Value) -> Option<ServiceInfo> {
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
pub(crate) fn policy_object(v: &Value) -> PolicyObject {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn health() -> SourceHealth {
        Cluster::unsynced("").health
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
