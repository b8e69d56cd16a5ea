//! Agents propose, people approve, across front ends: an agent (the official MCP Python SDK,
//! over streamable HTTP as alice) plans a policy where agents only propose and two approvers
//! are needed; `apply_plan` returns an approval request; its card appears in Slack (the
//! stand-in) through a real `mesh-chatbot`; bob approves there; carol approves with `meshctl
//! approvals approve`; the change is applied as alice with both recorded, and the agent reads
//! the outcome with `get_approval`.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{sync::Arc, time::Duration};

use clap::Parser as _;
use mesh_mcp::apply::Applier;
use mesh_policy::approval::ApprovalPolicy;
use serde_json::json;

mod common;
use common::{VOTING_POLICY, World, send_slack_click, slack_buttons, slack_text};

const WAIT: Duration = Duration::from_secs(20);

/// Agents only propose in emojivoto, where bob and carol must both approve.
const POLICY: &str = r"
version: 1
default:
  approvals: 1
  approvers: { groups: [mesh-admins] }
namespaces:
  emojivoto:
    approvals: 2
    approvers: { users: [bob, carol] }
    agents_propose_only: true
";

fn with_policy(a: Applier) -> Applier {
    a.with_approval_policy(
        tokio::sync::watch::channel(Arc::new(ApprovalPolicy::parse(POLICY).unwrap())).1,
        Arc::new(mesh_model::SystemClock),
    )
}

/// `meshctl` as a person at a terminal runs it.
async fn meshctl(args: &[&str]) -> Result<(), String> {
    let args =
        meshctl::Args::try_parse_from(std::iter::once("meshctl").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
    meshctl::run(args).await.map_err(|f| f.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_change_reaches_chat_and_is_applied_once_two_people_approve() {
    let w = World::start_tweaked(
        with_policy,
        "alice-t,alice,u1,\"devs\"\ncarol-t,carol,u2,\"devs\"\nbob-t,bob,u4,\"mesh-admins\"\n",
    )
    .await;
    let bot = w.bot("b1", &["--approval-channel", "slack:C0MESH"]);
    bot.ready().await;
    let policies = w.api("AuthorizationPolicy", "v1alpha1", "emojivoto");
    let after = w.stand_in.last_seq().await;

    // The agent plans and applies as alice: an approval request comes back, nothing applied.
    let out = mesh_testkit::python_mcp_client(&json!({
        "http": w.mcp.mcp_url,
        "token": "alice-t",
        "calls": [
            ["plan_authorization_policy", {"manifest": VOTING_POLICY}],
            ["apply_plan", {"plan_id": "$plan_id", "reason": "only web may call voting"}],
        ],
    }))
    .await;
    let applied = &out["calls"][1];
    assert_eq!(applied["is_error"], false, "{applied}");
    let ap = &applied["structured"]["approval"];
    assert_eq!(ap["state"], "pending", "{applied}");
    assert_eq!(
        (ap["needed"].as_u64(), ap["on_behalf_of"].as_str()),
        (Some(2), Some("alice"))
    );
    assert_eq!(ap["reason"], "only web may call voting");
    let agent_name = ap["agent"].as_str().unwrap().to_owned();
    assert!(!agent_name.is_empty(), "{ap}");
    let id = ap["id"].as_str().unwrap().to_owned();
    assert!(policies.get_opt("voting-policy").await.unwrap().is_none());

    // Its card reaches the namespace's channel: who proposed it for whom, why, 0 of 2.
    let posted = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.postMessage")
                && c.json
                    .as_ref()
                    .is_some_and(|v| slack_buttons(v).iter().any(|(_, v)| *v == id))
        })
        .await
        .unwrap_or_else(|| panic!("no card for {id}; bot log:\n{}", w.log("b1")));
    let v = posted.json.clone().unwrap();
    assert_eq!(v["channel"], "C0MESH");
    let t = slack_text(&v);
    for want in [
        "Approval needed: AuthorizationPolicy emojivoto/voting-policy",
        &format!("proposed by {agent_name} for alice"),
        "only web may call voting",
        "0 of 2",
        "namespaces.emojivoto",
    ] {
        assert!(t.contains(want), "want {want:?} in\n{t}");
    }
    let ts = posted.ts();

    // alice approving her agent's request is refused privately; the card stays.
    let before = send_slack_click(&w, &bot, "U0ALICE", &ts, "approve", &id).await;
    let c = w
        .stand_in
        .wait_for(before, WAIT, |c| {
            c.slack_method() == Some("chat.postEphemeral")
        })
        .await
        .unwrap();
    let refusal = slack_text(c.json.as_ref().unwrap());
    assert!(refusal.contains("alice requested this change"), "{refusal}");

    // bob approves in Slack: one of two, the card says so, nothing applied yet.
    let before = send_slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    let c = w
        .stand_in
        .wait_for(before, WAIT, |c| c.slack_method() == Some("chat.update"))
        .await
        .unwrap();
    let t = slack_text(c.json.as_ref().unwrap());
    assert!(t.contains("1 of 2: bob"), "{t}");
    assert!(policies.get_opt("voting-policy").await.unwrap().is_none());

    // bob again: refused (a second approver is needed).
    let e = meshctl(&[
        "approvals",
        "approve",
        &id,
        "--server",
        &w.mcp.addr.to_string(),
        "--token",
        "bob-t",
    ])
    .await
    .unwrap_err();
    assert!(e.contains("bob has approved this change already"), "{e}");

    // carol approves from the command line: the change is applied as alice.
    let before = w.stand_in.last_seq().await;
    meshctl(&[
        "approvals",
        "approve",
        &id,
        "--server",
        &w.mcp.addr.to_string(),
        "--token",
        "carol-t",
    ])
    .await
    .unwrap();
    let p = policies.get("voting-policy").await.unwrap();
    let a = p.metadata.annotations.clone().unwrap();
    assert_eq!(a["linkerd-mcp.io/acted-as"], "alice");
    assert_eq!(a["linkerd-mcp.io/requested-by"], "alice");
    assert_eq!(a["linkerd-mcp.io/approved-by"], "bob,carol");
    assert_eq!(a["linkerd-mcp.io/proposed-by"], agent_name);
    assert_eq!(a["linkerd-mcp.io/reason"], "only web may call voting");
    let audit = a["linkerd-mcp.io/audit-id"].clone();

    // The Slack card follows the approval made elsewhere.
    let redrawn = w
        .stand_in
        .wait_for(before, WAIT, |c| {
            c.slack_method() == Some("chat.update")
                && c.json
                    .as_ref()
                    .is_some_and(|v| slack_text(v).contains("Applied: AuthorizationPolicy"))
        })
        .await
        .unwrap_or_else(|| panic!("the card was not redrawn; bot log:\n{}", w.log("b1")));
    let t = slack_text(redrawn.json.as_ref().unwrap());
    assert!(
        t.contains("2 of 2: bob, carol") && t.contains(&audit),
        "{t}"
    );
    assert!(slack_buttons(redrawn.json.as_ref().unwrap()).is_empty());

    // The agent reads the outcome.
    let out = mesh_testkit::python_mcp_client(&json!({
        "http": w.mcp.mcp_url,
        "token": "alice-t",
        "calls": [["get_approval", {"id": id}]],
    }))
    .await;
    let got = &out["calls"][0]["structured"]["approval"];
    assert_eq!(got["state"], "applied", "{got}");
    assert_eq!(got["audit_id"], audit.as_str());
    assert_eq!(got["approved_by"], json!(["bob", "carol"]));
}
