//! What the mcp service's test files share: kube-sim's tokens, the policy editors' RBAC, and
//! the booksapp change they send.

#![allow(dead_code, unreachable_pub, reason = "each test file uses part of it")]

/// kube-sim's tokens: mesh-mcp's own service account and a cluster administrator.
pub const KUBE_TOKENS: &str = "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
admin-token,admin,uid-a,\"system:masters\"\n";

/// The one delegator.
pub const BOT: &str = "system:serviceaccount:linkerd-mcp:chatbot";

/// mesh-admins may edit Linkerd policy; authors-only may edit MeshTLSAuthentications only.
pub const EDITORS: &str = r"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: policy-editor}
rules:
  - apiGroups: [policy.linkerd.io]
    resources: ['*']
    verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: policy-editors}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: policy-editor}
subjects: [{kind: Group, name: mesh-admins}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: authn-editor}
rules:
  - apiGroups: [policy.linkerd.io]
    resources: [meshtlsauthentications]
    verbs: [get, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: authn-editors}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: authn-editor}
subjects: [{kind: Group, name: authn-only}]
";

/// Only webapp may call books: a new Server on books and a policy with its authentication.
pub const BOOKS_POLICY: &str = r"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-server, namespace: booksapp}
spec: {podSelector: {matchLabels: {app: books}}, port: service, proxyProtocol: HTTP/1}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: books-clients, namespace: booksapp}
spec:
  identities: [webapp.booksapp.serviceaccount.identity.linkerd.cluster.local]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-policy, namespace: booksapp}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: books-server}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: books-clients}
";

/// mesh-mcp over kube-sim (the demo cluster and [`EDITORS`]) with booksapp's graph: `tokens`
/// accepted, [`BOT`] the one delegator (with `groups`), the pipeline `tweak`ed; and a client
/// of its gRPC port.
pub async fn start_booksapp(
    tokens: &str,
    groups: &[&str],
    tweak: fn(mesh_mcp::apply::Applier) -> mesh_mcp::apply::Applier,
) -> (
    mcp_harness::McpHarness,
    mesh_proto::pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>,
) {
    let h = mcp_harness::McpHarness::start(mcp_harness::Options {
        kube_tokens: KUBE_TOKENS.into(),
        extra_seeds: Vec::new(),
        topology: meshsim::builtin("booksapp").unwrap(),
        delegation: mesh_mcp::apply::Delegation {
            delegators: vec![BOT.into()],
            allowed_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        },
        mcp_tokens: tokens.into(),
        heartbeat: std::time::Duration::from_secs(30),
        tweak,
        prometheus_url: None,
    })
    .await;
    h.kube.load_yaml(EDITORS).await.unwrap();
    let client = mesh_proto::pb::mesh_service_client::MeshServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", h.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    (h, client)
}
