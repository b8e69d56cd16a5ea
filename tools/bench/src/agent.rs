//! MCP tool calls over streamable HTTP on loopback (client and server in this process), on a
//! generated mesh of `n` workloads joined with its cluster objects: latency of `get_mesh_graph`
//! (the summary) and `explain_access`, and the size of their answers next to the whole graph's,
//! since an agent's context is the scarce resource.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_mcp::{
    GraphService,
    agent::{Backend, MeshAgent},
    apply::{Applier, Delegation},
};
use mesh_model::MetricTolerance;
use mesh_policy::cluster::Cluster;
use mesh_store::MemoryStore;
use serde_json::{Value, json};

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

struct Session {
    http: reqwest::Client,
    url: String,
    id: String,
    next: u64,
}

impl Session {
    /// One JSON-RPC call; its result and the size of the response body.
    async fn call(&mut self, method: &str, params: Value) -> (Value, usize) {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        let r = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .json(&body)
            .send()
            .await
            .expect("MCP call");
        let text = r.text().await.expect("body");
        // Server-sent events: the answer is the `data:` line holding the JSON-RPC response.
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .find(|d| d.contains("\"result\"") || d.contains("\"error\""))
            .unwrap_or(text.as_str());
        let v: Value = serde_json::from_str(data).expect("JSON-RPC response");
        (v["result"].clone(), data.len())
    }
}

/// Prints tool-call latencies (p50/p99) and answer sizes.
pub(crate) async fn run(n: usize) {
    let t = meshsim::generate(n, 1).expect("valid topology");
    let now = SystemTime::now();
    let health = mesh_model::SourceHealth {
        source: "kubernetes".into(),
        ok: true,
        last_success: Some(now),
        error: String::new(),
        detail: String::new(),
    };
    let cluster = Arc::new(Cluster::from_objects(crate::collector::objects(&t), health).0);
    let graph = mesh_collector::run::join(
        &meshsim::graph(&t, Duration::from_secs(60), now),
        &[],
        &cluster,
        &mut mesh_policy::overlay::Verdicts::default(),
        now,
    );
    let whole_json = serde_json::to_string(&mesh_proto::pb::MeshGraph::from(&graph))
        .expect("JSON")
        .len();
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = mesh_collector::Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .expect("memory store");
    publisher.publish(graph.clone()).await.expect("publish");
    let (tx, rx) = tokio::sync::watch::channel(None);
    let history = mesh_mcp::History::default();
    tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    rx.clone()
        .wait_for(Option::is_some)
        .await
        .expect("follower");
    let (_keep, cluster_rx) = tokio::sync::watch::channel(cluster);
    // Explaining reads the cluster view only; this API server is never called.
    let nowhere = kube::Config::new("http://127.0.0.1:1".parse().expect("URL"));
    let applier = Applier::new(nowhere, Delegation::default(), cluster_rx, rx.clone());
    let service = GraphService::new(rx, history, Duration::from_secs(60)).with_applier(applier);
    let agent = MeshAgent::new(Backend::Local(Box::new(service)), false);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(
            mesh_mcp::http_incoming(l),
            mesh_mcp::agent::router(agent, &[], &[]),
        )
        .await
    });

    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mesh-bench", "version": "1"}}});
    let r = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .expect("initialize");
    let id = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_owned();
    let _ = r.text().await;
    let _ = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &id)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("initialized");
    let mut s = Session {
        http,
        url,
        id,
        next: 0,
    };
    let e = &t.edges[t.edges.len() / 2];
    let cases = [
        ("get_mesh_graph", json!({})),
        ("explain_access", json!({"from": e.from, "to": e.to})),
        ("get_mesh_graph_full", json!({"full": true})),
    ];
    let mut line = String::new();
    for (name, args) in cases {
        let tool = name.trim_end_matches("_full");
        let params = json!({"name": tool, "arguments": args});
        let (first, size) = s.call("tools/call", params.clone()).await;
        assert!(first["isError"] != json!(true), "{name} failed: {first}");
        let runs = 200;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            s.call("tools/call", params.clone()).await;
            times.push(t0.elapsed());
        }
        line.push_str(&format!(
            "{name}_p50_ms={:.2} {name}_p99_ms={:.2} {name}_bytes={size} ",
            pct(times.clone(), 0.5),
            pct(times, 0.99)
        ));
    }
    println!(
        "{line}whole_graph_json_bytes={whole_json} edges={} (client and server share this process)",
        t.edges.len()
    );
}
