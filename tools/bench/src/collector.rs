//! The collector's cycle at scale: the cluster index rebuilt from every object (what a
//! Kubernetes change costs), and one build (join with policy verdicts on every edge, diff,
//! publish). The Prometheus answers are fed in-process (10,000 simulated workloads are millions
//! of series), so HTTP and JSON decoding of Prometheus's answers are not in these figures.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_model::MetricTolerance;
use mesh_policy::{cluster::Cluster, index::Index};
use mesh_store::MemoryStore;
use serde_json::{Value, json};

/// What a cluster running `t` holds: per namespace a Namespace, a Server on port 8080 for every
/// pod, a MeshTLSAuthentication of the namespace's identities and an AuthorizationPolicy; per
/// workload a Deployment, a Service and a running pod.
pub(crate) fn objects(t: &meshsim::Topology) -> Vec<Value> {
    let mut out = Vec::new();
    for_each_object(t, |o| out.push(o));
    out
}

/// The objects of [`objects`], handed over one at a time (as watch events arrive), so that the
/// whole cluster as JSON is never held at once.
pub(crate) fn for_each_object(t: &meshsim::Topology, mut out: impl FnMut(Value)) {
    let mut namespaces: Vec<&str> = t.workloads.iter().map(|w| w.namespace.as_str()).collect();
    namespaces.dedup();
    for ns in namespaces {
        let ids: Vec<String> = t
            .workloads
            .iter()
            .filter(|w| w.namespace == ns)
            .map(meshsim::WorkloadSpec::identity)
            .collect();
        out(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "annotations": {"linkerd.io/inject": "enabled"}}}));
        out(
            json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "port": "http"}}),
        );
        out(
            json!({"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "neighbours", "namespace": ns}, "spec": {"identities": ids}}),
        );
        out(
            json!({"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "neighbours", "namespace": ns},
            "spec": {"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "app"},
                     "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "neighbours"}]}}),
        );
    }
    for w in &t.workloads {
        let labels = json!({"app": w.name, "pod-template-hash": "abc12"});
        let container =
            json!([{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]);
        out(json!({"apiVersion": "apps/v1", "kind": w.kind,
            "metadata": {"name": w.name, "namespace": w.namespace},
            "spec": {"selector": {"matchLabels": {"app": w.name}},
                     "template": {"metadata": {"labels": {"app": w.name},
                                               "annotations": {"linkerd.io/inject": if w.meshed { "enabled" } else { "disabled" }}},
                                  "spec": {"serviceAccountName": w.service_account(), "containers": container}}}}));
        out(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": w.service(), "namespace": w.namespace},
            "spec": {"selector": {"app": w.name}, "ports": [{"port": 80, "targetPort": "http"}]}}));
        out(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{}-abc12-x", w.name), "namespace": w.namespace, "labels": labels,
                         "annotations": {"linkerd-mcp.io/running": "true"},
                         "ownerReferences": [owner(w)]},
            "spec": {"serviceAccountName": w.service_account(), "containers": container}}));
    }
}

fn owner(w: &meshsim::WorkloadSpec) -> Value {
    if w.kind == "Deployment" {
        json!({"kind": "ReplicaSet", "name": format!("{}-abc12", w.name)})
    } else {
        json!({"kind": w.kind, "name": w.name})
    }
}

/// One watch event applied and a snapshot taken: milliseconds (median of `runs`).
fn update_ms(ix: &mut Index, runs: usize, mut event: impl FnMut(usize) -> Value) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|i| {
            let v = event(i);
            let start = Instant::now();
            assert!(ix.apply(v), "a real change");
            let _ = ix.snapshot(Cluster::unsynced("").health);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// Prints the collector's cycle: the cluster index built from watch events and kept current
/// one event at a time (against a full rebuild), one build (join with policy verdicts, diff,
/// publish), and the process's peak memory while doing what the collector does.
pub(crate) async fn cycle(n: usize) {
    let t = meshsim::generate(n, 1).expect("valid topology");
    let next = crate::next_minute(&t);
    let health = Cluster::unsynced("").health;
    let runs = 5;
    // The initial list, as the watchers deliver it: one object at a time into the index.
    let (start, cpu) = (Instant::now(), crate::serve::cpu_secs());
    let mut ix = Index::default();
    let mut count = 0;
    for_each_object(&t, |o| {
        count += 1;
        ix.apply(o);
    });
    let (cluster, _) = ix.snapshot(health.clone());
    let initial_ms = start.elapsed().as_secs_f64() * 1000.0;
    let initial_cpu = (crate::serve::cpu_secs() - cpu) * 1000.0;
    let index_mib = crate::rss_kib() as f64 / 1024.0;
    let cluster = Arc::new(cluster);
    // Single changes: a pod starts (its workload), a Service moves its port (its namespace), a
    // Namespace changes its default policy (its namespace), a policy object changes (policy).
    let w = &t.workloads[t.workloads.len() / 2];
    let (ns, app) = (w.namespace.clone(), w.name.clone());
    let pod_ms = update_ms(&mut ix, 9, |i| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{app}-abc12-new{i}"), "namespace": ns,
                         "labels": {"app": app, "pod-template-hash": "abc12"},
                         "annotations": {"linkerd-mcp.io/running": "true"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{app}-abc12")}]},
            "spec": {"containers": [{"name": "app"}, {"name": "linkerd-proxy"}]}})
    });
    let service_ms = update_ms(&mut ix, 9, |i| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": w.service(), "namespace": ns},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8000 + i}]}})
    });
    let namespace_ms = update_ms(&mut ix, 9, |i| {
        let p = ["deny", "all-authenticated", "cluster-authenticated"][i % 3];
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "annotations": {"config.linkerd.io/default-inbound-policy": p}}})
    });
    let policy_ms = update_ms(&mut ix, 9, |i| {
        json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "port": 8000 + i}})
    });
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = mesh_collector::Publisher::start(store, MetricTolerance::default())
        .await
        .expect("memory store");
    let window = Duration::from_secs(60);
    let graphs = [
        meshsim::graph(&t, window, SystemTime::now()),
        meshsim::graph(&next, window, SystemTime::now()),
    ];
    let graphs_mib = crate::rss_kib() as f64 / 1024.0;
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
    // A pod restarts elsewhere (a new snapshot from the index, same policy): verdicts hold.
    assert!(ix.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "replaced-pod", "namespace": ns,
                     "labels": {"app": app, "pod-template-hash": "abc12"},
                     "annotations": {"linkerd-mcp.io/running": "true"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{app}-abc12")}]},
        "spec": {"containers": [{"name": "app"}]}})));
    let churned = Arc::new(ix.snapshot(health.clone()).0);
    let start = Instant::now();
    let _ = mesh_collector::run::join(&graphs[0], &[], &churned, &mut verdicts, SystemTime::now());
    let churn = start.elapsed();
    // Everything above is what a collector holds; a full rebuild below needs every object as
    // JSON at once, which a collector never holds.
    let peak_mib = crate::peak_rss_kib() as f64 / 1024.0;
    let objs = objects(&t);
    let (start, cpu) = (Instant::now(), crate::serve::cpu_secs());
    for _ in 0..runs {
        let _ = Cluster::from_objects(objs.clone(), health.clone());
    }
    let rebuild_ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let rebuild_cpu = (crate::serve::cpu_secs() - cpu) * 1000.0 / runs as f64;
    let builds = (runs * 2 - 1) as f64;
    println!(
        "objects={count} edges={} unknown_verdicts={unknown} initial_index_ms={initial_ms:.0} initial_index_cpu_ms={initial_cpu:.0} update_pod_ms={pod_ms:.2} update_service_ms={service_ms:.2} update_namespace_ms={namespace_ms:.2} update_policy_ms={policy_ms:.2} full_rebuild_ms={rebuild_ms:.0} full_rebuild_cpu_ms={rebuild_cpu:.0} rebuild_over_pod_update={:.0} rss_after_index_mib={index_mib:.1} rss_after_two_graphs_mib={graphs_mib:.1} cold_join_ms={:.0} join_after_pod_change_ms={:.0} join_ms={:.0} build_ms={:.0} build_cpu_ms={:.0} peak_mib={peak_mib:.1}",
        graphs[0].edges.len(),
        rebuild_ms / pod_ms.max(0.001),
        cold.as_secs_f64() * 1000.0,
        churn.as_secs_f64() * 1000.0,
        join_wall.as_secs_f64() * 1000.0 / builds,
        wall.as_secs_f64() * 1000.0 / builds,
        cpu_total * 1000.0 / builds,
    );
}
