//! A set of typed manifests: documents typed as Linkerd policy resources (and the Kubernetes
//! kinds policy needs), validated as a whole, and turned into the policy set and pods that
//! explain-access evaluates.

use std::collections::BTreeMap;

use crate::eval::{
    AuthorizationPolicy, DefaultPolicy, LabelSelector, MeshTlsAuthentication, MeshTlsClient,
    Network, NetworkAuthentication, ObjectRef, PathMatch, PodInfo, PolicySet, PortRef, Route,
    RouteMatch, SelectorOp, Server, ServerAuthorization, ServerSelector,
};
use crate::eval::{EgressNetwork, RateLimitPolicy};
use serde_json::Value;

use crate::{
    document::{Document, Problem},
    resources::{self, Ref, Resource, Selector},
    validate,
};

/// The default-inbound-policy annotation.
pub const DEFAULT_POLICY_ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";
/// Ports that require identity.
pub const REQUIRE_IDENTITY_ANNOTATION: &str =
    "config.linkerd.io/proxy-require-identity-inbound-ports";

/// A folder (or file) of manifests, read and typed.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Documents that parsed, with their resources.
    pub resources: Vec<(Document, Resource)>,
    /// Documents that could not be read or typed.
    pub problems: Vec<Problem>,
}

impl Manifests {
    /// Types parsed documents.
    pub fn from_documents(docs: Vec<Document>, mut problems: Vec<Problem>) -> Self {
        let mut resources = Vec::new();
        for d in docs {
            match resources::classify(&d) {
                Ok(r) => resources.push((d, r)),
                Err(p) => problems.push(p),
            }
        }
        Self {
            resources,
            problems,
        }
    }

    /// Every problem: unreadable documents, then admission-rule violations.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = self.problems.clone();
        for (doc, r) in &self.resources {
            for (field, message) in validate::validate(r, &doc.value) {
                out.push(Problem {
                    location: format!("{}:{}", doc.file, doc.line),
                    object: doc.describe(),
                    field,
                    message,
                });
            }
        }
        out
    }

    /// What Linkerd accepts but ignores or reads more widely than written: routes without
    /// parents (attached to nothing), parents that are not a Service or EgressNetwork (a gateway
    /// controller's, not the mesh's), Gateway API route kinds Linkerd does not route, and
    /// EgressNetworks without networks (every network outside the cluster). Not errors.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut warn = |doc: &crate::document::Document, field: &str, message: String| {
            out.push(Problem {
                location: format!("{}:{}", doc.file, doc.line),
                object: doc.describe(),
                field: field.to_owned(),
                message,
            });
        };
        for (doc, r) in &self.resources {
            match r {
                Resource::HttpRoute(route)
                | Resource::GrpcRoute(route)
                | Resource::TcpRoute(route)
                | Resource::TlsRoute(route) => {
                    let parents = route.spec.parent_refs.as_deref().unwrap_or_default();
                    if parents.is_empty() {
                        warn(doc, "spec.parentRefs", "none: Linkerd accepts the route but attaches it to nothing, so it routes no traffic".into());
                    }
                    for (i, p) in parents.iter().enumerate() {
                        let kind = p.kind.as_deref().unwrap_or("Gateway");
                        let group = p.group.as_deref().unwrap_or("");
                        let service = kind.eq_ignore_ascii_case("Service")
                            && (group.is_empty() || group.eq_ignore_ascii_case("core"));
                        let egress = kind.eq_ignore_ascii_case("EgressNetwork")
                            && group.eq_ignore_ascii_case("policy.linkerd.io");
                        let server = kind.eq_ignore_ascii_case("Server")
                            && group.eq_ignore_ascii_case("policy.linkerd.io");
                        if !(service || egress || server) {
                            warn(doc, &format!("spec.parentRefs[{i}]"), format!("{kind} {:?}: the mesh attaches routes to Services, EgressNetworks (group policy.linkerd.io) and, for inbound policy, Servers; Linkerd ignores this parent (a gateway controller may not)", p.name.as_deref().unwrap_or_default()));
                        }
                    }
                }
                Resource::EgressNetwork(e) if e.spec.networks.is_none() => warn(
                    doc,
                    "spec.networks",
                    "not set: it captures every network outside the cluster (0.0.0.0/0 and ::/0 minus clusterNetworks)".into(),
                ),
                Resource::Other => {
                    let api = doc.value["apiVersion"].as_str().unwrap_or_default();
                    let kind = doc.value["kind"].as_str().unwrap_or_default();
                    if api.starts_with("gateway.networking.k8s.io/") && kind.ends_with("Route") {
                        warn(doc, "kind", format!("Linkerd does not route {kind} (it reads HTTPRoute, GRPCRoute, TCPRoute and TLSRoute): ignored"));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// How many policy objects (Linkerd kinds) were read.
    pub fn policy_count(&self) -> usize {
        self.resources
            .iter()
            .filter(|(_, r)| {
                !matches!(
                    r,
                    Resource::Workload(_)
                        | Resource::Namespace(_)
                        | Resource::ConfigMap(..)
                        | Resource::Other
                )
            })
            .count()
    }

    /// The model's policy set (cluster settings from a `linkerd-config` ConfigMap, if present).
    pub fn policy_set(&self) -> PolicySet {
        let mut set = PolicySet::default();
        for (_, r) in &self.resources {
            match r {
                Resource::Server(s) => set.servers.push(Server {
                    created: s.meta.creation_timestamp.clone(),
                    namespace: ns(&s.meta.namespace),
                    name: s.meta.name.clone(),
                    labels: s.meta.labels.clone(),
                    pod_selector: s.spec.pod_selector.as_ref().map(selector),
                    port: match &s.spec.port {
                        Some(Value::Number(n)) => PortRef::Number(
                            n.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                        ),
                        Some(Value::String(name)) => PortRef::Name(name.clone()),
                        _ => PortRef::Number(0),
                    },
                    access_policy: s
                        .spec
                        .access_policy
                        .as_deref()
                        .and_then(DefaultPolicy::parse),
                }),
                Resource::AuthorizationPolicy(p) => {
                    set.authorization_policies.push(AuthorizationPolicy {
                        namespace: ns(&p.meta.namespace),
                        name: p.meta.name.clone(),
                        target: p
                            .spec
                            .target_ref
                            .as_ref()
                            .map(object_ref)
                            .unwrap_or_default(),
                        required_authentication_refs: p
                            .spec
                            .required_authentication_refs
                            .iter()
                            .flatten()
                            .map(object_ref)
                            .collect(),
                    })
                }
                Resource::MeshTlsAuthentication(m) => {
                    set.mesh_tls_authentications.push(MeshTlsAuthentication {
                        namespace: ns(&m.meta.namespace),
                        name: m.meta.name.clone(),
                        identities: m.spec.identities.clone().unwrap_or_default(),
                        identity_refs: m
                            .spec
                            .identity_refs
                            .iter()
                            .flatten()
                            .map(object_ref)
                            .collect(),
                    })
                }
                Resource::NetworkAuthentication(n) => {
                    set.network_authentications.push(NetworkAuthentication {
                        namespace: ns(&n.meta.namespace),
                        name: n.meta.name.clone(),
                        networks: n
                            .spec
                            .networks
                            .iter()
                            .flatten()
                            .filter_map(network)
                            .collect(),
                    })
                }
                Resource::ServerAuthorization(s) => {
                    let client = s.spec.client.clone().unwrap_or_default();
                    let srv = s.spec.server.clone().unwrap_or_default();
                    set.server_authorizations.push(ServerAuthorization {
                        namespace: ns(&s.meta.namespace),
                        name: s.meta.name.clone(),
                        server: match (srv.name, srv.selector) {
                            (Some(n), _) => ServerSelector::Name(n),
                            (None, Some(sel)) => ServerSelector::Selector(selector(&sel)),
                            (None, None) => ServerSelector::Name(String::new()),
                        },
                        networks: client
                            .networks
                            .map(|nets| nets.iter().filter_map(network).collect()),
                        unauthenticated: client.unauthenticated == Some(true),
                        mesh_tls: client.mesh_tls.map(|m| MeshTlsClient {
                            unauthenticated_tls: m.unauthenticated_tls == Some(true),
                            identities: m.identities.unwrap_or_default(),
                            service_accounts: m
                                .service_accounts
                                .unwrap_or_default()
                                .into_iter()
                                .map(|r| (r.name.unwrap_or_default(), r.namespace))
                                .collect(),
                        }),
                    });
                }
                Resource::HttpRoute(route) | Resource::GrpcRoute(route) => {
                    let kind = if matches!(r, Resource::HttpRoute(_)) {
                        "HTTPRoute"
                    } else {
                        "GRPCRoute"
                    };
                    set.routes.push(Route {
                        kind: kind.into(),
                        group: route
                            .api_version
                            .split_once('/')
                            .map_or("", |(g, _)| g)
                            .to_owned(),
                        namespace: ns(&route.meta.namespace),
                        name: route.meta.name.clone(),
                        parents: route
                            .spec
                            .parent_refs
                            .iter()
                            .flatten()
                            .map(object_ref)
                            .collect(),
                        rules: route
                            .spec
                            .rules
                            .iter()
                            .flatten()
                            .map(|rule| rule.matches.iter().flatten().map(route_match).collect())
                            .collect(),
                    });
                }
                Resource::EgressNetwork(e) => set.egress_networks.push(EgressNetwork {
                    namespace: ns(&e.meta.namespace),
                    name: e.meta.name.clone(),
                    networks: e
                        .spec
                        .networks
                        .as_ref()
                        .map(|nets| nets.iter().filter_map(network).collect()),
                    traffic_policy: e.spec.traffic_policy.clone().unwrap_or_default(),
                }),
                Resource::RateLimit(r) => {
                    let rps = |v: &Option<crate::resources::RateLimit>| {
                        v.as_ref()
                            .and_then(|l| l.requests_per_second.as_ref())
                            .and_then(Value::as_u64)
                    };
                    set.rate_limits.push(RateLimitPolicy {
                        namespace: ns(&r.meta.namespace),
                        name: r.meta.name.clone(),
                        server: r
                            .spec
                            .target_ref
                            .as_ref()
                            .and_then(|t| t.name.clone())
                            .unwrap_or_default(),
                        total: rps(&r.spec.total),
                        identity: rps(&r.spec.identity),
                        overrides: r
                            .spec
                            .overrides
                            .iter()
                            .flatten()
                            .filter_map(|o| {
                                let limit = o.requests_per_second.as_ref()?.as_u64()?;
                                let clients = o
                                    .client_refs
                                    .iter()
                                    .flatten()
                                    .map(|c| {
                                        (c.name.clone().unwrap_or_default(), c.namespace.clone())
                                    })
                                    .collect();
                                Some((limit, clients))
                            })
                            .collect(),
                    });
                }
                Resource::ConfigMap(meta, data) if meta.name == "linkerd-config" => {
                    let values: Value = data
                        .get("values")
                        .filter(|v| {
                            mesh_model::input::check(v, mesh_model::input::InputLimits::MANIFEST)
                                .is_ok()
                        })
                        .and_then(|v| serde_yaml_ng::from_str(v).ok())
                        .unwrap_or_default();
                    if let Some(p) = values["proxy"]["defaultInboundPolicy"]
                        .as_str()
                        .and_then(DefaultPolicy::parse)
                    {
                        set.cluster_default = (
                            p,
                            format!("the linkerd-config ConfigMap in {}", ns(&meta.namespace)),
                        );
                    }
                    if let Some(nets) = values["clusterNetworks"].as_str() {
                        let parsed: Vec<Network> = nets
                            .split(',')
                            .filter_map(|n| n.trim().parse().ok())
                            .map(|cidr| Network {
                                cidr,
                                except: Vec::new(),
                            })
                            .collect();
                        if !parsed.is_empty() {
                            set.cluster_networks = parsed;
                        }
                    }
                    if let Some(td) = values["identityTrustDomain"].as_str() {
                        set.trust_domain = td.to_owned();
                    }
                    set.control_plane_ns = ns(&meta.namespace);
                }
                _ => {}
            }
        }
        set
    }

    /// The pod of a workload (`namespace/name`), and its service account.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<(PodInfo, String)> {
        let ns_annotation = self.resources.iter().find_map(|(_, r)| match r {
            Resource::Namespace(m) if m.name == namespace => {
                m.annotations.get(DEFAULT_POLICY_ANNOTATION).cloned()
            }
            _ => None,
        });
        self.resources.iter().find_map(|(_, r)| {
            let Resource::Workload(w) = r else {
                return None;
            };
            if w.meta.name != name || ns(&w.meta.namespace) != namespace {
                return None;
            }
            Some(pod_info(w, ns_annotation.clone()))
        })
    }
}

/// The pod a workload's template (or a pod) describes, as policy sees it, and its service
/// account. `namespace_default_policy` is the namespace's default-inbound-policy annotation.
pub fn pod_info(
    w: &resources::Workload,
    namespace_default_policy: Option<String>,
) -> (PodInfo, String) {
    let namespace = ns(&w.meta.namespace);
    let meta = w.pod.metadata.clone().unwrap_or_default();
    let annotations = meta.annotations.unwrap_or_default();
    let spec = w.pod.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    let mut probes = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            if let (Some(n), Ok(num)) = (&p.name, u16::try_from(p.container_port)) {
                ports.push((n.clone(), num));
            }
        }
        for probe in [&c.liveness_probe, &c.readiness_probe]
            .into_iter()
            .flatten()
        {
            if let Some(get) = &probe.http_get {
                let port = match &get.port {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                        u16::try_from(*n).ok()
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        ports.iter().find(|(n, _)| n == s).map(|(_, p)| *p)
                    }
                };
                if let Some(port) = port {
                    probes.push((port, get.path.clone().unwrap_or_else(|| "/".into())));
                }
            }
        }
    }
    let pod = PodInfo {
        namespace,
        workload: format!("{}/{}", w.kind, w.meta.name),
        labels: meta.labels.unwrap_or_default(),
        ports,
        pod_default_policy: annotations.get(DEFAULT_POLICY_ANNOTATION).cloned(),
        namespace_default_policy,
        require_identity_ports: annotations
            .get(REQUIRE_IDENTITY_ANNOTATION)
            .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
            .unwrap_or_default(),
        probes,
    };
    let sa = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    (pod, sa)
}

fn ns(n: &Option<String>) -> String {
    n.clone().unwrap_or_else(|| "default".into())
}

fn selector(s: &Selector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: s
            .match_expressions
            .iter()
            .filter_map(|e| {
                let op = match e.operator.as_str() {
                    "In" => SelectorOp::In,
                    "NotIn" => SelectorOp::NotIn,
                    "Exists" => SelectorOp::Exists,
                    "DoesNotExist" => SelectorOp::DoesNotExist,
                    _ => return None,
                };
                Some((e.key.clone(), op, e.values.clone()))
            })
            .collect(),
    }
}

fn object_ref(r: &Ref) -> ObjectRef {
    ObjectRef {
        group: r.group.clone().unwrap_or_default(),
        kind: r.kind.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        namespace: r.namespace.clone(),
    }
}

fn network(n: &resources::NetworkSpec) -> Option<Network> {
    Some(Network {
        cidr: n.cidr.as_deref()?.parse().ok()?,
        except: n.except.iter().filter_map(|e| e.parse().ok()).collect(),
    })
}

fn route_match(m: &Value) -> RouteMatch {
    let path = m.get("path").map(|p| {
        let value = p["value"].as_str().unwrap_or("/").to_owned();
        match p["type"].as_str() {
            Some("Exact") => PathMatch::Exact(value),
            Some("RegularExpression") => PathMatch::Regex(value),
            _ => PathMatch::Prefix(value),
        }
    });
    let method = m["method"].as_str().map(str::to_owned);
    let grpc = m["method"].is_object().then(|| {
        (
            m["method"]["service"].as_str().map(str::to_owned),
            m["method"]["method"].as_str().map(str::to_owned),
        )
    });
    RouteMatch { path, method, grpc }
}

/// Workload ids (`namespace/name`) in the manifests, for messages.
pub fn workload_names(m: &Manifests) -> BTreeMap<String, String> {
    m.resources
        .iter()
        .filter_map(|(_, r)| match r {
            Resource::Workload(w) => Some((
                format!("{}/{}", ns(&w.meta.namespace), w.meta.name),
                w.kind.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
