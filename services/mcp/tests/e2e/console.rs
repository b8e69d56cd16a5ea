//! The web console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver) against the demo's stack (meshsim following kube-sim, real Prometheus,
//! mesh-mcp with its embedded collector). What an on-call engineer does: sign in, watch an edge
//! turn plaintext without reloading, explain a denied edge, look back in time, approve a change;
//! and what an attacker cannot: read the page without signing in, post from another site.

use std::{path::PathBuf, time::Duration};

use fantoccini::Locator;
use mesh_testkit::{Browser, Prometheus, poll};
use serde_json::json;

use super::{
    VOTING_POLICY, emojivoto_cluster, emojivoto_with_vote_bot_calling_voting, following_sim,
    graph_until, lazy_client, start_mcp_with,
};
use mesh_proto::pb;

/// The change people approve on the page: vote-bot (emojivoto runs it as the `default` service
/// account) is let in too, by a second policy on the Server; Linkerd admits what any admits.
const LET_VOTE_BOT_IN: &str = "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
    metadata: {name: vote-bot-client, namespace: emojivoto}\n\
    spec: {identities: [default.emojivoto.serviceaccount.identity.linkerd.cluster.local]}\n---\n\
    apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
    metadata: {name: voting-vote-bot, namespace: emojivoto}\n\
    spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}\n  \
    requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: vote-bot-client}]\n";

/// alice's group may edit Linkerd policy (her dry-runs pass RBAC).
const DEVS_EDIT_POLICY: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
    metadata: {name: policy-editor}\n\
    rules: [{apiGroups: [policy.linkerd.io], resources: ['*'], verbs: [get, list, watch, create, patch, update, delete]}]\n---\n\
    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
    metadata: {name: devs-edit-policy}\n\
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: policy-editor}\n\
    subjects: [{kind: Group, name: devs}]\n";

/// Changes in emojivoto wait for one approval by a `devs` member (alice).
const APPROVALS: &str = "version: 1\ndefault: {approvals: 0, approvers: {groups: [devs]}}\n\
    namespaces:\n  emojivoto: {approvals: 1, approvers: {groups: [devs]}, ttl: 30m}\n";

fn edge(src: &str, dst: &str) -> String {
    format!("g.edge[data-src=\"emojivoto/{src}\"][data-dst=\"emojivoto/{dst}\"]")
}

/// Where the tests leave screenshots: the workspace's `target/console`.
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Signs `b` in with `token` through the login form.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.client.goto(&format!("{base}/ui/login")).await.unwrap();
    let field = b.client.find(Locator::Css("#token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    b.client
        .find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The first server-sent event of `r`: its name and id (bounded: 20 s).
async fn first_event(mut r: reqwest::Response) -> (String, String) {
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = r.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some((event, _)) = text.split_once("\n\n") {
                let field = |name: &str| {
                    event
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                        .unwrap_or_default()
                };
                return (field("event:"), field("id:"));
            }
        }
        panic!("the stream ended before an event: {text}");
    })
    .await;
    got.expect("an event within 20 s")
}

fn as_admin<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", "Bearer adm1n".parse().unwrap());
    r.set_timeout(Duration::from_secs(20));
    r
}

/// A change asked for by the admin, waiting for alice's approval.
async fn ask(
    c: &pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>,
    manifest: &str,
) -> String {
    let a = c
        .clone()
        .request_approval(as_admin(pb::RequestApprovalRequest {
            kind: pb::ChangeKind::AuthorizationPolicy as i32,
            change: Some(pb::ApplyRequest {
                source: Some(pb::apply_request::Source::Manifest(manifest.into())),
                reason: "vote-bot needs voting".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.state(), pb::ApprovalState::Pending, "{a:?}");
    a.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_explains_rewinds_and_approves_in_a_real_browser() {
    // The demo's stack, with voting closed to vote-bot.
    let cluster = emojivoto_cluster().await;
    cluster.load_yaml(VOTING_POLICY).await.unwrap();
    cluster.load_yaml(DEVS_EDIT_POLICY).await.unwrap();
    let t = emojivoto_with_vote_bot_calling_voting();
    let (sim, _stop_sim) = following_sim(t.clone(), meshsim::LinkerdVersion::V2_20, &cluster).await;
    let prom = Prometheus::start(&[sim]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("approvals.yaml");
    std::fs::write(&policy, APPROVALS).unwrap();
    let policy = policy.display().to_string();
    let mcp = start_mcp_with(
        &[
            "--embedded-collector",
            "--prometheus-url",
            &prom.url,
            "--window",
            "10s",
            "--interval",
            "1s",
            "--approval-policy",
            &policy,
        ],
        Some(cluster.kubeconfig("mcp-token")),
    );
    let c = lazy_client(mcp.grpc);
    graph_until(&c, Duration::from_secs(90), |g| {
        g.edges.len() == t.edges.len()
            && g.edges.iter().any(|e| {
                e.src.as_ref().is_some_and(|s| s.name == "vote-bot")
                    && e.policy
                        .as_ref()
                        .is_some_and(|p| p.decision() == pb::policy_verdict::Decision::Denied)
            })
    })
    .await
    .expect("the graph never showed vote-bot -> voting denied");
    let base = format!("http://127.0.0.1:{}", mcp.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Without sign-in: nothing. The API answers 401, the page sends the browser to sign in.
    for path in ["/ui/api/graph", "/ui/api/events", "/ui/api/diff?from=-1m"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(!r.text().await.unwrap().contains("emojivoto"), "{path}");
    }
    let b = Browser::start().await;
    b.client.goto(&format!("{base}/ui/")).await.unwrap();
    assert!(
        b.client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/login")
    );
    let page = b.client.source().await.unwrap();
    assert!(
        !page.contains("emojivoto") && !page.contains("data-src"),
        "{page}"
    );
    let r = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );

    // A wrong token is refused and says so; alice's opens the graph.
    sign_in(&b, &base, "not-a-token").await;
    b.until_text("#login-error", "sign-in refused", Duration::from_secs(10))
        .await;
    sign_in(&b, &base, "t0ken").await;
    b.until_text("#user", "alice", Duration::from_secs(10))
        .await;

    // emojivoto's edges, with their TLS and verdicts, as attributes scripts can read.
    let limit = Duration::from_secs(30);
    b.until_attr(&edge("web", "emoji"), "data-tls", "mtls", limit)
        .await;
    b.until_attr(&edge("web", "voting"), "data-tls", "mtls", limit)
        .await;
    b.until_attr(&edge("vote-bot", "web"), "data-tls", "mtls", limit)
        .await;
    b.until_attr(&edge("web", "voting"), "data-verdict", "allowed", limit)
        .await;
    b.until_attr(&edge("vote-bot", "voting"), "data-verdict", "denied", limit)
        .await;

    // Screenshots at two sizes, for the README and for people reading a failed run.
    for (w, h) in [(1280, 900), (900, 650)] {
        b.client.set_window_size(w, h).await.unwrap();
        let png = b.client.screenshot().await.unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
        std::fs::write(shots().join(format!("graph-{w}x{h}.png")), png).unwrap();
    }
    b.client.set_window_size(1280, 900).await.unwrap();

    // The denied edge explains itself, naming the Server and the policy.
    b.client
        .find(Locator::Css(&format!(
            "{} text.edge-label",
            edge("vote-bot", "voting")
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until_text("#edge-verdict", "denied", limit).await;
    let why = b.until_text("#panel", "voting-grpc", limit).await;
    assert!(why.contains("voting-policy"), "{why}");
    // Its last hour, from Prometheus: requests per second plotted.
    b.until_text("#plot-rps figcaption", "requests/s", limit)
        .await;
    assert!(
        b.attr("#plot-rps polyline", "points")
            .await
            .is_some_and(|p| !p.is_empty())
    );

    // What would letting vote-bot in do? Dry-run as alice, on the live traffic.
    b.client
        .find(Locator::Css("#whatif-manifest"))
        .await
        .unwrap()
        .send_keys(LET_VOTE_BOT_IN)
        .await
        .unwrap();
    b.client
        .find(Locator::Css("#whatif-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let what_if = b
        .until_text("#whatif-result", "would change verdict", limit)
        .await;
    assert!(
        what_if.contains("emojivoto/vote-bot → emojivoto/voting: denied → allowed"),
        "{what_if}"
    );
    // The picture the README shows: the denied edge explained, the panel from its top.
    b.client
        .execute("document.getElementById('panel').scrollTop = 0;", vec![])
        .await
        .unwrap();
    let png = b.client.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    std::fs::write(shots().join("explained-1280x900.png"), png).unwrap();

    // An edge turns plaintext in meshsim: the page follows within seconds, without a reload.
    let web = "g[data-workload=\"emojivoto/web\"] rect";
    let spot = (b.attr(web, "x").await, b.attr(web, "y").await);
    assert!(spot.0.is_some() && spot.1.is_some());
    b.client
        .execute("window.__sameLoad = 42;", vec![])
        .await
        .unwrap();
    let mut plain = t.clone();
    for e in &mut plain.edges {
        if e.from == "emojivoto/web" && e.to == "emojivoto/voting" {
            e.tls = Some(false);
            e.no_tls_reason = Some("not_provided_by_remote".into());
        }
    }
    // Rewinding needs Prometheus to hold a full window before the change: wait until a moment
    // just past reads back whole (the first scrapes give no rates yet).
    let session = b
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name() == "lmcp_session")
        .expect("the session cookie");
    let session = format!("lmcp_session={}", session.value());
    poll(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let g: serde_json::Value = http
                .get(format!("{base}/ui/api/graph?at=-3s&workload=emojivoto/web"))
                .header("cookie", &session)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            g["edges"]
                .as_array()?
                .iter()
                .any(|e| e["dst"]["name"] == "voting" && e["protocol"] == "grpc")
                .then_some(())
        },
    )
    .await
    .expect("the past graph never read back whole");

    // The live feed resumes where a dropped connection left off: no second snapshot.
    let events = format!("{base}/ui/api/events?namespace=emojivoto");
    let first = http
        .get(&events)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let (kind, id) = first_event(first).await;
    assert_eq!(kind, "snapshot");
    let again = http
        .get(&events)
        .header("cookie", &session)
        .header("last-event-id", &id)
        .send()
        .await
        .unwrap();
    let (kind, _) = first_event(again).await;
    assert!(
        kind == "delta" || kind == "heartbeat",
        "resumed with {kind}"
    );

    // One session holds at most 8 live pictures (the browser's tab holds one already).
    let mut open = Vec::new();
    let busy = loop {
        let r = http
            .get(&events)
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            break r;
        }
        open.push(r);
        assert!(open.len() <= 8, "a ninth live picture for one session");
    };
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "10");
    assert!(
        busy.text()
            .await
            .unwrap()
            .contains("this session has 8 live pictures")
    );
    drop(open);

    // Bad input: a clear refusal, nothing done.
    let big = "x".repeat(9000);
    let r = http
        .post(format!("{base}/ui/login"))
        .form(&[("token", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("1 to 8192 printable characters")
    );
    for (query, why) in [("tls=maybe", "is not mtls"), ("min_rps=-1", "0 or more")] {
        let r = http
            .get(format!("{base}/ui/api/graph?{query}"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.text().await.unwrap().contains(why), "{query}");
    }
    let huge = http
        .post(format!("{base}/ui/api/whatif"))
        .header("cookie", &session)
        .header("content-type", "application/json")
        .body(format!("{{\"manifest\": \"{}\"}}", "x".repeat(300 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let changed_at = std::time::Instant::now();
    let r = http
        .put(format!("http://{sim}/topology"))
        .body(plain.to_yaml())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    b.until_attr(
        &edge("web", "voting"),
        "data-tls",
        "plaintext",
        Duration::from_secs(45),
    )
    .await;
    let same = b
        .client
        .execute("return window.__sameLoad;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(42), "the page reloaded");
    // ... and nothing moved: web is where it was.
    assert_eq!((b.attr(web, "x").await, b.attr(web, "y").await), spot);

    // The time slider: before the change, the edge was mTLS; and "what changed" says so.
    let back = changed_at.elapsed().as_secs() + 3;
    b.client
        .execute(
            "const s = document.getElementById('slider'); s.value = arguments[0]; \
             s.dispatchEvent(new Event('change'));",
            vec![json!(-i64::try_from(back).unwrap())],
        )
        .await
        .unwrap();
    b.until_attr("body", "data-past", &format!("-{back}s"), limit)
        .await;
    let then = format!("{}:not(.ghost)", edge("web", "voting"));
    b.until_attr(&then, "data-tls", "mtls", limit).await;
    b.until_attr(&then, "data-diff", "changed", limit).await;
    b.until_text("#changes", "TLS mtls → plaintext", limit)
        .await;
    b.client
        .execute(
            "const s = document.getElementById('slider'); s.value = 0; \
             s.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .unwrap();
    b.until_attr(&edge("web", "voting"), "data-tls", "plaintext", limit)
        .await;

    // An approval made on the page: applied, recorded with alice's name and the console.
    let id = ask(&c, LET_VOTE_BOT_IN).await;
    b.client
        .goto(&format!("{base}/ui/approvals"))
        .await
        .unwrap();
    b.until_attr(
        &format!("article[id=\"{id}\"]"),
        "data-state",
        "pending",
        limit,
    )
    .await;
    b.client
        .find(Locator::Css(&format!(
            "article[id=\"{id}\"] button.approve"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until_text("#notice", "applied", limit).await;
    // The notice came in a cookie, once: a link cannot put words on the page.
    let planted = http
        .get(format!(
            "{base}/ui/approvals?notice=paste+your+token+at+evil.example"
        ))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!planted.contains("evil.example") && !planted.contains("id=\"notice\""));
    let done = c
        .clone()
        .get_approval(as_admin(pb::GetApprovalRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state(), pb::ApprovalState::Applied, "{done:?}");
    assert_eq!(done.approvals.len(), 1);
    assert_eq!(
        (
            done.approvals[0].user.as_str(),
            done.approvals[0].front_end.as_str()
        ),
        ("alice", "web")
    );
    assert!(!done.audit_id.is_empty());
    // The picture follows: vote-bot is let in.
    b.client.goto(&format!("{base}/ui/")).await.unwrap();
    b.until_attr(
        &edge("vote-bot", "voting"),
        "data-verdict",
        "allowed",
        Duration::from_secs(45),
    )
    .await;

    // Another site's form posting to the console is refused: the browser withholds the
    // SameSite=Strict cookie from it, and a forged origin with a stolen cookie meets the
    // origin check and the CSRF token.
    let id = ask(&c, &LET_VOTE_BOT_IN.replace("vote-bot", "bot-two")).await;
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = attacker.local_addr().unwrap().port();
    let form = format!(
        "<html><body><form id=f method=post action=\"{base}/ui/approvals/{id}/approve\">\
         <input name=csrf value=guess></form><script>document.getElementById('f').submit()\
         </script></body></html>"
    );
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let form = form.clone();
                async move { axum::response::Html(form) }
            }),
        );
        axum::serve(attacker, app).await.unwrap();
    });
    b.client
        .goto(&format!("http://localhost:{evil}/"))
        .await
        .unwrap();
    poll(limit, Duration::from_millis(200), || async {
        let u = b.client.current_url().await.ok()?;
        (u.port() == Some(mcp.http)).then_some(())
    })
    .await
    .expect("the forged form was posted");
    let still = c
        .clone()
        .get_approval(as_admin(pb::GetApprovalRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.state(), pb::ApprovalState::Pending, "{still:?}");
    let forged = http
        .post(format!("{base}/ui/approvals/{id}/approve"))
        .header("cookie", &session)
        .header("origin", format!("http://localhost:{evil}"))
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let no_token = http
        .post(format!("{base}/ui/approvals/{id}/approve"))
        .header("cookie", &session)
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);
    assert!(no_token.text().await.unwrap().contains("CSRF"));
    let still = c
        .clone()
        .get_approval(as_admin(pb::GetApprovalRequest { id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.state(), pb::ApprovalState::Pending);

    // Signing out ends the session: the page is gone again.
    b.client.goto(&format!("{base}/ui/")).await.unwrap();
    b.client
        .find(Locator::Css("form.who button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    poll(limit, Duration::from_millis(200), || async {
        let u = b.client.current_url().await.ok()?;
        u.path().ends_with("/ui/login").then_some(())
    })
    .await
    .expect("signed out to the login page");
    let after = http
        .get(format!("{base}/ui/api/graph"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    b.client.clone().close().await.unwrap();
}

/// Two replicas on one Redis: a browser signed in through one is signed in at the other (the
/// Service, or Linkerd's per-request balancing, sends its requests to either); signing out at
/// one ends it at both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_shared_by_the_replicas() {
    let redis = mesh_testkit::Redis::start().await;
    let (a, b) = (
        start_mcp_with(&["--redis-url", &redis.url], None),
        start_mcp_with(&["--redis-url", &redis.url], None),
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let at = |m: &super::Mcp, path: &str| format!("http://127.0.0.1:{}{path}", m.http);
    let signed = poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let r = http
                .post(at(&a, "/ui/login"))
                .form(&[("token", "t0ken")])
                .send()
                .await
                .ok()?;
            (r.status() == 303).then_some(r)
        },
    )
    .await
    .expect("replica a signs alice in");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let r = http
                .get(at(&b, "/ui/"))
                .header("cookie", &cookie)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(r)
        },
    )
    .await
    .expect("replica b knows alice's session");
    let body = page.text().await.unwrap();
    assert!(body.contains("alice"), "{body}");
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let out = http
        .post(at(&b, "/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let gone = http
        .get(at(&a, "/ui/api/graph"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
}
