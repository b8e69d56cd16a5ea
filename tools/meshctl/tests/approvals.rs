//! `meshctl apply` of a change the approval policy holds back, and `meshctl approvals`, as the
//! binary against an in-process mesh-mcp writing to kube-sim: the command-line contracts.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{sync::Arc, time::Duration};

use mcp_harness::{McpHarness, Options};
use mesh_mcp::apply::{Applier, Delegation};
use serde_json::Value;

mod common;
use common::meshctl;

/// booksapp needs two approvals from bob and carol.
const POLICY: &str =
    "namespaces:\n  booksapp:\n    approvals: 2\n    approvers: { users: [bob, carol] }\n";

const BOOKS_POLICY: &str = r"
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: cli-clients, namespace: booksapp}
spec: {identities: [webapp.booksapp.serviceaccount.identity.linkerd.cluster.local]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cli-policy, namespace: booksapp}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: authors-server}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: cli-clients}]
";

fn with_policy(a: Applier) -> Applier {
    let policy = mesh_policy::approval::ApprovalPolicy::parse(POLICY).unwrap();
    a.with_approval_policy(
        tokio::sync::watch::channel(Arc::new(policy)).1,
        Arc::new(mesh_model::SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_apply_prints_its_approval_and_approvals_decide_it() {
    let h = McpHarness::start(Options {
        kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                      admin-token,admin,uid-a,\"system:masters\"\n"
            .into(),
        extra_seeds: Vec::new(),
        topology: meshsim::builtin("booksapp").unwrap(),
        delegation: Delegation::default(),
        mcp_tokens: "alice-t,admin,u1,\"system:masters\"\nbob-t,bob,u2\ncarol-t,carol,u3\n".into(),
        heartbeat: Duration::from_secs(30),
        tweak: with_policy,
        prometheus_url: None,
    })
    .await;
    let server = h.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("books.yaml");
    std::fs::write(&file, BOOKS_POLICY).unwrap();
    let file = file.to_str().unwrap();
    let srv = |token: &'static str| ["--server", server.as_str(), "--token", token];

    // Held back: exit 0, the approval printed (JSON: {"approval": {"id": ...}}), nothing written.
    let mut args = vec![
        "apply",
        "-f",
        file,
        "--reason",
        "authors from webapp only",
        "-o",
        "json",
    ];
    args.extend(srv("alice-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["approval"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ap-"), "{out}");
    assert_eq!(v["approval"]["reason"], "authors from webapp only");
    let policies = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        kube::Client::try_from(h.kube.kube_config("admin-token")).unwrap(),
        "booksapp",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "policy.linkerd.io",
            "v1alpha1",
            "AuthorizationPolicy",
        )),
    );
    assert!(policies.get_opt("cli-policy").await.unwrap().is_none());
    // The text form says the same in words.
    let mut args = vec!["apply", "-f", file];
    args.extend(srv("alice-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approval requested: ap-"), "{out}");
    assert!(
        out.contains("namespaces.booksapp wants 2 approval(s)"),
        "{out}"
    );

    // list, show, approve twice (the second applies), reject the other.
    let mut args = vec!["approvals", "list", "--state", "pending"];
    args.extend(srv("bob-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "a header and two requests: {out}");
    assert!(out.contains(&id) && out.contains("0 of 2"), "{out}");
    let mut args = vec!["approvals", "approve", id.as_str()];
    args.extend(srv("bob-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approvals: 1 of 2: bob"), "{out}");
    let (code, _, err) = meshctl(&args);
    assert_eq!(code, Some(1), "bob twice");
    assert!(
        err.contains("bob has approved this change already"),
        "{err}"
    );
    let mut args = vec!["approvals", "approve", id.as_str(), "-o", "json"];
    args.extend(srv("carol-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["approval"]["state"], "APPROVAL_STATE_APPLIED", "{out}");
    let p = policies.get("cli-policy").await.unwrap();
    let a = p.metadata.annotations.unwrap();
    assert_eq!(a["linkerd-mcp.io/approved-by"], "bob,carol");
    assert_eq!(a["linkerd-mcp.io/acted-as"], "admin");
    assert_eq!(a["linkerd-mcp.io/reason"], "authors from webapp only");
    let mut args = vec!["approvals", "show", id.as_str()];
    args.extend(srv("bob-t"));
    let (_, out, _) = meshctl(&args);
    assert!(
        out.contains(": applied") && out.contains("created AuthorizationPolicy"),
        "{out}"
    );

    let mut args = vec!["approvals", "list", "--state", "pending", "-o", "json"];
    args.extend(srv("bob-t"));
    let (_, out, _) = meshctl(&args);
    let v: Value = serde_json::from_str(&out).unwrap();
    let other = v["approvals"][0]["id"].as_str().unwrap().to_owned();
    let mut args = vec![
        "approvals",
        "reject",
        other.as_str(),
        "--reason",
        "a duplicate",
    ];
    args.extend(srv("carol-t"));
    let (code, out, err) = meshctl(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("rejected by carol: a duplicate"), "{out}");
}
