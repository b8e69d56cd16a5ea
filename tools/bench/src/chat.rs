//! The chatbot: a Slack command's round trip (signed request in, answer posted to the
//! response URL), an approval's two steps (form -> card, click -> applied card), and the
//! rendering of a card with a long diff; the bot, the mcp service and kube-sim in process, the
//! Slack API a loopback stand-in, the store a real redis-server.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chatsim::{SlackSender, StandIn};
use mesh_chatbot::{
    app::App,
    approvals::Approvals,
    core::{Mcp, Token},
    metrics::Metrics,
    reply::Reply,
    slack::Slack,
};
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use mesh_store::{Backend as Store, RedisStore};

const SECRET: &str = "bench-signing-secret";
const BOT: &str = "system:serviceaccount:linkerd-mcp:chatbot";

pub(crate) fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Polls the stand-in (every 0.2 ms) for the first call after `after` on `path`.
pub(crate) async fn wait(
    s: &StandIn,
    after: u64,
    check: impl Fn(&chatsim::Call) -> bool,
) -> chatsim::Call {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = s
            .calls()
            .await
            .into_iter()
            .rev()
            .find(|c| c.seq > after && check(c))
        {
            return c;
        }
        assert!(Instant::now() < deadline, "no answer from the bot");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

pub(crate) fn manifest(i: usize) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
         metadata: {{name: bench-{i}, namespace: booksapp}}\n\
         spec: {{identities: [webapp.booksapp.serviceaccount.identity.linkerd.cluster.local]}}\n---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: bench-{i}, namespace: booksapp}}\n\
         spec:\n  targetRef: {{group: policy.linkerd.io, kind: Server, name: authors-server}}\n  \
         requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: bench-{i}}}]\n"
    )
}

/// Runs the case; `n` is the number of commands timed.
pub(crate) async fn run(n: usize) {
    let h = mcp_harness::McpHarness::start(mcp_harness::Options {
        kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n".into(),
        extra_seeds: vec!["docs/examples/chatbot-rbac"],
        topology: meshsim::builtin("booksapp").expect("builtin"),
        delegation: mesh_mcp::apply::Delegation {
            delegators: vec![BOT.into()],
            allowed_groups: vec!["devs".into(), "mesh-admins".into()],
        },
        mcp_tokens: format!("bot,{BOT},u\n"),
        heartbeat: Duration::from_secs(60),
        tweak: crate::approvals::one_approver,
        prometheus_url: None,
    })
    .await;
    let mcp_addr = h.addr;

    // The bot, in process, on a real Redis.
    let redis = mesh_testkit::Redis::start().await;
    let stand_in = StandIn::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("ids.yaml");
    std::fs::write(
        &map,
        "users:\n  - {slack: U1, kubernetes: {user: alice, groups: [devs]}}\n  \
         - {slack: U2, kubernetes: {user: bob, groups: [mesh-admins]}}\n\
         approvers: {groups: [mesh-admins]}\n",
    )
    .expect("map");
    let identities = mesh_chatbot::identity::watch_file(map, Duration::from_secs(2)).expect("map");
    let timeout = Duration::from_secs(5);
    let mcp = Mcp::new(&mcp_addr.to_string(), Token::Static("bot".into()), timeout).expect("mcp");
    let store = Store::Redis(Arc::new(
        RedisStore::new(&redis.url, "mesh:", 1, timeout).expect("redis"),
    ));
    let metrics = Metrics::default();
    let app = Arc::new(App {
        slack: Some(
            Slack::new(SECRET, "xoxb-bench", &stand_in.slack_api_url(), timeout).expect("slack"),
        ),
        discord: None,
        mcp: mcp.clone(),
        approvals: Approvals::new(store.clone(), mcp.clone(), identities, metrics.clone()),
        store,
        metrics,
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bot = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, mesh_chatbot::app::router(app)).await });
    let slack = SlackSender::new(&bot, SECRET);

    // The same question straight from the mcp service, for the ratio.
    let mut direct = Vec::new();
    let mut client = MeshServiceClient::connect(format!("http://{mcp_addr}"))
        .await
        .expect("connect");
    for _ in 0..n {
        let mut r = tonic::Request::new(pb::GetMeshGraphRequest {
            workload: "booksapp/books".into(),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", "Bearer bot".parse().expect("header"));
        let start = Instant::now();
        client.get_mesh_graph(r).await.expect("graph");
        direct.push(start.elapsed());
    }

    // Slash command -> answer on the response URL.
    let mut reads = Vec::new();
    for i in 0..n + 5 {
        let after = stand_in.last_seq().await;
        let path = format!("/response/r{i}");
        let start = Instant::now();
        let (status, _) = slack
            .command(
                "U1",
                "C1",
                "who-calls booksapp/books",
                &stand_in.response_url(&format!("r{i}")),
            )
            .await
            .expect("command");
        assert_eq!(status, 200);
        let answer = wait(&stand_in, after, |c| c.path == path).await;
        assert!(answer.refused.is_empty(), "{}", answer.refused);
        if i >= 5 {
            reads.push(start.elapsed());
        }
    }

    // Form -> card (a dry-run as the requester inside); click -> applied card (the apply).
    let runs = n.min(40);
    let (mut cards, mut applies) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let after = stand_in.last_seq().await;
        let start = Instant::now();
        slack
            .interaction(&SlackSender::form_submission(
                "U1",
                "C1",
                "authz",
                &manifest(i),
                "bench",
            ))
            .await
            .expect("form");
        let card = wait(&stand_in, after, |c| {
            c.slack_method() == Some("chat.postMessage")
        })
        .await;
        cards.push(start.elapsed());
        let v = card.json.expect("card");
        let id = v["blocks"]
            .as_array()
            .and_then(|b| {
                b.iter()
                    .find_map(|b| b["elements"][0]["value"].as_str().map(str::to_owned))
            })
            .expect("approve button");
        let after = stand_in.last_seq().await;
        let start = Instant::now();
        slack
            .interaction(&SlackSender::click(
                "U2",
                "C1",
                "1700000000.000001",
                "approve",
                &id,
                &stand_in.response_url("c"),
            ))
            .await
            .expect("click");
        let done = wait(&stand_in, after, |c| {
            c.slack_method() == Some("chat.update")
        })
        .await;
        assert!(
            done.json.expect("update")["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Applied")
        );
        applies.push(start.elapsed());
    }

    // Rendering a card with a 200-line diff for both platforms.
    let diff: String = (0..200)
        .map(|i| {
            format!("-    - client-{i:03}.booksapp.serviceaccount.identity.linkerd.cluster.local\n")
        })
        .collect();
    let card = Reply::new("Approval needed: AuthorizationPolicy booksapp/x")
        .field("Requested by", "alice (Slack U1)")
        .text("What-if: observed edges whose decision changes")
        .code(diff, "diff.txt");
    let (mut rs, mut rd) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let t = Instant::now();
        std::hint::black_box(mesh_chatbot::reply::slack(&card));
        rs.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(mesh_chatbot::reply::discord(&card));
        rd.push(t.elapsed());
    }

    let (read_p50, direct_p50) = (pct(reads.clone(), 0.5), pct(direct, 0.5));
    println!(
        "slack_command_p50_ms={read_p50:.2} slack_command_p99_ms={:.2} mcp_direct_p50_ms={direct_p50:.2} \
         bot_over_direct={:.1}x form_to_card_p50_ms={:.2} click_to_applied_p50_ms={:.2} \
         click_to_applied_p99_ms={:.2} render_slack_200_line_diff_us={:.0} render_discord_200_line_diff_us={:.0}",
        pct(reads, 0.99),
        read_p50 / direct_p50,
        pct(cards, 0.5),
        pct(applies.clone(), 0.5),
        pct(applies, 0.99),
        pct(rs, 0.5) * 1000.0,
        pct(rd, 0.5) * 1000.0,
    );
}
