//! mesh-chatbot end to end: signed requests from the Slack and Discord senders, the real bot
//! process, the mcp service over gRPC, kube-sim, Redis, and the stand-in recording (and
//! checking against the platforms' limits) every call the bot makes.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::time::Duration;

use chatsim::{Call, DiscordSender, SlackSender};
use common::{VOTING_POLICY, World, discord_buttons, discord_text, slack_buttons, slack_text};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Sends `/mesh <text>` from Slack user `user`; returns the immediate body (if any) and the
/// follow-up posted to the response URL (if any).
async fn slack_command(
    w: &World,
    bot: &common::Bot,
    user: &str,
    text: &str,
) -> (Value, Option<Call>) {
    let after = w.stand_in.last_seq().await;
    let name = format!("r{after}");
    let (status, body) = bot
        .slack
        .command(user, "C0MESH", text, &w.stand_in.response_url(&name))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}: {body}");
    if !body.trim().is_empty() {
        return (serde_json::from_str(&body).unwrap(), None);
    }
    let path = format!("/response/{name}");
    let call = w.stand_in.wait_for(after, WAIT, |c| c.path == path).await;
    (
        Value::Null,
        Some(call.unwrap_or_else(|| panic!("{text}: no answer"))),
    )
}

/// Sends a Discord interaction, checks the immediate response type (5: deferred message, 6:
/// deferred update), and returns the edit of `@original` that follows: the answer, the card,
/// or the redrawn card. The stand-in refuses what Discord would.
async fn discord_deferred(w: &World, bot: &common::Bot, i: &Value, want: u8) -> Call {
    let token = i["token"].as_str().unwrap().to_owned();
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot.discord.send(i).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["type"],
        want,
        "{body}"
    );
    let path = format!(
        "/api/v10/webhooks/{}/{token}/messages/@original",
        common::DISCORD_APP
    );
    let call = w
        .stand_in
        .wait_for(after, WAIT, |c| c.path == path && c.method == "PATCH")
        .await
        .unwrap_or_else(|| panic!("no answer to {i}; bot log:\n{}", w.log("bot")));
    assert!(
        call.refused.is_empty(),
        "Discord would refuse: {}",
        call.refused
    );
    call
}

/// The structure Slack accepts, checked with slack-morphism's own models too.
fn assert_block_kit(v: &Value) {
    chatsim::check_slack_blocks(v).unwrap();
    let _: slack_morphism::SlackMessageContent = serde_json::from_value(v.clone()).unwrap();
    assert!(v["blocks"][0]["type"] == "header", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_answered_on_both_platforms_from_the_mcp_service() {
    let w = World::start().await;
    let bot = w.bot("bot", &[]);
    bot.ready().await;
    let cases: &[(&str, &str)] = &[
        ("graph", "Call graph of the mesh"),
        ("graph emojivoto", "Call graph of namespace emojivoto"),
        ("edges emojivoto/web", "emojivoto/vote-bot"),
        ("who-calls emojivoto/emoji", "emojivoto/web"),
        ("routes emojivoto/web", "[default grpc]"),
        ("lockdown emojivoto", "Least-privilege policy for emojivoto"),
        ("tls", "Edges without mTLS"),
        ("failing 99.9%", "Edges below 100% success"),
        ("explain emojivoto/web emojivoto/voting", "allowed"),
        ("explain emojivoto/vote-bot emojivoto/voting", "denied"),
        ("policy emojivoto/voting", "voting-grpc"),
    ];
    for (text, want) in cases {
        let (_, call) = slack_command(&w, &bot, "U0ALICE", text).await;
        let call = call.unwrap();
        assert!(
            call.refused.is_empty(),
            "{text}: Slack would refuse: {}",
            call.refused
        );
        let v = call.json.unwrap();
        assert_block_kit(&v);
        assert_eq!(v["response_type"], "in_channel", "{text}");
        let t = slack_text(&v);
        assert!(t.contains(want), "{text}: want {want:?} in\n{t}");
    }
    // The picture goes up the current way: upload URL, bytes, complete into the channel.
    let png = w
        .stand_in
        .wait_for(0, WAIT, |c| {
            c.path == "/api/files.getUploadURLExternal" && c.query.contains("mesh-graph.png")
        })
        .await
        .expect("graph picture uploaded");
    let bytes = w
        .stand_in
        .wait_for(png.seq, WAIT, |c| c.path.starts_with("/upload/"))
        .await
        .unwrap();
    assert!(bytes.files[0].1 > 1000, "{:?}", bytes.files);
    let done = w
        .stand_in
        .wait_for(png.seq, WAIT, |c| {
            c.slack_method() == Some("files.completeUploadExternal")
        })
        .await
        .unwrap();
    let calls = w.stand_in.calls().await;
    assert_eq!(done.json.as_ref().unwrap()["channel_id"], "C0MESH");
    assert!(
        calls
            .iter()
            .all(|c| c.slack_method() != Some("files.upload")),
        "files.upload is retired"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.path.starts_with("/api/"))
            .all(|c| c.authorization == "Bearer xoxb-test")
    );

    // Help, bad input and unknown users answer at once, only to the asker.
    for (user, text, want) in [
        ("U0ALICE", "help", "/mesh who-calls <ns/workload>"),
        ("U0ALICE", "frobnicate", "`frobnicate` is not a command"),
        ("U0ALICE", "edges web", "is not namespace/name"),
        ("U0ALICE", "edges <!channel>/x", "Kubernetes names"),
        ("U0NOBODY", "graph", "not in the bot's identity map"),
    ] {
        let (v, call) = slack_command(&w, &bot, user, text).await;
        assert!(call.is_none(), "{text}");
        assert_block_kit(&v);
        assert_eq!(v["response_type"], "ephemeral", "{text}");
        let t = slack_text(&v);
        assert!(
            t.contains(want) || t.contains(&common::escape_slack(want)),
            "{text}: {t}"
        );
        assert!(!t.contains("<!channel>"), "mentions are escaped: {t}");
    }

    // Discord: deferred, then the original response edited with the answer.
    for (sub, args, want) in [
        (
            "graph",
            Some("emojivoto"),
            "Call graph of namespace emojivoto",
        ),
        ("who-calls", Some("emojivoto/emoji"), "emojivoto/web"),
        ("tls", None, "Edges without mTLS"),
        (
            "explain",
            Some("emojivoto/vote-bot emojivoto/voting"),
            "denied",
        ),
    ] {
        let token = format!("tok-{sub}");
        let i = DiscordSender::command("1001", "900", &token, sub, args);
        let call = discord_deferred(&w, &bot, &i, 5).await;
        let v = call.json.unwrap();
        assert_eq!(v["allowed_mentions"]["parse"].as_array().unwrap().len(), 0);
        let t = discord_text(&v);
        assert!(
            t.contains(want) || t.contains(&common::escape_discord(want)),
            "{sub}: want {want:?} in\n{t}"
        );
        if sub == "graph" {
            assert_eq!(
                v["embeds"][0]["image"]["url"],
                "attachment://mesh-graph.png"
            );
            assert!(
                call.files
                    .iter()
                    .any(|(n, len)| n == "mesh-graph.png" && *len > 1000)
            );
        }
    }
    for (user, sub, args, want) in [
        ("1001", "help", None, "/mesh failing [threshold]"),
        ("1001", "edges", Some("nope"), "is not namespace/name"),
        ("999", "graph", None, "not in the bot's identity map"),
    ] {
        let (status, body) = bot
            .discord
            .send(&DiscordSender::command(user, "900", "t", sub, args))
            .await
            .unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], 4, "{body}");
        assert_eq!(v["data"]["flags"], 64, "only the asker sees it: {body}");
        chatsim::check_discord_message(&v["data"]).unwrap();
        let t = discord_text(&v["data"]);
        assert!(
            t.contains(want) || t.contains(&common::escape_discord(want)),
            "{body}"
        );
    }

    // Registering the slash command.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-chatbot"))
        .args(["register-commands", "--guild-id", "1300000000000000001"])
        .args([
            "--discord-application-id",
            common::DISCORD_APP,
            "--discord-bot-token",
            "discord-test",
        ])
        .args(["--discord-api-url", &w.stand_in.discord_api_url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reg = w
        .stand_in
        .calls()
        .await
        .into_iter()
        .find(|c| c.method == "PUT" && c.path.ends_with("/guilds/1300000000000000001/commands"))
        .unwrap();
    assert_eq!(reg.authorization, "Bot discord-test");
    let cmd = &reg.json.unwrap()[0];
    assert_eq!(cmd["name"], "mesh");
    let subs: Vec<&str> = cmd["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for s in [
        "graph",
        "edges",
        "who-calls",
        "routes",
        "lockdown",
        "tls",
        "failing",
        "explain",
        "policy",
        "authz",
        "route",
        "alerts",
        "help",
    ] {
        assert!(subs.contains(&s), "{s} missing from {subs:?}");
    }
}

/// `user`'s form with [`VOTING_POLICY`], sent until the bot's answer says `want` (after an
/// identity map change, which the bot picks up within seconds), for at most [`WAIT`].
async fn form_until(w: &World, bot: &common::Bot, user: &str, want: &str) -> Option<Call> {
    mesh_testkit::poll(WAIT, Duration::from_millis(250), || async {
        let c = slack_form(w, bot, user, VOTING_POLICY).await;
        slack_text(c.json.as_ref().unwrap())
            .contains(want)
            .then_some(c)
    })
    .await
}

/// Posts the Slack form as `user`; returns the card (or ephemeral refusal) call.
async fn slack_form(w: &World, bot: &common::Bot, user: &str, manifest: &str) -> Call {
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot
        .slack
        .interaction(&SlackSender::form_submission(
            user,
            "C0MESH",
            "authz",
            manifest,
            "tighten voting",
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    w.stand_in
        .wait_for(after, WAIT, |c| {
            matches!(
                c.slack_method(),
                Some("chat.postMessage" | "chat.postEphemeral")
            )
        })
        .await
        .expect("no card and no refusal")
}

/// Clicks a Slack button as `user`; returns the first chat call it caused.
async fn slack_click(
    w: &World,
    bot: &common::Bot,
    user: &str,
    ts: &str,
    action: &str,
    id: &str,
) -> Call {
    let after = common::send_slack_click(w, bot, user, ts, action, id).await;
    w.stand_in
        .wait_for(after, WAIT, |c| {
            matches!(c.slack_method(), Some("chat.update" | "chat.postEphemeral"))
        })
        .await
        .expect("the click changed nothing visible")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_approval_flow_applies_as_the_requester_once_someone_else_approves() {
    let w = World::start().await;
    let bot = w.bot("bot", &[]);
    bot.ready().await;

    // `/mesh authz apply` opens the form with the command's trigger id.
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot
        .slack
        .command(
            "U0ALICE",
            "C0MESH",
            "authz apply",
            &w.stand_in.response_url("form"),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "acknowledged, the form opens"
    );
    let open = w
        .stand_in
        .wait_for(after, WAIT, |c| c.slack_method() == Some("views.open"))
        .await
        .unwrap();
    let req = open.json.unwrap();
    assert_eq!(
        req["trigger_id"],
        "13345224609.738474920.8088930838d88f008e0"
    );
    assert_eq!(req["view"]["blocks"][0]["element"]["multiline"], true);

    // The submitted form is dry-run as alice, then the card is posted.
    let card = slack_form(&w, &bot, "U0ALICE", VOTING_POLICY).await;
    assert_eq!(card.slack_method(), Some("chat.postMessage"), "{card:?}");
    assert!(card.refused.is_empty(), "{}", card.refused);
    let v = card.json.clone().unwrap();
    assert_block_kit(&v);
    let t = slack_text(&v);
    for want in [
        "Approval needed: AuthorizationPolicy emojivoto/voting-policy",
        "alice",
        "would create",
        "+  targetRef",
    ] {
        assert!(
            t.contains(&common::escape_slack(want)) || t.contains(want),
            "want {want:?} in\n{t}"
        );
    }
    let buttons = slack_buttons(&v);
    assert_eq!(
        buttons.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        ["approve", "reject"]
    );
    let id = buttons[0].1.clone();
    let ts = card.ts();
    let policies = w.api("AuthorizationPolicy", "v1alpha1", "emojivoto");
    assert!(
        policies.get_opt("voting-policy").await.unwrap().is_none(),
        "a dry-run changes nothing"
    );

    // Self-approval and a non-approver are refused privately; nothing is applied.
    for (user, want) in [
        ("U0ALICE", "alice requested this change"),
        ("U0CAROL", "carol is not an approver under default"),
    ] {
        let c = slack_click(&w, &bot, user, &ts, "approve", &id).await;
        assert_eq!(c.slack_method(), Some("chat.postEphemeral"), "{user}");
        assert_eq!(c.json.as_ref().unwrap()["user"], user);
        assert!(
            slack_text(c.json.as_ref().unwrap()).contains(want),
            "{:?}",
            c.json
        );
        assert!(policies.get_opt("voting-policy").await.unwrap().is_none());
    }

    // bob approves: applied as alice, approved by bob; the card says so.
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.update"));
    let v = c.json.unwrap();
    assert_eq!(v["ts"], ts);
    assert_block_kit(&v);
    let t = slack_text(&v);
    assert!(
        t.contains("Applied: AuthorizationPolicy emojivoto/voting-policy"),
        "{t}"
    );
    assert!(slack_buttons(&v).is_empty(), "no buttons on a decided card");
    let p = policies.get("voting-policy").await.unwrap();
    let a = p.metadata.annotations.clone().unwrap();
    assert_eq!(a["linkerd-mcp.io/acted-as"], "alice");
    assert_eq!(a["linkerd-mcp.io/approved-by"], "bob");
    assert_eq!(a["linkerd-mcp.io/requested-by"], common::BOT_SA);
    assert!(
        t.contains(&a["linkerd-mcp.io/audit-id"]),
        "the card names the audit id: {t}"
    );
    let events = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(
        kube::Client::try_from(w.mcp.kube.kube_config("admin-token")).unwrap(),
        "emojivoto",
    )
    .list(&Default::default())
    .await
    .unwrap();
    assert!(events.items.iter().any(|e| {
        e.involved_object.name.as_deref() == Some("voting-policy")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("as alice") && m.contains("approved by bob"))
    }));

    // A second click applies nothing again.
    let rv = p.metadata.resource_version.clone();
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.postEphemeral"));
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("applied already"),
        "{:?}",
        c.json
    );
    assert_eq!(
        policies
            .get("voting-policy")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv
    );

    // A rejected card cannot be approved afterwards.
    let card = slack_form(
        &w,
        &bot,
        "U0CAROL",
        &VOTING_POLICY.replace("voting-policy", "voting-policy-2"),
    )
    .await;
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let ts = card.ts();
    let c = slack_click(&w, &bot, "U0CAROL", &ts, "reject", &id).await;
    assert!(slack_text(c.json.as_ref().unwrap()).contains("Rejected"));
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("rejected already"),
        "{:?}",
        c.json
    );
    assert!(policies.get_opt("voting-policy-2").await.unwrap().is_none());
}

/// 200 identities, which the change below replaces with one: a 200-line diff.
fn crowded_clients() -> String {
    let ids: Vec<String> = (0..200)
        .map(|i| {
            format!("    - client-{i:03}.emojivoto.serviceaccount.identity.linkerd.cluster.local\n")
        })
        .collect();
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
         metadata: {{name: voting-clients, namespace: emojivoto}}\nspec:\n  identities:\n{}---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: voting-policy, namespace: emojivoto}}\nspec:\n  \
         targetRef: {{group: policy.linkerd.io, kind: Server, name: voting-grpc}}\n  \
         requiredAuthenticationRefs:\n    - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}}\n",
        ids.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_approval_flow_with_a_200_line_diff_fits_both_platforms() {
    let w = World::start().await;
    w.apply_as_linkerd_mcp(&crowded_clients()).await;
    let bot = w.bot("bot", &[]);
    bot.ready().await;

    // `/mesh authz apply` answers with the form.
    let (_, body) = bot
        .discord
        .send(&DiscordSender::command(
            "1001",
            "900",
            "t0",
            "authz",
            Some("apply"),
        ))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], 9, "{body}");
    assert_eq!(v["data"]["custom_id"], "apply:authz");
    assert_eq!(
        v["data"]["components"][0]["components"][0]["style"], 2,
        "a paragraph input"
    );

    // Slack first: the same change as a card there fits Block Kit, the diff attached whole.
    let card = slack_form(&w, &bot, "U0ALICE", VOTING_POLICY).await;
    assert!(card.refused.is_empty(), "{}", card.refused);
    let sv = card.json.clone().unwrap();
    assert_block_kit(&sv);
    assert!(
        slack_text(&sv).contains("more lines (cut to fit; the whole text is attached as diff.txt)"),
        "{}",
        slack_text(&sv)
    );
    // The files follow the card (into its thread): wait for each step, bounded.
    let url = w
        .stand_in
        .wait_for(card.seq, WAIT, |c| {
            c.path == "/api/files.getUploadURLExternal" && c.query.contains("diff.txt")
        })
        .await
        .expect("the whole diff uploaded");
    let upload = w
        .stand_in
        .wait_for(url.seq, WAIT, |c| c.path.starts_with("/upload/"))
        .await
        .unwrap();
    assert!(upload.files[0].1 > 200 * 60, "{:?}", upload.files);
    let complete = w
        .stand_in
        .wait_for(upload.seq, WAIT, |c| {
            c.slack_method() == Some("files.completeUploadExternal")
        })
        .await
        .unwrap();
    assert_eq!(complete.json.as_ref().unwrap()["thread_ts"], card.ts());

    // Discord: the form's submission is deferred, then the card replaces the placeholder.
    let form = DiscordSender::form_submission(
        "1001",
        "900",
        "tform",
        "authz",
        VOTING_POLICY,
        "fewer clients",
    );
    let card = discord_deferred(&w, &bot, &form, 5).await;
    let v = card.json.clone().unwrap();
    let d = v["embeds"][0]["description"].as_str().unwrap();
    assert!(d.chars().count() <= 4096);
    assert!(
        d.contains("more lines (cut to fit; the whole text is attached as diff.txt)"),
        "{d}"
    );
    assert!(
        card.files
            .iter()
            .any(|(n, len)| n == "diff.txt" && *len > 200 * 60),
        "{:?}",
        card.files
    );
    let t = discord_text(&v);
    assert!(t.contains("Approval needed"), "{t}");
    let buttons = discord_buttons(&v);
    assert!(
        buttons[0].starts_with("approve:") && buttons[1].starts_with("reject:"),
        "{buttons:?}"
    );

    // bob approves from Discord: the component's message is redrawn with the outcome.
    let click = DiscordSender::click("1002", "900", "tclick", &buttons[0]);
    let done = discord_deferred(&w, &bot, &click, 6).await;
    let t = discord_text(done.json.as_ref().unwrap());
    assert!(t.contains("Applied"), "{t}");
    assert!(discord_buttons(done.json.as_ref().unwrap()).is_empty());
    let m = w
        .api("MeshTLSAuthentication", "v1alpha1", "emojivoto")
        .get("voting-clients")
        .await
        .unwrap();
    assert_eq!(m.data["spec"]["identities"].as_array().unwrap().len(), 1);
    assert_eq!(
        m.metadata.annotations.unwrap()["linkerd-mcp.io/approved-by"],
        "bob"
    );

    // A second click: a private note, nothing more.
    let after = w.stand_in.last_seq().await;
    bot.discord
        .send(&DiscordSender::click("1002", "900", "tclick2", &buttons[0]))
        .await
        .unwrap();
    let note = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.path == format!("/api/v10/webhooks/{}/tclick2", common::DISCORD_APP)
        })
        .await
        .unwrap();
    assert_eq!(note.json.as_ref().unwrap()["flags"], 64);
    assert!(discord_text(note.json.as_ref().unwrap()).contains("applied already"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_apply_nothing() {
    let w = World::start().await;
    let bot = w.bot("bot", &[]);
    bot.ready().await;
    let rv = w.mcp.kube.resource_version().await;

    // Bad Slack signature, stale timestamp, bad Discord signature: 401, nothing sent.
    let before = w.stand_in.last_seq().await;
    let body =
        SlackSender::command_body("U0ALICE", "C0MESH", "graph", &w.stand_in.response_url("x"));
    let (s, _) = bot
        .slack
        .post_signed(
            "/slack/commands",
            &body,
            &chatsim::now_timestamp(),
            "wrong-secret",
        )
        .await
        .unwrap();
    assert_eq!(s, 401);
    let stale = (chatsim::now_timestamp().parse::<u64>().unwrap() - 600).to_string();
    let (s, b) = bot
        .slack
        .post_signed("/slack/commands", &body, &stale, common::SIGNING_SECRET)
        .await
        .unwrap();
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("5 minutes"), "{b}");
    let payload = DiscordSender::command("1001", "900", "t", "graph", None).to_string();
    let ts = chatsim::now_timestamp();
    let forged = DiscordSender::new(&bot.url, [9; 32]).sign(&ts, &payload);
    let (s, _) = bot.discord.post_raw(&payload, &ts, &forged).await.unwrap();
    assert_eq!(s, 401);
    let (s, _) = bot.discord.post_raw(&payload, &ts, "00").await.unwrap();
    assert_eq!(s, 401);
    let tampered = payload.replace("graph", "tls");
    let (s, _) = bot
        .discord
        .post_raw(&tampered, &ts, &bot.discord.sign(&ts, &payload))
        .await
        .unwrap();
    assert_eq!(s, 401);
    // A valid request after them: once its answer is out, anything the refused ones had set
    // going would have called out too. Every call since is the marker's.
    let marker = DiscordSender::command("1001", "900", "marker", "graph", None);
    discord_deferred(&w, &bot, &marker, 5).await;
    let since: Vec<String> = w
        .stand_in
        .calls()
        .await
        .into_iter()
        .filter(|c| c.seq > before)
        .map(|c| c.path)
        .collect();
    assert!(
        !since.is_empty() && since.iter().all(|p| p.contains("/marker/")),
        "refused requests cause no calls: {since:?}"
    );
    let ready = mesh_testkit::poll(WAIT, Duration::from_millis(200), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{}/ready", bot.admin))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready once the store answers");
    for (platform, n) in [("slack", 2.0), ("discord", 3.0)] {
        let name = format!("mesh_chatbot_signature_failures_total{{platform=\"{platform}\"}}");
        assert_eq!(
            mesh_testkit::admin_metric(bot.admin, &name).await,
            Some(n),
            "{name}"
        );
    }

    // Unmapped users and users without RBAC: refused before any card.
    for (user, want) in [
        ("U0NOBODY", "not in the bot's identity map"),
        ("U0MAL", "refused at the dry-run"),
    ] {
        let c = slack_form(&w, &bot, user, VOTING_POLICY).await;
        assert_eq!(c.slack_method(), Some("chat.postEphemeral"), "{user}");
        let t = slack_text(c.json.as_ref().unwrap());
        assert!(t.contains(want), "{user}: {t}");
    }
    // Oversized manifests and two main objects.
    let big = format!("{VOTING_POLICY}\n# {}\n", "x".repeat(17 * 1024));
    let c = slack_form(&w, &bot, "U0ALICE", &big).await;
    assert!(slack_text(c.json.as_ref().unwrap()).contains("Manifest too large"));
    let two = format!(
        "{VOTING_POLICY}---\n{}",
        VOTING_POLICY
            .split("---")
            .nth(1)
            .unwrap()
            .replace("voting-policy", "other")
    );
    let c = slack_form(&w, &bot, "U0ALICE", &two).await;
    assert_eq!(c.slack_method(), Some("chat.postEphemeral"));
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("AuthorizationPolicy"),
        "{:?}",
        c.json
    );
    assert!(
        w.stand_in
            .calls()
            .await
            .iter()
            .all(|c| c.slack_method() != Some("chat.postMessage")),
        "no card was posted"
    );
    // A change that also writes to booksapp needs an approver there too.
    let cross = VOTING_POLICY.replacen("namespace: emojivoto}", "namespace: booksapp}", 1);
    let card = slack_form(&w, &bot, "U0ALICE", &cross).await;
    assert_eq!(
        card.slack_method(),
        Some("chat.postMessage"),
        "{:?}",
        card.json
    );
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let c = slack_click(&w, &bot, "U0BOB", &card.ts(), "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.postEphemeral"));
    let t = slack_text(c.json.as_ref().unwrap());
    assert!(
        t.contains("bob is not an approver under namespaces.booksapp"),
        "{t}"
    );

    // An approval that expired: mesh-mcp's clock moves past its 30 minutes.
    let card = slack_form(&w, &bot, "U0ALICE", VOTING_POLICY).await;
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    common::SKEW.store(31 * 60, std::sync::atomic::Ordering::SeqCst);
    let c = slack_click(&w, &bot, "U0BOB", &card.ts(), "approve", &id).await;
    common::SKEW.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.slack_method(), Some("chat.update"));
    assert!(slack_text(c.json.as_ref().unwrap()).contains("Expired"));
    assert!(
        w.api("AuthorizationPolicy", "v1alpha1", "emojivoto")
            .get_opt("voting-policy")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        w.mcp.kube.resource_version().await,
        rv,
        "nothing was written to the cluster"
    );

    // A requester removed from the identity map after asking: the approval is refused, since
    // the change would be made as someone the bot no longer vouches for.
    let card = slack_form(&w, &bot, "U0ALICE", VOTING_POLICY).await;
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let without_alice: String = common::identity_map("30m")
        .lines()
        .filter(|l| !l.contains("U0ALICE"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(w.dir.path().join("ids.yaml"), without_alice).unwrap();
    // Observed reloaded when alice herself is told she is not mapped (and gets no card).
    let reloaded = form_until(&w, &bot, "U0ALICE", "not in the bot's identity map").await;
    assert!(
        reloaded.is_some(),
        "the identity map without alice was never loaded"
    );
    let c = slack_click(&w, &bot, "U0BOB", &card.ts(), "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.postEphemeral"));
    let t = slack_text(c.json.as_ref().unwrap());
    assert!(t.contains("no longer in the bot's identity map"), "{t}");
    assert_eq!(
        w.mcp.kube.resource_version().await,
        rv,
        "nothing was written for the unmapped requester"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bot_applies_a_pending_approval_once_and_a_stale_one_never() {
    let w = World::start().await;
    let mut bot = w.bot("bot-1", &[]);
    bot.ready().await;
    let card = slack_form(&w, &bot, "U0ALICE", VOTING_POLICY).await;
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let ts = card.ts();

    // Killed between request and approval; a new process finds the request in Redis.
    bot.guard.signal("KILL");
    assert!(bot.guard.wait_exit(Duration::from_secs(10)));
    let bot = w.bot("bot-2", &["--apply-retry-after", "1s"]);
    bot.ready().await;
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("Applied"),
        "{:?}",
        c.json
    );
    let rv = w
        .api("AuthorizationPolicy", "v1alpha1", "emojivoto")
        .get("voting-policy")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.postEphemeral"));
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("applied already"),
        "{:?}",
        c.json
    );
    let again = w
        .api("AuthorizationPolicy", "v1alpha1", "emojivoto")
        .get("voting-policy")
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, rv, "applied exactly once");

    // Stale: the object changes between the dry-run and the click.
    let changed = VOTING_POLICY.replace(
        "identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]",
        "identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local, vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local]",
    );
    let card = slack_form(&w, &bot, "U0ALICE", &changed).await;
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let ts = card.ts();
    let policies = w.api("AuthorizationPolicy", "v1alpha1", "emojivoto");
    let mut p = policies.get("voting-policy").await.unwrap();
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("touched".into(), "by-admin".into());
    p.metadata.managed_fields = None;
    policies
        .replace("voting-policy", &Default::default(), &p)
        .await
        .unwrap();
    let clients = w.api("MeshTLSAuthentication", "v1alpha1", "emojivoto");
    let before = clients.get("voting-clients").await.unwrap();
    let c = slack_click(&w, &bot, "U0BOB", &ts, "approve", &id).await;
    assert_eq!(c.slack_method(), Some("chat.update"));
    let v = c.json.unwrap();
    assert!(slack_text(&v).contains("changed"), "{v}");
    assert!(slack_buttons(&v).is_empty(), "decided: no buttons");
    let after = clients.get("voting-clients").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "nothing applied"
    );
    assert_eq!(
        after.data["spec"]["identities"].as_array().unwrap().len(),
        1
    );
    // A new object: someone creates it between the dry-run and the click.
    let fresh = VOTING_POLICY
        .replace("voting-policy", "voting-policy-new")
        .replace("voting-clients", "voting-clients-new");
    let card = slack_form(&w, &bot, "U0ALICE", &fresh).await;
    let new_id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    w.apply_as_linkerd_mcp(&fresh.replace("web.emojivoto", "emoji.emojivoto"))
        .await;
    let c = slack_click(&w, &bot, "U0BOB", &card.ts(), "approve", &new_id).await;
    let t = slack_text(c.json.as_ref().unwrap());
    assert!(
        t.contains("did not exist when the change was reviewed"),
        "{t}"
    );
    let clients = w
        .api("MeshTLSAuthentication", "v1alpha1", "emojivoto")
        .get("voting-clients-new")
        .await
        .unwrap();
    assert_eq!(
        clients.data["spec"]["identities"][0],
        "emoji.emojivoto.serviceaccount.identity.linkerd.cluster.local",
        "the other writer's object is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_turning_plaintext_alerts_once_and_resolves_once_with_two_replicas() {
    let w = World::start().await;
    let a = w.bot("bot-a", &["--alert-lease-ttl", "2s"]);
    let b = w.bot("bot-b", &["--alert-lease-ttl", "2s"]);
    a.ready().await;
    b.ready().await;
    let (v, _) = slack_command(&w, &a, "U0ALICE", "alerts on kind=plaintext").await;
    assert!(slack_text(&v).contains("Alerts are on"), "{v}");
    // One replica holds the alert lease.
    let leaders = mesh_testkit::poll(WAIT, Duration::from_millis(200), || async {
        let la = mesh_testkit::admin_metric(a.admin, "mesh_chatbot_alert_leader").await?;
        let lb = mesh_testkit::admin_metric(b.admin, "mesh_chatbot_alert_leader").await?;
        (la + lb == 1.0).then_some((la, lb))
    })
    .await;
    assert!(leaders.is_some(), "exactly one alert leader");
    // Both have handled a quiet mesh: no alerts.
    let quiet = w.publish().await;
    assert!(a.alerts_handled(quiet).await && b.alerts_handled(quiet).await);

    let after = w.stand_in.last_seq().await;
    let mut t = w.topology.clone();
    let e = t
        .edges
        .iter_mut()
        .find(|e| e.from == "emojivoto/web" && e.to == "emojivoto/voting")
        .unwrap();
    e.tls = Some(false);
    e.no_tls_reason = Some("not_provided_by_service_discovery".into());
    w.publish_topology(&t).await;
    let alert = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.postMessage")
        })
        .await
        .expect("no alert");
    let text = slack_text(alert.json.as_ref().unwrap());
    assert!(
        text.contains("Alert: edge is not mTLS: emojivoto/web -&gt; emojivoto/voting"),
        "{text}"
    );
    assert_eq!(alert.json.as_ref().unwrap()["channel"], "C0MESH");
    // Published again (still plaintext): once both have handled it, no repeat.
    let again = w.publish_topology(&t).await;
    assert!(a.alerts_handled(again).await && b.alerts_handled(again).await);
    let posts = |calls: Vec<Call>| {
        calls
            .into_iter()
            .filter(|c| c.seq > after && c.slack_method() == Some("chat.postMessage"))
            .count()
    };
    assert_eq!(posts(w.stand_in.calls().await), 1, "exactly one alert");

    w.publish().await;
    let resolved = w
        .stand_in
        .wait_for(alert.seq, WAIT, |c| {
            c.slack_method() == Some("chat.postMessage")
        })
        .await
        .expect("no resolved message");
    assert!(slack_text(resolved.json.as_ref().unwrap()).contains("Resolved: edge is not mTLS"));
    let later = w.publish().await;
    assert!(a.alerts_handled(later).await && b.alerts_handled(later).await);
    assert_eq!(
        posts(w.stand_in.calls().await),
        2,
        "exactly one resolved message"
    );
}

#[test]
fn bad_configuration_is_one_line_and_exit_64() {
    for (args, want) in [
        (vec![], "--server is required"),
        (
            vec!["--server", "127.0.0.1:1"],
            "--identity-map is required",
        ),
        (
            vec![
                "--server",
                "127.0.0.1:1",
                "--identity-map",
                "/nonexistent.yaml",
            ],
            "/nonexistent.yaml",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-chatbot"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_cli_reference_is_current() {
    mesh_testkit::check_cli_doc(env!("CARGO_BIN_EXE_mesh-chatbot"), &[], "mesh-chatbot");
    mesh_testkit::check_cli_doc(
        env!("CARGO_BIN_EXE_mesh-chatbot"),
        &["register-commands"],
        "mesh-chatbot-register-commands",
    );
}
