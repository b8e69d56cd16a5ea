//! Typed Linkerd policy resources (and the Kubernetes kinds policy needs), read from manifest
//! documents. Every spec field is optional here so that a malformed object still parses and
//! validation can say exactly which field is wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use crate::document::{Document, Problem};

/// `metadata` as policy needs it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Owner references (the ReplicaSet of a Deployment's pod, ...).
    #[serde(default)]
    pub owner_references: Vec<OwnerRef>,
    /// When the API server created it (absent in manifests on disk).
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// An owner reference, as far as the mesh graph needs it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct OwnerRef {
    /// Kind of the owner.
    #[serde(default)]
    pub kind: String,
    /// Name of the owner.
    #[serde(default)]
    pub name: String,
}

/// A label selector as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// `matchLabels`.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Expression {
    /// Label key.
    #[serde(default)]
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[serde(default)]
    pub operator: String,
    /// Values.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A reference (`targetRef`, `requiredAuthenticationRefs[]`, `parentRefs[]`, `identityRefs[]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ref {
    /// Group; absent means core.
    pub group: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Port (parentRefs).
    pub port: Option<Value>,
    /// Section (parentRefs).
    pub section_name: Option<String>,
}

/// Server spec (v1beta1..v1beta3 all read into the newest shape).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Pods served.
    pub pod_selector: Option<Selector>,
    /// External workloads served (v1beta2+).
    pub external_workload_selector: Option<Selector>,
    /// Port number or name.
    pub port: Option<Value>,
    /// `unknown`, `HTTP/1`, `HTTP/2`, `gRPC`, `opaque`, `TLS`.
    pub proxy_protocol: Option<String>,
    /// Default for unmatched traffic (v1beta3).
    pub access_policy: Option<String>,
}

/// AuthorizationPolicy spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// What it authorizes.
    pub target_ref: Option<Ref>,
    /// Required authentications.
    pub required_authentication_refs: Option<Vec<Ref>>,
}

/// MeshTLSAuthentication spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshTlsAuthenticationSpec {
    /// Identities.
    pub identities: Option<Vec<String>>,
    /// ServiceAccount or Namespace refs.
    pub identity_refs: Option<Vec<Ref>>,
}

/// A network with exceptions, as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NetworkSpec {
    /// CIDR or IP.
    pub cidr: Option<String>,
    /// Excluded CIDRs.
    #[serde(default)]
    pub except: Vec<String>,
}

/// NetworkAuthentication spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NetworkAuthenticationSpec {
    /// Networks.
    pub networks: Option<Vec<NetworkSpec>>,
}

/// ServerAuthorization spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ServerAuthorizationSpec {
    /// Which Servers.
    pub server: Option<SazServer>,
    /// Which clients.
    pub client: Option<SazClient>,
}

/// `spec.server` of a ServerAuthorization.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SazServer {
    /// By name.
    pub name: Option<String>,
    /// By label selector.
    pub selector: Option<Selector>,
}

/// `spec.client` of a ServerAuthorization.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SazClient {
    /// Networks.
    pub networks: Option<Vec<NetworkSpec>>,
    /// Unauthenticated clients allowed.
    pub unauthenticated: Option<bool>,
    /// mTLS clients.
    #[serde(rename = "meshTLS")]
    pub mesh_tls: Option<SazMeshTls>,
}

/// `spec.client.meshTLS`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SazMeshTls {
    /// Any TLS client.
    #[serde(rename = "unauthenticatedTLS")]
    pub unauthenticated_tls: Option<bool>,
    /// Identities.
    pub identities: Option<Vec<String>>,
    /// Service accounts.
    pub service_accounts: Option<Vec<Ref>>,
}

/// HTTPRoute and GRPCRoute spec (both groups).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Parents.
    pub parent_refs: Option<Vec<Ref>>,
    /// Hostnames.
    pub hostnames: Option<Vec<String>>,
    /// Rules.
    pub rules: Option<Vec<RouteRule>>,
}

/// A route rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// Matches (alternatives).
    pub matches: Option<Vec<Value>>,
    /// Filters.
    pub filters: Option<Vec<Value>>,
    /// Backends.
    pub backend_refs: Option<Vec<Ref>>,
    /// Timeouts (Linkerd and Gateway v1).
    pub timeouts: Option<BTreeMap<String, String>>,
}

/// EgressNetwork spec (`policy.linkerd.io/v1alpha1`): traffic leaving the cluster to these
/// networks, and what happens to traffic no route describes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressNetworkSpec {
    /// Networks captured; absent means every network outside the cluster's.
    pub networks: Option<Vec<NetworkSpec>>,
    /// `Allow` or `Deny`, for traffic no attached route matches.
    pub traffic_policy: Option<String>,
}

/// A request-rate limit.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per second.
    pub requests_per_second: Option<Value>,
}

/// One override of an HTTPLocalRateLimitPolicy: a limit for some clients.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitOverride {
    /// Requests per second for these clients.
    pub requests_per_second: Option<Value>,
    /// The clients (ServiceAccounts).
    pub client_refs: Option<Vec<Ref>>,
}

/// HTTPLocalRateLimitPolicy spec (`policy.linkerd.io/v1alpha1`): limits enforced by the
/// proxies of the Server's pods, each on its own.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// The Server limited.
    pub target_ref: Option<Ref>,
    /// Limit over all clients.
    pub total: Option<RateLimit>,
    /// Limit per client identity.
    pub identity: Option<RateLimit>,
    /// Limits for named clients.
    pub overrides: Option<Vec<RateLimitOverride>>,
}

/// A policy object with its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<S> {
    /// `apiVersion`.
    pub api_version: String,
    /// Metadata.
    pub meta: Meta,
    /// Spec.
    pub spec: S,
}

/// Every kind linkerd-mcp reads from manifests.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// `policy.linkerd.io` Server.
    Server(Object<ServerSpec>),
    /// AuthorizationPolicy.
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
    /// MeshTLSAuthentication.
    MeshTlsAuthentication(Object<MeshTlsAuthenticationSpec>),
    /// NetworkAuthentication.
    NetworkAuthentication(Object<NetworkAuthenticationSpec>),
    /// ServerAuthorization.
    ServerAuthorization(Object<ServerAuthorizationSpec>),
    /// HTTPRoute (either group).
    HttpRoute(Object<RouteSpec>),
    /// GRPCRoute.
    GrpcRoute(Object<RouteSpec>),
    /// Gateway API TCPRoute (experimental channel).
    TcpRoute(Object<RouteSpec>),
    /// Gateway API TLSRoute (experimental channel).
    TlsRoute(Object<RouteSpec>),
    /// EgressNetwork.
    EgressNetwork(Object<EgressNetworkSpec>),
    /// HTTPLocalRateLimitPolicy.
    RateLimit(Object<RateLimitSpec>),
    /// A workload or pod, as its pod template.
    Workload(Box<Workload>),
    /// A Namespace.
    Namespace(Meta),
    /// The `linkerd-config` ConfigMap (or any ConfigMap).
    ConfigMap(Meta, BTreeMap<String, String>),
    /// A kind linkerd-mcp does not read (skipped, not an error).
    Other,
}

/// A workload's pod template, as policy needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Pod`.
    pub kind: String,
    /// Metadata of the workload.
    pub meta: Meta,
    /// The pod template (or pod) spec and metadata.
    pub pod: k8s_openapi::api::core::v1::PodTemplateSpec,
}

/// Versions of each policy kind that Linkerd serves.
pub const POLICY_VERSIONS: &[(&str, &str, &[&str])] = &[
    (
        "policy.linkerd.io",
        "Server",
        &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"],
    ),
    (
        "policy.linkerd.io",
        "ServerAuthorization",
        &["v1alpha1", "v1beta1"],
    ),
    ("policy.linkerd.io", "AuthorizationPolicy", &["v1alpha1"]),
    ("policy.linkerd.io", "MeshTLSAuthentication", &["v1alpha1"]),
    ("policy.linkerd.io", "NetworkAuthentication", &["v1alpha1"]),
    ("policy.linkerd.io", "EgressNetwork", &["v1alpha1"]),
    (
        "policy.linkerd.io",
        "HTTPLocalRateLimitPolicy",
        &["v1alpha1"],
    ),
    (
        "policy.linkerd.io",
        "HTTPRoute",
        &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"],
    ),
    ("gateway.networking.k8s.io", "HTTPRoute", &["v1", "v1beta1"]),
    (
        "gateway.networking.k8s.io",
        "GRPCRoute",
        &["v1", "v1alpha2"],
    ),
    ("gateway.networking.k8s.io", "TCPRoute", &["v1alpha2"]),
    ("gateway.networking.k8s.io", "TLSRoute", &["v1alpha2"]),
];

fn obj<S: DeserializeOwned>(doc: &Document) -> Result<Object<S>, String> {
    let meta: Meta = serde_json::from_value(doc.value["metadata"].clone())
        .map_err(|e| format!("metadata: {e}"))?;
    let spec_v = doc
        .value
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(serde_json::Map::new()));
    let spec: S = serde_json::from_value(spec_v).map_err(|e| format!("spec: {e}"))?;
    Ok(Object {
        api_version: doc.value["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        meta,
        spec,
    })
}

fn problem(doc: &Document, field: &str, message: String) -> Problem {
    Problem {
        location: format!("{}:{}", doc.file, doc.line),
        object: doc.describe(),
        field: field.to_owned(),
        message,
    }
}

/// Reads a document into a typed resource.
pub fn classify(doc: &Document) -> Result<Resource, Problem> {
    let api_version = doc.value["apiVersion"].as_str().unwrap_or_default();
    let kind = doc.value["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(problem(doc, "", "apiVersion and kind are required".into()));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let known = POLICY_VERSIONS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind);
    if let Some((_, _, versions)) = known
        && !versions.contains(&version)
    {
        return Err(problem(
            doc,
            "apiVersion",
            format!(
                "unknown API version {api_version} for {kind} (known: {})",
                versions.join(", ")
            ),
        ));
    }
    if group == "policy.linkerd.io" && known.is_none() {
        return Err(problem(
            doc,
            "kind",
            format!("unknown kind {kind} in {api_version}"),
        ));
    }
    let wrap = |r: Result<Resource, String>| {
        r.map_err(|e| problem(doc, "", format!("cannot be read: {e}")))
    };
    match (group, kind) {
        ("policy.linkerd.io", "Server") => wrap(obj(doc).map(Resource::Server)),
        ("policy.linkerd.io", "AuthorizationPolicy") => {
            wrap(obj(doc).map(Resource::AuthorizationPolicy))
        }
        ("policy.linkerd.io", "MeshTLSAuthentication") => {
            wrap(obj(doc).map(Resource::MeshTlsAuthentication))
        }
        ("policy.linkerd.io", "NetworkAuthentication") => {
            wrap(obj(doc).map(Resource::NetworkAuthentication))
        }
        ("policy.linkerd.io", "ServerAuthorization") => {
            wrap(obj(doc).map(Resource::ServerAuthorization))
        }
        (_, "HTTPRoute") if known.is_some() => wrap(obj(doc).map(Resource::HttpRoute)),
        (_, "GRPCRoute") if known.is_some() => wrap(obj(doc).map(Resource::GrpcRoute)),
        (_, "TCPRoute") if known.is_some() => wrap(obj(doc).map(Resource::TcpRoute)),
        (_, "TLSRoute") if known.is_some() => wrap(obj(doc).map(Resource::TlsRoute)),
        ("policy.linkerd.io", "EgressNetwork") => wrap(obj(doc).map(Resource::EgressNetwork)),
        ("policy.linkerd.io", "HTTPLocalRateLimitPolicy") => {
            wrap(obj(doc).map(Resource::RateLimit))
        }
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("", "Pod") => {
            wrap(workload(doc, kind).map(|w| Resource::Workload(Box::new(w))))
        }
        ("", "Namespace") => wrap(
            serde_json::from_value(doc.value["metadata"].clone())
                .map(Resource::Namespace)
                .map_err(|e| e.to_string()),
        ),
        ("", "ConfigMap") => {
            let meta: Meta = serde_json::from_value(doc.value["metadata"].clone())
                .map_err(|e| problem(doc, "metadata", e.to_string()))?;
            let data: BTreeMap<String, String> = serde_json::from_value(
                doc.value
                    .get("data")
                    .cloned()
                    .unwrap_or(Value::Object(serde_json::Map::new())),
            )
            .map_err(|e| problem(doc, "data", e.to_string()))?;
            Ok(Resource::ConfigMap(meta, data))
        }
        _ => Ok(Resource::Other),
    }
}

fn workload(doc: &Document, kind: &str) -> Result<Workload, String> {
    let meta: Meta = serde_json::from_value(doc.value["metadata"].clone())
        .map_err(|e| format!("metadata: {e}"))?;
    let template = if kind == "Pod" {
        serde_json::json!({"metadata": doc.value["metadata"], "spec": doc.value["spec"]})
    } else {
        doc.value["spec"]["template"].clone()
    };
    let pod: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(template).map_err(|e| format!("pod template: {e}"))?;
    Ok(Workload {
        kind: kind.to_owned(),
        meta,
        pod,
    })
}
