//! The cluster index against kube-sim through a real `kube::Client`, with the collector's own
//! least-privilege RBAC (the demo seed's ClusterRole), and the policy overlay on top of it.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
};
use kube_sim::{Config, KubeSim};

use mesh_model::{Decision, Destination, MeshGraph, WorkloadRef};
use mesh_policy::{
    cluster::Cluster,
    overlay::{AuthzSample, Verdicts},
};
use tokio::sync::watch;

const TOKENS: &str = "collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n\
admin-token,admin,uid-a,\"system:masters\"\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn client(sim: &KubeSim, token: &str) -> Client {
    Client::try_from(sim.kube_config(token)).unwrap()
}

async fn start() -> KubeSim {
    KubeSim::start(Config {
        tokens: TOKENS.into(),
        seed_dirs: vec![root().join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..Config::default()
    })
    .await
    .unwrap()
}

/// Waits for a cluster that satisfies `check`.
async fn until(
    rx: &mut watch::Receiver<Arc<Cluster>>,
    what: &str,
    check: impl Fn(&Cluster) -> bool,
) -> Arc<Cluster> {
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let c = rx.borrow_and_update().clone();
            if check(&c) {
                return c;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    got.unwrap_or_else(|_| panic!("never saw {what}; last: {:?}", rx.borrow().health))
}

/// One build of `base` with the cluster, as the collector's loop makes it (no cached verdicts).
fn join(base: &MeshGraph, authz: &[AuthzSample], c: &Arc<Cluster>) -> MeshGraph {
    mesh_collector::run::join(base, authz, c, &mut Verdicts::default(), SystemTime::now())
}

fn wl(ns: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: ns.into(),
        kind: "Deployment".into(),
        name: name.into(),
    }
}

fn edge<'a>(g: &'a MeshGraph, from: &str, to: &str) -> &'a mesh_model::Edge {
    g.edges
        .values()
        .find(|e| {
            e.key.src.name == from && matches!(&e.key.dst, Destination::Workload(d) if d.name == to)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_follows_the_cluster_and_verdicts_follow_policy() {
    let sim = start().await;
    let mut rx = mesh_collector::watch::spawn(&client(&sim, "collector-token"));
    let c = until(&mut rx, "a healthy cluster", |c| c.health.ok).await;

    // Workloads as policy sees them, from the Deployments and their namespace's annotations.
    let web = &c.workloads[&wl("emojivoto", "web")];
    assert_eq!(web.service_account, "web");
    assert!(web.meshed);
    assert_eq!(web.pod.labels["app"], "web-svc");
    assert_eq!(web.port, Some(8080));
    assert_eq!(
        c.policy.servers.len(),
        3 + 1,
        "emojivoto's and booksapp's Servers"
    );
    assert!(
        c.policies
            .keys()
            .any(|k| k.kind == "ServerAuthorization" && k.name == "internal-grpc")
    );
    assert!(c.health.last_success.is_some());

    // Verdicts on emojivoto as meshsim simulates it, with the proxies' own authz counters.
    let t = meshsim::builtin("emojivoto").unwrap();
    let window = Duration::from_secs(10);
    let base = meshsim::graph(&t, window, SystemTime::now());
    let web_id = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    let authz = vec![AuthzSample {
        audit: false,
        dst: wl("emojivoto", "emoji"),
        client_id: web_id.into(),
        tcp: false,
        allowed: true,
        count: 40.0,
    }];
    let g = join(&base, &authz, &c);
    let e = edge(&g, "web", "emoji");
    assert_eq!(e.policy.decision, Decision::Allowed, "{:?}", e.policy.chain);
    assert_eq!(e.policy.server, "emojivoto/emoji-grpc");
    assert_eq!(e.policy.authorization_policies, ["emojivoto/internal-grpc"]);
    assert_eq!(e.policy.observed_allow_rps, Some(4.0));
    assert!(e.policy.disagreement.is_empty());
    let bot = edge(&g, "vote-bot", "web");
    assert_eq!(
        bot.policy.decision,
        Decision::Allowed,
        "{:?}",
        bot.policy.chain
    );
    assert_eq!(bot.policy.server, "emojivoto/web-http");
    assert_eq!(g.policies.len(), c.policies.len());

    // The policy changes in the cluster: web may no longer call emoji; the proxies still
    // report what they allowed in the window, and the edge says the two disagree.
    let sa = Api::<DynamicObject>::namespaced_with(
        client(&sim, "admin-token"),
        "emojivoto",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "policy.linkerd.io",
            "v1beta1",
            "ServerAuthorization",
        )),
    );
    sa.delete("internal-grpc", &DeleteParams::default())
        .await
        .unwrap();
    let c = until(&mut rx, "the deletion", |c| {
        !c.policies.keys().any(|k| k.name == "internal-grpc")
    })
    .await;
    let g = join(&base, &authz, &c);
    let e = edge(&g, "web", "emoji");
    assert_eq!(e.policy.decision, Decision::Denied, "{:?}", e.policy.chain);
    assert!(
        e.policy.disagreement.contains("proxies allowed some"),
        "{}",
        e.policy.disagreement
    );

    // A new workload appears in the graph before it carries any traffic.
    let deploy = Api::<DynamicObject>::namespaced_with(
        client(&sim, "admin-token"),
        "emojivoto",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
    );
    let d: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "canary", "namespace": "emojivoto"},
        "spec": {"selector": {"matchLabels": {"app": "canary"}},
                 "template": {"metadata": {"labels": {"app": "canary"}},
                              "spec": {"serviceAccountName": "canary",
                                       "containers": [{"name": "c", "image": "x"}]}}}
    }))
    .unwrap();
    deploy.create(&PostParams::default(), &d).await.unwrap();
    let c = until(&mut rx, "the new Deployment", |c| {
        c.workloads.contains_key(&wl("emojivoto", "canary"))
    })
    .await;
    let g = join(&base, &authz, &c);
    let canary = &g.workloads[&wl("emojivoto", "canary")];
    assert!(canary.meshed, "emojivoto injects every pod");
    assert_eq!(
        canary.identity,
        "canary.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_the_collector_may_not_make_is_reported_not_fatal() {
    // Without the RBAC seed, every list is forbidden: the index stays up and says why.
    let sim = KubeSim::start(Config {
        tokens: TOKENS.into(),
        with_linkerd_crds: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut rx = mesh_collector::watch::spawn(&client(&sim, "collector-token"));
    let c = until(&mut rx, "a reported failure", |c| {
        c.health.error.contains("deployments")
    })
    .await;
    assert!(!c.health.ok);
    assert!(
        c.health.error.contains("forbidden") || c.health.error.contains("403"),
        "{}",
        c.health.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_linkerd_crds_is_healthy_and_has_no_policy() {
    let sim = KubeSim::start(Config {
        tokens: TOKENS.into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let seed = root().join("tools/kube-sim/seed/demo");
    for f in ["linkerd-mcp-rbac.yaml", "emojivoto.yaml"] {
        sim.load_yaml(&std::fs::read_to_string(seed.join(f)).unwrap())
            .await
            .unwrap();
    }
    let mut rx = mesh_collector::watch::spawn(&client(&sim, "collector-token"));
    let c = until(&mut rx, "a healthy cluster", |c| c.health.ok).await;
    assert!(c.workloads.contains_key(&wl("emojivoto", "web")));
    assert!(c.policies.is_empty());
    let g = join(
        &meshsim::graph(
            &meshsim::builtin("emojivoto").unwrap(),
            Duration::from_secs(10),
            SystemTime::now(),
        ),
        &[],
        &c,
    );
    // No Server anywhere: the namespace's default policy decides.
    let e = edge(&g, "web", "emoji");
    assert_eq!(e.policy.decision, Decision::Allowed, "{:?}", e.policy.chain);
    assert!(
        e.policy.default_policy.contains("all-unauthenticated"),
        "{:?}",
        e.policy
    );
}
