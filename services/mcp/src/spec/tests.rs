use mesh_policy::Manifests;

use super::*;

fn id(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.linkerd.cluster.local")
}

fn authz(a: pb::AuthorizationSpec) -> Result<Vec<Value>, crate::apply::ApplyError> {
    let spec = pb::PolicySpec {
        kind: Some(pb::policy_spec::Kind::Authorization(a)),
    };
    let text = manifest(Rpc::AuthorizationPolicy, &spec, id)?;
    Ok(parsed(&text))
}

/// The documents of `text`, after checking Linkerd's admission rules pass on them.
fn parsed(text: &str) -> Vec<Value> {
    let (docs, problems) = mesh_policy::document::parse_text("spec", text);
    assert!(problems.is_empty(), "{problems:?}");
    let m = Manifests::from_documents(docs.clone(), Vec::new());
    let problems = m.validate();
    assert!(problems.is_empty(), "{problems:?}\n{text}");
    docs.into_iter().map(|d| d.value).collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn service_accounts_become_an_authentication_the_policy_requires() {
    let objects = authz(pb::AuthorizationSpec {
        namespace: "emojivoto".into(),
        name: "voting-from-web".into(),
        target_name: "voting-grpc".into(),
        service_accounts: vec!["web".into(), "ops/prober".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        kinds(&objects),
        ["MeshTLSAuthentication", "AuthorizationPolicy"]
    );
    assert_eq!(
        objects[0]["spec"]["identityRefs"],
        json!([
            {"kind": "ServiceAccount", "name": "web"},
            {"kind": "ServiceAccount", "name": "prober", "namespace": "ops"},
        ])
    );
    assert_eq!(objects[0]["metadata"]["name"], "voting-from-web-clients");
    let policy = &objects[1]["spec"];
    assert_eq!(
        policy["targetRef"],
        json!({"group": POLICY, "kind": "Server", "name": "voting-grpc"})
    );
    assert_eq!(
        policy["requiredAuthenticationRefs"][0]["name"],
        "voting-from-web-clients"
    );
}

#[test]
fn identities_networks_and_a_new_server_come_in_dependency_order() {
    let objects = authz(pb::AuthorizationSpec {
        namespace: "emojivoto".into(),
        name: "web-public".into(),
        target_name: "web-http".into(),
        service_accounts: vec!["vote-bot".into()],
        identities: vec!["*.ops.serviceaccount.identity.linkerd.cluster.local".into()],
        networks: vec!["10.0.0.0/8".into()],
        server: Some(pb::ServerSpec {
            pod_selector: [("app".to_owned(), "web-svc".to_owned())].into(),
            port: "http".into(),
            proxy_protocol: "HTTP/1".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        kinds(&objects),
        [
            "Server",
            "MeshTLSAuthentication",
            "NetworkAuthentication",
            "AuthorizationPolicy"
        ]
    );
    assert_eq!(
        objects[0]["spec"],
        json!({"podSelector": {"matchLabels": {"app": "web-svc"}}, "port": "http", "proxyProtocol": "HTTP/1"})
    );
    // Explicit identities and service accounts cannot share one authentication as refs.
    assert_eq!(
        objects[1]["spec"]["identities"],
        json!([
            "*.ops.serviceaccount.identity.linkerd.cluster.local",
            "vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local"
        ])
    );
    assert_eq!(
        objects[2]["spec"]["networks"],
        json!([{"cidr": "10.0.0.0/8"}])
    );
    assert_eq!(
        objects[3]["spec"]["requiredAuthenticationRefs"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_namespace_target_defaults_to_the_policy_namespace() {
    let objects = authz(pb::AuthorizationSpec {
        namespace: "booksapp".into(),
        name: "everyone".into(),
        target_kind: "Namespace".into(),
        networks: vec!["0.0.0.0/0".into(), "::/0".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        objects[1]["spec"]["targetRef"],
        json!({"kind": "Namespace", "name": "booksapp"})
    );
}

#[test]
fn routes_on_servers_and_services() {
    let route = |r: pb::RouteSpec| {
        let spec = pb::PolicySpec {
            kind: Some(pb::policy_spec::Kind::Route(r)),
        };
        manifest(Rpc::HttpRoute, &spec, id).map(|t| parsed(&t))
    };
    let on_server = route(pb::RouteSpec {
        namespace: "booksapp".into(),
        name: "authors-get".into(),
        parent_kind: "Server".into(),
        parent_name: "authors-server".into(),
        matches: vec![pb::RouteMatch {
            path_prefix: "/authors".into(),
            method: "GET".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        on_server[0]["spec"],
        json!({
            "parentRefs": [{"group": POLICY, "kind": "Server", "name": "authors-server"}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/authors"}, "method": "GET"}]}],
        })
    );
    let on_service = route(pb::RouteSpec {
        namespace: "booksapp".into(),
        name: "books-timeout".into(),
        parent_kind: "Service".into(),
        parent_name: "books".into(),
        port: 7002,
        timeout: "2s".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        on_service[0]["spec"],
        json!({
            "parentRefs": [{"group": "core", "kind": "Service", "name": "books", "port": 7002}],
            "rules": [{"timeouts": {"request": "2s"}}],
        })
    );
}

#[test]
fn bad_specs_name_the_field() {
    let base = || pb::AuthorizationSpec {
        namespace: "emojivoto".into(),
        name: "p".into(),
        target_name: "voting-grpc".into(),
        service_accounts: vec!["web".into()],
        ..Default::default()
    };
    let cases: Vec<(pb::AuthorizationSpec, &str)> = vec![
        (
            pb::AuthorizationSpec {
                namespace: String::new(),
                ..base()
            },
            "spec.authorization.namespace: required",
        ),
        (
            pb::AuthorizationSpec {
                target_kind: "Pod".into(),
                ..base()
            },
            "spec.authorization.target_kind",
        ),
        (
            pb::AuthorizationSpec {
                target_kind: "Namespace".into(),
                target_name: "other".into(),
                ..base()
            },
            "own namespace",
        ),
        (
            pb::AuthorizationSpec {
                service_accounts: Vec::new(),
                ..base()
            },
            "name the clients",
        ),
        (
            pb::AuthorizationSpec {
                service_accounts: vec!["a/b/c".into()],
                ..base()
            },
            "spec.authorization.service_accounts",
        ),
        (
            pb::AuthorizationSpec {
                target_kind: "HTTPRoute".into(),
                server: Some(pb::ServerSpec::default()),
                ..base()
            },
            "spec.authorization.server",
        ),
        (
            pb::AuthorizationSpec {
                server: Some(pb::ServerSpec {
                    port: "grpc".into(),
                    ..Default::default()
                }),
                ..base()
            },
            "spec.authorization.server.pod_selector",
        ),
    ];
    for (spec, want) in cases {
        let e = authz(spec.clone()).unwrap_err();
        assert!(matches!(e, ApplyError::Invalid(_)), "{e:?}");
        assert!(e.message().contains(want), "{spec:?}: {}", e.message());
    }
    let wrong_rpc = pb::PolicySpec {
        kind: Some(pb::policy_spec::Kind::Authorization(base())),
    };
    let e = manifest(Rpc::HttpRoute, &wrong_rpc, id).unwrap_err();
    assert!(
        e.message().contains("ApplyHTTPRoute takes a route spec"),
        "{e:?}"
    );
    let both = pb::PolicySpec {
        kind: Some(pb::policy_spec::Kind::Route(pb::RouteSpec {
            namespace: "a".into(),
            name: "r".into(),
            parent_kind: "Server".into(),
            parent_name: "s".into(),
            matches: vec![pb::RouteMatch {
                path_prefix: "/a".into(),
                path_exact: "/a".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let e = manifest(Rpc::HttpRoute, &both, id).unwrap_err();
    assert!(e.message().contains("spec.route.matches[0]"), "{e:?}");
}
