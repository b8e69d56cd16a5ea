//! The web console in headless Chromium (chromedriver): for a page of `n` workloads, the time
//! from navigation to the whole graph drawn and the bytes it took (page, script, style and the
//! snapshot event); then the time from a change being served to the page holding it, taken by
//! the page's own clock when the delta arrives and when it is drawn. The mcp service and kube-sim
//! in process, as `mcp-harness` runs them.

use std::time::{Duration, Instant, SystemTime};

use fantoccini::Locator;
use mesh_testkit::{Browser, poll};

use crate::chat::pct;

/// Deltas timed.
const DELTAS: usize = 20;
/// Page loads timed.
const LOADS: usize = 5;

async fn count_edges(b: &Browser) -> usize {
    b.client
        .execute("return document.querySelectorAll('g.edge').length;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
}

/// Runs the case over a generated mesh of `n` workloads.
pub(crate) async fn run(n: usize) {
    let mut t = meshsim::generate(n, 7).expect("a generated topology");
    let h = mcp_harness::McpHarness::start(mcp_harness::Options {
        kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n".into(),
        extra_seeds: Vec::new(),
        topology: t.clone(),
        delegation: mesh_mcp::apply::Delegation::default(),
        mcp_tokens: "tok,admin,u,\"system:masters\"\n".into(),
        heartbeat: Duration::from_secs(60),
        tweak: |a| a,
        prometheus_url: None,
    })
    .await;
    // The edges the page must draw: what the service serves (the generated mesh's edges as
    // joined and merged).
    let mut client = mesh_proto::pb::mesh_service_client::MeshServiceClient::connect(format!(
        "http://{}",
        h.addr
    ))
    .await
    .expect("the gRPC port");
    let mut req = tonic::Request::new(mesh_proto::pb::GetMeshGraphRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer tok".parse().expect("header"));
    let edges = client
        .get_mesh_graph(req)
        .await
        .expect("the graph")
        .into_inner()
        .edges
        .len();
    let b = Browser::start().await;
    let base = &h.http_base;
    b.client
        .goto(&format!("{base}/ui/login"))
        .await
        .expect("the login page");
    let field = b.client.find(Locator::Css("#token")).await.expect("form");
    field.send_keys("tok").await.expect("typing");
    b.client
        .find(Locator::Css("#sign-in"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");

    let mut loads = Vec::new();
    let mut bytes = 0.0;
    for _ in 0..LOADS {
        let start = Instant::now();
        b.client
            .goto(&format!("{base}/ui/"))
            .await
            .expect("the page");
        poll(
            Duration::from_secs(120),
            Duration::from_millis(10),
            || async { (count_edges(&b).await == edges).then_some(()) },
        )
        .await
        .expect("the whole graph is drawn within 120 s");
        loads.push(start.elapsed());
        bytes = b
            .client
            .execute(
                "const nav = performance.getEntriesByType('navigation')[0]; \
                 const res = performance.getEntriesByType('resource') \
                   .filter((r) => !r.name.includes('/api/events')) \
                   .reduce((s, r) => s + r.transferSize, 0); \
                 return nav.transferSize + res + (window.__lmcpSnapshotBytes || 0);",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
    }

    // Each round turns one edge plaintext (or back): a delta every published version carries.
    let mut publish = Vec::new();
    let mut arrive = Vec::new();
    let mut drawn = Vec::new();
    for i in 0..DELTAS {
        let k = i % t.edges.len();
        let e = &mut t.edges[k];
        e.tls = Some(e.tls == Some(false));
        // From the version served by mesh-mcp (the harness's publish returns once its follower
        // holds it: building the graph from meshsim is not the console's cost).
        let before = Instant::now();
        let version = h.publish(&t).await;
        publish.push(before.elapsed());
        let sent = SystemTime::now();
        let script = format!(
            "const d = window.__lmcpDeltas.find((d) => d.version >= {version}); \
             return d ? [d.at, d.drawnAt] : null;"
        );
        let got = poll(
            Duration::from_secs(30),
            Duration::from_millis(2),
            || async {
                let v = b.client.execute(&script, vec![]).await.ok()?;
                let pair = v.as_array()?;
                Some((pair.first()?.as_f64()?, pair.get(1)?.as_f64()?))
            },
        )
        .await
        .expect("the delta reaches the page within 30 s");
        let sent_ms = sent
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
            * 1000.0;
        let ms = |at: f64| Duration::from_secs_f64(((at - sent_ms) / 1000.0).max(0.0));
        arrive.push(ms(got.0));
        drawn.push(ms(got.1));
    }
    println!(
        "workloads={n} edges={edges} first_graph_ms_p50={:.0} page_kib={:.0} \
         publish_ms_p50={:.1} delta_arrive_ms_p50={:.1} p99={:.1} delta_drawn_ms_p50={:.1} p99={:.1}",
        pct(loads, 0.5),
        bytes / 1024.0,
        pct(publish, 0.5),
        pct(arrive.clone(), 0.5),
        pct(arrive, 0.99),
        pct(drawn.clone(), 0.5),
        pct(drawn, 0.99),
    );
    b.client.clone().close().await.expect("closing the browser");
}
