//! The collector's cycle at scale: the cluster index rebuilt from every object (what a
//! Kubernetes change costs), and one build (join with policy verdicts on every edge, diff,
//! publish). The Prometheus answers are fed in-process (10,000 simulated workloads are millions
//! of series), so HTTP and JSON decoding of Prometheus's answers are not in these figures.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::MetricTolerance;
use mesh_policy::cluster::Cluster;
use mesh_store::MemoryStore;
use serde_json::{Value, json};

/// What a cluster running `t` holds: per namespace a Namespace, a Server on port 8080 for every
/// pod, a MeshTLSAuthentication of the namespace's identities and an AuthorizationPolicy; per
/// workload a Deployment, a Service and a running pod.
pub(crate) fn objects(t: &meshsim::Topology) -> Vec<Value> {
    let mut out = Vec::new();
    let mut namespaces: Vec<&str> = t.workloads.iter().map(|w| w.namespace.as_str()).collect();
    namespaces.dedup();
    for ns in namespaces {
        let ids: Vec<String> = t
            .workloads
            .iter()
            .filter(|w| w.namespace == ns)
            .map(meshsim::WorkloadSpec::identity)
            .collect();
        out.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "annotations": {"linkerd.io/inject": "enabled"}}}));
        out.push(json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "port": "http"}}));
        out.push(
            json!({"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "neighbours", "namespace": ns}, "spec": {"identities": ids}}),
        );
        out.push(json!({"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "neighbours", "namespace": ns},
            "spec": {"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "app"},
                     "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "neighbours"}]}}));
    }
    for w in &t.workloads {
        let labels = json!({"app": w.name, "pod-template-hash": "abc12"});
        let container =
            json!([{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]);
        out.push(json!({"apiVersion": "apps/v1", "kind": w.kind,
            "metadata": {"name": w.name, "namespace": w.namespace},
            "spec": {"selector": {"matchLabels": {"app": w.name}},
                     "template": {"metadata": {"labels": {"app": w.name},
                                               "annotations": {"linkerd.io/inject": if w.meshed { "enabled" } else { "disabled" }}},
                                  "spec": {"serviceAccountName": w.service_account(), "containers": container}}}}));
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": w.service(), "namespace": w.namespace},
            "spec": {"selector": {"app": w.name}, "ports": [{"port": 80, "targetPort": "http"}]}}));
        out.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{}-abc12-x", w.name), "namespace": w.namespace, "labels": labels,
                         "annotations": {"linkerd-mcp.io/running": "true"},
                         "ownerReferences": [owner(w)]},
            "spec": {"serviceAccountName": w.service_account(), "containers": container}}));
    }
    out
}

fn owner(w: &meshsim::WorkloadSpec) -> Value {
    if w.kind == "Deployment" {
        json!({"kind": "ReplicaSet", "name": format!("{}-abc12", w.name)})
    } else {
        json!({"kind": w.kind, "name": w.name})
    }
}

/// Prints the index rebuild and the build cycle: wall and CPU time per build, peak RSS.
pub(crate) async fn cycle(n: usize) {
    let t = meshsim::generate(n, 1).expect("valid topology");
    let next = crate::next_minute(&t);
    let objs = objects(&t);
    let health = Cluster::unsynced("").health;
    let runs = 5;
    let (start, cpu) = (Instant::now(), crate::serve::cpu_secs());
    let mut cluster = None;
    for _ in 0..runs {
        cluster = Some(Cluster::from_objects(objs.clone(), health.clone()).0);
    }
    let index_ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let index_cpu = (crate::serve::cpu_secs() - cpu) * 1000.0 / runs as f64;
    let cluster = Arc::new(cluster.expect("built"));
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = mesh_collector::Publisher::start(store, MetricTolerance::default())
        .await
        .expect("memory store");
    let window = Duration::from_secs(60);
    let graphs = [
        meshsim::graph(&t, window, SystemTime::now()),
        meshsim::graph(&next, window, SystemTime::now()),
    ];
    let (mut wall, mut join_wall, mut cpu_total, mut unknown) =
        (Duration::ZERO, Duration::ZERO, 0.0, 0);
    let mut verdicts = mesh_policy::overlay::Verdicts::default();
    let mut cold = Duration::ZERO;
    for i in 0..runs * 2 {
        let (start, cpu) = (Instant::now(), crate::serve::cpu_secs());
        let build = mesh_collector::run::join(
            &graphs[i % 2],
            &[],
            &cluster,
            &mut verdicts,
            SystemTime::now(),
        );
        if i == 0 {
            cold = start.elapsed();
        }
        if i > 0 {
            join_wall += start.elapsed();
        }
        unknown = build
            .edges
            .values()
            .filter(|e| e.policy.decision == mesh_model::Decision::Unknown)
            .count();
        publisher.publish(build).await.expect("publish");
        if i > 0 {
            wall += start.elapsed();
            cpu_total += crate::serve::cpu_secs() - cpu;
        }
    }
    // A pod restarts elsewhere (new cluster snapshot, same policy): verdicts still hold.
    let mut churned = objs.clone();
    if let Some(pod) = churned.iter_mut().rev().find(|o| o["kind"] == "Pod") {
        pod["metadata"]["name"] = json!("replaced-pod");
    }
    let churned = Arc::new(Cluster::from_objects(churned, health).0);
    let start = Instant::now();
    let _ = mesh_collector::run::join(&graphs[0], &[], &churned, &mut verdicts, SystemTime::now());
    let churn = start.elapsed();
    let builds = (runs * 2 - 1) as f64;
    println!(
        "objects={} edges={} unknown_verdicts={unknown} index_ms={index_ms:.0} index_cpu_ms={index_cpu:.0} cold_join_ms={:.0} join_after_pod_change_ms={:.0} join_ms={:.0} build_ms={:.0} build_cpu_ms={:.0} peak_mib={:.1}",
        objs.len(),
        graphs[0].edges.len(),
        cold.as_secs_f64() * 1000.0,
        churn.as_secs_f64() * 1000.0,
        join_wall.as_secs_f64() * 1000.0 / builds,
        wall.as_secs_f64() * 1000.0 / builds,
        cpu_total * 1000.0 / builds,
        crate::peak_rss_kib() as f64 / 1024.0
    );
}
