use crate::eval::DefaultPolicy;

use super::*;

const CLUSTER: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: linkerd-config, namespace: linkerd}
data:
  values: |
    clusterNetworks: "10.0.0.0/8,fd00::/8"
    identityTrustDomain: example.org
    proxy:
      defaultInboundPolicy: cluster-authenticated
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {config.linkerd.io/default-inbound-policy: deny}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations:
        config.linkerd.io/default-inbound-policy: all-authenticated
        config.linkerd.io/proxy-require-identity-inbound-ports: "5432, 9000"
    spec:
      serviceAccountName: db
      containers:
        - name: db
          ports: [{name: sql, containerPort: 5432}, {name: admin, containerPort: 9000}]
          readinessProbe: {httpGet: {path: /ready, port: admin}}
"#;

#[test]
fn cluster_settings_come_from_linkerd_config() {
    let (docs, problems) = crate::document::parse_text("cluster.yaml", CLUSTER);
    let m = Manifests::from_documents(docs, problems);
    assert!(m.validate().is_empty(), "{:?}", m.validate());
    let set = m.policy_set();
    assert_eq!(set.cluster_default.0, DefaultPolicy::ClusterAuthenticated);
    assert_eq!(
        set.cluster_default.1,
        "the linkerd-config ConfigMap in linkerd"
    );
    assert_eq!(set.cluster_networks.len(), 2);
    assert_eq!(
        set.sa_identity("db", "shop"),
        "db.shop.serviceaccount.identity.linkerd.example.org"
    );
}

#[test]
fn pods_carry_ports_probes_annotations_and_service_account() {
    let (docs, problems) = crate::document::parse_text("cluster.yaml", CLUSTER);
    let m = Manifests::from_documents(docs, problems);
    let (pod, sa) = m.pod("shop", "db").expect("db is a workload");
    assert_eq!(sa, "db");
    assert_eq!(pod.workload, "StatefulSet/db");
    assert_eq!(
        pod.ports,
        [("sql".to_owned(), 5432), ("admin".to_owned(), 9000)]
    );
    assert_eq!(pod.probes, [(9000, "/ready".to_owned())]);
    assert_eq!(pod.pod_default_policy.as_deref(), Some("all-authenticated"));
    assert_eq!(pod.namespace_default_policy.as_deref(), Some("deny"));
    assert_eq!(pod.require_identity_ports, [5432, 9000]);
    assert!(m.pod("shop", "nope").is_none());
    assert_eq!(
        workload_names(&m).get("shop/db").map(String::as_str),
        Some("StatefulSet")
    );
}
