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
    policy::{AccessRequest, ClientInfo},
};

use crate::cluster::{Cluster, ClusterWorkload};

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
    let mut sums: BTreeMap<(&WorkloadRef, &str, bool), (f64, f64)> = BTreeMap::new();
    for s in samples {
        let e = sums
            .entry((&s.dst, s.client_id.as_str(), s.tcp))
            .or_default();
        if s.allowed {
            e.0 += s.count;
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
    let mut found: Vec<(EdgeKey, f64, f64)> = Vec::new();
    for ((dst, client, tcp), (allow, deny)) in sums {
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
            found.push(((**k).clone(), allow / secs, deny / secs));
        }
    }
    for (k, allow, deny) in found {
        if let Some(e) = graph.edges.get_mut(&k) {
            let p = &mut e.policy;
            p.observed_allow_rps = Some(p.observed_allow_rps.unwrap_or(0.0) + allow);
            p.observed_deny_rps = Some(p.observed_deny_rps.unwrap_or(0.0) + deny);
        }
    }
}

/// What decides an edge's verdict: the destination, how the client connects and who it is
/// (the source only matters when it is mTLS with an unknown identity: the chain names it).
type VerdictKey = (WorkloadRef, TlsStatus, String, Option<WorkloadRef>);

/// Verdicts already computed. An entry holds while the policy set and its destination's
/// workload are what they were: Prometheus builds come every few seconds, and most Kubernetes
/// changes (pods coming and going) touch neither, so most builds explain nothing anew.
#[derive(Debug, Default)]
pub struct Verdicts {
    cluster: Option<Arc<Cluster>>,
    map: HashMap<VerdictKey, (ClusterWorkload, PolicyVerdict)>,
}

impl Verdicts {
    fn for_cluster(
        &mut self,
        cluster: &Arc<Cluster>,
    ) -> &mut HashMap<VerdictKey, (ClusterWorkload, PolicyVerdict)> {
        let same = self
            .cluster
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, cluster) || c.policy == cluster.policy);
        if !same {
            self.map.clear();
        }
        self.cluster = Some(cluster.clone());
        &mut self.map
    }
}

/// Joins `cluster` into `graph` (built from Prometheus, observed rates not attached yet) and
/// attaches `authz`, reusing `verdicts` computed against the same cluster snapshot.
pub fn apply(
    graph: &mut MeshGraph,
    cluster: &Arc<Cluster>,
    authz: &[AuthzSample],
    verdicts: &mut Verdicts,
) {
    let set = &cluster.policy;
    for (id, cw) in &cluster.workloads {
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
    let cache = verdicts.for_cluster(cluster);
    for e in graph.edges.values_mut() {
        let observed = (e.policy.observed_allow_rps, e.policy.observed_deny_rps);
        let unknown_id =
            (e.tls == TlsStatus::Mtls && e.client_identity.is_empty()).then(|| e.key.src.clone());
        let dst = match &e.key.dst {
            Destination::Workload(w) => w.clone(),
            Destination::Authority(_) => {
                e.policy = PolicyVerdict::default();
                (e.policy.observed_allow_rps, e.policy.observed_deny_rps) = observed;
                continue;
            }
        };
        let cw = cluster.workloads.get(&dst);
        let key = (dst, e.tls, e.client_identity.clone(), unknown_id);
        e.policy = match (cache.get(&key), cw) {
            (Some((was, v)), Some(cw)) if was == cw => v.clone(),
            _ => {
                let v = verdict(cluster, &e.key, e.tls, &e.client_identity);
                if let Some(cw) = cw {
                    cache.insert(key, (cw.clone(), v.clone()));
                }
                v
            }
        };
        (e.policy.observed_allow_rps, e.policy.observed_deny_rps) = observed;
        e.policy.disagreement = disagreement(&e.policy);
    }
    graph.policies = cluster.policies.clone();
}

fn verdict(cluster: &Cluster, key: &EdgeKey, tls: TlsStatus, client_id: &str) -> PolicyVerdict {
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
    let Some(port) = cw.port else {
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
    let x = cluster.policy_for(&dst.namespace).explain(&AccessRequest {
        client: ClientInfo {
            identity,
            ip: None,
            in_cluster: true,
        },
        pod: cw.pod.clone(),
        port,
        method: None,
        path: None,
    });
    chain.extend(x.chain);
    PolicyVerdict {
        decision: x.decision,
        server: x.server,
        default_policy: x.default_policy,
        authorization_policies: x.authorizations,
        http_route: x.route,
        chain,
        observed_allow_rps: None,
        observed_deny_rps: None,
        disagreement: String::new(),
    }
}

fn disagreement(p: &PolicyVerdict) -> String {
    let allow = p.observed_allow_rps.unwrap_or(0.0);
    let deny = p.observed_deny_rps.unwrap_or(0.0);
    match p.decision {
        Decision::Denied if allow > 0.0 => format!(
            "the policy denies this edge, but its proxies allowed {allow:.2}/s: \
             the cluster's policy may have changed since, or the proxy's view is stale"
        ),
        Decision::Allowed | Decision::Audit if deny > 0.0 => format!(
            "the policy allows this edge, but its proxies denied {deny:.2}/s: \
             requests may match a route or port this evaluation does not see"
        ),
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
        assert!(disagreement(&p).contains("denied 0.50/s"));
        p.decision = Decision::Denied;
        assert!(disagreement(&p).contains("allowed 3.00/s"));
        p.observed_allow_rps = Some(0.0);
        assert_eq!(disagreement(&p), "");
    }
}
