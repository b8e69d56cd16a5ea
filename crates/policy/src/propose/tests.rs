//! Proposals over emojivoto's real manifests: no policy, partial policy, callers that cannot be
//! admitted by identity, and the proof.

use std::time::{Duration, SystemTime};

use mesh_model::{EdgeKey, Protocol};

use super::*;
use crate::overlay::verdict_of;

const EMOJIVOTO: &str = include_str!("../../../../tools/kube-sim/seed/demo/emojivoto.yaml");
const EMOJIVOTO_POLICY: &str =
    include_str!("../../../../tools/kube-sim/seed/demo/emojivoto-policy.yaml");

fn w(name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: "emojivoto".into(),
        kind: "Deployment".into(),
        name: name.into(),
    }
}

fn id(sa: &str) -> String {
    format!("{sa}.emojivoto.serviceaccount.identity.linkerd.cluster.local")
}

/// emojivoto's three calls, as the graph observes them (vote-bot runs as `default`).
fn graph() -> MeshGraph {
    let mut g = MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH);
    for (from, to, protocol, sa, rps) in [
        ("vote-bot", "web", Protocol::Http, "default", 4.0),
        ("web", "emoji", Protocol::Grpc, "web", 4.0),
        ("web", "voting", Protocol::Grpc, "web", 2.0),
    ] {
        let mut e = Edge::new(EdgeKey {
            src: w(from),
            dst: Destination::Workload(w(to)),
            protocol,
        });
        e.tls = TlsStatus::Mtls;
        e.client_identity = id(sa);
        e.metrics.rps = rps;
        g.edges.insert(e.key.clone(), e);
    }
    g
}

fn cluster(extra: &[&str]) -> Cluster {
    let mut texts = vec![EMOJIVOTO];
    texts.extend(extra);
    let (c, problems) = Cluster::from_manifests(&texts);
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// One route of a call: `kind` `default` (Linkerd's own, named `http`) or `HTTPRoute` in
/// emojivoto, on `parent` (`Service ns/name:port`).
fn route(kind: &str, name: &str, parent: &str) -> mesh_model::RouteStats {
    let ns = if kind == "default" { "" } else { "emojivoto" };
    mesh_model::RouteStats {
        id: mesh_model::RouteId {
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            parent: parent.into(),
        },
        rps: 1.0,
        ..Default::default()
    }
}

/// Every call into web goes through `r`.
fn web_calls_through(g: &mut MeshGraph, r: &mesh_model::RouteStats) {
    for e in g.edges.values_mut() {
        if e.key.dst == Destination::Workload(w("web")) {
            e.routes = vec![r.clone()];
        }
    }
}

fn emojivoto() -> Target {
    Target {
        namespace: "emojivoto".into(),
        workload: None,
    }
}

fn names(p: &Proposal) -> Vec<String> {
    p.objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o.manifest["kind"].as_str().unwrap(),
                o.manifest["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_namespace_without_policy_gets_exactly_its_observed_callers() {
    let (g, c) = (graph(), cluster(&[]));
    let p = propose(&g, &c, &emojivoto(), Access::Deny).unwrap();
    assert_eq!(
        names(&p),
        [
            "Server emoji-grpc",
            "MeshTLSAuthentication emoji-grpc-observed-clients",
            "AuthorizationPolicy emoji-grpc-observed",
            "Server voting-grpc",
            "MeshTLSAuthentication voting-grpc-observed-clients",
            "AuthorizationPolicy voting-grpc-observed",
            "Server web-http",
            "MeshTLSAuthentication web-http-observed-clients",
            "AuthorizationPolicy web-http-observed",
        ]
    );
    assert!(p.newly_denied.is_empty(), "{:?}", p.newly_denied);
    assert!(p.needs_action.is_empty());
    let web_clients = &p.objects[7].manifest["spec"]["identityRefs"];
    assert_eq!(
        web_clients,
        &json!([{"kind": "ServiceAccount", "name": "default"}])
    );
    assert!(
        p.objects[7].why[0].starts_with("emojivoto/vote-bot -> emojivoto/web: 4.00 rps observed"),
        "{:?}",
        p.objects[7].why
    );
    assert_eq!(p.objects[0].manifest["spec"]["accessPolicy"], "deny");
    assert_eq!(p.objects[0].manifest["spec"]["port"], "grpc");
    // The YAML validates as Linkerd would admit it, and the objects hold the justifications.
    let yaml = p.to_yaml();
    let (docs, problems) = crate::document::parse_text("proposal.yaml", &yaml);
    let m = Manifests::from_documents(docs, problems);
    assert!(m.validate().is_empty(), "{:?}\n{yaml}", m.validate());
    assert_eq!(m.policy_count(), 9);
    assert!(
        yaml.contains("# emojivoto/web -> emojivoto/voting: 2.00 rps observed (grpc)"),
        "{yaml}"
    );
    // Enforced: every observed caller admitted, anyone else refused.
    let after = c.with_proposed(&m.policy_set());
    for e in g.edges.values() {
        assert_eq!(
            verdict_of(&after, e).decision,
            Decision::Allowed,
            "{:?}",
            e.key
        );
    }
    let mut stranger = g.edges.values().next().unwrap().clone();
    stranger.client_identity = id("intruder");
    assert_eq!(verdict_of(&after, &stranger).decision, Decision::Denied);
}

#[test]
fn existing_policy_is_respected_and_only_the_gap_is_proposed() {
    // voting-grpc exists, with web admitted by a ServerAuthorization; emoji and web have none.
    let partial = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: voting-grpc, namespace: emojivoto}\n\
        spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: gRPC}\n---\n\
        apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {name: voting-web, namespace: emojivoto}\n\
        spec: {server: {name: voting-grpc}, client: {meshTLS: {serviceAccounts: [{name: web}]}}}\n";
    let p = propose(&graph(), &cluster(&[partial]), &emojivoto(), Access::Audit).unwrap();
    assert!(
        names(&p).iter().all(|n| !n.contains("voting")),
        "{:?}",
        names(&p)
    );
    assert!(
        p.notes.iter().any(
            |n| n.contains("web -> emojivoto/voting: already admitted by emojivoto/voting-web")
        ),
        "{:?}",
        p.notes
    );
    assert_eq!(p.objects[0].manifest["spec"]["accessPolicy"], "audit");
    // emojivoto's published policy admits all three: nothing to propose.
    let p = propose(
        &graph(),
        &cluster(&[EMOJIVOTO_POLICY]),
        &emojivoto(),
        Access::Deny,
    )
    .unwrap();
    assert!(p.objects.is_empty(), "{:?}", names(&p));
    // An existing Server without authorizations is reused, not duplicated.
    let server_only = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web-front, namespace: emojivoto}\n\
        spec: {podSelector: {matchLabels: {app: web-svc}}, port: http, accessPolicy: audit}\n";
    let p = propose(
        &graph(),
        &cluster(&[server_only]),
        &Target {
            namespace: "emojivoto".into(),
            workload: Some("web".into()),
        },
        Access::Deny,
    )
    .unwrap();
    assert_eq!(
        names(&p),
        [
            "MeshTLSAuthentication web-front-observed-clients",
            "AuthorizationPolicy web-front-observed"
        ]
    );
    assert_eq!(
        p.objects[1].manifest["spec"]["targetRef"]["name"],
        "web-front"
    );
}

/// A rollout re-proposed after a new caller appeared: the proposal applied in audit is in the
/// cluster, and the new caller shows as audited. The re-proposal regenerates the proposal's
/// own authentication with the old callers and the new one (a list of only the new one would
/// cut the old ones off), and reuses its Server.
#[test]
fn a_re_proposal_keeps_every_caller_its_earlier_proposal_admitted_and_adds_the_new_one() {
    let (mut g, c) = (graph(), cluster(&[]));
    let first = propose(&g, &c, &emojivoto(), Access::Audit).unwrap();
    let applied = c.with_proposed(
        &Manifests::from_documents(
            crate::document::parse_text("p.yaml", &first.to_yaml()).0,
            Vec::new(),
        )
        .policy_set(),
    );
    let mut newcomer = Edge::new(EdgeKey {
        src: w("intruder"),
        dst: Destination::Workload(w("web")),
        protocol: Protocol::Http,
    });
    newcomer.tls = TlsStatus::Mtls;
    newcomer.client_identity = id("intruder");
    newcomer.metrics.rps = 1.0;
    assert_eq!(verdict_of(&applied, &newcomer).decision, Decision::Audit);
    g.edges.insert(newcomer.key.clone(), newcomer);
    let again = propose(&g, &applied, &emojivoto(), Access::Audit).unwrap();
    let web = again
        .objects
        .iter()
        .find(|o| o.manifest["metadata"]["name"] == "web-http-observed-clients")
        .expect("web's authentication regenerated");
    assert_eq!(
        web.manifest["spec"]["identityRefs"],
        json!([
            {"kind": "ServiceAccount", "name": "default"},
            {"kind": "ServiceAccount", "name": "intruder"}
        ])
    );
    assert!(
        !names(&again).iter().any(|n| n.starts_with("Server ")),
        "the Servers exist: {:?}",
        names(&again)
    );
    assert!(again.newly_denied.is_empty(), "{:?}", again.newly_denied);
}

/// web served on two ports (web-svc:80 -> 8080 for the app, web-admin:9990 -> 9990 for an
/// admin endpoint), each called by its own caller: a Server per port, each admitting only the
/// callers of that port, so the admin caller cannot reach the app port afterwards, nor the app
/// caller the admin port.
#[test]
fn each_port_a_workload_is_called_on_gets_its_own_server_and_callers() {
    let admin_svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web-admin, namespace: emojivoto}\n\
        spec: {selector: {app: web-svc}, ports: [{name: admin, port: 9990, targetPort: 9990}]}\n";
    let c = cluster(&[admin_svc]);
    let mut g = graph();
    web_calls_through(
        &mut g,
        &route("default", "http", "Service emojivoto/web-svc:80"),
    );
    let mut admin = Edge::new(EdgeKey {
        src: w("voting"),
        dst: Destination::Workload(w("web")),
        protocol: Protocol::Http,
    });
    admin.tls = TlsStatus::Mtls;
    admin.client_identity = id("voting");
    admin.metrics.rps = 0.5;
    admin.routes = vec![route("default", "http", "Service emojivoto/web-admin:9990")];
    g.edges.insert(admin.key.clone(), admin.clone());
    let p = propose(
        &g,
        &c,
        &Target {
            namespace: "emojivoto".into(),
            workload: Some("web".into()),
        },
        Access::Deny,
    )
    .unwrap();
    assert_eq!(
        names(&p),
        [
            "Server web-http",
            "MeshTLSAuthentication web-http-observed-clients",
            "AuthorizationPolicy web-http-observed",
            "Server web-9990",
            "MeshTLSAuthentication web-9990-observed-clients",
            "AuthorizationPolicy web-9990-observed",
        ]
    );
    assert_eq!(p.objects[3].manifest["spec"]["port"], 9990);
    assert_eq!(
        p.objects[4].manifest["spec"]["identityRefs"],
        json!([{"kind": "ServiceAccount", "name": "voting"}])
    );
    assert!(p.newly_denied.is_empty(), "{:?}", p.newly_denied);
    let (docs, problems) = crate::document::parse_text("p.yaml", &p.to_yaml());
    let after = c.with_proposed(&Manifests::from_documents(docs, problems).policy_set());
    let bot = g
        .edges
        .values()
        .find(|e| e.key.src == w("vote-bot"))
        .unwrap();
    assert_eq!(verdict_at(&after, bot, 8080).decision, Decision::Allowed);
    assert_eq!(verdict_at(&after, bot, 9990).decision, Decision::Denied);
    assert_eq!(verdict_at(&after, &admin, 9990).decision, Decision::Allowed);
    assert_eq!(verdict_at(&after, &admin, 8080).decision, Decision::Denied);
}

/// Per route: web's callers all go through HTTPRoutes on web-svc (vote-bot through /api, the
/// new frontend through /static). Each gets an inbound route on the Server with the same
/// matches and an authorization naming only its callers; a request of one caller on the other
/// route is refused, and so is a path no route matches. A caller on the default route makes
/// the proposal fall back to the Server as a whole, saying why.
#[test]
fn per_route_proposals_admit_each_caller_on_its_own_routes_only() {
    let routes = "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: web-api, namespace: emojivoto}\n\
        spec: {parentRefs: [{kind: Service, group: core, name: web-svc, port: 80}], rules: [{matches: [{path: {type: PathPrefix, value: /api}, method: POST}]}]}\n---\n\
        apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: web-static, namespace: emojivoto}\n\
        spec: {parentRefs: [{kind: Service, group: core, name: web-svc, port: 80}], rules: [{matches: [{path: {type: PathPrefix, value: /static}}]}]}\n";
    let c = cluster(&[routes]);
    let on_web = "Service emojivoto/web-svc:80";
    let mut g = graph();
    web_calls_through(&mut g, &route("HTTPRoute", "web-api", on_web));
    let mut front = Edge::new(EdgeKey {
        src: w("emoji"),
        dst: Destination::Workload(w("web")),
        protocol: Protocol::Http,
    });
    front.tls = TlsStatus::Mtls;
    front.client_identity = id("emoji");
    front.metrics.rps = 1.0;
    front.routes = vec![route("HTTPRoute", "web-static", on_web)];
    g.edges.insert(front.key.clone(), front);
    let web = Target {
        namespace: "emojivoto".into(),
        workload: Some("web".into()),
    };
    let opts = Options {
        access: Access::Deny,
        per_route: true,
    };
    let p = propose(&g, &c, &web, opts).unwrap();
    assert_eq!(
        names(&p),
        [
            "Server web-http",
            "HTTPRoute web-http-web-api",
            "MeshTLSAuthentication web-http-web-api-observed-clients",
            "AuthorizationPolicy web-http-web-api-observed",
            "HTTPRoute web-http-web-static",
            "MeshTLSAuthentication web-http-web-static-observed-clients",
            "AuthorizationPolicy web-http-web-static-observed",
        ]
    );
    assert_eq!(
        p.objects[1].manifest["spec"]["rules"],
        json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}]}])
    );
    assert_eq!(
        p.objects[2].manifest["spec"]["identityRefs"],
        json!([{"kind": "ServiceAccount", "name": "default"}])
    );
    assert!(p.newly_denied.is_empty(), "{:?}", p.newly_denied);
    let yaml = p.to_yaml();
    let (docs, problems) = crate::document::parse_text("p.yaml", &yaml);
    let m = Manifests::from_documents(docs, problems);
    assert!(m.validate().is_empty(), "{:?}\n{yaml}", m.validate());
    let after = c.with_proposed(&m.policy_set());
    let ask = |sa: &str, method: &str, path: &str| {
        let req = crate::eval::AccessRequest {
            client: crate::eval::ClientInfo {
                identity: Some(id(sa)),
                ip: None,
                in_cluster: true,
            },
            pod: c.workloads[&w("web")].pod.clone(),
            port: 8080,
            method: Some(method.into()),
            path: Some(path.into()),
        };
        crate::overlay::explain_request(&after, "emojivoto", &req, Vec::new()).decision
    };
    assert_eq!(ask("default", "POST", "/api/vote"), Decision::Allowed);
    assert_eq!(ask("default", "GET", "/static/app.js"), Decision::Denied);
    assert_eq!(ask("emoji", "GET", "/static/app.js"), Decision::Allowed);
    assert_eq!(ask("emoji", "POST", "/api/vote"), Decision::Denied);
    assert_eq!(ask("default", "GET", "/admin"), Decision::Denied);

    // A caller on Linkerd's default route: per route would cut it off, so the Server is
    // authorized as a whole.
    let mut g2 = graph();
    web_calls_through(&mut g2, &route("default", "http", on_web));
    let p = propose(&g2, &c, &web, opts).unwrap();
    assert_eq!(
        names(&p),
        [
            "Server web-http",
            "MeshTLSAuthentication web-http-observed-clients",
            "AuthorizationPolicy web-http-observed"
        ]
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("not every call went through a named HTTPRoute")),
        "{:?}",
        p.notes
    );
}

#[test]
fn callers_without_an_identity_are_listed_never_admitted() {
    let mut g = graph();
    let mut plain = Edge::new(EdgeKey {
        src: WorkloadRef {
            namespace: "legacy".into(),
            kind: "Deployment".into(),
            name: "cron".into(),
        },
        dst: Destination::Workload(w("web")),
        protocol: Protocol::Http,
    });
    plain.tls = TlsStatus::Plaintext;
    plain.no_tls_reason = "not_provided_by_remote".into();
    plain.metrics.rps = 0.5;
    g.edges.insert(plain.key.clone(), plain);
    let p = propose(&g, &cluster(&[]), &emojivoto(), Access::Deny).unwrap();
    let [n] = p.needs_action.as_slice() else {
        panic!("{:?}", p.needs_action)
    };
    assert_eq!(n.caller, "legacy/cron");
    assert!(
        n.advice
            .contains("not mTLS (not_provided_by_remote): mesh it, or admit its network"),
        "{}",
        n.advice
    );
    // It is not in the authentication, and the proof does not count it as a flaw.
    assert!(!p.to_yaml().contains("cron.legacy"));
    assert!(p.newly_denied.is_empty());
    assert!(
        p.to_yaml()
            .contains("# needs action: legacy/cron -> emojivoto/web (0.50 rps)")
    );
}

#[test]
fn bad_targets_and_quiet_workloads_say_why() {
    let (g, c) = (graph(), cluster(&[]));
    assert_eq!(
        propose(
            &g,
            &c,
            &Target {
                namespace: "nope".into(),
                workload: None
            },
            Access::Deny
        ),
        Err(ProposeError::UnknownNamespace("nope".into()))
    );
    assert_eq!(
        propose(
            &g,
            &c,
            &Target {
                namespace: "emojivoto".into(),
                workload: Some("ghost".into())
            },
            Access::Deny
        ),
        Err(ProposeError::UnknownWorkload("emojivoto/ghost".into()))
    );
    let p = propose(
        &MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH),
        &c,
        &emojivoto(),
        Access::Deny,
    )
    .unwrap();
    assert!(p.objects.is_empty());
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("emojivoto/web: no traffic observed")),
        "{:?}",
        p.notes
    );
}
