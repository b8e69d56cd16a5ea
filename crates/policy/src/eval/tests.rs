//! Explain-access tables. Each case names the rule it pins down.

#![allow(
    clippy::field_reassign_with_default,
    reason = "fixtures read as edits of a default cluster"
)]

use std::collections::BTreeMap;

use super::*;

const CP: &str = "linkerd.cluster.local";

fn id(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.{CP}")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        ..LabelSelector::default()
    }
}

fn policy_ref(kind: &str, name: &str) -> ObjectRef {
    ObjectRef {
        group: POLICY_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    }
}

fn core_ref(kind: &str, name: &str) -> ObjectRef {
    ObjectRef {
        group: String::new(),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    }
}

fn server(ns: &str, name: &str, selector: &[(&str, &str)], port: PortRef) -> Server {
    Server {
        created: None,
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::new(),
        pod_selector: Some(sel(selector)),
        port,
        access_policy: None,
    }
}

fn pod(ns: &str, workload: &str, l: &[(&str, &str)], ports: &[(&str, u16)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        workload: workload.into(),
        labels: labels(l),
        ports: ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
        ..PodInfo::default()
    }
}

fn meshed(sa: &str, ns: &str) -> ClientInfo {
    ClientInfo {
        identity: Some(id(sa, ns)),
        ip: None,
        in_cluster: true,
    }
}

fn unauthenticated(ip: &str) -> ClientInfo {
    ClientInfo {
        identity: None,
        ip: Some(ip.parse().unwrap()),
        in_cluster: false,
    }
}

fn req(client: ClientInfo, pod: &PodInfo, port: u16) -> AccessRequest {
    AccessRequest {
        client,
        pod: pod.clone(),
        port,
        method: None,
        path: None,
    }
}

/// emojivoto's published policy (emojivoto-policy.yml), in its legacy ServerAuthorization form.
fn emojivoto_legacy() -> PolicySet {
    let mut s = PolicySet::default();
    let mut voting = server(
        "emojivoto",
        "voting-grpc",
        &[("app", "voting-svc")],
        PortRef::Name("grpc".into()),
    );
    voting.labels = labels(&[("emojivoto/api", "internal-grpc")]);
    let mut emoji = server(
        "emojivoto",
        "emoji-grpc",
        &[("app", "emoji-svc")],
        PortRef::Name("grpc".into()),
    );
    emoji.labels = labels(&[("emojivoto/api", "internal-grpc")]);
    s.servers = vec![
        voting,
        emoji,
        server(
            "emojivoto",
            "web-http",
            &[("app", "web-svc")],
            PortRef::Name("http".into()),
        ),
    ];
    s.server_authorizations = vec![
        ServerAuthorization {
            namespace: "emojivoto".into(),
            name: "internal-grpc".into(),
            server: ServerSelector::Selector(sel(&[("emojivoto/api", "internal-grpc")])),
            networks: None,
            unauthenticated: false,
            mesh_tls: Some(MeshTlsClient {
                service_accounts: vec![("web".into(), None)],
                ..MeshTlsClient::default()
            }),
        },
        ServerAuthorization {
            namespace: "emojivoto".into(),
            name: "web-public".into(),
            server: ServerSelector::Name("web-http".into()),
            networks: None,
            unauthenticated: true,
            mesh_tls: None,
        },
    ];
    s
}

fn voting_pod() -> PodInfo {
    pod(
        "emojivoto",
        "voting",
        &[("app", "voting-svc")],
        &[("grpc", 8080), ("prom", 8801)],
    )
}

#[test]
fn emojivoto_legacy_policy() {
    let s = emojivoto_legacy();
    let v = s.explain(&req(meshed("web", "emojivoto"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Allowed, "{:#?}", v.chain);
    assert_eq!(v.server, "emojivoto/voting-grpc");
    assert_eq!(v.authorizations, ["emojivoto/internal-grpc"]);
    // The named port resolves on the pod.
    assert!(v.chain[0].contains("(port grpc)"), "{:?}", v.chain);
    let v = s.explain(&req(meshed("default", "emojivoto"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Denied, "{:#?}", v.chain);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("is not among its identities or service accounts"))
    );
    // Unauthenticated clients may reach web.
    let web = pod("emojivoto", "web", &[("app", "web-svc")], &[("http", 8080)]);
    assert_eq!(
        s.explain(&req(unauthenticated("203.0.113.9"), &web, 8080))
            .decision,
        Decision::Allowed
    );
    // The prom port has no Server: the default policy applies.
    let v = s.explain(&req(unauthenticated("203.0.113.9"), &voting_pod(), 8801));
    assert_eq!(
        (v.decision, v.default_policy.as_str()),
        (
            Decision::Allowed,
            "all-unauthenticated (from the install default)"
        )
    );
}

/// The same intent as AuthorizationPolicy + MeshTLSAuthentication.
fn emojivoto_modern() -> PolicySet {
    let mut s = emojivoto_legacy();
    s.server_authorizations.clear();
    s.mesh_tls_authentications = vec![MeshTlsAuthentication {
        namespace: "emojivoto".into(),
        name: "web-only".into(),
        identities: Vec::new(),
        identity_refs: vec![core_ref("ServiceAccount", "web")],
    }];
    s.authorization_policies = vec![AuthorizationPolicy {
        namespace: "emojivoto".into(),
        name: "voting-from-web".into(),
        target: policy_ref("Server", "voting-grpc"),
        required_authentication_refs: vec![policy_ref("MeshTLSAuthentication", "web-only")],
    }];
    s
}

#[test]
fn emojivoto_authorization_policy_form() {
    let s = emojivoto_modern();
    let v = s.explain(&req(meshed("web", "emojivoto"), &voting_pod(), 8080));
    assert_eq!(
        (v.decision, v.authorizations.clone()),
        (
            Decision::Allowed,
            vec!["emojivoto/voting-from-web".to_owned()]
        ),
        "{:#?}",
        v.chain
    );
    let v = s.explain(&req(meshed("web", "other"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("is not in its identities")),
        "{:?}",
        v.chain
    );
    let v = s.explain(&req(unauthenticated("10.1.2.3"), &voting_pod(), 8080));
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("the client is unauthenticated")),
        "{:?}",
        v.chain
    );
    // emoji-grpc has a Server but no authorization: denied by the Server's default deny.
    let emoji = pod(
        "emojivoto",
        "emoji",
        &[("app", "emoji-svc")],
        &[("grpc", 8080)],
    );
    let v = s.explain(&req(meshed("web", "emojivoto"), &emoji, 8080));
    assert_eq!(v.decision, Decision::Denied);
    assert!(v.chain.last().unwrap().contains("denies unmatched traffic"));
}

#[test]
fn a_missing_group_means_core_and_targets_nothing() {
    let mut s = emojivoto_modern();
    s.authorization_policies[0].target.group.clear();
    let v = s.explain(&req(meshed("web", "emojivoto"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("without group: a missing group means core")),
        "{:?}",
        v.chain
    );
    // The same on an authentication ref: it can never match.
    let mut s = emojivoto_modern();
    s.authorization_policies[0].required_authentication_refs[0]
        .group
        .clear();
    let v = s.explain(&req(meshed("web", "emojivoto"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("not an authentication kind Linkerd accepts")),
        "{:?}",
        v.chain
    );
}

#[test]
fn all_required_authentications_must_match_and_none_admits_everyone() {
    let mut s = emojivoto_modern();
    s.network_authentications = vec![NetworkAuthentication {
        namespace: "emojivoto".into(),
        name: "pod-net".into(),
        networks: vec![Network {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.96.0.0/12".parse().unwrap()],
        }],
    }];
    s.authorization_policies[0]
        .required_authentication_refs
        .push(policy_ref("NetworkAuthentication", "pod-net"));
    let mut client = meshed("web", "emojivoto");
    client.ip = Some("10.1.0.5".parse().unwrap());
    assert_eq!(
        s.explain(&req(client.clone(), &voting_pod(), 8080))
            .decision,
        Decision::Allowed
    );
    // Inside the CIDR but in its `except`: refused.
    client.ip = Some("10.96.0.7".parse().unwrap());
    let v = s.explain(&req(client.clone(), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("10.96.0.7 is in none of its networks (or is excepted)")),
        "{:?}",
        v.chain
    );
    // Right network, wrong identity: all refs must match.
    let mut other = meshed("emoji", "emojivoto");
    other.ip = Some("10.1.0.5".parse().unwrap());
    assert_eq!(
        s.explain(&req(other, &voting_pod(), 8080)).decision,
        Decision::Denied
    );
    // An empty list admits everyone, even unauthenticated clients.
    s.authorization_policies[0]
        .required_authentication_refs
        .clear();
    let v = s.explain(&req(unauthenticated("198.51.100.1"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Allowed);
    assert!(
        v.chain
            .iter()
            .any(|c| c.contains("no authentication required"))
    );
}

#[test]
fn identity_patterns_and_refs() {
    assert!(identity_matches("*", &id("x", "y")));
    assert!(identity_matches(
        &format!("*.emojivoto.serviceaccount.identity.{CP}"),
        &id("web", "emojivoto")
    ));
    assert!(!identity_matches(
        &format!("*.emojivoto.serviceaccount.identity.{CP}"),
        &id("web", "booksapp")
    ));
    assert!(!identity_matches("*web", &id("web", "emojivoto")));
    let mut s = emojivoto_modern();
    s.mesh_tls_authentications[0].identity_refs = vec![core_ref("Namespace", "emojivoto")];
    assert_eq!(
        s.explain(&req(meshed("anyone", "emojivoto"), &voting_pod(), 8080))
            .decision,
        Decision::Allowed
    );
    assert_eq!(
        s.explain(&req(meshed("anyone", "booksapp"), &voting_pod(), 8080))
            .decision,
        Decision::Denied
    );
    s.mesh_tls_authentications[0].identity_refs.clear();
    s.mesh_tls_authentications[0].identities = vec!["*".into()];
    assert_eq!(
        s.explain(&req(meshed("anyone", "booksapp"), &voting_pod(), 8080))
            .decision,
        Decision::Allowed
    );
    assert_eq!(
        s.explain(&req(unauthenticated("10.0.0.1"), &voting_pod(), 8080))
            .decision,
        Decision::Denied
    );
    // A ServiceAccount ref in another namespace.
    s.mesh_tls_authentications[0].identities.clear();
    s.mesh_tls_authentications[0].identity_refs = vec![ObjectRef {
        namespace: Some("booksapp".into()),
        ..core_ref("ServiceAccount", "books")
    }];
    assert_eq!(
        s.explain(&req(meshed("books", "booksapp"), &voting_pod(), 8080))
            .decision,
        Decision::Allowed
    );
}

#[test]
fn default_policies_at_cluster_namespace_and_pod_level() {
    let mut s = PolicySet::default();
    let mut p = pod("ns", "app", &[("app", "a")], &[("http", 80)]);
    s.cluster_default = (DefaultPolicy::ClusterAuthenticated, "linkerd-config".into());
    let v = s.explain(&req(meshed("x", "ns"), &p, 80));
    assert_eq!(
        (v.decision, v.default_policy.as_str()),
        (
            Decision::Allowed,
            "cluster-authenticated (from linkerd-config)"
        )
    );
    assert_eq!(
        s.explain(&req(unauthenticated("10.0.0.9"), &p, 80))
            .decision,
        Decision::Denied
    );
    // The namespace annotation wins over the cluster default (the injector copies it onto pods).
    p.namespace_default_policy = Some("deny".into());
    let v = s.explain(&req(meshed("x", "ns"), &p, 80));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.default_policy
            .starts_with("deny (from namespace ns's annotation"),
        "{}",
        v.default_policy
    );
    // The pod's own annotation wins over both.
    p.pod_default_policy = Some("all-unauthenticated".into());
    assert_eq!(
        s.explain(&req(unauthenticated("203.0.113.1"), &p, 80))
            .decision,
        Decision::Allowed
    );
    // An invalid value is ignored, with a note.
    p.pod_default_policy = Some("allow-all".into());
    let v = s.explain(&req(meshed("x", "ns"), &p, 80));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain[0].contains("\"allow-all\" is not a default policy"),
        "{:?}",
        v.chain
    );
    // cluster-unauthenticated: by network.
    p.pod_default_policy = Some("cluster-unauthenticated".into());
    assert_eq!(
        s.explain(&req(unauthenticated("10.4.0.1"), &p, 80))
            .decision,
        Decision::Allowed
    );
    assert_eq!(
        s.explain(&req(unauthenticated("203.0.113.1"), &p, 80))
            .decision,
        Decision::Denied
    );
    // require-identity ports make an unauthenticated default authenticated.
    p.pod_default_policy = Some("all-unauthenticated".into());
    p.require_identity_ports = vec![80];
    assert_eq!(
        s.explain(&req(unauthenticated("10.4.0.1"), &p, 80))
            .decision,
        Decision::Denied
    );
    // audit allows and flags.
    p.require_identity_ports.clear();
    p.pod_default_policy = Some("audit".into());
    assert_eq!(
        s.explain(&req(unauthenticated("203.0.113.1"), &p, 80))
            .decision,
        Decision::Audit
    );
}

/// booksapp's per-route policy: GET on /authors.json and /authors/* from books and webapp only,
/// and a separate probe route open to everyone.
fn booksapp() -> PolicySet {
    let mut s = PolicySet::default();
    s.servers = vec![server(
        "booksapp",
        "authors-server",
        &[("app", "authors"), ("project", "booksapp")],
        PortRef::Name("service".into()),
    )];
    let route = |name: &str, rules: Vec<Vec<RouteMatch>>| Route {
        kind: "HTTPRoute".into(),
        group: POLICY_GROUP.into(),
        namespace: "booksapp".into(),
        name: name.into(),
        parents: vec![policy_ref("Server", "authors-server")],
        rules,
    };
    s.routes = vec![
        route(
            "authors-get-route",
            vec![vec![
                RouteMatch {
                    path: Some(PathMatch::Exact("/authors.json".into())),
                    method: Some("GET".into()),
                    grpc: None,
                },
                RouteMatch {
                    path: Some(PathMatch::Prefix("/authors/".into())),
                    method: Some("GET".into()),
                    grpc: None,
                },
            ]],
        ),
        route(
            "authors-probe-route",
            vec![vec![RouteMatch {
                path: Some(PathMatch::Exact("/ping".into())),
                method: Some("GET".into()),
                grpc: None,
            }]],
        ),
    ];
    s.mesh_tls_authentications = vec![MeshTlsAuthentication {
        namespace: "booksapp".into(),
        name: "authors-get-authn".into(),
        identities: vec![id("books", "booksapp"), id("webapp", "booksapp")],
        identity_refs: Vec::new(),
    }];
    s.network_authentications = vec![NetworkAuthentication {
        namespace: "booksapp".into(),
        name: "authors-probe-authn".into(),
        networks: vec![
            Network {
                cidr: "0.0.0.0/0".parse().unwrap(),
                except: Vec::new(),
            },
            Network {
                cidr: "::/0".parse().unwrap(),
                except: Vec::new(),
            },
        ],
    }];
    s.authorization_policies = vec![
        AuthorizationPolicy {
            namespace: "booksapp".into(),
            name: "authors-get-policy".into(),
            target: ObjectRef {
                group: POLICY_GROUP.into(),
                kind: "HTTPRoute".into(),
                name: "authors-get-route".into(),
                namespace: None,
            },
            required_authentication_refs: vec![policy_ref(
                "MeshTLSAuthentication",
                "authors-get-authn",
            )],
        },
        AuthorizationPolicy {
            namespace: "booksapp".into(),
            name: "authors-probe-policy".into(),
            target: ObjectRef {
                group: POLICY_GROUP.into(),
                kind: "HTTPRoute".into(),
                name: "authors-probe-route".into(),
                namespace: None,
            },
            required_authentication_refs: vec![policy_ref(
                "NetworkAuthentication",
                "authors-probe-authn",
            )],
        },
    ];
    s
}

fn authors() -> PodInfo {
    let mut p = pod(
        "booksapp",
        "authors",
        &[("app", "authors"), ("project", "booksapp")],
        &[("service", 7001)],
    );
    p.probes = vec![(7001, "/ping".into())];
    p
}

fn http(client: ClientInfo, method: &str, path: &str) -> AccessRequest {
    AccessRequest {
        method: Some(method.into()),
        path: Some(path.into()),
        ..req(client, &authors(), 7001)
    }
}

#[test]
fn booksapp_per_route_policy() {
    let s = booksapp();
    let v = s.explain(&http(
        meshed("webapp", "booksapp"),
        "GET",
        "/authors/12.json",
    ));
    assert_eq!(
        (v.decision, v.route.as_str()),
        (Decision::Allowed, "booksapp/authors-get-route"),
        "{:#?}",
        v.chain
    );
    assert_eq!(
        s.explain(&http(meshed("books", "booksapp"), "GET", "/authors.json"))
            .decision,
        Decision::Allowed
    );
    // A route matches, but traffic's identity is not listed.
    let v = s.explain(&http(meshed("traffic", "booksapp"), "GET", "/authors.json"));
    assert_eq!(v.decision, Decision::Denied);
    // Writes match no route: 404.
    let v = s.explain(&http(meshed("webapp", "booksapp"), "DELETE", "/authors/1"));
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain
            .last()
            .unwrap()
            .contains("no route on Server authors-server matches"),
        "{:?}",
        v.chain
    );
    // /authorsX is not under the /authors/ prefix.
    assert_eq!(
        s.explain(&http(meshed("webapp", "booksapp"), "GET", "/authorsX"))
            .decision,
        Decision::Denied
    );
    // The probe route admits the kubelet from any network.
    let v = s.explain(&http(unauthenticated("10.0.0.1"), "GET", "/ping"));
    assert_eq!(
        (v.decision, v.route.as_str()),
        (Decision::Allowed, "booksapp/authors-probe-route"),
        "{:#?}",
        v.chain
    );
    // Without method and path, routes cannot be chosen: unknown, saying why.
    let v = s.explain(&req(meshed("webapp", "booksapp"), &authors(), 7001));
    assert_eq!(v.decision, Decision::Unknown);
}

#[test]
fn probes_are_authorized_on_servers_without_routes_and_under_default_deny() {
    let mut s = booksapp();
    s.routes.clear();
    s.authorization_policies.clear();
    assert_eq!(
        s.explain(&http(unauthenticated("10.0.0.1"), "GET", "/ping"))
            .decision,
        Decision::Allowed
    );
    assert_eq!(
        s.explain(&http(unauthenticated("10.0.0.1"), "GET", "/authors.json"))
            .decision,
        Decision::Denied
    );
    let mut p = authors();
    p.pod_default_policy = Some("deny".into());
    let s = PolicySet::default();
    let probe = AccessRequest {
        method: Some("GET".into()),
        path: Some("/ping".into()),
        ..req(unauthenticated("10.0.0.1"), &p, 7001)
    };
    assert_eq!(s.explain(&probe).decision, Decision::Allowed);
}

#[test]
fn server_access_policy_audit_allows_and_flags() {
    let mut s = emojivoto_modern();
    s.authorization_policies.clear();
    s.servers[0].access_policy = Some(DefaultPolicy::Audit);
    let v = s.explain(&req(unauthenticated("10.0.0.1"), &voting_pod(), 8080));
    assert_eq!(v.decision, Decision::Audit);
    assert!(
        v.chain.last().unwrap().contains("accessPolicy audit"),
        "{:?}",
        v.chain
    );
}

#[test]
fn namespace_targets_cover_every_server_in_it() {
    let mut s = emojivoto_modern();
    s.authorization_policies[0].target = core_ref("Namespace", "emojivoto");
    let emoji = pod(
        "emojivoto",
        "emoji",
        &[("app", "emoji-svc")],
        &[("grpc", 8080)],
    );
    assert_eq!(
        s.explain(&req(meshed("web", "emojivoto"), &emoji, 8080))
            .decision,
        Decision::Allowed
    );
}

#[test]
fn selectors_and_networks() {
    let l = labels(&[("app", "a"), ("tier", "web")]);
    let mut s = sel(&[("app", "a")]);
    assert!(s.matches(&l) && LabelSelector::default().matches(&l));
    s.match_expressions = vec![
        ("tier".into(), SelectorOp::NotIn, vec!["db".into()]),
        ("gone".into(), SelectorOp::DoesNotExist, vec![]),
    ];
    assert!(s.matches(&l));
    s.match_expressions
        .push(("tier".into(), SelectorOp::In, vec!["db".into()]));
    assert!(!s.matches(&l));
    let n: IpNet = "10.0.0.0/8".parse().unwrap();
    assert!(n.covers(&"10.96.0.0/12".parse().unwrap()) && !n.covers(&"0.0.0.0/0".parse().unwrap()));
    assert!(
        "10.0.0.1"
            .parse::<IpNet>()
            .unwrap()
            .contains("10.0.0.1".parse().unwrap())
    );
    assert!(
        "::/0"
            .parse::<IpNet>()
            .unwrap()
            .contains("fd00::1".parse().unwrap())
    );
    assert_eq!(
        "10.0.0.0/40".parse::<IpNet>().unwrap_err(),
        "\"10.0.0.0/40\" has an invalid prefix length"
    );
}

#[test]
fn grpc_routes_match_service_and_method() {
    let mut s = emojivoto_modern();
    s.authorization_policies[0].target = ObjectRef {
        group: GATEWAY_GROUP.into(),
        kind: "GRPCRoute".into(),
        name: "results".into(),
        namespace: None,
    };
    s.routes = vec![Route {
        kind: "GRPCRoute".into(),
        group: GATEWAY_GROUP.into(),
        namespace: "emojivoto".into(),
        name: "results".into(),
        parents: vec![policy_ref("Server", "voting-grpc")],
        rules: vec![vec![RouteMatch {
            path: None,
            method: None,
            grpc: Some((
                Some("emojivoto.v1.VotingService".into()),
                Some("Results".into()),
            )),
        }]],
    }];
    let call = |method: &str| AccessRequest {
        method: Some("POST".into()),
        path: Some(format!("/emojivoto.v1.VotingService/{method}")),
        ..req(meshed("web", "emojivoto"), &voting_pod(), 8080)
    };
    let v = s.explain(&call("Results"));
    assert_eq!(
        (v.decision, v.route.as_str()),
        (Decision::Allowed, "emojivoto/results"),
        "{:#?}",
        v.chain
    );
    assert_eq!(s.explain(&call("VoteDoughnut")).decision, Decision::Denied);
}

#[test]
fn a_client_without_an_address_is_admitted_only_by_networks_that_hold_every_address_it_may_have() {
    let mut s = emojivoto_modern();
    let net = |cidrs: &[&str], except: &[&str]| NetworkAuthentication {
        namespace: "emojivoto".into(),
        name: "nets".into(),
        networks: cidrs
            .iter()
            .map(|c| Network {
                cidr: c.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            })
            .collect(),
    };
    s.authorization_policies[0].required_authentication_refs =
        vec![policy_ref("NetworkAuthentication", "nets")];
    // A workload-to-workload question: meshed, in the cluster, no pod address.
    let client = meshed("web", "emojivoto");
    let decide = |s: &PolicySet| s.explain(&req(client.clone(), &voting_pod(), 8080));

    s.network_authentications = vec![net(&["0.0.0.0/0", "::/0"], &[])];
    let v = decide(&s);
    assert_eq!(v.decision, Decision::Allowed, "{:?}", v.chain);
    assert!(
        v.chain.iter().any(|c| c.contains("every address")),
        "{:?}",
        v.chain
    );
    // An exception makes some addresses fail: without the address, no admission.
    s.network_authentications = vec![net(&["0.0.0.0/0", "::/0"], &["10.0.0.0/8"])];
    assert_eq!(decide(&s).decision, Decision::Denied);
    // Part of the address space: only when it holds every cluster network.
    s.network_authentications = vec![net(&["10.0.0.0/8"], &[])];
    s.cluster_networks = vec![Network {
        cidr: "10.0.0.0/8".parse().unwrap(),
        except: Vec::new(),
    }];
    let v = decide(&s);
    assert_eq!(v.decision, Decision::Allowed, "{:?}", v.chain);
    assert!(
        v.chain.iter().any(|c| c.contains("cluster networks")),
        "{:?}",
        v.chain
    );
    s.cluster_networks.push(Network {
        cidr: "172.16.0.0/12".parse().unwrap(),
        except: Vec::new(),
    });
    let v = decide(&s);
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain.iter().any(|c| c.contains("address is unknown")),
        "{:?}",
        v.chain
    );
}

#[test]
fn overlapping_servers_are_accepted_and_the_oldest_wins_the_port() {
    // Linkerd 2.18+ (PR #13676): overlap is no longer refused; Servers are ordered by creation
    // time, then name, and the first selects the pod's port.
    let mut s = emojivoto_modern();
    s.authorization_policies.clear();
    let mut newer = s.servers[0].clone();
    newer.name = "a-voting-audit".into();
    newer.access_policy = Some(DefaultPolicy::Audit);
    newer.created = Some("2026-03-02T10:00:00Z".into());
    s.servers[0].created = Some("2026-03-01T10:00:00Z".into());
    s.servers.insert(0, newer.clone());
    let v = s.explain(&req(unauthenticated("10.0.0.1"), &voting_pod(), 8080));
    assert_eq!(v.server, "emojivoto/voting-grpc", "{:?}", v.chain);
    assert_eq!(v.decision, Decision::Denied);
    assert!(
        v.chain.iter().any(|c| c.contains("a-voting-audit also")),
        "{:?}",
        v.chain
    );
    // Without creation times (manifests on disk), the first by name wins.
    s.servers[0].created = None;
    s.servers[1].created = None;
    let v = s.explain(&req(unauthenticated("10.0.0.1"), &voting_pod(), 8080));
    assert_eq!(v.server, "emojivoto/a-voting-audit");
    assert_eq!(v.decision, Decision::Audit);
}
