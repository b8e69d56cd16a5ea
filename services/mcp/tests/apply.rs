//! Policy changes end to end against kube-sim with real RBAC objects: identity and delegation,
//! validation, SubjectAccessReview, server-side dry-run and apply as the requester
//! (impersonation), no-ops, conflicts, preconditions, rollback, what-if and audit.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube_sim::KubeSim;
use mcp_harness::McpHarness;
use mesh_mcp::apply::{ApiServer, ApiSteps, Applier, Target};
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use serde_json::Value;
use tonic::{Code, Request, transport::Channel};

mod common;
use common::{BOOKS_POLICY, BOT};

const MCP_TOKENS: &str = "alice-t,alice,u1,\"devs\"\n\
bob-t,bob,u2,\"mesh-admins\"\n\
bot-t,system:serviceaccount:linkerd-mcp:chatbot,u3\n";

struct Env {
    h: McpHarness,
    client: MeshServiceClient<Channel>,
}

fn kube_config(sim: &KubeSim, token: &str) -> kube::Config {
    sim.kube_config(token)
}

/// kube-sim with the demo seed (booksapp and emojivoto with their policy) and the editors; the
/// booksapp graph published with its verdicts; mesh-mcp serving it (its applier `tweak`ed).
/// Allows every write at the access review: the impersonated writes must still be refused by
/// the API server on their own.
struct NoReview;

impl ApiSteps for NoReview {
    fn may<'a>(
        &'a self,
        _: &'a kube::Client,
        _: &'a pb::Identity,
        _: &'a str,
        _: Target<'a>,
    ) -> BoxFuture<'a, Result<bool, kube::Error>> {
        Box::pin(async { Ok(true) })
    }
}

/// Makes the real write (not the dry-run) of an AuthorizationPolicy invalid, so the API server
/// refuses it after the objects before it were written: their rollback is what is tested.
struct BreakPolicyWrites;

impl ApiSteps for BreakPolicyWrites {
    fn apply<'a>(
        &'a self,
        api: &'a kube::Api<DynamicObject>,
        target: Target<'a>,
        body: &'a Value,
        params: &'a PatchParams,
    ) -> BoxFuture<'a, Result<DynamicObject, kube::Error>> {
        Box::pin(async move {
            if target.kind == "AuthorizationPolicy" && !params.dry_run {
                let mut broken = body.clone();
                broken["spec"]["brokenByTest"] = serde_json::json!(true);
                ApiServer.apply(api, target, &broken, params).await
            } else {
                ApiServer.apply(api, target, body, params).await
            }
        })
    }
}

async fn start(tweak: fn(Applier) -> Applier) -> Env {
    let (h, client) =
        common::start_booksapp(MCP_TOKENS, &["mesh-admins", "devs", "authn-only"], tweak).await;
    Env { h, client }
}

/// An ApplyAuthorizationPolicy that must fail: its status.
async fn refused(env: &mut Env, r: Request<pb::ApplyRequest>) -> tonic::Status {
    env.client.apply_authorization_policy(r).await.unwrap_err()
}

fn req(token: &str, manifest: &str, dry_run: bool) -> Request<pb::ApplyRequest> {
    with(
        token,
        pb::ApplyRequest {
            source: Some(pb::apply_request::Source::Manifest(manifest.into())),
            dry_run,
            ..Default::default()
        },
    )
}

/// [`BOOKS_POLICY`] applied on behalf of `user` in `group` (the bot, a delegator, sends it).
fn books_as(user: &str, group: &str) -> pb::ApplyRequest {
    pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(BOOKS_POLICY.into())),
        on_behalf_of: Some(pb::Identity {
            user: user.into(),
            groups: vec![group.into()],
        }),
        ..Default::default()
    }
}

fn with(token: &str, r: pb::ApplyRequest) -> Request<pb::ApplyRequest> {
    let mut r = Request::new(r);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(20));
    r
}

fn api(env: &Env, kind: &str, version: &str) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(
        kube::Client::try_from(kube_config(&env.h.kube, "admin-token")).unwrap(),
        "booksapp",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("policy.linkerd.io", version, kind)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_naming_the_field_and_change_nothing() {
    let mut env = start(|a| a).await;
    let rv = env.h.kube.resource_version().await;
    let main = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
                metadata: {name: p, namespace: booksapp}\n\
                spec: {targetRef: {group: policy.linkerd.io, kind: Server, name: authors-server}, requiredAuthenticationRefs: []}\n";
    let mut cases: Vec<(String, bool, String)> = vec![
        ("kind: [".into(), false, "manifest".into()),
        (String::new(), false, "manifest: empty".into()),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: booksapp}\n".into(),
            false,
            "cannot be applied through ApplyAuthorizationPolicy".into(),
        ),
        (
            format!("{main}---\n{}", main.replace("name: p,", "name: q,")),
            false,
            "exactly one AuthorizationPolicy, found 2".into(),
        ),
        (
            main.replace(", namespace: booksapp", ""),
            false,
            "metadata.namespace is required".into(),
        ),
        (
            main.replace(
                "name: p,",
                "name: p, annotations: {linkerd-mcp.io/approved-by: security},",
            ),
            false,
            "the audit trail is written by linkerd-mcp".into(),
        ),
        (
            main.replace("name: p,", "name: P_Q,"),
            false,
            "must be DNS names".into(),
        ),
        (
            main.into(),
            true,
            "AuthorizationPolicy cannot be applied through ApplyHTTPRoute".into(),
        ),
        (
            main.replace(
                "requiredAuthenticationRefs: []",
                "requiredAuthenticationRefs: [], colour: blue",
            ),
            false,
            "colour".into(),
        ),
    ];
    // Every invalid example of Linkerd's admission rules for the kinds these RPCs take.
    let dir = mcp_harness::root().join("crates/policy/tests/fixtures/admission");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ");
        if expect == "valid" {
            continue;
        }
        let field = expect.split(':').next().unwrap().to_owned();
        let (route, manifest) = match name.split('-').next().unwrap() {
            "authz" => (false, text.clone()),
            "httproute" => (true, text.clone()),
            "meshtls" | "network" | "server" => (false, format!("{text}\n---\n{main}")),
            _ => continue,
        };
        cases.push((manifest, route, field));
    }
    assert!(cases.len() >= 25, "{} cases", cases.len());
    for (manifest, route, want) in &cases {
        let r = req("bob-t", manifest, false);
        let e = if *route {
            env.client.apply_http_route(r).await
        } else {
            env.client.apply_authorization_policy(r).await
        }
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{manifest}\n{e:?}");
        assert!(
            e.message().contains(want.as_str()),
            "want {want:?} in {:?}",
            e.message()
        );
    }
    assert_eq!(env.h.kube.resource_version().await, rv, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_rbac_dry_run_apply_noop_conflict_and_audit() {
    let mut env = start(|a| a).await;
    let rv = env.h.kube.resource_version().await;

    // No rights: refused by the SubjectAccessReview, naming verb, resource and namespace.
    let e = refused(&mut env, req("alice-t", BOOKS_POLICY, true)).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains(
            "alice may not patch meshtlsauthentications.policy.linkerd.io in namespace booksapp"
        ),
        "{}",
        e.message()
    );
    // Delegation: only the chatbot may act for others, and never as system:*.
    let mut as_bob = pb::ApplyRequest {
        dry_run: true,
        ..books_as("bob", "mesh-admins")
    };
    let e = refused(&mut env, with("alice-t", as_bob.clone())).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("only configured delegators"),
        "{}",
        e.message()
    );
    // Kubernetes trims header values: a padded system identity is refused outright.
    let mut padded = as_bob.clone();
    padded.on_behalf_of.as_mut().unwrap().user = " system:kube-controller-manager".into();
    let e = refused(&mut env, with("bot-t", padded)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    for groups in [
        vec!["system:masters".to_owned()],
        vec!["cluster-admins".to_owned()],
    ] {
        let mut r = as_bob.clone();
        r.on_behalf_of.as_mut().unwrap().groups = groups;
        let e = refused(&mut env, with("bot-t", r)).await;
        assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
        assert!(
            e.message().contains("may not be delegated"),
            "{}",
            e.message()
        );
    }
    assert_eq!(env.h.kube.resource_version().await, rv);

    // The chatbot for bob: a dry-run with the diff and the what-if; nothing changes.
    let dry = env
        .client
        .apply_authorization_policy(with("bot-t", as_bob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!(dry.acted_as.as_ref().unwrap().user, "bob");
    assert!(dry.diff.contains("+  name: books-policy"), "{}", dry.diff);
    let actions: Vec<&str> = dry.objects.iter().map(|o| o.action.as_str()).collect();
    assert_eq!(actions, ["would create"; 3]);
    assert_eq!(
        dry.objects[2].kind, "AuthorizationPolicy",
        "dependencies first"
    );
    // authors calls books as authors: newly denied, with its traffic.
    let denied = dry
        .affected_edges
        .iter()
        .find(|a| a.edge.as_ref().unwrap().src.as_ref().unwrap().name == "authors")
        .unwrap();
    assert_eq!(denied.after(), pb::policy_verdict::Decision::Denied);
    assert_eq!(denied.before(), pb::policy_verdict::Decision::Allowed);
    assert!(denied.rps > 0.0);
    assert!(
        dry.warnings
            .iter()
            .any(|w| w.contains("would deny booksapp/authors -> booksapp/books")),
        "{:?}",
        dry.warnings
    );
    assert!(
        !dry.affected_edges
            .iter()
            .any(|a| a.edge.as_ref().unwrap().src.as_ref().unwrap().name == "webapp")
    );
    assert_eq!(
        env.h.kube.resource_version().await,
        rv,
        "a dry-run changes nothing"
    );

    // What was sent: dry-runs and then nothing else, as bob, with our field manager.
    let patches: Vec<_> = env
        .h
        .kube
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 3);
    for p in &patches {
        assert!(p.query.contains("dryRun=All"), "{p:?}");
        assert!(p.query.contains("fieldManager=linkerd-mcp"), "{p:?}");
        assert_eq!(p.impersonate_user, "bob");
        assert_eq!(p.impersonate_groups, ["mesh-admins"]);
        assert_eq!(p.effective_user, "bob");
    }

    // Apply, approved: the objects exist, carry the audit trail, and an Event says so.
    as_bob.dry_run = false;
    as_bob.approved_by = "carol".into();
    as_bob.reason = "only webapp reads books".into();
    let done = env
        .client
        .apply_authorization_policy(with("bot-t", as_bob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.objects
            .iter()
            .map(|o| o.action.as_str())
            .collect::<Vec<_>>(),
        ["created"; 3]
    );
    let policy = api(&env, "AuthorizationPolicy", "v1alpha1")
        .get("books-policy")
        .await
        .unwrap();
    let a = policy.metadata.annotations.clone().unwrap();
    assert_eq!(a["linkerd-mcp.io/requested-by"], BOT);
    assert_eq!(a["linkerd-mcp.io/acted-as"], "bob");
    assert_eq!(a["linkerd-mcp.io/approved-by"], "carol");
    assert_eq!(a["linkerd-mcp.io/audit-id"], done.audit_id);
    let managers: Vec<String> = policy
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["linkerd-mcp"]);
    let events = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(
        kube::Client::try_from(kube_config(&env.h.kube, "admin-token")).unwrap(),
        "booksapp",
    )
    .list(&Default::default())
    .await
    .unwrap();
    let ev = events
        .items
        .iter()
        .find(|e| e.involved_object.name.as_deref() == Some("books-policy"))
        .unwrap();
    let msg = ev.message.clone().unwrap();
    assert!(
        msg.contains("as bob") && msg.contains("approved by carol") && msg.contains(&done.audit_id),
        "{msg}"
    );

    // The same again: nothing to change, nothing written.
    let rv = env.h.kube.resource_version().await;
    let again = env
        .client
        .apply_authorization_policy(with("bot-t", as_bob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.objects.iter().all(|o| o.action == "unchanged"),
        "{:?}",
        again.objects
    );
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.contains("nothing to change"))
    );
    assert_eq!(env.h.kube.resource_version().await, rv);

    // What the approver reviewed is what gets applied: a stale resourceVersion is refused.
    let mut changed = as_bob.clone();
    changed.source = Some(pb::apply_request::Source::Manifest(
        BOOKS_POLICY.replace("webapp.booksapp", "traffic.booksapp"),
    ));
    changed.expected_resource_version = "1".into();
    let e = refused(&mut env, with("bot-t", changed.clone())).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    // Reviewed while it did not exist, but someone created it since: refused too.
    changed.expected_resource_version.clear();
    changed.expect_absent = true;
    let e = refused(&mut env, with("bot-t", changed.clone())).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(
        e.message()
            .contains("did not exist when the change was reviewed"),
        "{}",
        e.message()
    );
    changed.expect_absent = false;

    // Another field manager owns spec.identities: a conflict names it; force takes over.
    let authn = api(&env, "MeshTLSAuthentication", "v1alpha1");
    authn
        .patch(
            "books-clients",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication",
                "metadata": {"name": "books-clients", "namespace": "booksapp"},
                "spec": {"identities": ["books.booksapp.serviceaccount.identity.linkerd.cluster.local"]}
            })),
        )
        .await
        .unwrap();
    changed.expected_resource_version.clear();
    let e = refused(&mut env, with("bot-t", changed.clone())).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("kubectl"), "{}", e.message());
    changed.force = true;
    env.client
        .apply_authorization_policy(with("bot-t", changed))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason() {
    let mut env = start(|a| a).await;
    let count = |env: &Env| {
        let mut r = prometheus_client::registry::Registry::default();
        env.h.applier.as_ref().unwrap().register_metrics(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let n = |reason: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "mesh_mcp_apply_errors_total{{reason=\"{reason}\"}} "
                    ))
                })
                .map_or(0, |v| v.parse::<u64>().unwrap())
        };
        (n("forbidden"), n("invalid"))
    };
    assert_eq!(count(&env), (0, 0));
    let e = refused(&mut env, with("bot-t", books_as("dave", "authn-only"))).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = refused(&mut env, req("bob-t", "kind: [", false)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = refused(&mut env, req("bob-t", "kind: [", true)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(count(&env), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_access_review_the_impersonated_write_is_still_refused() {
    let mut env = start(|a| a.with_api_steps(Arc::new(NoReview))).await;
    let rv = env.h.kube.resource_version().await;
    // dave may write MeshTLSAuthentications only.
    let r = books_as("dave", "authn-only");
    let e = refused(&mut env, with("bot-t", r)).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message()
            .contains("the API server refused dry-run of Server booksapp/books-server as dave"),
        "{}",
        e.message()
    );
    assert_eq!(
        env.h.kube.resource_version().await,
        rv,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_object_refused_at_apply_rolls_back_the_earlier_ones() {
    let mut env = start(|a| a.with_api_steps(Arc::new(BreakPolicyWrites))).await;
    let e = refused(&mut env, req("bob-t", BOOKS_POLICY, false)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message()
            .contains("applying AuthorizationPolicy booksapp/books-policy"),
        "{}",
        e.message()
    );
    assert!(
        e.message()
            .contains("MeshTLSAuthentication booksapp/books-clients: deleted by rollback"),
        "{}",
        e.message()
    );
    assert!(
        e.message()
            .contains("Server booksapp/books-server: deleted by rollback"),
        "{}",
        e.message()
    );
    assert!(
        api(&env, "Server", "v1beta3")
            .get_opt("books-server")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        api(&env, "MeshTLSAuthentication", "v1alpha1")
            .get_opt("books-clients")
            .await
            .unwrap()
            .is_none()
    );
}

/// A structured spec goes through the same pipeline as a manifest: the objects it becomes are
/// dry-run and applied as the requester, and the what-if sees what they would change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_spec_is_written_as_objects_and_applied_like_a_manifest() {
    let mut env = start(|a| a).await;
    let spec = pb::AuthorizationSpec {
        namespace: "booksapp".into(),
        name: "books-policy".into(),
        target_name: "books-server".into(),
        service_accounts: vec!["webapp".into()],
        server: Some(pb::ServerSpec {
            pod_selector: [("app".to_owned(), "books".to_owned())].into(),
            port: "service".into(),
            proxy_protocol: "HTTP/1".into(),
        }),
        ..Default::default()
    };
    let request = |dry_run: bool| pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Spec(pb::PolicySpec {
            kind: Some(pb::policy_spec::Kind::Authorization(spec.clone())),
        })),
        dry_run,
        ..Default::default()
    };
    let dry = env
        .client
        .apply_authorization_policy(with("bob-t", request(true)))
        .await
        .unwrap()
        .into_inner();
    let written: Vec<(&str, &str)> = dry
        .objects
        .iter()
        .map(|o| (o.kind.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        written,
        [
            ("MeshTLSAuthentication", "books-policy-clients"),
            ("Server", "books-server"),
            ("AuthorizationPolicy", "books-policy"),
        ]
    );
    let denied: Vec<&str> = dry
        .affected_edges
        .iter()
        .map(|a| a.edge.as_ref().unwrap().src.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(denied, ["authors"], "only webapp stays admitted");

    let applied = env
        .client
        .apply_authorization_policy(with("bob-t", request(false)))
        .await
        .unwrap()
        .into_inner();
    assert!(!applied.dry_run);
    let authn = api(&env, "MeshTLSAuthentication", "v1alpha1")
        .get("books-policy-clients")
        .await
        .unwrap();
    assert_eq!(
        authn.data["spec"]["identityRefs"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "webapp"}])
    );

    // A spec for the other RPC, or no source at all, is refused naming what is wrong.
    let e = env
        .client
        .apply_http_route(with("bob-t", request(true)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("ApplyHTTPRoute takes a route spec"),
        "{}",
        e.message()
    );
    let e = refused(&mut env, with("bob-t", pb::ApplyRequest::default())).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("a manifest or a spec is required"),
        "{}",
        e.message()
    );
}

/// A graph read as alice: how long the service takes to answer it.
async fn graph_read(env: &Env) -> Duration {
    let mut c = env.client.clone();
    let start = std::time::Instant::now();
    let mut r = Request::new(pb::GetMeshGraphRequest::default());
    r.metadata_mut()
        .insert("authorization", "Bearer alice-t".parse().unwrap());
    r.set_timeout(Duration::from_secs(30));
    c.get_mesh_graph(r).await.unwrap();
    start.elapsed()
}

/// Hostile documents are measured before they are parsed: deep nesting (whose parse time grows
/// with its square), oversized manifests and alias bombs are refused at once, by a caller with
/// no rights at all, while the service keeps answering reads; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_refused_before_parsing_and_reads_keep_flowing() {
    let env = start(|a| a).await;
    let rv = env.h.kube.resource_version().await;
    let deep = format!("x: {}", "[".repeat(1_000_000));
    let block: String = (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let big = format!("{BOOKS_POLICY}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    let cases: [(&str, &str); 4] = [
        (&deep, "nested more than 64 levels deep (line 1)"),
        (&block, "nested more than 64 levels deep (line 65)"),
        (&big, "at most 1048576 are accepted"),
        (laughs, "repetition limit exceeded"),
    ];
    // Three at once, as the attack was sent, with a read in between.
    let mut attacks = Vec::new();
    for (doc, _) in &cases {
        for _ in 0..3 {
            let mut c = env.client.clone();
            let r = req("alice-t", doc, true);
            attacks.push(tokio::spawn(async move {
                c.apply_authorization_policy(r).await.unwrap_err()
            }));
        }
    }
    let during = graph_read(&env).await;
    for (i, a) in attacks.into_iter().enumerate() {
        let e = a.await.unwrap();
        let want = cases[i / 3].1;
        assert_eq!(e.code(), Code::InvalidArgument, "case {}: {e}", i / 3);
        assert!(e.message().contains(want), "case {}: {e}", i / 3);
    }
    assert!(
        during < Duration::from_secs(10),
        "a graph read took {during:?} under attack"
    );
    assert_eq!(env.h.kube.resource_version().await, rv, "nothing changed");
}

/// Only a delegator may record who approved a change and why; nobody may put control
/// characters into the audit trail (they would forge lines in Events and logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_and_reasons_cannot_be_forged() {
    let mut env = start(|a| a).await;
    let rv = env.h.kube.resource_version().await;
    let base = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(BOOKS_POLICY.into())),
        ..Default::default()
    };
    for (field, r) in [
        (
            "approved_by",
            pb::ApplyRequest {
                approved_by: "carol".into(),
                ..base.clone()
            },
        ),
        (
            "reason",
            pb::ApplyRequest {
                reason: "approved in Slack by carol".into(),
                ..base.clone()
            },
        ),
    ] {
        // A reason is checked once the approval gate has spoken (a change that waits for
        // approvals carries its requester's reason to the request): alice, who may not write
        // here at all, is refused for that first.
        let tokens: &[&str] = if field == "reason" {
            &["bob-t"]
        } else {
            &["alice-t", "bob-t"]
        };
        for &token in tokens {
            let e = refused(&mut env, with(token, r.clone())).await;
            assert_eq!(e.code(), Code::PermissionDenied, "{token} {field}: {e}");
            assert!(
                e.message()
                    .starts_with(&format!("{field}: only a delegator")),
                "{e}"
            );
        }
    }
    let as_bob = books_as("bob", "mesh-admins");
    for (field, r) in [
        (
            "approved_by",
            pb::ApplyRequest {
                approved_by: "carol\napproved-by: dave".into(),
                ..as_bob.clone()
            },
        ),
        (
            "reason",
            pb::ApplyRequest {
                reason: "ok\r\n2026-12-06 INFO audit: forged".into(),
                ..as_bob.clone()
            },
        ),
        (
            "reason",
            pb::ApplyRequest {
                reason: "colour \u{1b}[31m".into(),
                ..as_bob.clone()
            },
        ),
    ] {
        let e = refused(&mut env, with("bot-t", r)).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
        assert!(
            e.message()
                .starts_with(&format!("{field}: control characters")),
            "{e}"
        );
    }
    assert_eq!(env.h.kube.resource_version().await, rv, "nothing changed");
}

/// What was reviewed covers every object of a change: another user's edit of a supporting
/// object (here the Server) between review and apply makes the apply fail,
/// instead of silently reverting an edit the reviewer never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_a_supporting_object_since_review_refuses_the_apply() {
    let mut env = start(|a| a).await;
    let as_bob = books_as("bob", "mesh-admins");
    // First applied, so that every object exists; then reviewed again, as an approver would.
    env.client
        .apply_authorization_policy(with("bot-t", as_bob.clone()))
        .await
        .unwrap();
    let changed_manifest = BOOKS_POLICY.replace(
        "identities: [webapp.booksapp",
        "identities: [authors.booksapp.serviceaccount.identity.linkerd.cluster.local, webapp.booksapp",
    );
    let review = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(changed_manifest)),
        dry_run: true,
        ..as_bob.clone()
    };
    let reviewed = env
        .client
        .apply_authorization_policy(with("bot-t", review.clone()))
        .await
        .unwrap()
        .into_inner();
    let (main, supporting) = reviewed.objects.split_last().unwrap();
    let approved = pb::ApplyRequest {
        dry_run: false,
        expected_resource_version: main.resource_version_before.clone(),
        preconditions: supporting
            .iter()
            .map(pb::ObjectPrecondition::from)
            .collect(),
        ..review
    };
    // Someone else edits the Server meanwhile, directly in the cluster.
    api(&env, "Server", "v1beta3")
        .patch(
            "books-server",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "policy.linkerd.io/v1beta3",
                "kind": "Server",
                "metadata": {"name": "books-server", "namespace": "booksapp",
                             "labels": {"edited-by": "someone-else"}},
            })),
        )
        .await
        .unwrap();
    let rv = env.h.kube.resource_version().await;
    let e = refused(&mut env, with("bot-t", approved.clone())).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message()
            .starts_with("Server booksapp/books-server changed since the change was reviewed"),
        "{e}"
    );
    assert_eq!(env.h.kube.resource_version().await, rv, "nothing written");
    // A precondition must name an object of the request.
    let mut stray = approved;
    stray.preconditions.push(pb::ObjectPrecondition {
        kind: "Server".into(),
        namespace: "booksapp".into(),
        name: "not-in-this-change".into(),
        resource_version: String::new(),
    });
    let e = refused(&mut env, with("bot-t", stray)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.message().contains("is not an object of this request"),
        "{e}"
    );
}
