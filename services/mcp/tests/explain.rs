//! `ExplainAccess` (the MCP `explain_access` tool's RPC) as a table: one row per rule the policy
//! overlay applies, on the demo's emojivoto and booksapp policy plus a `lab` namespace that
//! exercises what those do not (a deny default, audit mode, unmeshed clients and destinations,
//! network authentication).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::sync::Arc;

use mesh_mcp::apply::{Applier, ApplyError, Delegation};
use mesh_policy::cluster::Cluster;
use mesh_proto::pb::{self, policy_verdict::Decision};

const LAB: &str = r"
apiVersion: v1
kind: Namespace
metadata:
  name: lab
  annotations: {linkerd.io/inject: enabled, config.linkerd.io/default-inbound-policy: deny}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: lab}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      serviceAccountName: api
      containers: [{name: api, image: api, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: lab}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers: [{name: client, image: client, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy, namespace: lab}
spec:
  selector: {matchLabels: {app: legacy}}
  template:
    metadata: {labels: {app: legacy}, annotations: {linkerd.io/inject: disabled}}
    spec:
      serviceAccountName: legacy
      containers: [{name: legacy, image: legacy, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: audited, namespace: lab}
spec:
  selector: {matchLabels: {app: audited}}
  template:
    metadata: {labels: {app: audited}, annotations: {config.linkerd.io/default-inbound-policy: audit}}
    spec:
      serviceAccountName: audited
      containers: [{name: audited, image: audited, ports: [{name: admin, containerPort: 9090}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: open, namespace: lab}
spec:
  selector: {matchLabels: {app: open}}
  template:
    metadata: {labels: {app: open}}
    spec:
      serviceAccountName: open
      containers: [{name: open, image: open, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: api-http, namespace: lab}
spec: {podSelector: {matchLabels: {app: api}}, port: http}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: client-only, namespace: lab}
spec: {identityRefs: [{kind: ServiceAccount, name: client}]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-client, namespace: lab}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: api-http}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: client-only}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: open-http, namespace: lab}
spec: {podSelector: {matchLabels: {app: open}}, port: http}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: anywhere, namespace: lab}
spec: {networks: [{cidr: 0.0.0.0/0}, {cidr: '::/0'}]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: open-to-all, namespace: lab}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: open-http}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: NetworkAuthentication, name: anywhere}]
";

fn applier() -> Applier {
    let seed =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/kube-sim/seed/demo");
    let mut texts: Vec<String> = [
        "emojivoto.yaml",
        "emojivoto-policy.yaml",
        "booksapp.yaml",
        "booksapp-policy.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(seed.join(f)).unwrap())
    .collect();
    texts.push(LAB.to_owned());
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (cluster, unreadable) = Cluster::from_manifests(&texts);
    assert!(unreadable.is_empty(), "{unreadable:?}");
    let cluster = tokio::sync::watch::channel(Arc::new(cluster)).1;
    // Explaining reads the cluster view only: the API server is never called.
    let nowhere = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    Applier::new(
        nowhere,
        Delegation::default(),
        cluster,
        tokio::sync::watch::channel(None).1,
    )
    .unwrap()
}

fn ask(from: &str, to: &str, port: u32, method: &str, path: &str) -> pb::ExplainAccessRequest {
    pb::ExplainAccessRequest {
        from: from.into(),
        to: to.into(),
        port,
        method: method.into(),
        path: path.into(),
    }
}

#[tokio::test]
async fn every_rule_of_the_policy_overlay() {
    let a = applier();
    // (request, decision, a phrase the answer must hold: chain, server, authorization or default)
    let rows = [
        // A Server and a ServerAuthorization admitting a service account.
        (
            ask("emojivoto/web", "emojivoto/voting", 0, "", ""),
            Decision::Allowed,
            "emojivoto/internal-grpc",
        ),
        // The same Server, a client no authorization names.
        (
            ask("emojivoto/vote-bot", "emojivoto/voting", 0, "", ""),
            Decision::Denied,
            "emojivoto/voting-grpc",
        ),
        // An unauthenticated ServerAuthorization.
        (
            ask("emojivoto/vote-bot", "emojivoto/web", 0, "", ""),
            Decision::Allowed,
            "emojivoto/web-public",
        ),
        // A port no Server selects: the namespace's default policy.
        (
            ask("emojivoto/vote-bot", "emojivoto/voting", 8801, "", ""),
            Decision::Allowed,
            "all-unauthenticated",
        ),
        // The namespace default all-authenticated admits any meshed client.
        (
            ask("booksapp/webapp", "booksapp/books", 0, "", ""),
            Decision::Allowed,
            "all-authenticated",
        ),
        // Per-route policy without a request path cannot be decided, and says which routes.
        (
            ask("booksapp/webapp", "booksapp/authors", 0, "", ""),
            Decision::Unknown,
            "authors-get-route",
        ),
        // The route matched, an AuthorizationPolicy on it admits webapp's identity.
        (
            ask(
                "booksapp/webapp",
                "booksapp/authors",
                0,
                "GET",
                "/authors.json",
            ),
            Decision::Allowed,
            "booksapp/authors-get-policy",
        ),
        // The route matched, but traffic's identity is not in its MeshTLSAuthentication.
        (
            ask(
                "booksapp/traffic",
                "booksapp/authors",
                0,
                "GET",
                "/authors.json",
            ),
            Decision::Denied,
            "authors-get-route",
        ),
        // No route matches the request: denied (Linkerd answers 404).
        (
            ask(
                "booksapp/webapp",
                "booksapp/authors",
                0,
                "DELETE",
                "/authors/1",
            ),
            Decision::Denied,
            "no route on Server authors-server matches",
        ),
        // A NetworkAuthentication on the probe route admits anyone in the cluster.
        (
            ask("booksapp/traffic", "booksapp/authors", 0, "GET", "/ping"),
            Decision::Allowed,
            "booksapp/authors-probe-policy",
        ),
        // An AuthorizationPolicy with identityRefs to a ServiceAccount.
        (
            ask("lab/client", "lab/api", 0, "", ""),
            Decision::Allowed,
            "lab/api-from-client",
        ),
        // An unmeshed client has no identity: a MeshTLS authentication cannot admit it.
        (
            ask("lab/legacy", "lab/api", 0, "", ""),
            Decision::Denied,
            "no Linkerd proxy",
        ),
        // ... while a NetworkAuthentication can.
        (
            ask("lab/legacy", "lab/open", 0, "", ""),
            Decision::Allowed,
            "lab/open-to-all",
        ),
        // No Server: the namespace's deny default.
        (
            ask("lab/api", "lab/client", 0, "", ""),
            Decision::Denied,
            "deny",
        ),
        // A pod annotation's audit default: admitted, flagged.
        (
            ask("lab/client", "lab/audited", 0, "", ""),
            Decision::Audit,
            "audit",
        ),
        // An unmeshed destination: Linkerd policy does not apply.
        (
            ask("lab/client", "lab/legacy", 0, "", ""),
            Decision::Unknown,
            "no Linkerd proxy",
        ),
    ];
    for (req, decision, phrase) in rows {
        let v = a.explain(&req).unwrap();
        let text = format!(
            "{} | {} | {} | {}",
            v.server,
            v.default_policy,
            v.authorization_policies.join(","),
            v.chain.join(" / ")
        );
        assert_eq!(v.decision(), decision, "{} -> {}: {text}", req.from, req.to);
        assert!(
            text.contains(phrase),
            "{} -> {}: {phrase:?} not in {text}",
            req.from,
            req.to
        );
    }
    // Bad questions get specific errors.
    let e = a
        .explain(&ask("emojivoto", "emojivoto/web", 0, "", ""))
        .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e:?}");
    assert!(
        e.message()
            .contains("from: \"emojivoto\" is not namespace/name"),
        "{}",
        e.message()
    );
    let e = a
        .explain(&ask("emojivoto/web", "emojivoto/nope", 0, "", ""))
        .unwrap_err();
    assert!(matches!(e, ApplyError::NotFound(_)), "{e:?}");
    let e = a
        .explain(&ask("emojivoto/web", "emojivoto/voting", 70_000, "", ""))
        .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e:?}");
}
