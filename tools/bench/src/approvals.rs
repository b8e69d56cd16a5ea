//! Approvals across front ends: an agent's request (gRPC `RequestApproval`, named as an agent)
//! until its card is in Slack, posted by the bot's approval watcher; and the last approval
//! (gRPC `Approve`, as from `meshctl approvals approve`) until that card is redrawn as applied.
//! The mcp service and kube-sim in process, the bot in process on a real redis-server, Slack a
//! loopback stand-in.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chatsim::StandIn;
use mesh_chatbot::{
    app::App,
    approvals::Approvals,
    core::{Mcp, Token},
    metrics::Metrics,
    slack::Slack,
};
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use mesh_store::{Backend as Store, RedisStore};

use crate::chat::{manifest, pct, wait};

const BOT: &str = "system:serviceaccount:linkerd-mcp:chatbot";

/// One approval by a mesh-admin everywhere; agents only propose.
const POLICY: &str = "version: 1
default:
  approvals: 1
  approvers: { groups: [mesh-admins] }
  agents_propose_only: true
";

/// The bench's approval policy on mesh-mcp's pipeline.
pub(crate) fn one_approver(a: mesh_mcp::apply::Applier) -> mesh_mcp::apply::Applier {
    let policy = mesh_policy::approval::ApprovalPolicy::parse(POLICY).expect("the bench policy");
    a.with_approval_policy(
        tokio::sync::watch::channel(Arc::new(policy)).1,
        Arc::new(mesh_model::SystemClock),
    )
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

/// Runs the case; `n` is the number of requests timed.
pub(crate) async fn run(n: usize) {
    let h = mcp_harness::McpHarness::start(mcp_harness::Options {
        kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n".into(),
        extra_seeds: vec!["docs/examples/chatbot-rbac"],
        topology: meshsim::builtin("booksapp").expect("builtin"),
        delegation: mesh_mcp::apply::Delegation {
            delegators: vec![BOT.into()],
            allowed_groups: vec!["devs".into(), "mesh-admins".into()],
        },
        mcp_tokens: format!("bot,{BOT},u\nalice,alice,u1,\"devs\"\nbob,bob,u2,\"mesh-admins\"\n"),
        heartbeat: Duration::from_secs(60),
        tweak: one_approver,
        prometheus_url: None,
    })
    .await;
    let redis = mesh_testkit::Redis::start().await;
    let stand_in = StandIn::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("ids.yaml");
    std::fs::write(
        &map,
        "users:\n  - {slack: U2, kubernetes: {user: bob, groups: [mesh-admins]}}\n",
    )
    .expect("map");
    let identities = mesh_chatbot::identity::watch_file(map, Duration::from_secs(2)).expect("map");
    let timeout = Duration::from_secs(5);
    let mcp = Mcp::new(&h.addr.to_string(), Token::Static("bot".into()), timeout).expect("mcp");
    let store = Store::Redis(Arc::new(
        RedisStore::new(&redis.url, "mesh:", 1, timeout).expect("redis"),
    ));
    let metrics = Metrics::default();
    let app = Arc::new(App {
        slack: Some(
            Slack::new("bench", "xoxb-bench", &stand_in.slack_api_url(), timeout).expect("slack"),
        ),
        discord: None,
        mcp: mcp.clone(),
        approvals: Approvals::new(store.clone(), mcp, identities, metrics.clone()),
        store,
        metrics,
    });
    // This replica leads: it posts and redraws the cards.
    let channels = mesh_chatbot::requests::Channels::parse(&["slack:C1".into()]).expect("channel");
    tokio::spawn(mesh_chatbot::requests::keep_cards(
        app,
        tokio::sync::watch::channel(true).1,
        channels,
    ));
    let mut client = MeshServiceClient::connect(format!("http://{}", h.addr))
        .await
        .expect("connect");

    let (mut to_card, mut to_applied) = (Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let after = stand_in.last_seq().await;
        let start = Instant::now();
        let mut r = authed(
            pb::RequestApprovalRequest {
                kind: pb::ChangeKind::AuthorizationPolicy.into(),
                change: Some(pb::ApplyRequest {
                    source: Some(pb::apply_request::Source::Manifest(manifest(i))),
                    reason: "bench".into(),
                    ..Default::default()
                }),
                agent: String::new(),
                front_end: "mcp".into(),
            },
            "alice",
        );
        r.metadata_mut().insert(
            mesh_mcp::AGENT_HEADER,
            "bench-agent".parse().expect("header"),
        );
        let id = client
            .request_approval(r)
            .await
            .expect("request")
            .into_inner()
            .id;
        let card = wait(&stand_in, after, |c| {
            c.slack_method() == Some("chat.postMessage")
                && c.json.as_ref().is_some_and(|v| v.to_string().contains(&id))
        })
        .await;
        let card_time = start.elapsed();
        let after = card.seq;
        let start = Instant::now();
        let done = client
            .approve(authed(
                pb::DecideApprovalRequest {
                    id: id.clone(),
                    front_end: "cli".into(),
                    ..Default::default()
                },
                "bob",
            ))
            .await
            .expect("approve")
            .into_inner();
        assert_eq!(done.state(), pb::ApprovalState::Applied, "{}", done.outcome);
        wait(&stand_in, after, |c| {
            c.slack_method() == Some("chat.update")
                && c.json.as_ref().is_some_and(|v| {
                    v["text"].as_str().is_some_and(|t| t.starts_with("Applied"))
                        && v.to_string().contains(&id)
                })
        })
        .await;
        // The first few warm connections and caches up.
        if i >= 3 {
            to_card.push(card_time);
            to_applied.push(start.elapsed());
        }
    }
    println!(
        "request_to_card_p50_ms={:.2} request_to_card_p99_ms={:.2} \
         last_approval_to_applied_card_p50_ms={:.2} last_approval_to_applied_card_p99_ms={:.2}",
        pct(to_card.clone(), 0.5),
        pct(to_card, 0.99),
        pct(to_applied.clone(), 0.5),
        pct(to_applied, 0.99),
    );
}
