//! "What changed in the last hour?" as one chat command: a policy approved in chat (alice asks,
//! bob approves), then web -> voting turns plaintext and starts failing in meshsim (scraped by
//! a real Prometheus); `/mesh diff` lists the change with both people, the TLS change and the
//! regression, earliest first, and uploads the picture of the difference.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::{sync::Arc, time::Duration};

use chatsim::SlackSender;
use common::{VOTING_POLICY, World, slack_buttons, slack_text};
use mesh_testkit::{Prometheus, poll};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_diff_lists_who_changed_what_then_what_broke_with_a_picture() {
    // emojivoto's proxies, scraped every second; they follow the cluster's policy once it runs.
    let topology = meshsim::builtin("emojivoto").unwrap();
    let mut sim = meshsim::Sim::new(topology.clone(), std::time::Instant::now());
    sim.set_version(meshsim::LinkerdVersion::V2_20);
    let sim = Arc::new(tokio::sync::Mutex::new(sim));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(meshsim::serve_shared(
        l,
        sim.clone(),
        std::future::pending(),
    ));
    let prom = Prometheus::start(&[addr]).await;
    let w = World::start_with(Some(prom.url.clone())).await;
    meshsim::authz::follow(sim.clone(), w.mcp.cluster_watch());
    let bot = w.bot("bot", &[]);
    bot.ready().await;
    // Traffic in Prometheus before anything changes.
    poll(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async { (prom.series_count("response_total").await > 0).then_some(()) },
    )
    .await
    .expect("Prometheus scrapes meshsim");
    // t0: a few scrapes of traffic stand behind the diff's start.
    let scraped = std::time::SystemTime::now();
    poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            (std::time::SystemTime::now() > scraped + Duration::from_secs(5)).then_some(())
        },
    )
    .await
    .unwrap();
    let t0 = std::time::SystemTime::now();

    // alice asks for the policy in chat; bob approves it.
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot
        .slack
        .interaction(&SlackSender::form_submission(
            "U0ALICE",
            "C0MESH",
            "authz",
            VOTING_POLICY,
            "only web calls voting",
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let card = w
        .stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.postMessage")
        })
        .await
        .expect("the approval card");
    let id = slack_buttons(card.json.as_ref().unwrap())[0].1.clone();
    let after = common::send_slack_click(&w, &bot, "U0BOB", &card.ts(), "approve", &id).await;
    w.stand_in
        .wait_for(after, WAIT, |c| {
            c.slack_method() == Some("chat.update")
                && slack_text(c.json.as_ref().unwrap()).contains("Applied")
        })
        .await
        .expect("bob's approval applies it");

    // Then, with a quarter of a minute of traffic behind it, web -> voting loses mTLS and
    // half its successes.
    poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (std::time::SystemTime::now() > t0 + Duration::from_secs(15)).then_some(()) },
    )
    .await
    .unwrap();
    let mut changed = topology.clone();
    for e in &mut changed.edges {
        if e.from == "emojivoto/web" && e.to == "emojivoto/voting" {
            e.tls = Some(false);
            e.success_rate = 0.5;
        }
    }
    sim.lock()
        .await
        .set_topology(changed, std::time::Instant::now());

    // `/mesh diff <since t0> emojivoto`, asked until Prometheus has seen the change.
    let last = tokio::sync::Mutex::new(String::new());
    let text = poll(Duration::from_secs(90), Duration::from_secs(1), || async {
        let since = t0.elapsed().unwrap().as_secs() + 1;
        let command = format!("diff {since}s emojivoto");
        let after = w.stand_in.last_seq().await;
        let name = format!("d{after}");
        let (status, _) = bot
            .slack
            .command(
                "U0ALICE",
                "C0MESH",
                &command,
                &w.stand_in.response_url(&name),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        let path = format!("/response/{name}");
        let call = w
            .stand_in
            .wait_for(after, Duration::from_secs(60), |c| c.path == path)
            .await
            .expect("an answer to /mesh diff");
        assert!(
            call.refused.is_empty(),
            "Slack would refuse: {}",
            call.refused
        );
        let t = slack_text(call.json.as_ref().unwrap());
        last.lock().await.clone_from(&t);
        (t.contains("plaintext") && t.contains("success rate")).then_some((t, after))
    })
    .await;
    let Some((text, asked)) = text else {
        panic!(
            "the diff never showed the TLS change and the regression; last answer:\n{}",
            last.lock().await
        );
    };
    assert!(
        text.contains("What changed in namespace emojivoto in the last"),
        "{text}"
    );
    let policy = text
        .find("AuthorizationPolicy emojivoto/voting-policy created, requested by alice, approved by bob")
        .unwrap_or_else(|| panic!("the change and its people are listed:\n{text}"));
    let tls = text
        .find(&common::escape_slack("mTLS -> plaintext"))
        .unwrap_or_else(|| panic!("the TLS change is listed:\n{text}"));
    let regression = text.find("success rate").unwrap();
    assert!(
        policy < tls && policy < regression,
        "earliest first:\n{text}"
    );
    // The picture of the difference goes up with that answer.
    let png = w
        .stand_in
        .wait_for(asked, WAIT, |c| {
            c.path == "/api/files.getUploadURLExternal" && c.query.contains("mesh-diff.png")
        })
        .await
        .expect("the diff picture is uploaded");
    let bytes = w
        .stand_in
        .wait_for(png.seq, WAIT, |c| c.path.starts_with("/upload/"))
        .await
        .unwrap();
    assert!(bytes.files[0].1 > 1000, "{:?}", bytes.files);

    // Bad input: one clear answer.
    let (status, body) = bot
        .slack
        .command(
            "U0ALICE",
            "C0MESH",
            "diff soon",
            &w.stand_in.response_url("bad"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("is not a duration"), "{body}");
}
