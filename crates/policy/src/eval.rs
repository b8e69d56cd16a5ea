//! Linkerd's inbound authorization, evaluated offline: which Server selects a port (or which
//! default policy applies, and from where), which routes match, which AuthorizationPolicies or
//! ServerAuthorizations apply, and which authentication admitted or refused the client.
//!
//! ```text
//!  request (client identity/IP -> pod:port [method path])
//!     │
//!     ├─ Server selecting pod+port? ── no ──> default policy (pod annotation > namespace
//!     │                                        annotation copied at injection > cluster default)
//!     ├─ HTTPRoutes on the Server? ── yes ──> the matching route, or "no route" (denied)
//!     └─ AuthorizationPolicies (Server, route, Namespace targets) + ServerAuthorizations
//!            each: every required authentication must match ──> allowed; none ──> denied
//!            (Server accessPolicy audit: allowed and flagged)
//! ```
//!
//! Semantics follow Linkerd's policy controller: a missing `group` on a reference means the core
//! group (so `{kind: Server, name: x}` without a group targets nothing); all listed
//! authentication refs must match; an empty list admits everyone; probes are authorized on
//! Servers without routes and under default policies.

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use mesh_model::Decision;

/// The policy group.
pub const POLICY_GROUP: &str = "policy.linkerd.io";
/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

// === Label selectors ===

/// A label selector requirement operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorOp {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// A Kubernetes label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`: (key, operator, values).
    pub match_expressions: Vec<(String, SelectorOp, Vec<String>)>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|(k, op, vs)| {
                let v = labels.get(k);
                match op {
                    SelectorOp::In => v.is_some_and(|v| vs.contains(v)),
                    SelectorOp::NotIn => v.is_none_or(|v| !vs.contains(v)),
                    SelectorOp::Exists => v.is_some(),
                    SelectorOp::DoesNotExist => v.is_none(),
                }
            })
    }
}

// === Networks ===

/// An IP network (a CIDR, or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Whether `other` lies entirely inside this network.
    pub fn covers(&self, other: &IpNet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A network with exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The network.
    pub cidr: IpNet,
    /// Parts of it excluded.
    pub except: Vec<IpNet>,
}

impl Network {
    /// Whether `ip` is in the network and in none of its exceptions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }

    /// Whether every address of `other` is in the network and in none of its exceptions.
    pub fn covers(&self, other: &IpNet) -> bool {
        let within = |outer: &IpNet, inner: &IpNet| {
            outer.prefix <= inner.prefix && outer.contains(inner.addr)
        };
        within(&self.cidr, other)
            && !self
                .except
                .iter()
                .any(|e| within(e, other) || within(other, e))
    }
}

// === Policy objects ===

/// A port, by number or by the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// A number.
    Number(u16),
    /// A container port name.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// A default inbound policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Everyone.
    AllUnauthenticated,
    /// Any mTLS client.
    AllAuthenticated,
    /// Any client from the cluster networks.
    ClusterUnauthenticated,
    /// mTLS clients from the cluster networks.
    ClusterAuthenticated,
    /// Nobody.
    Deny,
    /// Everyone, flagged.
    Audit,
}

impl DefaultPolicy {
    /// Every value, in Linkerd's spelling.
    pub const ALL: [(&'static str, Self); 6] = [
        ("all-unauthenticated", Self::AllUnauthenticated),
        ("all-authenticated", Self::AllAuthenticated),
        ("cluster-unauthenticated", Self::ClusterUnauthenticated),
        ("cluster-authenticated", Self::ClusterAuthenticated),
        ("deny", Self::Deny),
        ("audit", Self::Audit),
    ];

    /// Parses Linkerd's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
    }

    /// Linkerd's spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(n, _)| n)
    }
}

/// A reference to another object (`targetRef`, `requiredAuthenticationRefs[]`, `parentRefs[]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// API group; empty means core, as in Linkerd.
    pub group: String,
    /// Kind (matched case-insensitively).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace, when given.
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// Whether this refers to `kind` in `group` (a missing group is core).
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group.eq_ignore_ascii_case(group) && self.kind.eq_ignore_ascii_case(kind)
    }

    fn describe(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{}.{} {}", self.kind, g, self.name)
    }
}

/// A Server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels of the Server itself (ServerAuthorizations may select by them).
    pub labels: BTreeMap<String, String>,
    /// Pods it selects (`None` for `externalWorkloadSelector` Servers).
    pub pod_selector: Option<LabelSelector>,
    /// Port.
    pub port: PortRef,
    /// `accessPolicy` (v1beta3): what unmatched traffic gets; default deny.
    pub access_policy: Option<DefaultPolicy>,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts as text): when Servers overlap on a
    /// pod's port, the oldest wins, then the first by name (Linkerd 2.18+, PR #13676).
    pub created: Option<String>,
}

/// An AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What it authorizes.
    pub target: ObjectRef,
    /// All must match; empty admits everyone.
    pub required_authentication_refs: Vec<ObjectRef>,
}

/// A MeshTLSAuthentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshTlsAuthentication {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Identities: exact, `*`, `*.suffix`.
    pub identities: Vec<String>,
    /// ServiceAccount or Namespace refs.
    pub identity_refs: Vec<ObjectRef>,
}

/// A NetworkAuthentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAuthentication {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Networks.
    pub networks: Vec<Network>,
}

/// Which Servers a ServerAuthorization covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSelector {
    /// One Server by name.
    Name(String),
    /// Servers whose labels match.
    Selector(LabelSelector),
}

/// A ServerAuthorization (legacy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAuthorization {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Which Servers.
    pub server: ServerSelector,
    /// Client networks; `None` means all.
    pub networks: Option<Vec<Network>>,
    /// `client.unauthenticated`.
    pub unauthenticated: bool,
    /// `client.meshTLS`.
    pub mesh_tls: Option<MeshTlsClient>,
}

/// `client.meshTLS` of a ServerAuthorization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshTlsClient {
    /// Any TLS client, even without an identity.
    pub unauthenticated_tls: bool,
    /// Identities.
    pub identities: Vec<String>,
    /// Service accounts: (name, namespace; None = the authorization's).
    pub service_accounts: Vec<(String, Option<String>)>,
}

/// How a route matches a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Exactly.
    Exact(String),
    /// By prefix (Gateway API semantics: whole segments).
    Prefix(String),
    /// By regular expression (reported, not evaluated offline).
    Regex(String),
}

/// One `matches[]` entry of a route rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// Path match.
    pub path: Option<PathMatch>,
    /// HTTP method.
    pub method: Option<String>,
    /// gRPC (service, method).
    pub grpc: Option<(Option<String>, Option<String>)>,
}

/// An HTTPRoute or GRPCRoute attached to Servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: String,
    /// Group.
    pub group: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Parents.
    pub parents: Vec<ObjectRef>,
    /// Rules, each a list of alternatives (empty: matches everything).
    pub rules: Vec<Vec<RouteMatch>>,
}

/// An EgressNetwork: traffic from its namespace's clients (or every namespace's, in the global
/// egress namespace) to these networks, and what happens to traffic no route describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressNetwork {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Networks; `None` means every network outside the cluster's.
    pub networks: Option<Vec<Network>>,
    /// `Allow` or `Deny`.
    pub traffic_policy: String,
}

/// An HTTPLocalRateLimitPolicy: limits each proxy of a Server's pods enforces on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The Server it limits (same namespace).
    pub server: String,
    /// Requests per second over all clients, per proxy.
    pub total: Option<u64>,
    /// Requests per second per client identity, per proxy.
    pub identity: Option<u64>,
    /// Limits for named clients.
    pub overrides: Vec<RateLimitOverride>,
}

/// A service account named by an override: (name, namespace; absent: the policy's).
pub type ClientRef = (String, Option<String>);

/// A limit for named clients: requests per second, and the service accounts it applies to.
pub type RateLimitOverride = (u64, Vec<ClientRef>);

impl RateLimitPolicy {
    /// The limits in words: `total 100/s, per identity 20/s, 50/s for ns/sa`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.total {
            parts.push(format!("total {t}/s"));
        }
        if let Some(i) = self.identity {
            parts.push(format!("per identity {i}/s"));
        }
        for (rps, clients) in &self.overrides {
            let names: Vec<String> = clients
                .iter()
                .map(|(sa, ns)| format!("{}/{sa}", ns.as_deref().unwrap_or(&self.namespace)))
                .collect();
            parts.push(format!("{rps}/s for {}", names.join(", ")));
        }
        if parts.is_empty() {
            "no limits".into()
        } else {
            parts.join(", ")
        }
    }

    /// The per-proxy limit that applies to a client with service account `sa` of namespace
    /// `ns` (an override, else the per-identity limit), and the total.
    pub fn limits_for(&self, sa: Option<(&str, &str)>) -> (Option<u64>, Option<u64>) {
        let own = sa.and_then(|(sa, ns)| {
            self.overrides.iter().find_map(|(rps, clients)| {
                clients
                    .iter()
                    .any(|(n, cns)| n == sa && cns.as_deref().unwrap_or(&self.namespace) == ns)
                    .then_some(*rps)
            })
        });
        (self.total, own.or(self.identity))
    }
}

/// Every policy object, and the cluster's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySet {
    /// Servers.
    pub servers: Vec<Server>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// MeshTLSAuthentications.
    pub mesh_tls_authentications: Vec<MeshTlsAuthentication>,
    /// NetworkAuthentications.
    pub network_authentications: Vec<NetworkAuthentication>,
    /// ServerAuthorizations.
    pub server_authorizations: Vec<ServerAuthorization>,
    /// HTTPRoutes and GRPCRoutes.
    pub routes: Vec<Route>,
    /// EgressNetworks.
    pub egress_networks: Vec<EgressNetwork>,
    /// HTTPLocalRateLimitPolicies.
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Cluster default (`proxy.defaultInboundPolicy`), and where it came from.
    pub cluster_default: (DefaultPolicy, String),
    /// Cluster networks (`clusterNetworks`).
    pub cluster_networks: Vec<Network>,
    /// Control plane namespace (identities).
    pub control_plane_ns: String,
    /// Trust domain (identities).
    pub trust_domain: String,
}

impl Default for PolicySet {
    fn default() -> Self {
        let nets = [
            "10.0.0.0/8",
            "100.64.0.0/10",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fd00::/8",
        ];
        Self {
            servers: Vec::new(),
            authorization_policies: Vec::new(),
            mesh_tls_authentications: Vec::new(),
            network_authentications: Vec::new(),
            server_authorizations: Vec::new(),
            routes: Vec::new(),
            egress_networks: Vec::new(),
            rate_limits: Vec::new(),
            cluster_default: (
                DefaultPolicy::AllUnauthenticated,
                "the install default".into(),
            ),
            cluster_networks: nets
                .iter()
                .map(|n| Network {
                    cidr: n.parse().expect("static CIDR"),
                    except: Vec::new(),
                })
                .collect(),
            control_plane_ns: "linkerd".into(),
            trust_domain: "cluster.local".into(),
        }
    }
}

impl PolicySet {
    /// The HTTPLocalRateLimitPolicy on Server `ns/name`: the oldest wins when several target it,
    /// as Linkerd marks the others not accepted; here, the first by name.
    pub fn rate_limit_on(&self, ns: &str, server: &str) -> Option<&RateLimitPolicy> {
        self.rate_limits
            .iter()
            .filter(|r| r.namespace == ns && r.server == server)
            .min_by(|a, b| a.name.cmp(&b.name))
    }

    /// The EgressNetwork `ns/name`.
    pub fn egress_network(&self, ns: &str, name: &str) -> Option<&EgressNetwork> {
        self.egress_networks
            .iter()
            .find(|e| e.namespace == ns && e.name == name)
    }
}

/// The destination pod as policy sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Workload name (for messages).
    pub workload: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Named container ports.
    pub ports: Vec<(String, u16)>,
    /// `config.linkerd.io/default-inbound-policy` on the pod (template).
    pub pod_default_policy: Option<String>,
    /// The same annotation on its namespace (copied onto pods at injection).
    pub namespace_default_policy: Option<String>,
    /// `config.linkerd.io/proxy-require-identity-inbound-ports`.
    pub require_identity_ports: Vec<u16>,
    /// HTTP probe (port, path) pairs.
    pub probes: Vec<(u16, String)>,
}

/// Who is calling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its mTLS identity, when meshed.
    pub identity: Option<String>,
    /// Its IP address, when known.
    pub ip: Option<IpAddr>,
    /// Whether it is in the cluster (assumed for meshed clients without an IP).
    pub in_cluster: bool,
}

/// One request to explain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRequest {
    /// Caller.
    pub client: ClientInfo,
    /// Callee pod.
    pub pod: PodInfo,
    /// Port.
    pub port: u16,
    /// HTTP method, when known.
    pub method: Option<String>,
    /// HTTP path, when known.
    pub path: Option<String>,
}

/// The outcome of an evaluation, with its reasons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    /// The Server that applies (`ns/name`), if any.
    pub server: String,
    /// The default policy in force when no Server applies, and where it came from.
    pub default_policy: String,
    /// Authorizations that admitted the request.
    pub authorizations: Vec<String>,
    /// The route that matched.
    pub route: String,
    /// Each step, a short sentence naming an object.
    pub chain: Vec<String>,
}

// === impl PolicySet ===

impl PolicySet {
    /// Why `n` admits `client` although its address is unknown, or why that cannot be said.
    fn admits_any_address(
        &self,
        n: &NetworkAuthentication,
        client: &ClientInfo,
    ) -> Result<String, String> {
        let everything = |v6: bool| IpNet {
            addr: if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            },
            prefix: 0,
        };
        if [false, true]
            .iter()
            .all(|v6| n.networks.iter().any(|net| net.covers(&everything(*v6))))
        {
            return Ok(format!(
                "NetworkAuthentication {}: every address is in its networks",
                n.name
            ));
        }
        if client.in_cluster
            && !self.cluster_networks.is_empty()
            && self
                .cluster_networks
                .iter()
                .all(|c| n.networks.iter().any(|net| net.covers(&c.cidr)))
        {
            return Ok(format!(
                "NetworkAuthentication {}: its networks hold the cluster networks, and the \
                 client is in the cluster",
                n.name
            ));
        }
        Err(format!(
            "NetworkAuthentication {}: the client's address is unknown, and its networks do \
             not hold every address a client in the cluster may have",
            n.name
        ))
    }

    /// The identity of a service account: `<sa>.<ns>.serviceaccount.identity.<cp>.<td>`.
    pub fn sa_identity(&self, sa: &str, ns: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.{}.{}",
            self.control_plane_ns, self.trust_domain
        )
    }

    fn in_cluster(&self, c: &ClientInfo) -> bool {
        match c.ip {
            Some(ip) => self.cluster_networks.iter().any(|n| n.contains(ip)),
            None => c.in_cluster,
        }
    }

    fn port_matches(pod: &PodInfo, port: &PortRef, want: u16) -> bool {
        match port {
            PortRef::Number(n) => *n == want,
            PortRef::Name(name) => pod.ports.iter().any(|(n, p)| n == name && *p == want),
        }
    }

    /// Explains whether `req` is authorized.
    pub fn explain(&self, req: &AccessRequest) -> Explanation {
        let mut x = Explanation::default();
        let pod = &req.pod;
        let mut servers: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| {
                s.namespace == pod.namespace
                    && s.pod_selector
                        .as_ref()
                        .is_some_and(|sel| sel.matches(&pod.labels))
                    && Self::port_matches(pod, &s.port, req.port)
            })
            .collect();
        // Unknown creation times (manifests on disk) sort last, then by name.
        servers.sort_by(|a, b| {
            (a.created.is_none(), &a.created, &a.name).cmp(&(
                b.created.is_none(),
                &b.created,
                &b.name,
            ))
        });
        let Some(server) = servers.first() else {
            self.explain_default(req, &mut x);
            return x;
        };
        x.server = format!("{}/{}", server.namespace, server.name);
        x.chain.push(format!(
            "Server {} selects {} port {} (port {})",
            x.server, pod.workload, req.port, server.port
        ));
        if servers.len() > 1 {
            let others: Vec<&str> = servers[1..].iter().map(|s| s.name.as_str()).collect();
            x.chain.push(format!(
                "Servers {} also select this port; Linkerd uses the oldest (then the first by name): {}",
                others.join(", "),
                server.name
            ));
        }
        if servers.len() > 1 {
            let others: Vec<String> = servers[1..].iter().map(|s| s.name.clone()).collect();
            x.chain.push(format!(
                "Servers {} also select this port; Linkerd uses the oldest, assumed to be {}",
                others.join(", "),
                server.name
            ));
        }
        self.explain_server(req, server, &mut x);
        x
    }

    fn explain_default(&self, req: &AccessRequest, x: &mut Explanation) {
        let pod = &req.pod;
        let (policy, source) = match (&pod.pod_default_policy, &pod.namespace_default_policy) {
            (Some(p), _) if DefaultPolicy::parse(p).is_some() => (
                DefaultPolicy::parse(p).expect("checked"),
                format!("the pod annotation on {}", pod.workload),
            ),
            (_, Some(p)) if DefaultPolicy::parse(p).is_some() => (
                DefaultPolicy::parse(p).expect("checked"),
                format!(
                    "namespace {}'s annotation, copied onto pods at injection",
                    pod.namespace
                ),
            ),
            _ => self.cluster_default.clone(),
        };
        for bad in [&pod.pod_default_policy, &pod.namespace_default_policy]
            .into_iter()
            .flatten()
        {
            if DefaultPolicy::parse(bad).is_none() {
                x.chain.push(format!(
                    "annotation value {bad:?} is not a default policy; Linkerd ignores it"
                ));
            }
        }
        x.default_policy = format!("{} (from {source})", policy.as_str());
        x.chain.push(format!(
            "no Server selects {} port {}: default policy {}",
            pod.workload, req.port, x.default_policy
        ));
        if self.probe(req) {
            x.decision = Decision::Allowed;
            x.chain
                .push("request is the pod's HTTP probe: probes are always authorized".into());
            return;
        }
        let policy = if pod.require_identity_ports.contains(&req.port)
            && matches!(
                policy,
                DefaultPolicy::AllUnauthenticated | DefaultPolicy::ClusterUnauthenticated
            ) {
            x.chain.push(format!(
                "port {} is listed in config.linkerd.io/proxy-require-identity-inbound-ports: clients must be authenticated",
                req.port
            ));
            if policy == DefaultPolicy::AllUnauthenticated {
                DefaultPolicy::AllAuthenticated
            } else {
                DefaultPolicy::ClusterAuthenticated
            }
        } else {
            policy
        };
        self.apply_default(policy, &req.client, x);
    }

    fn apply_default(&self, policy: DefaultPolicy, client: &ClientInfo, x: &mut Explanation) {
        let authed = client.identity.is_some();
        let in_cluster = self.in_cluster(client);
        let (decision, why) = match policy {
            DefaultPolicy::AllUnauthenticated => {
                (Decision::Allowed, "all clients are allowed".to_owned())
            }
            DefaultPolicy::Audit => (
                Decision::Audit,
                "audit mode allows the request and flags it (authz audit); under deny it would be refused"
                    .to_owned(),
            ),
            DefaultPolicy::Deny => (Decision::Denied, "all clients are denied".to_owned()),
            DefaultPolicy::AllAuthenticated if authed => (
                Decision::Allowed,
                "the client is authenticated (mTLS)".into(),
            ),
            DefaultPolicy::AllAuthenticated => {
                (Decision::Denied, "the client has no mTLS identity".into())
            }
            DefaultPolicy::ClusterUnauthenticated if in_cluster => (
                Decision::Allowed,
                "the client is in the cluster networks".into(),
            ),
            DefaultPolicy::ClusterUnauthenticated => (
                Decision::Denied,
                "the client is outside the cluster networks".into(),
            ),
            DefaultPolicy::ClusterAuthenticated if authed && in_cluster => (
                Decision::Allowed,
                "the client is authenticated and in the cluster networks".into(),
            ),
            DefaultPolicy::ClusterAuthenticated if !authed => {
                (Decision::Denied, "the client has no mTLS identity".into())
            }
            DefaultPolicy::ClusterAuthenticated => (
                Decision::Denied,
                "the client is outside the cluster networks".into(),
            ),
        };
        x.decision = decision;
        x.chain.push(format!("{}: {why}", policy.as_str()));
    }

    fn probe(&self, req: &AccessRequest) -> bool {
        let method_ok = req
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case("GET"));
        method_ok
            && req.path.as_ref().is_some_and(|path| {
                req.pod
                    .probes
                    .iter()
                    .any(|(p, pp)| *p == req.port && pp == path)
            })
    }

    fn explain_server(&self, req: &AccessRequest, server: &Server, x: &mut Explanation) {
        let targets_server = |r: &ObjectRef| r.is(POLICY_GROUP, "Server") && r.name == server.name;
        let routes: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.namespace == server.namespace && r.parents.iter().any(targets_server))
            .collect();
        let route: Option<&Route> = if routes.is_empty() {
            x.chain.push(format!(
                "no HTTPRoute attaches to Server {}: its default route applies",
                server.name
            ));
            if self.probe(req) {
                x.decision = Decision::Allowed;
                x.chain
                    .push("request is the pod's HTTP probe: probes are always authorized".into());
                return;
            }
            None
        } else {
            match routes.iter().find(|r| route_matches(r, req)) {
                Some(r) => {
                    x.route = format!("{}/{}", r.namespace, r.name);
                    x.chain
                        .push(format!("{} {} matches the request", r.kind, x.route));
                    Some(*r)
                }
                None if req.path.is_none() && req.method.is_none() => {
                    x.decision = Decision::Unknown;
                    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
                    x.chain.push(format!(
                        "routes {} attach to Server {}: give a method and path to decide",
                        names.join(", "),
                        server.name
                    ));
                    return;
                }
                None => {
                    x.decision = Decision::Denied;
                    x.chain.push(format!(
                        "no route on Server {} matches the request: Linkerd answers 404",
                        server.name
                    ));
                    return;
                }
            }
        };

        let mut admitted = Vec::new();
        for ap in self
            .authorization_policies
            .iter()
            .filter(|p| p.namespace == server.namespace)
        {
            let t = &ap.target;
            let applies = targets_server(t)
                || route.is_some_and(|r| t.is(&r.group, &r.kind) && t.name == r.name)
                || (t.is("", "Namespace") && t.name == server.namespace);
            if !applies {
                if t.name == server.name
                    && t.kind.eq_ignore_ascii_case("Server")
                    && t.group.is_empty()
                {
                    x.chain.push(format!(
                        "AuthorizationPolicy {} targets Server {} without group: a missing group means core, so it targets nothing",
                        ap.name, server.name
                    ));
                }
                continue;
            }
            match self.authenticate(ap, &req.client) {
                Ok(why) => {
                    x.chain.push(format!(
                        "AuthorizationPolicy {}/{} (target {}) admits: {why}",
                        ap.namespace,
                        ap.name,
                        t.describe()
                    ));
                    admitted.push(format!("{}/{}", ap.namespace, ap.name));
                }
                Err(why) => x.chain.push(format!(
                    "AuthorizationPolicy {}/{} does not admit: {why}",
                    ap.namespace, ap.name
                )),
            }
        }
        for sa in self
            .server_authorizations
            .iter()
            .filter(|s| s.namespace == server.namespace)
        {
            let selects = match &sa.server {
                ServerSelector::Name(n) => *n == server.name,
                ServerSelector::Selector(sel) => sel.matches(&server.labels),
            };
            if !selects {
                continue;
            }
            match self.authorize_legacy(sa, &req.client) {
                Ok(why) => {
                    x.chain.push(format!(
                        "ServerAuthorization {}/{} admits: {why}",
                        sa.namespace, sa.name
                    ));
                    admitted.push(format!("{}/{}", sa.namespace, sa.name));
                }
                Err(why) => x.chain.push(format!(
                    "ServerAuthorization {}/{} does not admit: {why}",
                    sa.namespace, sa.name
                )),
            }
        }
        if !admitted.is_empty() {
            x.decision = Decision::Allowed;
            x.authorizations = admitted;
            return;
        }
        match server.access_policy.unwrap_or(DefaultPolicy::Deny) {
            DefaultPolicy::Audit => {
                x.decision = Decision::Audit;
                x.chain.push(format!("no authorization admits it; Server {} has accessPolicy audit: allowed and flagged (authz audit); with accessPolicy deny it would be refused", server.name));
            }
            DefaultPolicy::Deny => {
                x.decision = Decision::Denied;
                x.chain.push(format!(
                    "no authorization admits it: Server {} denies unmatched traffic",
                    server.name
                ));
            }
            other => {
                x.chain.push(format!(
                    "no authorization admits it; Server {} has accessPolicy {}",
                    server.name,
                    other.as_str()
                ));
                self.apply_default(other, &req.client, x);
            }
        }
    }

    /// Whether every required authentication of `ap` matches `client`.
    fn authenticate(
        &self,
        ap: &AuthorizationPolicy,
        client: &ClientInfo,
    ) -> Result<String, String> {
        if ap.required_authentication_refs.is_empty() {
            return Ok("no authentication required (everyone, all networks)".into());
        }
        let mut reasons = Vec::new();
        for r in &ap.required_authentication_refs {
            let ns = r.namespace.clone().unwrap_or_else(|| ap.namespace.clone());
            if r.is(POLICY_GROUP, "MeshTLSAuthentication") {
                let m = self
                    .mesh_tls_authentications
                    .iter()
                    .find(|m| m.namespace == ns && m.name == r.name)
                    .ok_or_else(|| {
                        format!("MeshTLSAuthentication {ns}/{} does not exist", r.name)
                    })?;
                reasons.push(self.mesh_tls_admits(m, client)?);
            } else if r.is(POLICY_GROUP, "NetworkAuthentication") {
                let n = self
                    .network_authentications
                    .iter()
                    .find(|n| n.namespace == ns && n.name == r.name)
                    .ok_or_else(|| {
                        format!("NetworkAuthentication {ns}/{} does not exist", r.name)
                    })?;
                let Some(ip) = client.ip else {
                    // A workload-to-workload question has no pod address; a network that
                    // holds every address, or every cluster network for an in-cluster client,
                    // admits it whatever the address is.
                    reasons.push(self.admits_any_address(n, client)?);
                    continue;
                };
                let net = n
                    .networks
                    .iter()
                    .find(|net| net.contains(ip))
                    .ok_or_else(|| format!("NetworkAuthentication {}: {ip} is in none of its networks (or is excepted)", n.name))?;
                reasons.push(format!(
                    "NetworkAuthentication {}: {ip} is in {}",
                    n.name, net.cidr
                ));
            } else if r.is("", "ServiceAccount") {
                let want = self.sa_identity(&r.name, &ns);
                match &client.identity {
                    Some(id) if *id == want => {
                        reasons.push(format!("client is ServiceAccount {ns}/{}", r.name))
                    }
                    Some(id) => {
                        return Err(format!("client {id} is not ServiceAccount {ns}/{}", r.name));
                    }
                    None => {
                        return Err(format!(
                            "ServiceAccount {ns}/{}: the client has no mTLS identity",
                            r.name
                        ));
                    }
                }
            } else {
                return Err(format!(
                    "{} is not an authentication kind Linkerd accepts (a missing group means core)",
                    r.describe()
                ));
            }
        }
        Ok(reasons.join("; "))
    }

    fn mesh_tls_admits(
        &self,
        m: &MeshTlsAuthentication,
        client: &ClientInfo,
    ) -> Result<String, String> {
        let Some(id) = &client.identity else {
            return Err(format!(
                "MeshTLSAuthentication {}: the client is unauthenticated (no mTLS identity)",
                m.name
            ));
        };
        for pattern in &m.identities {
            if identity_matches(pattern, id) {
                return Ok(format!(
                    "MeshTLSAuthentication {}: {id} matches {pattern:?}",
                    m.name
                ));
            }
        }
        for r in &m.identity_refs {
            let pattern = if r.kind.eq_ignore_ascii_case("Namespace") {
                format!(
                    "*.{}.serviceaccount.identity.{}.{}",
                    r.name, self.control_plane_ns, self.trust_domain
                )
            } else {
                self.sa_identity(&r.name, r.namespace.as_deref().unwrap_or(&m.namespace))
            };
            if identity_matches(&pattern, id) {
                return Ok(format!(
                    "MeshTLSAuthentication {}: {id} matches {} {}",
                    m.name, r.kind, r.name
                ));
            }
        }
        Err(format!(
            "MeshTLSAuthentication {}: {id} is not in its identities",
            m.name
        ))
    }

    fn authorize_legacy(
        &self,
        sa: &ServerAuthorization,
        client: &ClientInfo,
    ) -> Result<String, String> {
        if let (Some(nets), Some(ip)) = (&sa.networks, client.ip)
            && !nets.iter().any(|n| n.contains(ip))
        {
            return Err(format!("{ip} is in none of its networks"));
        }
        if sa.unauthenticated {
            return Ok("unauthenticated clients are allowed".into());
        }
        let Some(tls) = &sa.mesh_tls else {
            return Err("it allows no clients".into());
        };
        let Some(id) = &client.identity else {
            return Err("the client has no mTLS identity".into());
        };
        if tls.unauthenticated_tls {
            return Ok("any TLS client is allowed".into());
        }
        if let Some(p) = tls.identities.iter().find(|p| identity_matches(p, id)) {
            return Ok(format!("{id} matches {p:?}"));
        }
        for (name, ns) in &tls.service_accounts {
            let ns = ns.as_deref().unwrap_or(&sa.namespace);
            if *id == self.sa_identity(name, ns) {
                return Ok(format!("client is ServiceAccount {ns}/{name}"));
            }
        }
        Err(format!(
            "{id} is not among its identities or service accounts"
        ))
    }
}

/// Whether an identity matches a pattern: exact, `*` (any), or `*.suffix`.
pub fn identity_matches(pattern: &str, id: &str) -> bool {
    pattern == "*"
        || pattern == id
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| suffix.starts_with('.') && id.ends_with(suffix))
}

fn route_matches(r: &Route, req: &AccessRequest) -> bool {
    if r.rules.is_empty() {
        return true;
    }
    r.rules.iter().any(|alternatives| {
        alternatives.is_empty()
            || alternatives.iter().any(|m| {
                let method_ok = m.method.as_ref().is_none_or(|want| {
                    req.method
                        .as_ref()
                        .is_some_and(|got| got.eq_ignore_ascii_case(want))
                });
                let path_ok = match (&m.path, &req.path) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(PathMatch::Exact(p)), Some(got)) => p == got,
                    (Some(PathMatch::Prefix(p)), Some(got)) => {
                        let p = p.trim_end_matches('/');
                        p.is_empty() || got == p || got.starts_with(&format!("{p}/"))
                    }
                    (Some(PathMatch::Regex(_)), Some(_)) => false,
                };
                // gRPC requests are POSTs to /<service>/<method>.
                let grpc_ok = m.grpc.as_ref().is_none_or(|(service, method)| {
                    let got = req
                        .path
                        .as_deref()
                        .unwrap_or_default()
                        .trim_start_matches('/');
                    let (s, mth) = got.split_once('/').unwrap_or((got, ""));
                    service.as_ref().is_none_or(|x| x == s)
                        && method.as_ref().is_none_or(|x| x == mth)
                });
                method_ok && path_ok && grpc_ok
            })
    })
}

#[cfg(test)]
mod tests;
