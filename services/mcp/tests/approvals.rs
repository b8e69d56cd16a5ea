//! Approvals end to end over gRPC against kube-sim: the approval policy holds writes back, a
//! request collects approvals one by one under each approver's identity, the last one applies
//! the change as the requester with every approver in the audit trail; refusals change nothing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use mcp_harness::McpHarness;
use mesh_mcp::apply::Applier;
use mesh_policy::approval::ApprovalPolicy;
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use tonic::{Code, Request, transport::Channel};

mod common;
use common::BOOKS_POLICY;

const MCP_TOKENS: &str = "alice-t,alice,u1,\"mesh-admins\"\n\
bob-t,bob,u2,\"mesh-admins\"\n\
carol-t,carol,u3,\"mesh-admins\"\n\
dave-t,dave,u4,\"mesh-admins\"\n\
erin-t,erin,u5,\"mesh-admins,sre-oncall\"\n\
copilot-t,copilot,u6,\"mesh-admins\"\n\
bot-t,system:serviceaccount:linkerd-mcp:chatbot,u7\n";

/// booksapp needs bob and carol, and agents only propose there; emojivoto needs nobody but is
/// frozen (for this century) except for sre-oncall.
const POLICY: &str = r#"
version: 1
default:
  approvals: 1
  approvers: { groups: [mesh-admins] }
  ttl: 5m
namespaces:
  booksapp:
    approvals: 2
    approvers: { users: [bob, carol, erin] }
    agents_propose_only: true
  emojivoto:
    approvals: 0
    freezes: [{ from: "2000-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z", override_groups: [sre-oncall] }]
agents: { users: [copilot] }
"#;

/// Seconds added to the wall clock: how a test lets a request expire without waiting.
static SKEW: AtomicU64 = AtomicU64::new(0);

struct Skewed;

impl mesh_model::Clock for Skewed {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(SKEW.load(Ordering::SeqCst))
    }
}

fn with_policy(a: Applier) -> Applier {
    let policy = ApprovalPolicy::parse(POLICY).unwrap();
    a.with_approval_policy(
        tokio::sync::watch::channel(Arc::new(policy)).1,
        Arc::new(Skewed),
    )
}

struct Env {
    h: McpHarness,
    client: MeshServiceClient<Channel>,
}

async fn start() -> Env {
    let (h, client) = common::start_booksapp(MCP_TOKENS, &["mesh-admins"], with_policy).await;
    Env { h, client }
}

fn with<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(30));
    r
}

fn change(manifest: &str, reason: &str) -> pb::RequestApprovalRequest {
    pb::RequestApprovalRequest {
        kind: pb::ChangeKind::AuthorizationPolicy.into(),
        change: Some(pb::ApplyRequest {
            source: Some(pb::apply_request::Source::Manifest(manifest.into())),
            reason: reason.into(),
            ..Default::default()
        }),
        agent: String::new(),
        front_end: "cli".into(),
    }
}

fn decide(id: &str) -> pb::DecideApprovalRequest {
    pb::DecideApprovalRequest {
        id: id.into(),
        front_end: "cli".into(),
        ..Default::default()
    }
}

fn api(env: &Env, ns: &str, kind: &str, version: &str) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(
        kube::Client::try_from(env.h.kube.kube_config("admin-token")).unwrap(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("policy.linkerd.io", version, kind)),
    )
}

/// How many objects kube-sim holds and its newest resourceVersion: unchanged means nothing
/// was written.
async fn written(env: &Env) -> Option<DynamicObject> {
    api(env, "booksapp", "AuthorizationPolicy", "v1alpha1")
        .get_opt("books-policy")
        .await
        .unwrap()
}

async fn refused(env: &mut Env, token: &str, id: &str, code: Code, says: &str) {
    let e = env
        .client
        .approve(with(token, decide(id)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "{token}: {e:?}");
    assert!(e.message().contains(says), "{token}: {:?}", e.message());
}

#[tokio::test]
async fn two_people_approve_and_the_change_is_made_as_the_requester_with_both_recorded() {
    let mut env = start().await;
    let mut watch = env
        .client
        .watch_approvals(with("dave-t", pb::WatchApprovalsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // A direct write is held back with the rule that wants approvals.
    let direct = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(BOOKS_POLICY.into())),
        ..Default::default()
    };
    let e = env
        .client
        .apply_authorization_policy(with("alice-t", direct))
        .await
        .unwrap_err();
    assert!(mesh_proto::needs_approval(&e), "{e:?}");
    assert!(
        e.message()
            .contains("namespaces.booksapp wants 2 approval(s)"),
        "{}",
        e.message()
    );
    assert!(written(&env).await.is_none());

    // Asked for: dry-run as alice, pending, needing two.
    let ap = env
        .client
        .request_approval(with("alice-t", change(BOOKS_POLICY, "lock books down")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ap.state(), pb::ApprovalState::Pending);
    assert_eq!((ap.needed, ap.rule.as_str()), (2, "namespaces.booksapp"));
    assert_eq!(ap.requested_by, "alice");
    assert_eq!(ap.reason, "lock books down");
    assert_eq!(ap.objects.len(), 3);
    assert!(ap.objects.iter().all(|o| o.action == "would create"));
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (first.id.as_str(), first.approvals.len()),
        (ap.id.as_str(), 0)
    );

    // Refusals, nothing written: alice herself, someone not listed, a delegator's forged
    // approver field.
    refused(
        &mut env,
        "alice-t",
        &ap.id,
        Code::PermissionDenied,
        "alice requested this change",
    )
    .await;
    refused(
        &mut env,
        "dave-t",
        &ap.id,
        Code::PermissionDenied,
        "dave is not an approver under namespaces.booksapp",
    )
    .await;
    let e = env
        .client
        .request_approval(with("alice-t", {
            let mut c = change(BOOKS_POLICY, "");
            c.change.as_mut().unwrap().approved_by = "bob".into();
            c
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // bob: one of two; bob again is refused.
    let one = env
        .client
        .approve(with("bob-t", decide(&ap.id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.state(), pb::ApprovalState::Pending);
    assert_eq!(
        one.approvals
            .iter()
            .map(|v| v.user.as_str())
            .collect::<Vec<_>>(),
        ["bob"]
    );
    refused(
        &mut env,
        "bob-t",
        &ap.id,
        Code::PermissionDenied,
        "bob has approved this change already",
    )
    .await;
    assert!(written(&env).await.is_none());
    let seen = watch.message().await.unwrap().unwrap();
    assert_eq!(seen.approvals.len(), 1);

    // carol, through the chatbot acting for her: the second approval applies it as alice.
    let done = env
        .client
        .approve(with(
            "bot-t",
            pb::DecideApprovalRequest {
                on_behalf_of: Some(pb::Identity {
                    user: "carol".into(),
                    groups: vec!["mesh-admins".into()],
                }),
                front_end: "chat".into(),
                ..decide(&ap.id)
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state(), pb::ApprovalState::Applied, "{}", done.outcome);
    assert!(!done.audit_id.is_empty());
    let policy = written(&env).await.unwrap();
    let a = policy.metadata.annotations.unwrap();
    assert_eq!(a["linkerd-mcp.io/approved-by"], "bob,carol");
    assert_eq!(a["linkerd-mcp.io/requested-by"], "alice");
    assert_eq!(a["linkerd-mcp.io/acted-as"], "alice");
    assert_eq!(a["linkerd-mcp.io/approval-id"], ap.id);
    assert_eq!(a["linkerd-mcp.io/approval-rule"], "namespaces.booksapp");
    assert_eq!(a["linkerd-mcp.io/reason"], "lock books down");
    assert_eq!(a["linkerd-mcp.io/audit-id"], done.audit_id);
    let events = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(
        kube::Client::try_from(env.h.kube.kube_config("admin-token")).unwrap(),
        "booksapp",
    )
    .list(&Default::default())
    .await
    .unwrap();
    let msg = events
        .items
        .iter()
        .find(|e| e.involved_object.name.as_deref() == Some("books-policy"))
        .and_then(|e| e.message.clone())
        .unwrap();
    assert!(
        msg.contains("as alice")
            && msg.contains("approved by bob, carol under namespaces.booksapp")
            && msg.contains(&done.audit_id),
        "{msg}"
    );

    // The watch saw it through to the outcome; the list and a get agree.
    let mut last = watch.message().await.unwrap().unwrap();
    while last.state() != pb::ApprovalState::Applied {
        last = watch.message().await.unwrap().unwrap();
    }
    assert_eq!(last.audit_id, done.audit_id);
    let got = env
        .client
        .get_approval(with("dave-t", pb::GetApprovalRequest { id: ap.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            got.state(),
            got.approvals.len(),
            got.approvals[1].front_end.as_str()
        ),
        (pb::ApprovalState::Applied, 2, "chat")
    );
    let list = env
        .client
        .list_approvals(with(
            "dave-t",
            pb::ListApprovalsRequest {
                states: vec![pb::ApprovalState::Applied.into()],
                namespace: "booksapp".into(),
                limit: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.approvals.len(), 1);
    // Decided: a late click changes nothing.
    refused(
        &mut env,
        "erin-t",
        &ap.id,
        Code::FailedPrecondition,
        "applied already",
    )
    .await;
}

#[tokio::test]
async fn agents_freezes_and_deadlines_refuse_with_nothing_written() {
    let mut env = start().await;
    // The agent (an identity the policy lists) proposes; it may not apply directly, even where
    // people could (default rule: one approval), nor approve anything.
    let e = env
        .client
        .apply_authorization_policy(with(
            "copilot-t",
            pb::ApplyRequest {
                source: Some(pb::apply_request::Source::Manifest(BOOKS_POLICY.into())),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("made by an agent"), "{}", e.message());
    let ap = env
        .client
        .request_approval(with("copilot-t", change(BOOKS_POLICY, "least privilege")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ap.agent, "copilot");
    refused(
        &mut env,
        "copilot-t",
        &ap.id,
        Code::PermissionDenied,
        "copilot requested this change",
    )
    .await;

    // Past its deadline nobody can approve it.
    SKEW.store(600, Ordering::SeqCst);
    refused(
        &mut env,
        "bob-t",
        &ap.id,
        Code::FailedPrecondition,
        "expired",
    )
    .await;
    let got = env
        .client
        .get_approval(with("bob-t", pb::GetApprovalRequest { id: ap.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state(), pb::ApprovalState::Expired);
    SKEW.store(0, Ordering::SeqCst);
    assert!(written(&env).await.is_none());

    // emojivoto is frozen: a direct write needs an approval, which only sre-oncall may give.
    let emoji = BOOKS_POLICY
        .replace("booksapp", "emojivoto")
        .replace("app: books", "app: web-svc");
    let e = env
        .client
        .apply_authorization_policy(with(
            "alice-t",
            pb::ApplyRequest {
                source: Some(pb::apply_request::Source::Manifest(emoji.clone())),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(mesh_proto::needs_approval(&e), "{e:?}");
    let ap = env
        .client
        .request_approval(with("alice-t", change(&emoji, "")))
        .await
        .unwrap()
        .into_inner();
    refused(
        &mut env,
        "bob-t",
        &ap.id,
        Code::PermissionDenied,
        "freezes changes until 2100-01-01T00:00:00Z; only members of sre-oncall",
    )
    .await;
    // The requester withdraws it; then nothing more can happen to it.
    let gone = env
        .client
        .reject(with(
            "alice-t",
            pb::DecideApprovalRequest {
                reason: "wrong selector".into(),
                ..decide(&ap.id)
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            gone.state(),
            gone.rejected_by.as_str(),
            gone.rejection_reason.as_str()
        ),
        (pb::ApprovalState::Rejected, "alice", "wrong selector")
    );
    refused(
        &mut env,
        "erin-t",
        &ap.id,
        Code::FailedPrecondition,
        "rejected already",
    )
    .await;
    assert!(
        api(&env, "emojivoto", "AuthorizationPolicy", "v1alpha1")
            .get_opt("books-policy")
            .await
            .unwrap()
            .is_none()
    );
}
