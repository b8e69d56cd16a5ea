//! Least-privilege policy proposed from observed traffic: for each workload of a namespace (or
//! one workload), the Server, MeshTLSAuthentication and AuthorizationPolicy that admit exactly
//! the callers the graph saw, and nothing else; each object says which observed edges justify
//! it. Existing policy is respected: callers an authorization already admits need nothing, and
//! an existing Server is reused. Callers that cannot be admitted by identity (plaintext,
//! unmeshed, unknown identity) are listed with what to do; they are never admitted silently.
//! The proposal is proved against the observed edges before anyone applies it: its what-if
//! names every observed edge it would deny.

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::{Decision, Destination, Edge, MeshGraph, TlsStatus, WorkloadRef};
use serde_json::{Value, json};

use crate::{
    Manifests,
    cluster::{Cluster, ClusterWorkload},
    document::Document,
    overlay::{ports_of, verdict_at},
};

/// What to lock down: a namespace, or one workload of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The namespace.
    pub namespace: String,
    /// One workload's name; `None` for every workload of the namespace.
    pub workload: Option<String>,
}

/// The Servers' `accessPolicy`: `deny` enforces; `audit` admits and flags what no
/// authorization admits (the first phase of a rollout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `accessPolicy: audit`.
    Audit,
    /// `accessPolicy: deny`.
    Deny,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Deny => "deny",
        }
    }
}

/// How to propose: the Servers' `accessPolicy`, and whether to authorize per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The Servers' `accessPolicy`.
    pub access: Access,
    /// Authorize each observed HTTPRoute on its own (an inbound HTTPRoute on the Server with
    /// the route's matches, and an authorization naming only that route's callers) where every
    /// call to the port went through a named HTTPRoute; elsewhere, per Server, with a note.
    pub per_route: bool,
}

impl From<Access> for Options {
    fn from(access: Access) -> Self {
        Self {
            access,
            per_route: false,
        }
    }
}

/// One proposed object and the observed edges that justify it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposedObject {
    /// The object, as `kubectl apply` takes it.
    pub manifest: Value,
    /// Why: one line per observed edge (or reason) it serves.
    pub why: Vec<String>,
}

/// A caller the proposal cannot admit by identity, and what to do about it.
#[derive(Clone, Debug, PartialEq)]
pub struct NeedsAction {
    /// The calling workload (or authority).
    pub caller: String,
    /// The workload it calls.
    pub callee: WorkloadRef,
    /// Its requests per second in the window.
    pub rps: f64,
    /// Why it cannot be admitted by identity, and what to do.
    pub advice: String,
}

/// The least-privilege proposal for a target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposal {
    /// Objects to create, in apply order (Servers, authentications, authorizations).
    pub objects: Vec<ProposedObject>,
    /// Callers that need action before enforcing.
    pub needs_action: Vec<NeedsAction>,
    /// Observed edges the proposal, applied, would deny, other than those in `needs_action`:
    /// empty for a sound proposal.
    pub newly_denied: Vec<String>,
    /// Workloads left alone, and why (no traffic, unmeshed, already covered, no port known).
    pub notes: Vec<String>,
}

/// Why no proposal can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// The namespace has no workload in the Kubernetes view.
    #[error("namespace {0} has no workloads in the Kubernetes view")]
    UnknownNamespace(String),
    /// The workload is not in the Kubernetes view.
    #[error("no workload {0} in the Kubernetes view")]
    UnknownWorkload(String),
}

/// Labels that name one pod or one revision: never part of a proposed selector.
const POD_SPECIFIC: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
];

/// The least-privilege policy for `target`, from the edges `graph` observed and the policy in
/// `cluster`, with Servers at `access`.
pub fn propose(
    graph: &MeshGraph,
    cluster: &Cluster,
    target: &Target,
    options: impl Into<Options>,
) -> Result<Proposal, ProposeError> {
    let options = options.into();
    let ns = target.namespace.as_str();
    let workloads: Vec<(&WorkloadRef, &ClusterWorkload)> = cluster
        .workloads
        .iter()
        .filter(|(id, _)| id.namespace == ns)
        .filter(|(id, _)| target.workload.as_ref().is_none_or(|w| *w == id.name))
        .map(|(id, cw)| (id, cw.as_ref()))
        .collect();
    if workloads.is_empty() {
        return Err(match &target.workload {
            Some(w) => ProposeError::UnknownWorkload(format!("{ns}/{w}")),
            None => ProposeError::UnknownNamespace(ns.to_owned()),
        });
    }
    let mut out = Proposal::default();
    let mut targeted: BTreeSet<&WorkloadRef> = BTreeSet::new();
    for (id, cw) in workloads {
        let inbound: Vec<&Edge> = graph
            .edges
            .values()
            .filter(|e| e.key.dst == Destination::Workload(id.clone()) && e.metrics.rps > 0.0)
            .collect();
        if !cw.meshed {
            out.notes.push(format!(
                "{id}: not meshed, so Linkerd policy does not apply"
            ));
            continue;
        }
        if inbound.is_empty() {
            out.notes.push(format!(
                "{id}: no traffic observed in the window; nothing proposed (a Server with no authorization would deny everything)"
            ));
            continue;
        }
        // A Server per port the callers reached (a call's routes name the Service port it
        // used; without routes, the workload's own port).
        let mut by_port: BTreeMap<u16, Vec<&Edge>> = BTreeMap::new();
        for e in &inbound {
            for port in ports_of(e, cw) {
                by_port.entry(port).or_default().push(e);
            }
        }
        if by_port.is_empty() {
            out.notes.push(format!(
                "{id}: no Service port or named container port is known"
            ));
            continue;
        }
        targeted.insert(id);
        for (port, edges) in by_port {
            propose_for(id, cw, port, &edges, cluster, options, &mut out);
        }
    }
    prove(graph, cluster, &targeted, &mut out);
    Ok(out)
}

/// The objects for one workload's port.
fn propose_for(
    id: &WorkloadRef,
    cw: &ClusterWorkload,
    port: u16,
    inbound: &[&Edge],
    cluster: &Cluster,
    options: Options,
    out: &mut Proposal,
) {
    let access = options.access;
    let ns = id.namespace.as_str();
    // Identities to admit, with the edges that justify each; callers already admitted by an
    // authorization need nothing.
    let mut admit: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut spiffe: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut existing_server = None;
    for e in inbound {
        let v = verdict_at(cluster, e, port);
        if existing_server.is_none() && !v.server.is_empty() {
            existing_server = v.server.split_once('/').map(|(_, n)| n.to_owned());
        }
        let why = format!(
            "{} -> {}: {:.2} rps observed ({})",
            e.key.src, id, e.metrics.rps, e.key.protocol
        );
        // What an earlier proposal of this target wrote (a rollout being re-proposed) is
        // regenerated, with every caller it admits, rather than kept as someone else's policy:
        // the new authentication must list the old callers as well as the new ones.
        let ours = v
            .server
            .split_once('/')
            .map(|(_, n)| format!("{ns}/{n}-observed"));
        let only_ours = v
            .authorization_policies
            .iter()
            .all(|p| Some(p) == ours.as_ref());
        if v.decision == Decision::Allowed && !v.authorization_policies.is_empty() && !only_ours {
            out.notes.push(format!(
                "{} -> {id}: already admitted by {}",
                e.key.src,
                v.authorization_policies.join(", ")
            ));
            continue;
        }
        if v.decision == Decision::Denied {
            out.notes.push(format!(
                "{} -> {id}: denied by the policy in force; the proposal keeps it denied",
                e.key.src
            ));
            continue;
        }
        let advice = match (e.tls, e.client_identity.as_str()) {
            (TlsStatus::Mtls, "") => Some(
                "mTLS, but its identity is unknown: give it a service account of its own, or confirm its identity and add it to the MeshTLSAuthentication".to_owned(),
            ),
            (TlsStatus::Mtls, identity) => {
                match mesh_model::service_account_of(identity) {
                    Some((sa, sa_ns)) => admit
                        .entry((sa_ns.to_owned(), sa.to_owned()))
                        .or_default()
                        .push(why.clone()),
                    None => spiffe.entry(identity.to_owned()).or_default().push(why.clone()),
                }
                None
            }
            (_, _) if e.no_tls_reason.is_empty() => Some(
                "not mTLS (unmeshed or unknown): mesh it, or admit its network with a NetworkAuthentication you confirm".to_owned(),
            ),
            (_, _) => Some(format!(
                "not mTLS ({}): mesh it, or admit its network with a NetworkAuthentication you confirm",
                e.no_tls_reason
            )),
        };
        if let Some(advice) = advice {
            out.needs_action.push(NeedsAction {
                caller: e.key.src.to_string(),
                callee: id.clone(),
                rps: e.metrics.rps,
                advice,
            });
        }
    }
    if admit.is_empty() && spiffe.is_empty() {
        return;
    }
    let port_ref = cw
        .pod
        .ports
        .iter()
        .find(|(_, p)| *p == port)
        .map_or_else(|| json!(port), |(name, _)| json!(name));
    let port_word = port_ref
        .as_str()
        .map_or_else(|| port.to_string(), str::to_owned);
    let server = match existing_server {
        Some(name) => name,
        None => {
            let name = format!("{}-{port_word}", id.name);
            let labels: BTreeMap<&String, &String> = cw
                .pod
                .labels
                .iter()
                .filter(|(k, _)| !POD_SPECIFIC.contains(&k.as_str()))
                .collect();
            out.objects.push(ProposedObject {
                manifest: json!({
                    "apiVersion": "policy.linkerd.io/v1beta3",
                    "kind": "Server",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "podSelector": {"matchLabels": labels},
                        "port": port_ref,
                        "accessPolicy": access.as_str(),
                    },
                }),
                why: vec![format!(
                    "{id} receives traffic on port {port}; no Server selects it (accessPolicy {})",
                    access.as_str()
                )],
            });
            name
        }
    };
    if options.per_route
        && spiffe.is_empty()
        && let Some(routes) = per_route(id, &server, inbound, &admit, cluster, out)
    {
        out.objects.extend(routes);
        return;
    }
    let mut why: Vec<String> = admit
        .values()
        .chain(spiffe.values())
        .flatten()
        .cloned()
        .collect();
    why.sort();
    // identities and identityRefs exclude each other: a caller whose identity is not a
    // service account's makes the authentication name everyone by identity.
    let spec = if spiffe.is_empty() {
        let refs: Vec<Value> = admit
            .keys()
            .map(|(sa_ns, sa)| sa_ref(ns, sa_ns, sa))
            .collect();
        json!({ "identityRefs": refs })
    } else {
        let mut all: Vec<String> = admit
            .keys()
            .map(|(sa_ns, sa)| cluster.policy_for(ns).sa_identity(sa, sa_ns))
            .collect();
        all.extend(spiffe.keys().cloned());
        json!({ "identities": all })
    };
    out.objects
        .extend(observed_authorization(ns, &server, "Server", spec, why));
}

/// The MeshTLSAuthentication `<base>-observed-clients` (spec `authn`) and the
/// AuthorizationPolicy `<base>-observed` requiring it for the `target_kind` named `base`, both
/// justified by `why`.
fn observed_authorization(
    ns: &str,
    base: &str,
    target_kind: &str,
    authn: Value,
    why: Vec<String>,
) -> [ProposedObject; 2] {
    let clients = format!("{base}-observed-clients");
    [
        ProposedObject {
            manifest: {
                let mut m = json!({
                    "apiVersion": "policy.linkerd.io/v1alpha1",
                    "kind": "MeshTLSAuthentication",
                    "metadata": {"name": clients, "namespace": ns},
                });
                m["spec"] = authn;
                m
            },
            why: why.clone(),
        },
        ProposedObject {
            manifest: json!({
                "apiVersion": "policy.linkerd.io/v1alpha1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("{base}-observed"), "namespace": ns},
                "spec": {
                    "targetRef": {"group": "policy.linkerd.io", "kind": target_kind, "name": base},
                    "requiredAuthenticationRefs": [
                        {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": clients},
                    ],
                },
            }),
            why,
        },
    ]
}

/// The identity reference of a service account for an authentication in namespace `ns`.
fn sa_ref(ns: &str, sa_ns: &str, sa: &str) -> Value {
    let mut r = json!({"kind": "ServiceAccount", "name": sa});
    if sa_ns != ns {
        r["namespace"] = json!(sa_ns);
    }
    r
}

/// Service accounts (namespace, name) with the observed calls that justify admitting each.
type Callers = BTreeMap<(String, String), Vec<String>>;

/// Per-route objects for Server `server` of `id`: for each HTTPRoute the callers used, an
/// inbound HTTPRoute on the Server with the same matches, the MeshTLSAuthentication of exactly
/// its callers, and an AuthorizationPolicy targeting it. `None` (with a note) unless every
/// admitted call went through a named HTTPRoute the cluster holds: once a route is attached to
/// a Server, Linkerd refuses requests no route matches, so a call on the default route would be
/// cut off.
fn per_route(
    id: &WorkloadRef,
    server: &str,
    inbound: &[&Edge],
    admit: &Callers,
    cluster: &Cluster,
    out: &mut Proposal,
) -> Option<Vec<ProposedObject>> {
    let ns = id.namespace.as_str();
    // Route (namespace, name) -> the service accounts that used it, with why.
    let mut used: BTreeMap<(String, String), Callers> = BTreeMap::new();
    for e in inbound {
        let Some(sa) = mesh_model::service_account_of(&e.client_identity)
            .map(|(sa, sa_ns)| (sa_ns.to_owned(), sa.to_owned()))
            .filter(|k| admit.contains_key(k))
        else {
            continue;
        };
        let named: Vec<&mesh_model::RouteStats> = e
            .routes
            .iter()
            .filter(|r| r.id.kind == "HTTPRoute")
            .collect();
        if named.is_empty() || named.len() != e.routes.len() {
            out.notes.push(format!(
                "{} -> {id}: not every call went through a named HTTPRoute, so the Server {server} is authorized as a whole",
                e.key.src
            ));
            return None;
        }
        for r in named {
            used.entry((r.id.namespace.clone(), r.id.name.clone()))
                .or_default()
                .entry(sa.clone())
                .or_default()
                .push(format!(
                    "{} -> {id} via HTTPRoute {}/{}: {:.2} rps observed",
                    e.key.src, r.id.namespace, r.id.name, r.rps
                ));
        }
    }
    if used.is_empty() {
        return None;
    }
    let mut objects = Vec::new();
    for ((route_ns, route_name), callers) in used {
        let Some(route) = cluster
            .policy
            .routes
            .iter()
            .find(|r| r.kind == "HTTPRoute" && r.namespace == route_ns && r.name == route_name)
        else {
            out.notes.push(format!(
                "HTTPRoute {route_ns}/{route_name} is not in the Kubernetes view, so the Server {server} is authorized as a whole"
            ));
            return None;
        };
        let rules: Vec<Value> = route
            .rules
            .iter()
            .map(|alternatives| {
                let matches: Vec<Value> = alternatives
                    .iter()
                    .map(|m| {
                        let mut v = json!({});
                        match &m.path {
                            Some(crate::eval::PathMatch::Exact(p)) => {
                                v["path"] = json!({"type": "Exact", "value": p});
                            }
                            Some(crate::eval::PathMatch::Prefix(p)) => {
                                v["path"] = json!({"type": "PathPrefix", "value": p});
                            }
                            Some(crate::eval::PathMatch::Regex(p)) => {
                                v["path"] = json!({"type": "RegularExpression", "value": p});
                            }
                            None => {}
                        }
                        if let Some(method) = &m.method {
                            v["method"] = json!(method);
                        }
                        v
                    })
                    .collect();
                if matches.is_empty() {
                    json!({})
                } else {
                    json!({ "matches": matches })
                }
            })
            .collect();
        let base = format!("{server}-{route_name}");
        let why: Vec<String> = callers.values().flatten().cloned().collect();
        objects.push(ProposedObject {
            manifest: json!({
                "apiVersion": "policy.linkerd.io/v1beta3",
                "kind": "HTTPRoute",
                "metadata": {"name": base, "namespace": ns},
                "spec": {
                    "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": server}],
                    "rules": if rules.is_empty() { vec![json!({})] } else { rules },
                },
            }),
            why: vec![format!(
                "the requests of HTTPRoute {route_ns}/{route_name}, as {id} receives them on Server {server}"
            )],
        });
        let refs: Vec<Value> = callers
            .keys()
            .map(|(sa_ns, sa)| sa_ref(ns, sa_ns, sa))
            .collect();
        objects.extend(observed_authorization(
            ns,
            &base,
            "HTTPRoute",
            json!({ "identityRefs": refs }),
            why,
        ));
    }
    Some(objects)
}

/// The proposal's what-if on every observed edge into the targeted workloads: an edge it would
/// deny that is not already listed as needing action is a flaw of the proposal.
fn prove(
    graph: &MeshGraph,
    cluster: &Cluster,
    targeted: &BTreeSet<&WorkloadRef>,
    out: &mut Proposal,
) {
    if out.objects.is_empty() {
        return;
    }
    let docs: Vec<Document> = out
        .objects
        .iter()
        .map(|o| Document {
            file: "proposal".into(),
            line: 0,
            value: o.manifest.clone(),
        })
        .collect();
    let set = Manifests::from_documents(docs, Vec::new()).policy_set();
    let after = cluster.with_proposed(&set);
    for e in graph.edges.values().filter(|e| e.metrics.rps > 0.0) {
        let Destination::Workload(dst) = &e.key.dst else {
            continue;
        };
        if !targeted.contains(dst) {
            continue;
        }
        let Some(cw) = cluster.workloads.get(dst) else {
            continue;
        };
        let listed = out
            .needs_action
            .iter()
            .any(|n| n.caller == e.key.src.to_string() && &n.callee == dst);
        for port in ports_of(e, cw) {
            let before = verdict_at(cluster, e, port).decision;
            let now = verdict_at(&after, e, port).decision;
            if now == Decision::Denied && before != Decision::Denied && !listed {
                out.newly_denied.push(format!(
                    "{} -> {dst} (port {port}): {:.2} rps observed would be denied",
                    e.key.src, e.metrics.rps
                ));
            }
        }
    }
}

impl Proposal {
    /// The objects as multi-document YAML that `meshctl apply -f` and `meshctl validate -f`
    /// take, each preceded by its justification, and every caller that needs action as a
    /// comment at the top.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from(
            "# Least-privilege Linkerd policy proposed by linkerd-mcp from observed traffic.\n",
        );
        for d in &self.newly_denied {
            out.push_str(&format!("# WOULD DENY OBSERVED TRAFFIC: {d}\n"));
        }
        for n in &self.needs_action {
            out.push_str(&format!(
                "# needs action: {} -> {} ({:.2} rps): {}\n",
                n.caller, n.callee, n.rps, n.advice
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("# note: {n}\n"));
        }
        for o in &self.objects {
            out.push_str("---\n");
            for w in &o.why {
                out.push_str(&format!("# {w}\n"));
            }
            out.push_str(&serde_yaml_ng::to_string(&o.manifest).expect("a manifest serializes"));
        }
        out
    }
}

#[cfg(test)]
mod tests;
