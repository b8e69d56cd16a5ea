//! History end to end: meshsim (emojivoto, following kube-sim's policy) scraped by a real
//! Prometheus, the collector logging kube-sim's objects to a real redis-server, mesh-mcp as
//! its binary's `run` starts it, and the real `meshctl` binary asking.
//!
//! At t1 a policy is applied the way the chat approval flow applies it (the bot's delegated
//! token, as alice, approved by bob); at t2 meshsim makes web -> voting plaintext and drops its
//! success rate. `meshctl diff` over [t0, now] must list the policy change with requester and
//! approver, then the TLS change and the regression; `meshctl graph --at` a moment before t1
//! must equal the graph a client saved at that moment.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    process::{Command, Output},
    sync::Arc,
    time::{Duration, SystemTime},
};

use mesh_testkit::{Prometheus, Redis, free_port, poll};
use serde_json::Value;

mod common;

const MCP_TOKENS: &str = "alice-t,alice,u1,\"devs\"\n\
bot-t,system:serviceaccount:linkerd-mcp:chatbot,u3\n";
const KUBE_TOKENS: &str = "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n";

/// Only web may call voting.
const VOTING_POLICY: &str = r"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: gRPC}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: voting-clients, namespace: emojivoto}
spec:
  identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-policy, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}
";

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .expect("run meshctl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "meshctl failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Edges by `src -> dst`: TLS, verdict, rps and success rate.
fn edges(g: &Value) -> std::collections::BTreeMap<String, (String, String, f64, f64)> {
    g["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = |w: &Value| {
                format!(
                    "{}/{}",
                    w["namespace"].as_str().unwrap_or(""),
                    w["name"].as_str().unwrap_or("")
                )
            };
            let m = &e["metrics"];
            (
                format!("{} -> {}", name(&e["src"]), name(&e["dst"])),
                (
                    e["tls"].as_str().unwrap_or("").to_owned(),
                    e["policy"]["decision"].as_str().unwrap_or("").to_owned(),
                    m["rps"].as_f64().unwrap_or(0.0),
                    m["successRate"].as_f64().unwrap_or(0.0),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_changed_is_one_command_and_the_past_graph_is_the_graph_of_then() {
    let kube = common::emojivoto_without_policy(KUBE_TOKENS).await;
    // devs may edit Linkerd policy (the chat example's RBAC).
    let rbac = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/examples/chatbot-rbac/rbac.yaml");
    kube.load_yaml(&std::fs::read_to_string(rbac).unwrap())
        .await
        .unwrap();
    let topology = meshsim::builtin("emojivoto").unwrap();
    let mut sim = meshsim::Sim::new(topology.clone(), std::time::Instant::now());
    sim.set_version(meshsim::LinkerdVersion::V2_20);
    let sim = Arc::new(tokio::sync::Mutex::new(sim));
    let kube_client = |token: &str| kube::Client::try_from(kube.kube_config(token)).unwrap();
    meshsim::authz::follow(
        sim.clone(),
        mesh_collector::watch::spawn(&kube_client("collector-token")),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = l.local_addr().unwrap();
    tokio::spawn(meshsim::serve_shared(
        l,
        sim.clone(),
        std::future::pending(),
    ));
    let prom = Prometheus::start(&[sim_addr]).await;
    let redis = Redis::start().await;

    // The collector: 10 s window, a build every second, logging the cluster's changes.
    let store = Arc::new(
        mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap(),
    );
    let window = Duration::from_secs(10);
    tokio::spawn(mesh_collector::run::run(
        mesh_collector::run::Sources {
            prometheus: mesh_prometheus::PrometheusSource::new(
                &prom.url,
                window,
                Duration::from_secs(5),
            )
            .unwrap(),
            kubernetes: mesh_collector::watch::spawn(&kube_client("collector-token")),
            history: mesh_store::Retention::default(),
        },
        store,
        Duration::from_secs(1),
        mesh_collector::run::Metrics::default(),
        std::future::pending(),
    ));

    // mesh-mcp, started as its binary starts it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.csv"), MCP_TOKENS).unwrap();
    std::fs::write(dir.path().join("kubeconfig"), kube.kubeconfig("mcp-token")).unwrap();
    let grpc = free_port();
    let server = format!("127.0.0.1:{grpc}");
    let args = <mesh_mcp::cli::Args as clap::Parser>::try_parse_from([
        "mesh-mcp",
        "--redis-url",
        &redis.url,
        "--prometheus-url",
        &prom.url,
        "--kubeconfig",
        dir.path().join("kubeconfig").to_str().unwrap(),
        "--token-file",
        dir.path().join("tokens.csv").to_str().unwrap(),
        "--delegator",
        "system:serviceaccount:linkerd-mcp:chatbot",
        "--delegate-group",
        "devs",
        "--grpc-listen",
        &server,
    ])
    .unwrap();
    let mcp = tokio::spawn(mesh_mcp::cli::run(args));

    // t0: the graph is served with traffic and verdicts, and the change log has begun.
    let graph_now = |extra: &[&str]| {
        let mut a = vec![
            "graph",
            "--server",
            &server,
            "--token",
            "alice-t",
            "-n",
            "emojivoto",
            "-o",
            "json",
        ];
        a.extend_from_slice(extra);
        meshctl(&a)
    };
    let key = "emojivoto/web -> emojivoto/voting";
    let saved = poll(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let o = graph_now(&[]);
            let g: Value = serde_json::from_slice(&o.stdout).ok()?;
            let e = edges(&g);
            let web = e.get(key)?;
            (web.0 == "MTLS" && web.1 == "ALLOWED" && web.2 > 0.0 && e.len() >= 3).then_some(g)
        },
    )
    .await
    .expect("the served graph with web -> voting allowed over mTLS");
    let saved_at: SystemTime =
        humantime::parse_rfc3339_weak(saved["generatedAt"].as_str().unwrap()).unwrap();
    let t0 = saved_at;

    // t1: the change, as the chat approval flow makes it.
    let policy = dir.path().join("voting-policy.yaml");
    std::fs::write(&policy, VOTING_POLICY).unwrap();
    let t1 = SystemTime::now();
    ok(&meshctl(&[
        "apply",
        "-f",
        policy.to_str().unwrap(),
        "--server",
        &server,
        "--token",
        "bot-t",
        "--as",
        "alice",
        "--as-group",
        "devs",
        "--approved-by",
        "bob",
    ]));
    // The collector logs it within a build.
    let log =
        mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap();
    let logged_at = poll(
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            use mesh_store::HistoryStore as _;
            let changes = log
                .changes_after(mesh_store::STREAM_START, 10_000)
                .await
                .ok()?;
            changes
                .iter()
                .find(|c| c.key == "policy.linkerd.io/AuthorizationPolicy/emojivoto/voting-policy")
                .map(|c| c.at)
        },
    )
    .await
    .expect("the collector logs the policy change");

    // t2, a few seconds on (graph-level changes are dated to about a second here): web ->
    // voting loses mTLS and most of its successes.
    poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { (SystemTime::now() > logged_at + Duration::from_secs(3)).then_some(()) },
    )
    .await
    .unwrap();
    let t2 = SystemTime::now();
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
    poll(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let g: Value = serde_json::from_slice(&graph_now(&[]).stdout).ok()?;
            let web = edges(&g).get(key)?.clone();
            // Well past the regression threshold (5 points below the success rate at t0, about
            // 85%), so the diff cannot miss it by a wobble of the window.
            (web.0 == "PLAINTEXT" && web.3 < 0.7).then_some(())
        },
    )
    .await
    .expect("the served graph shows web -> voting plaintext and failing");

    // One command: what changed since t0.
    let from = rfc3339(t0);
    let to = rfc3339(SystemTime::now());
    let diff = |output: &str| {
        ok(&meshctl(&[
            "diff",
            "--server",
            &server,
            "--token",
            "alice-t",
            "--from",
            &from,
            "--to",
            &to,
            "--namespace",
            "emojivoto",
            "-o",
            output,
        ]))
    };
    let d: Value = serde_json::from_str(&diff("json")).unwrap();
    let changes = d["changes"].as_array().unwrap();
    let first = |pred: &dyn Fn(&Value) -> bool| {
        changes
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing in {changes:#?}"))
    };
    let is_web_voting = |e: &Value| e["src"]["name"] == "web" && e["dst"]["name"] == "voting";
    let policy_at = first(&|c| {
        c["object"]["kind"] == "AuthorizationPolicy"
            && c["object"]["name"] == "voting-policy"
            && c["object"]["operation"] == "created"
    });
    let p = &changes[policy_at]["object"];
    assert_eq!(
        (
            p["requestedBy"].as_str(),
            p["approvedBy"].as_str(),
            p["via"].as_str()
        ),
        (
            Some("alice"),
            Some("bob"),
            Some("system:serviceaccount:linkerd-mcp:chatbot")
        ),
        "{p}"
    );
    assert!(!p["auditId"].as_str().unwrap_or("").is_empty(), "{p}");
    let tls_at =
        first(&|c| is_web_voting(&c["tlsChanged"]["edge"]) && c["tlsChanged"]["to"] == "PLAINTEXT");
    let verdict_at = first(&|c| {
        is_web_voting(&c["verdictChanged"]["edge"]) && c["verdictChanged"]["to"] == "DENIED"
    });
    assert!(
        changes[verdict_at]["verdictChanged"]["by"]
            .as_str()
            .is_some_and(|b| b.contains("voting-grpc")),
        "a denial says which Server refuses it: {}",
        changes[verdict_at]
    );
    let regression_at = first(&|c| {
        is_web_voting(&c["regression"]["edge"]) && c["regression"]["metric"] == "success_rate"
    });
    assert!(
        policy_at < tls_at && policy_at < regression_at,
        "{changes:#?}"
    );
    let when =
        |i: usize| humantime::parse_rfc3339_weak(changes[i]["at"].as_str().unwrap()).unwrap();
    assert!(
        when(policy_at) >= t1 && when(policy_at) < t2,
        "the policy change is dated at t1"
    );
    assert!(when(tls_at) >= t2, "the TLS change is dated after t2");
    assert!(
        d["fromPoint"]["objectsExact"].as_bool().unwrap(),
        "{}",
        d["fromPoint"]
    );

    // The same as a table a person reads, and as a picture.
    let table = diff("table");
    assert!(
        table.contains("requested by alice, approved by bob"),
        "{table}"
    );
    assert!(table.contains("mTLS -> plaintext"), "{table}");
    assert!(table.contains("success rate"), "{table}");
    let svg = diff("svg");
    assert!(svg.contains("<svg"), "{svg:.200}");
    for marked in ["mTLS → plaintext", "▼ success", "⚖ allowed → denied"] {
        assert!(
            svg.contains(marked),
            "{marked} is not marked in the picture"
        );
    }

    // The graph at the saved moment equals the saved graph: same edges, TLS and verdicts,
    // metrics within tolerance.
    let then: Value = serde_json::from_str(&ok(&graph_now(&["--at", &rfc3339(saved_at)]))).unwrap();
    assert!(
        then["pointInTime"]["objectsExact"].as_bool().unwrap(),
        "{}",
        then["pointInTime"]
    );
    let (a, b) = (edges(&saved), edges(&then));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (tls, verdict, rps, sr)) in &a {
        let (tls2, verdict2, rps2, sr2) = &b[k];
        assert_eq!((tls, verdict), (tls2, verdict2), "{k}");
        assert!(
            (rps - rps2).abs() <= rps.max(1.0) * 0.25,
            "{k}: rps {rps} then, {rps2} replayed"
        );
        assert!(
            (sr - sr2).abs() <= 0.05,
            "{k}: success {sr} then, {sr2} replayed"
        );
    }

    // Bad input: one clear error each.
    let refused = |args: &[&str], want: &str| {
        let o = meshctl(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    };
    let base = ["diff", "--server", &server, "--token", "alice-t"];
    refused(
        &[&base[..], &["--since", "soon"]].concat(),
        "is not a duration",
    );
    refused(
        &[&base[..], &["--from", &to, "--to", &from]].concat(),
        "is not before",
    );
    let future = rfc3339(SystemTime::now() + Duration::from_secs(3600));
    refused(
        &[&base[..], &["--from", &from, "--to", &future]].concat(),
        "is in the future",
    );
    refused(
        &[
            "graph",
            "--server",
            &server,
            "--token",
            "alice-t",
            "--at",
            "2001-01-01T00:00:00Z",
        ],
        "before Prometheus's retention",
    );
    refused(
        &[
            "graph",
            "--server",
            &server,
            "--token",
            "alice-t",
            "--at",
            "yesterday",
        ],
        "is not a time",
    );
    mcp.abort();
}
