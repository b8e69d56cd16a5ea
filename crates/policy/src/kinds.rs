//! The one table of Kubernetes kinds linkerd-mcp reads: group, served version, kind and
//! resource (plural). The collector watches exactly these; the apply path finds a kind's
//! resource here; the collector's RBAC role must allow `list` and `watch` on each.

/// A Kubernetes kind: where the API server serves it.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// API group (empty for core).
    pub group: &'static str,
    /// Version watched.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

/// Everything the collector watches: what its RBAC role must allow to `list` and `watch`.
pub const WATCHED: [Kind; 19] = [
    kind("apps", "v1", "Deployment", "deployments"),
    kind("apps", "v1", "StatefulSet", "statefulsets"),
    kind("apps", "v1", "DaemonSet", "daemonsets"),
    kind("", "v1", "Pod", "pods"),
    kind("", "v1", "Service", "services"),
    kind("", "v1", "Namespace", "namespaces"),
    kind("", "v1", "ConfigMap", "configmaps"),
    kind("policy.linkerd.io", "v1beta3", "Server", "servers"),
    kind(
        "policy.linkerd.io",
        "v1beta1",
        "ServerAuthorization",
        "serverauthorizations",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "MeshTLSAuthentication",
        "meshtlsauthentications",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "NetworkAuthentication",
        "networkauthentications",
    ),
    kind("policy.linkerd.io", "v1beta3", "HTTPRoute", "httproutes"),
    kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    kind("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
    kind(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "EgressNetwork",
        "egressnetworks",
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "HTTPLocalRateLimitPolicy",
        "httplocalratelimitpolicies",
    ),
];

impl Kind {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `servers.policy.linkerd.io`, as kubectl names it.
    pub fn describe(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The watched kind of a Linkerd policy or Gateway API object by its `kind` and API group.
pub fn find(group: &str, kind: &str) -> Option<&'static Kind> {
    WATCHED.iter().find(|k| k.group == group && k.kind == kind)
}
