//! Joins Kubernetes into a Prometheus-built graph: workloads the cluster knows (also those with
//! no traffic), service accounts and identities, the policy objects, and on every edge the
//! [`PolicyVerdict`] Linkerd's policy would reach, next to what the proxies reported.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use mesh_model::{
    Decision, Destination, EdgeKey, MeshGraph, PolicyVerdict, Protocol, TlsStatus, Workload,
    WorkloadRef,
};

use crate::{
    cluster::{Cluster, ClusterWorkload},
    eval::{AccessRequest, ClientInfo, PodInfo},
};

/// Requests (HTTP) or connections (TCP) a destination's proxy authorized or refused, from one
/// client identity, over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthzSample {
    /// The receiving workload.
    pub dst: WorkloadRef,
    /// The client's mTLS identity; empty for clients without one.
    pub client_id: String,
    /// `inbound_tcp_authz_*` rather than `inbound_http_authz_*`.
    pub tcp: bool,
    /// Allowed (`*_allow_total`) or denied (`*_deny_total`).
    pub allowed: bool,
    /// Allowed only by audit mode (`authz_kind="default"`, `authz_name="audit"`: the
    /// authorization Linkerd adds for an `audit` Server or default policy): would be denied.
    pub audit: bool,
    /// How many in the window.
    pub count: f64,
}

/// Puts observed authorization rates on the edges they can be attributed to: into `dst`, of the
/// matching protocol family, from the one edge whose client identity is `client_id` (for
/// clients without identity: the one edge into `dst` without mTLS). Ambiguous samples (two
/// workloads sharing a service account call the same destination) are left out rather than
/// guessed.
pub fn attach_observed(graph: &mut MeshGraph, samples: &[AuthzSample]) {
    let secs = graph.window.as_secs_f64().max(1.0);
    let mut sums: BTreeMap<(&WorkloadRef, &str, bool), (f64, f64, f64)> = BTreeMap::new();
    for s in samples {
        let e = sums
            .entry((&s.dst, s.client_id.as_str(), s.tcp))
            .or_default();
        if s.allowed {
            e.0 += s.count;
            if s.audit {
                e.2 += s.count;
            }
        } else {
            e.1 += s.count;
        }
    }
    let mut into: BTreeMap<&WorkloadRef, Vec<&EdgeKey>> = BTreeMap::new();
    for k in graph.edges.keys() {
        if let Destination::Workload(d) = &k.dst {
            into.entry(d).or_default().push(k);
        }
    }
    let mut found: Vec<(EdgeKey, f64, f64, f64)> = Vec::new();
    for ((dst, client, tcp), (allow, deny, audit)) in sums {
        let candidates: Vec<&&EdgeKey> = into
            .get(dst)
            .into_iter()
            .flatten()
            .filter(|k| {
                let e = &graph.edges[**k];
                (k.protocol == Protocol::Tcp) == tcp
                    && if client.is_empty() {
                        e.tls != TlsStatus::Mtls
                    } else {
                        e.client_identity == client
                    }
            })
            .collect();
        if let [k] = candidates.as_slice() {
            found.push(((**k).clone(), allow / secs, deny / secs, audit / secs));
        }
    }
    for (k, allow, deny, audit) in found {
        if let Some(e) = graph.edges.get_mut(&k) {
            let p = &mut e.policy;
            p.observed_allow_rps = Some(p.observed_allow_rps.unwrap_or(0.0) + allow);
            p.observed_deny_rps = Some(p.observed_deny_rps.unwrap_or(0.0) + deny);
            if audit > 0.0 {
                p.observed_audit_rps = Some(p.observed_audit_rps.unwrap_or(0.0) + audit);
            }
        }
    }
}

/// What decides an edge's verdict: the destination, how the client connects and who it is
/// (the source only matters when it is mTLS with an unknown identity: the chain names it).
type VerdictKey = (WorkloadRef, TlsStatus, String, Option<WorkloadRef>);

/// Verdicts already computed. An entry holds while the policy set and what policy reads of its
/// destination (pod labels and ports, meshed, port) are what they were: Prometheus builds come
/// every few seconds, and most Kubernetes changes (pods coming and going, scaling) touch
/// neither, so most builds explain nothing anew. Only entries the last build used are kept.
#[derive(Debug, Default)]
pub struct Verdicts {
    policy: Option<Arc<Cluster>>,
    map: HashMap<VerdictKey, (Seen, PolicyVerdict)>,
}

/// What a verdict read of its destination.
type Seen = (PodInfo, bool, Option<u16>);

fn seen(cw: &ClusterWorkload) -> Seen {
    (cw.pod.clone(), cw.meshed, cw.port)
}

impl Verdicts {
    /// Starts a build against `cluster`: the entries of the last build, unless policy changed.
    fn start(&mut self, cluster: &Arc<Cluster>) -> HashMap<VerdictKey, (Seen, PolicyVerdict)> {
        let same = self
            .policy
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, cluster) || c.policy == cluster.policy);
        self.policy = Some(cluster.clone());
        let old = std::mem::take(&mut self.map);
        if same { old } else { HashMap::new() }
    }
}

/// Joins `cluster` into `graph` (built from Prometheus, observed rates not attached yet) and
/// attaches `authz`, reusing `verdicts` that still hold (see [`Verdicts`]).
pub fn apply(
    graph: &mut MeshGraph,
    cluster: &Arc<Cluster>,
    authz: &[AuthzSample],
    verdicts: &mut Verdicts,
) {
    let set = &cluster.policy;
    for (id, cw) in cluster.workloads.iter() {
        let identity = || {
            if cw.meshed {
                set.sa_identity(&cw.service_account, &id.namespace)
            } else {
                String::new()
            }
        };
        let w = graph
            .workloads
            .entry(id.clone())
            .or_insert_with(|| Workload {
                id: id.clone(),
                service_account: String::new(),
                identity: String::new(),
                meshed: cw.meshed,
                ready_replicas: cw.running_pods,
            });
        if w.service_account.is_empty() {
            w.service_account = cw.service_account.clone();
        }
        if w.identity.is_empty() {
            w.identity = identity();
        }
    }
    for e in graph.edges.values_mut() {
        // The client identity of an edge is the source pods' service account.
        if e.tls == TlsStatus::Mtls
            && e.client_identity.is_empty()
            && let Some(src) = cluster.workloads.get(&e.key.src)
            && src.meshed
        {
            e.client_identity = set.sa_identity(&src.service_account, &e.key.src.namespace);
        }
    }
    attach_observed(graph, authz);
    let mut old = verdicts.start(cluster);
    for e in graph.edges.values_mut() {
        let observed = (
            e.policy.observed_allow_rps,
            e.policy.observed_deny_rps,
            e.policy.observed_audit_rps,
        );
        let unknown_id =
            (e.tls == TlsStatus::Mtls && e.client_identity.is_empty()).then(|| e.key.src.clone());
        let dst = match &e.key.dst {
            Destination::Workload(w) => w.clone(),
            Destination::Authority(_) => {
                // Egress is decided by the client's own proxy: its route metrics say what was
                // admitted and refused; no inbound proxy counts it.
                e.policy = egress_verdict(cluster, e).unwrap_or_else(|| {
                    let mut v = PolicyVerdict::default();
                    (
                        v.observed_allow_rps,
                        v.observed_deny_rps,
                        v.observed_audit_rps,
                    ) = observed;
                    v
                });
                continue;
            }
        };
        let cw = cluster.workloads.get(&dst);
        let key = (dst, e.tls, e.client_identity.clone(), unknown_id);
        if let Some(hit) = verdicts.map.get(&key) {
            e.policy = hit.1.clone();
        } else {
            let kept = old.remove(&key).filter(|(was, _)| {
                cw.is_some_and(|cw| was.0 == cw.pod && was.1 == cw.meshed && was.2 == cw.port)
            });
            let entry = match (kept, cw) {
                (Some(entry), _) => Some(entry),
                (None, Some(cw)) => Some((
                    seen(cw),
                    verdict(cluster, &e.key, e.tls, &e.client_identity, None),
                )),
                (None, None) => None,
            };
            match entry {
                Some(entry) => {
                    e.policy = entry.1.clone();
                    verdicts.map.insert(key, entry);
                }
                None => e.policy = verdict(cluster, &e.key, e.tls, &e.client_identity, None),
            }
        }
        (
            e.policy.observed_allow_rps,
            e.policy.observed_deny_rps,
            e.policy.observed_audit_rps,
        ) = observed;
        e.policy.disagreement = disagreement(&e.policy);
        if !e.routes.is_empty() {
            e.policy.observed_rate_limited_rps =
                Some(e.routes.iter().map(|r| r.rate_limited_rps).sum());
        }
    }
    graph.policies = (*cluster.policies).clone();
}

/// Traffic leaving the mesh through an EgressNetwork: allowed or refused by the client's own
/// proxy, by the routes attached to the EgressNetwork and its `trafficPolicy` for what no route
/// describes (Linkerd's `*-egress-allow` / `*-egress-deny` default routes). `None` for an
/// authority that is not an EgressNetwork.
pub fn egress_verdict(cluster: &Cluster, e: &mesh_model::Edge) -> Option<PolicyVerdict> {
    let (ns, name, port) = e.key.dst.as_egress()?;
    let mut v = PolicyVerdict::default();
    v.chain.push(format!(
        "{} sends traffic out of the mesh through EgressNetwork {ns}/{name} (port {port})",
        e.key.src
    ));
    let Some(net) = cluster.policy.egress_network(ns, name) else {
        v.chain.push(format!(
            "EgressNetwork {ns}/{name} is not in the Kubernetes view"
        ));
        return Some(v);
    };
    // Linkerd's default egress routes carry what no route matched; the proxy named them after
    // the trafficPolicy in force then (`http-egress-allow`, `tls-egress-deny`, ...).
    let default = |r: &&mesh_model::RouteStats| r.id.kind == "default";
    let refused: f64 = e
        .routes
        .iter()
        .filter(|r| default(r) && r.id.name.ends_with("-egress-deny"))
        .map(|r| r.rps)
        .sum();
    let unmatched: f64 = e.routes.iter().filter(default).map(|r| r.rps).sum();
    let matched: Vec<&mesh_model::RouteStats> = e
        .routes
        .iter()
        .filter(|r| !default(r) && r.rps > 0.0)
        .collect();
    let policy = net.traffic_policy.as_str();
    let allow_unmatched = policy == "Allow";
    v.chain.push(format!(
        "its trafficPolicy {policy} {} traffic no route describes{}",
        if allow_unmatched { "admits" } else { "refuses" },
        if allow_unmatched {
            ""
        } else {
            " (the client's proxy answers 403, or closes the connection)"
        }
    ));
    for r in &matched {
        v.chain.push(format!(
            "{:.2}/s matched {} {}/{}, which admits it",
            r.rps, r.id.kind, r.id.namespace, r.id.name
        ));
        v.http_route = format!("{}/{}", r.id.namespace, r.id.name);
    }
    if unmatched > 0.0 {
        v.chain.push(format!(
            "{unmatched:.2}/s matched no route: {}",
            if allow_unmatched {
                "admitted"
            } else {
                "refused"
            }
        ));
    }
    let admitted: f64 = matched.iter().map(|r| r.rps).sum::<f64>() + (unmatched - refused);
    if !e.routes.is_empty() {
        v.observed_allow_rps = Some(admitted);
        v.observed_deny_rps = Some(refused);
    }
    v.decision = if !matched.is_empty() || allow_unmatched {
        Decision::Allowed
    } else {
        Decision::Denied
    };
    v.default_policy = format!("trafficPolicy {policy} (EgressNetwork {ns}/{name})");
    Some(v)
}

/// The HTTPLocalRateLimitPolicy on the verdict's Server, in words, if any.
fn rate_limit_of(cluster: &Cluster, server: &str) -> String {
    let Some((ns, name)) = server.split_once('/') else {
        return String::new();
    };
    cluster
        .policy_for(ns)
        .rate_limit_on(ns, name)
        .map(|r| format!("{}/{}: {}", r.namespace, r.name, r.describe()))
        .unwrap_or_default()
}

/// The verdict `cluster`'s policy reaches on `e` (no observed rates): for what-if questions.
pub fn verdict_of(cluster: &Cluster, e: &mesh_model::Edge) -> PolicyVerdict {
    if let Some(v) = egress_verdict(cluster, e) {
        return v;
    }
    verdict(cluster, &e.key, e.tls, &e.client_identity, None)
}

/// The verdict on edge `e` for its calls to the destination's container port `port` (a
/// workload served on several ports may have a Server on each).
pub fn verdict_at(cluster: &Cluster, e: &mesh_model::Edge, port: u16) -> PolicyVerdict {
    if let Some(v) = egress_verdict(cluster, e) {
        return v;
    }
    verdict(cluster, &e.key, e.tls, &e.client_identity, Some(port))
}

/// The container ports edge `e` reaches on its destination `cw`: those of the Services its
/// routes name as parents (Linkerd 2.14+ proxies report them), else the workload's own port.
pub fn ports_of(e: &mesh_model::Edge, cw: &ClusterWorkload) -> Vec<u16> {
    let mut ports: Vec<u16> = e
        .routes
        .iter()
        .filter_map(|r| {
            let (kind, rest) = r.id.parent.split_once(' ')?;
            let (name, port) = rest.rsplit_once(':')?;
            let (_, service) = name.split_once('/')?;
            (kind == "Service")
                .then(|| cw.target_port(service, port.parse().ok()?))
                .flatten()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.extend(cw.port);
    }
    ports
}

fn verdict(
    cluster: &Cluster,
    key: &EdgeKey,
    tls: TlsStatus,
    client_id: &str,
    port: Option<u16>,
) -> PolicyVerdict {
    let unknown = |why: String| PolicyVerdict {
        chain: vec![why],
        ..PolicyVerdict::default()
    };
    let Destination::Workload(dst) = &key.dst else {
        return PolicyVerdict::default();
    };
    let Some(cw) = cluster.workloads.get(dst) else {
        return unknown(format!(
            "{} {dst} is not in the Kubernetes view, so no policy can be evaluated",
            dst.kind
        ));
    };
    if !cw.meshed {
        return unknown(format!(
            "{dst} has no Linkerd proxy, so Linkerd policy does not apply"
        ));
    }
    let Some(port) = port.or(cw.port) else {
        return unknown(format!(
            "no Service port or named container port is known for {dst}"
        ));
    };
    let identity = (tls == TlsStatus::Mtls && !client_id.is_empty()).then(|| client_id.to_owned());
    let mut chain = Vec::new();
    if tls == TlsStatus::Mtls && identity.is_none() {
        chain.push(format!(
            "the client identity of {} is unknown, so it is evaluated as unauthenticated",
            key.src
        ));
    }
    let req = AccessRequest {
        client: ClientInfo {
            identity,
            ip: None,
            in_cluster: true,
        },
        pod: cw.pod.clone(),
        port,
        method: None,
        path: None,
    };
    explain_request(cluster, &dst.namespace, &req, chain)
}

/// The verdict the policy of namespace `ns` reaches on `req`, after the steps in `chain` that
/// led there (no observed rates).
pub fn explain_request(
    cluster: &Cluster,
    ns: &str,
    req: &AccessRequest,
    mut chain: Vec<String>,
) -> PolicyVerdict {
    let x = cluster.policy_for(ns).explain(req);
    chain.extend(x.chain);
    let rate_limit = rate_limit_of(cluster, &x.server);
    if !rate_limit.is_empty() {
        chain.push(format!(
            "HTTPLocalRateLimitPolicy {rate_limit}: each of the Server's proxies answers 429 beyond it"
        ));
    }
    PolicyVerdict {
        decision: x.decision,
        rate_limit,
        server: x.server,
        default_policy: x.default_policy,
        authorization_policies: x.authorizations,
        http_route: x.route,
        chain,
        ..PolicyVerdict::default()
    }
}

fn disagreement(p: &PolicyVerdict) -> String {
    let allow = p.observed_allow_rps.unwrap_or(0.0);
    let deny = p.observed_deny_rps.unwrap_or(0.0);
    match p.decision {
        // No figures in the text: the rates are in observed_*_rps, compared with the metric
        // tolerance; a sentence with numbers would make every build a change.
        Decision::Denied if allow > 0.0 => "the policy denies this edge, but its proxies \
             allowed some of its traffic in the window (observed_allow_rps): the policy may \
             have changed since, or the proxies' view is behind"
            .into(),
        Decision::Allowed | Decision::Audit if deny > 0.0 => "the policy allows this edge, but \
             its proxies denied some of its traffic in the window (observed_deny_rps): requests \
             may match a route or port this evaluation does not see"
            .into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use mesh_model::{Edge, EdgeKey};

    use super::*;

    fn wref(name: &str) -> WorkloadRef {
        WorkloadRef {
            namespace: "ns".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    fn edge(g: &mut MeshGraph, src: &str, dst: &str, id: &str) -> EdgeKey {
        let key = EdgeKey {
            src: wref(src),
            dst: Destination::Workload(wref(dst)),
            protocol: Protocol::Http,
        };
        let mut e = Edge::new(key.clone());
        e.tls = TlsStatus::Mtls;
        e.client_identity = id.into();
        g.edges.insert(key.clone(), e);
        key
    }

    #[test]
    fn observed_rates_go_only_where_they_can_be_attributed() {
        let mut g = MeshGraph::empty(Duration::from_secs(10), SystemTime::now());
        let a = edge(&mut g, "a", "db", "a-id");
        // Two callers share one identity: their samples cannot be split.
        let b = edge(&mut g, "b", "db", "shared");
        let c = edge(&mut g, "c", "db", "shared");
        let sample = |client: &str, allowed: bool, count: f64| AuthzSample {
            audit: false,
            dst: wref("db"),
            client_id: client.into(),
            tcp: false,
            allowed,
            count,
        };
        attach_observed(
            &mut g,
            &[
                sample("a-id", true, 50.0),
                sample("a-id", false, 10.0),
                sample("shared", true, 30.0),
            ],
        );
        assert_eq!(g.edges[&a].policy.observed_allow_rps, Some(5.0));
        assert_eq!(g.edges[&a].policy.observed_deny_rps, Some(1.0));
        for k in [b, c] {
            assert_eq!(g.edges[&k].policy.observed_allow_rps, None);
        }
    }

    #[test]
    fn disagreement_is_named_both_ways() {
        let mut p = PolicyVerdict {
            decision: Decision::Allowed,
            observed_allow_rps: Some(3.0),
            observed_deny_rps: Some(0.5),
            ..PolicyVerdict::default()
        };
        assert!(disagreement(&p).contains("proxies denied some"));
        p.decision = Decision::Denied;
        assert!(disagreement(&p).contains("proxies allowed some"));
        p.observed_allow_rps = Some(0.0);
        assert_eq!(disagreement(&p), "");
    }

    fn egress_edge(routes: &[(&str, &str, f64)]) -> Edge {
        let mut e = Edge::new(EdgeKey {
            src: wref("app"),
            dst: Destination::egress("egress", "internet", "443", "api.github.com"),
            protocol: Protocol::Http,
        });
        e.routes = routes
            .iter()
            .map(|(kind, name, rps)| mesh_model::RouteStats {
                id: mesh_model::RouteId {
                    kind: (*kind).into(),
                    namespace: if *kind == "default" {
                        String::new()
                    } else {
                        "egress".into()
                    },
                    name: (*name).into(),
                    parent: "EgressNetwork egress/internet:443".into(),
                },
                rps: *rps,
                ..Default::default()
            })
            .collect();
        e
    }

    fn egress_cluster(policy: &str) -> Cluster {
        let text = format!(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n\
             metadata: {{name: internet, namespace: egress}}\nspec: {{trafficPolicy: {policy}}}\n"
        );
        let (c, problems) = Cluster::from_manifests(&[&text]);
        assert!(problems.is_empty(), "{problems:?}");
        c
    }

    #[test]
    fn egress_is_decided_by_the_egress_networks_traffic_policy_and_routes() {
        // Deny: what no route describes is refused; an HTTPRoute admits what it matches.
        let deny = egress_cluster("Deny");
        let v =
            egress_verdict(&deny, &egress_edge(&[("default", "http-egress-deny", 4.0)])).unwrap();
        assert_eq!(v.decision, Decision::Denied);
        assert_eq!(v.observed_deny_rps, Some(4.0));
        assert!(
            v.chain[1].contains("trafficPolicy Deny refuses"),
            "{:?}",
            v.chain
        );
        let v = egress_verdict(
            &deny,
            &egress_edge(&[
                ("HTTPRoute", "github-api", 2.0),
                ("default", "http-egress-deny", 1.0),
            ]),
        )
        .unwrap();
        assert_eq!(v.decision, Decision::Allowed);
        assert_eq!(v.http_route, "egress/github-api");
        assert_eq!(
            (v.observed_allow_rps, v.observed_deny_rps),
            (Some(2.0), Some(1.0))
        );
        // The what-if of flipping it to Allow admits what was refused.
        let allow = egress_cluster("Allow");
        let v = egress_verdict(
            &allow,
            &egress_edge(&[("default", "http-egress-deny", 4.0)]),
        )
        .unwrap();
        assert_eq!(v.decision, Decision::Allowed);
        assert_eq!(
            verdict_of(&allow, &egress_edge(&[])).decision,
            Decision::Allowed
        );
        // An EgressNetwork the cluster does not have: evaluated, undecided.
        let (empty, _) = Cluster::from_manifests(&[]);
        let v = verdict_of(&empty, &egress_edge(&[]));
        assert_eq!(v.decision, Decision::Unknown);
        assert!(
            v.chain[1].contains("not in the Kubernetes view"),
            "{:?}",
            v.chain
        );
        // Any other authority is not egress.
        let mut other = egress_edge(&[]);
        other.key.dst = Destination::Authority("example.com:443".into());
        assert!(egress_verdict(&deny, &other).is_none());
    }

    #[test]
    fn a_rate_limited_server_names_its_policy_and_limits() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: ns}\n\
            spec:\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {linkerd.io/inject: enabled}\n    \
            spec:\n      containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]\n---\n\
            apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web-http, namespace: ns}\n\
            spec: {podSelector: {matchLabels: {app: web}}, port: http, accessPolicy: all-unauthenticated}\n---\n\
            apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {name: web-rl, namespace: ns}\n\
            spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}\n  total: {requestsPerSecond: 100}\n  \
            identity: {requestsPerSecond: 20}\n  overrides: [{requestsPerSecond: 50, clientRefs: [{kind: ServiceAccount, name: bot}]}]\n";
        let (c, problems) = Cluster::from_manifests(&[text]);
        assert!(problems.is_empty(), "{problems:?}");
        let mut g = MeshGraph::empty(Duration::from_secs(10), SystemTime::now());
        let k = edge(&mut g, "a", "web", "");
        let v = verdict_of(&c, &g.edges[&k]);
        assert_eq!(v.decision, Decision::Allowed, "{:?}", v.chain);
        assert_eq!(
            v.rate_limit,
            "ns/web-rl: total 100/s, per identity 20/s, 50/s for ns/bot"
        );
        assert!(
            v.chain.iter().any(|c| c.contains("answers 429")),
            "{:?}",
            v.chain
        );
        let rl = c.policy.rate_limit_on("ns", "web-http").unwrap();
        assert_eq!(rl.limits_for(Some(("bot", "ns"))), (Some(100), Some(50)));
        assert_eq!(rl.limits_for(Some(("other", "ns"))), (Some(100), Some(20)));
        assert_eq!(rl.limits_for(None), (Some(100), Some(20)));
    }
}
