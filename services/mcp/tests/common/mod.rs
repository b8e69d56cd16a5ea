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
