//! Closing the loop with Kubernetes: with `--kube-url`, meshsim watches the cluster's workloads
//! and Linkerd policy through the collector's own watchers, decides each simulated edge with
//! the policy model, as the destination's proxy would, and reports what a real proxy reports:
//! denied HTTP requests answered 403, denied gRPC calls `PERMISSION_DENIED`, denied TCP
//! connections closed, each counted in `inbound_{http,tcp}_authz_deny_total`, and admitted
//! traffic labelled with the Server and authorization that admitted it.

use std::{sync::Arc, time::Instant};

use mesh_model::{Decision, Destination, Edge, EdgeKey, Protocol, TlsStatus};
use mesh_policy::cluster::Cluster;

use crate::{SharedSim, Topology, workload_ref};

/// How the destination's proxy treats one edge's traffic, and the `srv_*` and `authz_*` labels
/// it reports for it.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeAuthz {
    /// The policy model's decision for the edge: the same one the graph shows.
    pub decision: Decision,
    /// Why the decision is `Unknown` ([`PolicyVerdict::why_unknown`]); empty otherwise.
    ///
    /// [`PolicyVerdict::why_unknown`]: mesh_model::PolicyVerdict::why_unknown
    pub undecided: String,
    /// `srv_group`, `srv_kind`, `srv_name`.
    pub server: [String; 3],
    /// `authz_group`, `authz_kind`, `authz_name` (meaningless when refused).
    pub authz: [String; 3],
    /// `route_group`, `route_kind`, `route_name`.
    pub route: [String; 3],
    /// What an HTTPLocalRateLimitPolicy on the Server refuses of it (HTTP 429), if anything.
    pub limited: Option<Limited>,
}

/// The share of an edge's requests a rate limit refuses, and which limit binds.
#[derive(Clone, Debug, PartialEq)]
pub struct Limited {
    /// The HTTPLocalRateLimitPolicy (`ratelimit_name`).
    pub name: String,
    /// `total` or `identity` (`ratelimit_scope`; overrides are `identity` too).
    pub scope: &'static str,
    /// Share of the edge's requests answered 429, 0..1.
    pub share: f64,
}

impl Default for EdgeAuthz {
    /// What a proxy reports under the install default with no Server: everything admitted.
    fn default() -> Self {
        Self::by_default("all-unauthenticated", Decision::Allowed)
    }
}

const POLICY_GROUP: &str = "policy.linkerd.io";

impl EdgeAuthz {
    /// Admitted (also in audit mode, and when policy cannot decide) rather than refused.
    pub fn allowed(&self) -> bool {
        self.decision != Decision::Denied
    }

    fn by_default(policy: &str, decision: Decision) -> Self {
        let default = |name: &str| [String::new(), "default".to_owned(), name.to_owned()];
        Self {
            decision,
            undecided: String::new(),
            server: default(policy),
            authz: default(policy),
            route: default("default"),
            limited: None,
        }
    }
}

/// The decision for every edge of `topology` under `cluster`'s policy, in edge order: the graph's
/// verdict, from the same model with the same inputs (identities as the collector derives them).
/// Edges into workloads the cluster does not know are admitted, as before meshsim watched
/// anything. An edge the policy decides per request (a Server with HTTPRoutes) is `Unknown`,
/// as in the graph; its traffic is admitted, since simulated requests carry no paths.
pub fn decide(topology: &Topology, cluster: &Cluster) -> Vec<EdgeAuthz> {
    let mut out = decide_each(topology, cluster);
    limit(topology, cluster, &mut out);
    out
}

/// Rate limits, as each proxy of a limited Server enforces them on its own: per destination
/// pod, the requests of every admitted HTTP/1 edge into the Server against `total`, and each
/// caller's against its override or `identity` limit. The excess is answered 429.
fn limit(topology: &Topology, cluster: &Cluster, out: &mut [EdgeAuthz]) {
    let limited_server =
        |a: &EdgeAuthz| (a.server[1] == "server" && a.allowed()).then(|| a.server[2].clone());
    // Requests per pod into each (destination workload, Server).
    let mut per_pod: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for (e, a) in topology.edges.iter().zip(out.iter()) {
        let (Some(dst), Some(srv)) = (topology.workload(&e.to), limited_server(a)) else {
            continue;
        };
        if e.protocol == "http" {
            *per_pod.entry((e.to.clone(), srv)).or_default() += e.rps / f64::from(dst.replicas);
        }
    }
    for (e, a) in topology.edges.iter().zip(out.iter_mut()) {
        let (Some(src), Some(dst), Some(srv)) = (
            topology.workload(&e.from),
            topology.workload(&e.to),
            limited_server(a),
        ) else {
            continue;
        };
        // gRPC calls are limited too, but how their refusal is reported (grpc-status) is not
        // something the sources show; only HTTP/1 edges are limited here.
        if e.protocol != "http" {
            continue;
        }
        let Some(rl) = cluster
            .policy_for(&dst.namespace)
            .rate_limit_on(&dst.namespace, &srv)
        else {
            continue;
        };
        let mine = e.rps / f64::from(dst.replicas);
        let all = per_pod[&(e.to.clone(), srv)];
        let mtls = e.tls.unwrap_or(src.meshed && dst.meshed);
        let client = mtls.then(|| (src.service_account(), src.namespace.as_str()));
        let (total, own) = rl.limits_for(client);
        let over =
            |limit: Option<u64>, rate: f64| limit.map_or(0.0, |l| (1.0 - l as f64 / rate).max(0.0));
        // Without an identity, only the total applies.
        let by_total = over(total, all);
        let by_identity = if client.is_some() {
            over(own, mine)
        } else {
            0.0
        };
        let (scope, share) = if by_identity > by_total {
            ("identity", by_identity)
        } else {
            ("total", by_total)
        };
        if share > 0.0 {
            a.limited = Some(Limited {
                name: rl.name.clone(),
                scope,
                share,
            });
        }
    }
}

fn decide_each(topology: &Topology, cluster: &Cluster) -> Vec<EdgeAuthz> {
    topology
        .edges
        .iter()
        .map(|e| {
            let (Some(src), Some(dst)) = (topology.workload(&e.from), topology.workload(&e.to))
            else {
                return EdgeAuthz::default();
            };
            let mtls = e.tls.unwrap_or(src.meshed && dst.meshed);
            let mut edge = Edge::new(EdgeKey {
                src: workload_ref(src),
                dst: Destination::Workload(workload_ref(dst)),
                protocol: Protocol::parse(&e.protocol).unwrap_or(Protocol::Http),
            });
            edge.tls = if mtls {
                TlsStatus::Mtls
            } else {
                TlsStatus::Plaintext
            };
            if mtls {
                edge.client_identity = cluster
                    .policy
                    .sa_identity(src.service_account(), &src.namespace);
            }
            let v = mesh_policy::overlay::verdict_of(cluster, &edge);
            if v.decision == Decision::Unknown {
                let mut a = EdgeAuthz {
                    decision: Decision::Unknown,
                    undecided: v.why_unknown().unwrap_or_default(),
                    ..EdgeAuthz::default()
                };
                if let Some((_, name)) = v.server.split_once('/') {
                    // Per-route policy: the Server applies, the route and authorization
                    // depend on each request, which the simulation does not model.
                    a.server = [POLICY_GROUP.into(), "server".into(), name.into()];
                    a.authz = [String::new(), String::new(), String::new()];
                    a.route = [String::new(), String::new(), String::new()];
                }
                return a;
            }
            let default_policy = v
                .default_policy
                .split_whitespace()
                .next()
                .unwrap_or("all-unauthenticated");
            let mut a = EdgeAuthz::by_default(default_policy, v.decision);
            if let Some((_, name)) = v.server.split_once('/') {
                a.server = [POLICY_GROUP.into(), "server".into(), name.into()];
            }
            if v.decision == Decision::Audit {
                a.authz = [String::new(), "default".into(), "audit".into()];
            } else if let Some((ns, name)) = v
                .authorization_policies
                .first()
                .and_then(|p| p.split_once('/'))
            {
                let policy = cluster.policy_for(ns);
                let legacy = policy
                    .server_authorizations
                    .iter()
                    .any(|s| s.namespace == ns && s.name == name);
                let kind = if legacy {
                    "serverauthorization"
                } else {
                    "authorizationpolicy"
                };
                a.authz = [POLICY_GROUP.into(), kind.into(), name.into()];
            }
            if let Some((_, name)) = v.http_route.split_once('/') {
                a.route = [POLICY_GROUP.into(), "HTTPRoute".into(), name.into()];
            }
            a
        })
        .collect()
}

/// Follows `cluster` for as long as the simulation lives, re-deciding every edge on each change.
pub fn follow(sim: SharedSim, mut cluster: tokio::sync::watch::Receiver<Arc<Cluster>>) {
    tokio::spawn(async move {
        loop {
            let c = cluster.borrow_and_update().clone();
            if c.health.ok {
                sim.lock().await.set_cluster(c, Instant::now());
            }
            if cluster.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The kube configuration for `--kube-url`: that API server, with a bearer token and, for
/// `https`, the CA that signed its certificate.
pub async fn kube_config(
    url: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Result<kube::Config, String> {
    let mut cluster = serde_json::json!({ "server": url });
    if let Some(ca) = ca_file {
        cluster["certificate-authority"] = ca.display().to_string().into();
    }
    let mut user = serde_json::json!({});
    if let Some(t) = token {
        user["token"] = t.into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": cluster}],
        "users": [{"name": "meshsim", "user": user}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "meshsim"}}],
        "current-context": "sim",
    });
    let kc: kube::config::Kubeconfig =
        serde_json::from_value(doc).map_err(|e| format!("--kube-url {url}: {e}"))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("--kube-url {url}: {e}"))
}
