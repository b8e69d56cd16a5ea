//! The zero-trust rollout from chat: alice starts it in Slack, every applying step is dry-run as
//! her and approved by bob, the rollout card is redrawn as the gate's evidence changes, a new
//! caller blocks enforcing until it is re-proposed, the bot restarts mid-observation without
//! losing anything, and on Discord the same rollout is shown, kept current and rolled back.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::time::Duration;

use chatsim::{Call, DiscordSender};
use common::{World, discord_buttons, discord_text, escape_slack, slack_buttons, slack_text};
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// emojivoto's published policy, removed so the namespace starts with none.
const SEEDED: [(&str, &str, &str); 5] = [
    ("Server", "v1beta3", "emoji-grpc"),
    ("Server", "v1beta3", "voting-grpc"),
    ("Server", "v1beta3", "web-http"),
    ("ServerAuthorization", "v1beta1", "internal-grpc"),
    ("ServerAuthorization", "v1beta1", "web-public"),
];

fn has(text: &str, want: &str) -> bool {
    text.contains(want)
        || text.contains(&escape_slack(want))
        || text.contains(&common::escape_discord(want))
}

/// Republishes `t` until the served edge `from -> to` has `want` as its decision (the harness
/// joins the cluster as its watch sees it, which follows each apply within moments).
async fn publish_until(
    w: &World,
    t: &meshsim::Topology,
    from: &str,
    to: &str,
    want: pb::policy_verdict::Decision,
) {
    publish_until_verdict(w, t, from, to, |v| v.decision() == want).await;
}

/// Republishes `t` until the served edge `from -> to` has a verdict that satisfies `check`.
async fn publish_until_verdict(
    w: &World,
    t: &meshsim::Topology,
    from: &str,
    to: &str,
    check: impl Fn(&pb::PolicyVerdict) -> bool,
) {
    let check = &check;
    let addr = format!("http://{}", w.mcp.addr);
    let got = mesh_testkit::poll(WAIT, Duration::from_millis(300), || {
        let addr = addr.clone();
        async move {
            w.publish_topology(t).await;
            let mut c = MeshServiceClient::connect(addr).await.ok()?;
            let mut r = tonic::Request::new(pb::GetMeshGraphRequest::default());
            r.metadata_mut()
                .insert("authorization", "Bearer bot-t".parse().unwrap());
            let g = c.get_mesh_graph(r).await.ok()?.into_inner();
            g.edges
                .iter()
                .any(|e| {
                    e.src.as_ref().is_some_and(|s| s.name == from)
                        && e.dst.as_ref().is_some_and(|d| d.name == to)
                        && check(&e.policy.clone().unwrap_or_default())
                })
                .then_some(())
        }
    })
    .await;
    assert!(
        got.is_some(),
        "{from} -> {to} never got the verdict waited for"
    );
}

/// The first Slack call after `after` that satisfies `check`, within `limit`.
async fn slack_call(
    w: &World,
    after: u64,
    limit: Duration,
    what: &str,
    check: impl Fn(&Call) -> bool,
) -> Call {
    w.stand_in
        .wait_for(after, limit, check)
        .await
        .unwrap_or_else(|| panic!("never: {what}; bot log:\n{}", w.log("bot")))
}

/// The rollout card (message `ts`) redrawn with `want`.
async fn card_shows(w: &World, after: u64, ts: &str, want: &str) -> Call {
    let (ts, want) = (ts.to_owned(), want.to_owned());
    slack_call(
        w,
        after,
        Duration::from_secs(90),
        &format!("the card shows {want:?}"),
        move |c| {
            c.slack_method() == Some("chat.update")
                && c.json
                    .as_ref()
                    .is_some_and(|v| v["ts"] == ts.as_str() && has(&slack_text(v), &want))
        },
    )
    .await
}

/// A step clicked by alice on the rollout card, its approval card, and bob's approval.
async fn approved_step(w: &World, bot: &common::Bot, card_ts: &str, step: &str, id: &str) -> Call {
    let after =
        common::send_slack_click(w, bot, "U0ALICE", card_ts, &format!("rollout-{step}"), id).await;
    let card = slack_call(w, after, WAIT, "an approval card", |c| {
        matches!(
            c.slack_method(),
            Some("chat.postMessage" | "chat.postEphemeral")
        )
    })
    .await;
    let v = card.json.clone().unwrap();
    assert_eq!(
        card.slack_method(),
        Some("chat.postMessage"),
        "{}",
        slack_text(&v)
    );
    let t = slack_text(&v);
    assert!(
        has(&t, &format!("Approval needed: rollout {id} ({step}:")),
        "{t}"
    );
    let buttons = slack_buttons(&v);
    assert_eq!(buttons[0].0, "approve", "{buttons:?}");
    let after =
        common::send_slack_click(w, bot, "U0BOB", &card.ts(), "approve", &buttons[0].1).await;
    let done = slack_call(w, after, WAIT, "the approval's outcome", |c| {
        matches!(c.slack_method(), Some("chat.update" | "chat.postEphemeral"))
    })
    .await;
    let t = slack_text(done.json.as_ref().unwrap());
    assert!(t.contains("Applied: rollout"), "{t}");
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_runs_from_chat_with_approvals_and_a_live_card() {
    let w = World::start().await;
    for (kind, version, name) in SEEDED {
        w.api(kind, version, "emojivoto")
            .delete(name, &Default::default())
            .await
            .unwrap();
    }
    let mut t = w.topology.clone();
    // The cluster view has lost the published policy: no Server decides web's calls.
    publish_until_verdict(&w, &t, "vote-bot", "web", |v| v.server.is_empty()).await;
    let refresh = ["--rollout-refresh", "1s"];
    let bot = w.bot("bot", &refresh);
    bot.ready().await;

    // alice starts the rollout: a card of its own, with a button per allowed step.
    let after = w.stand_in.last_seq().await;
    let (status, _) = bot
        .slack
        .command(
            "U0ALICE",
            "C0MESH",
            "rollout start emojivoto observe=15s",
            &w.stand_in.response_url("r"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let card = slack_call(&w, after, WAIT, "the rollout card", |c| {
        c.slack_method() == Some("chat.postMessage") || c.path.starts_with("/response/")
    })
    .await;
    assert_eq!(
        card.slack_method(),
        Some("chat.postMessage"),
        "{:?}",
        card.json
    );
    let v = card.json.clone().unwrap();
    let text = slack_text(&v);
    assert!(
        text.contains("Rollout emojivoto-") && text.contains(": proposed"),
        "{text}"
    );
    assert!(
        has(
            &text,
            "emojivoto/web -> emojivoto/voting: 2.00 rps observed (grpc)"
        ),
        "{text}"
    );
    let buttons = slack_buttons(&v);
    assert_eq!(
        buttons.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        [
            "rollout-audit",
            "rollout-repropose",
            "rollout-rollback",
            "rollout-refresh"
        ]
    );
    let id = buttons[0].1.clone();
    let ts = card.ts();

    // Audit: dry-run as alice, approved by bob; the card follows.
    let after = w.stand_in.last_seq().await;
    approved_step(&w, &bot, &ts, "audit", &id).await;
    card_shows(&w, after, &ts, &format!("Rollout {id}: audit")).await;
    let servers = w.api("Server", "v1beta3", "emojivoto");
    let web = servers.get("web-http").await.unwrap();
    assert_eq!(web.data["spec"]["accessPolicy"], "audit");
    let a = web.metadata.annotations.clone().unwrap();
    assert_eq!(
        (
            a["linkerd-mcp.io/acted-as"].as_str(),
            a["linkerd-mcp.io/approved-by"].as_str()
        ),
        ("alice", "bob")
    );

    // A new caller: vote-bot calls emoji. Audit admits it and reports it; the card names it.
    let mut newcomer = t
        .edges
        .iter()
        .find(|e| e.to == "emojivoto/emoji")
        .unwrap()
        .clone();
    newcomer.from = "emojivoto/vote-bot".into();
    newcomer.rps = 2.0;
    t.edges.push(newcomer);
    let after = w.stand_in.last_seq().await;
    publish_until(
        &w,
        &t,
        "vote-bot",
        "emoji",
        pb::policy_verdict::Decision::Audit,
    )
    .await;
    card_shows(&w, after, &ts, "emojivoto/vote-bot -> emojivoto/emoji").await;

    // The bot restarts in the middle of the observation: nothing is lost, the card goes on.
    drop(bot);
    let bot = w.bot("bot", &refresh);
    bot.ready().await;
    let after = common::send_slack_click(&w, &bot, "U0ALICE", &ts, "rollout-enforce", &id).await;
    let refused = slack_call(&w, after, WAIT, "the gate's refusal", |c| {
        c.slack_method() == Some("chat.postEphemeral")
    })
    .await;
    let t_refused = slack_text(refused.json.as_ref().unwrap());
    assert!(t_refused.contains("the gate has not passed"), "{t_refused}");
    assert!(
        has(&t_refused, "emojivoto/vote-bot -> emojivoto/emoji"),
        "{t_refused}"
    );

    // Re-proposed: emoji's clients gain vote-bot; applied in audit after approval; the
    // observation passes and the card says so.
    let after = common::send_slack_click(&w, &bot, "U0ALICE", &ts, "rollout-repropose", &id).await;
    let re = slack_call(&w, after, WAIT, "the re-proposal", |c| {
        c.slack_method() == Some("chat.update")
    })
    .await;
    assert!(
        slack_text(re.json.as_ref().unwrap())
            .contains("changed MeshTLSAuthentication emoji-grpc-observed-clients"),
        "{}",
        slack_text(re.json.as_ref().unwrap())
    );
    approved_step(&w, &bot, &ts, "audit", &id).await;
    let after = w.stand_in.last_seq().await;
    publish_until(
        &w,
        &t,
        "vote-bot",
        "emoji",
        pb::policy_verdict::Decision::Allowed,
    )
    .await;
    card_shows(&w, after, &ts, "ready to enforce").await;

    // Enforced, after approval.
    approved_step(&w, &bot, &ts, "enforce", &id).await;
    assert_eq!(
        servers.get("web-http").await.unwrap().data["spec"]["accessPolicy"],
        "deny"
    );
    publish_until(
        &w,
        &t,
        "vote-bot",
        "emoji",
        pb::policy_verdict::Decision::Allowed,
    )
    .await;

    // Discord: the same rollout's card, kept current, and rolled back through approval.
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot
        .discord
        .send(&DiscordSender::command(
            "1001",
            "900",
            "tok-d1",
            "rollout",
            Some(&id),
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let shown = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.method == "PATCH" && c.path.ends_with("/tok-d1/messages/@original")
        })
        .await
        .expect("the Discord card");
    assert!(shown.refused.is_empty(), "{}", shown.refused);
    let dv = shown.json.clone().unwrap();
    assert!(
        has(&discord_text(&dv), &format!("Rollout {id}: enforced")),
        "{}",
        discord_text(&dv)
    );
    assert!(
        discord_buttons(&dv).contains(&format!("rollout-rollback:{id}")),
        "{:?}",
        discord_buttons(&dv)
    );
    let after = w.stand_in.last_seq().await;
    bot.discord
        .send(&DiscordSender::click(
            "1001",
            "900",
            "tok-d2",
            &format!("rollout-rollback:{id}"),
        ))
        .await
        .unwrap();
    let pending = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.method == "POST" && c.path.ends_with("/tok-d2")
        })
        .await
        .expect("the rollback's approval card");
    let pv = pending.json.clone().unwrap();
    assert!(
        has(
            &discord_text(&pv),
            &format!("Approval needed: rollout {id} (rollback:")
        ),
        "{}",
        discord_text(&pv)
    );
    let approve = discord_buttons(&pv)
        .into_iter()
        .find(|b| b.starts_with("approve:"))
        .unwrap();
    let after = w.stand_in.last_seq().await;
    bot.discord
        .send(&DiscordSender::click("1002", "900", "tok-d3", &approve))
        .await
        .unwrap();
    let done = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.method == "PATCH" && c.path.ends_with("/tok-d3/messages/@original")
        })
        .await
        .expect("the rollback's outcome");
    assert!(
        has(
            &discord_text(done.json.as_ref().unwrap()),
            "Applied: rollout"
        ),
        "{:?}",
        done.json
    );
    assert_eq!(
        servers.get("web-http").await.unwrap().data["spec"]["accessPolicy"],
        "audit"
    );
    // The Discord card is redrawn by the bot (a message of the channel, not the interaction).
    let redrawn = w
        .stand_in
        .wait_for(after, Duration::from_secs(60), |c| {
            c.method == "PATCH"
                && c.path.contains("/channels/900/messages/")
                && c.json
                    .as_ref()
                    .is_some_and(|v| has(&discord_text(v), &format!("Rollout {id}: audit")))
        })
        .await
        .expect("the Discord card was never redrawn");
    assert!(redrawn.refused.is_empty(), "{}", redrawn.refused);
    let _: Value = redrawn.json.unwrap();
}
