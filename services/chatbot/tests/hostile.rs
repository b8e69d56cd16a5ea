//! The hostile-input suite's chat half: attacks on the real `mesh-chatbot` binary's webhooks
//! (the other half, on `mesh-mcp`, is `services/mcp/tests/hostile.rs`). Each must be refused
//! with its specific answer, cause no call to the platform and no change in the cluster
//! (kube-sim's resourceVersion), and leave the bot answering a signed ping and `/ready` within
//! [`BOUND`].

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::time::{Duration, Instant};

use chatsim::{DiscordSender, SlackSender};
use common::{VOTING_POLICY, World, slack_buttons, slack_text};

const BOUND: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(20);

/// Posts `body` to the Slack `path` with exactly these signature headers.
async fn slack_raw(bot: &common::Bot, path: &str, body: &str, ts: &str, sig: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", bot.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body.to_owned())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Nothing reached the platform since `seq`, the cluster is at `rv`, and the bot answers a
/// signed ping and `/ready` within [`BOUND`].
async fn nothing_changed(w: &World, bot: &common::Bot, seq: u64, rv: u64, after: &str) {
    let start = Instant::now();
    let (s, _) = bot.discord.send(&DiscordSender::ping()).await.unwrap();
    assert_eq!(s, 200, "{after}: ping");
    let ready = reqwest::get(format!("http://127.0.0.1:{}/ready", bot.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{after}: /ready");
    assert!(
        start.elapsed() < BOUND,
        "{after}: health reads took {:?}",
        start.elapsed()
    );
    assert_eq!(
        w.mcp.kube.resource_version().await,
        rv,
        "{after}: the cluster changed"
    );
    let calls: Vec<String> = w
        .stand_in
        .calls()
        .await
        .into_iter()
        .filter(|c| c.seq > seq)
        .map(|c| c.path)
        .collect();
    assert!(
        calls.is_empty(),
        "{after}: the platform was called: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_attacks_are_refused_and_change_nothing() {
    let w = World::start().await;
    let bot = w.bot("bot", &[]);
    bot.ready().await;
    let rv = w.mcp.kube.resource_version().await;
    let seq = w.stand_in.last_seq().await;
    let secret = common::SIGNING_SECRET;

    // Slack: a body changed after signing (a command turned into another), a signature
    // replayed under a new timestamp, a stale one, one for another secret, none at all, and
    // a signature with its scheme changed.
    let body = SlackSender::command_body("U0ALICE", "C0MESH", "graph", "http://127.0.0.1:9/r");
    let ts = chatsim::now_timestamp();
    let sig = chatsim::slack_signature(secret, &ts, &body);
    let malleated = format!("{body}&text=lockdown+emojivoto");
    let older = (ts.parse::<u64>().unwrap() - 1).to_string();
    let stale = (ts.parse::<u64>().unwrap() - 600).to_string();
    let stale_sig = chatsim::slack_signature(secret, &stale, &body);
    for (what, body, ts, sig) in [
        (
            "a body changed after signing",
            malleated.as_str(),
            ts.as_str(),
            sig.clone(),
        ),
        (
            "a signature under another timestamp",
            body.as_str(),
            older.as_str(),
            sig.clone(),
        ),
        ("a stale request", body.as_str(), stale.as_str(), stale_sig),
        (
            "another secret",
            body.as_str(),
            ts.as_str(),
            chatsim::slack_signature("not-the-secret", &ts, &body),
        ),
        ("no signature", body.as_str(), ts.as_str(), String::new()),
        (
            "another scheme",
            body.as_str(),
            ts.as_str(),
            sig.replacen("v0=", "v1=", 1),
        ),
    ] {
        for path in ["/slack/commands", "/slack/interactions"] {
            assert_eq!(
                slack_raw(&bot, path, body, ts, &sig).await,
                401,
                "{what} on {path}"
            );
        }
    }
    nothing_changed(&w, &bot, seq, rv, "forged Slack requests").await;

    // Discord: a forged key, a body changed after signing, a signature under another
    // timestamp, and garbage.
    let payload = DiscordSender::command("1001", "900", "t", "graph", None).to_string();
    let ts = chatsim::now_timestamp();
    let good = bot.discord.sign(&ts, &payload);
    for (what, body, ts, sig) in [
        (
            "another key",
            payload.clone(),
            ts.clone(),
            DiscordSender::new(&bot.url, [9; 32]).sign(&ts, &payload),
        ),
        (
            "a body changed after signing",
            payload.replace("graph", "tls"),
            ts.clone(),
            good.clone(),
        ),
        (
            "another timestamp",
            payload.clone(),
            older.clone(),
            good.clone(),
        ),
        ("not hex", payload.clone(), ts.clone(), "zz".into()),
    ] {
        let (s, _) = bot.discord.post_raw(&body, &ts, &sig).await.unwrap();
        assert_eq!(s, 401, "Discord: {what}");
    }
    nothing_changed(&w, &bot, seq, rv, "forged Discord requests").await;

    // Signed but hostile bodies: deeply nested JSON, a body past the limit, and payloads
    // that are not what they claim. Refused as bad requests, nothing acted on.
    let deep = format!(
        r#"{{"type":5,"data":{{"custom_id":"apply:authz","components":{}[]{}}}}}"#,
        r#"[{"components":"#.repeat(5000),
        "}]".repeat(5000)
    );
    let ts = chatsim::now_timestamp();
    let (s, b) = bot
        .discord
        .post_raw(&deep, &ts, &bot.discord.sign(&ts, &deep))
        .await
        .unwrap();
    assert_eq!(s, 400, "deep Discord JSON: {b}");
    assert!(b.contains("not an interaction"), "{b}");
    let big = format!(r#"{{"type":2,"pad":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let (s, _) = bot
        .discord
        .post_raw(&big, &ts, &bot.discord.sign(&ts, &big))
        .await
        .unwrap();
    assert_eq!(s, 413, "a 3 MiB Discord body");
    for (what, body, want) in [
        (
            "an unknown interaction type",
            r#"payload={"type":"shortcut"}"#.to_owned(),
            "not handled",
        ),
        (
            "a payload that is not JSON",
            "payload=%7B%22type".to_owned(),
            "not an interaction",
        ),
        (
            "nested JSON in a payload",
            serde_urlencoded::to_string([("payload", "[".repeat(50_000))]).unwrap(),
            "not an interaction",
        ),
    ] {
        let ts = chatsim::now_timestamp();
        let sig = chatsim::slack_signature(secret, &ts, &body);
        let r = reqwest::Client::new()
            .post(format!("{}/slack/interactions", bot.url))
            .header("x-slack-request-timestamp", &ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert!(r.text().await.unwrap().contains(want), "{what}");
    }
    nothing_changed(&w, &bot, seq, rv, "hostile signed bodies").await;

    // Mention injection: a reason and a manifest comment that would ping the channel reach
    // the card escaped. Then the requester approving her own change is refused privately, and
    // nothing follows the refusal: no card update, nothing applied.
    let after = w.stand_in.last_seq().await;
    let manifest = format!("# <!channel> @everyone <@U0BOB>\n{VOTING_POLICY}");
    let (s, b) = bot
        .slack
        .interaction(&SlackSender::form_submission(
            "U0ALICE",
            "C0MESH",
            "authz",
            &manifest,
            "<!channel> <!here> @everyone please approve",
        ))
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    let card = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.postMessage")
        })
        .await
        .expect("a card");
    let text = card.json.as_ref().unwrap().to_string();
    for mention in ["<!channel>", "<!here>", "<@U0BOB>"] {
        assert!(
            !text.contains(mention),
            "{mention} reached the card: {text}"
        );
    }
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let after = common::send_slack_click(&w, &bot, "U0ALICE", &card.ts(), "approve", &id).await;
    let c = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.postEphemeral")
        })
        .await
        .expect("a private refusal");
    assert!(
        slack_text(c.json.as_ref().unwrap()).contains("alice requested this change"),
        "{:?}",
        c.json
    );
    nothing_changed(&w, &bot, c.seq, rv, "mention injection and self-approval").await;
}
