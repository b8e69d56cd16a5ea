//! The hostile-input suite: attacks sent to the real `mesh-mcp` binary (following a real Redis,
//! writing to kube-sim through its own service account) as an attacker would send them. Each
//! attack must be refused with its specific answer, must change nothing in the cluster (kube-sim's
//! resourceVersion), and must leave the service answering a health read and a graph read within
//! [`BOUND`]. The last step makes a legitimate change, so "nothing changed" is not vacuous.
//! Every process is killed by PID when its guard drops, also when the test fails.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use kube_sim::KubeSim;
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use mesh_testkit::{ChildGuard, Redis, free_port, poll};
use tonic::{Code, Request, transport::Channel};

mod common;
use common::{BOOKS_POLICY, BOT, EDITORS, KUBE_TOKENS};

/// How long a health read and a graph read may take while or after an attack is served.
const BOUND: Duration = Duration::from_secs(5);

/// alice (devs) may not edit policy, bob (mesh-admins) may, mallory has nothing, the bot is the
/// one delegator, and root is an administrator of the cluster.
const MCP_TOKENS: &str = "alice-t,alice,u1,\"devs\"\n\
bob-t,bob,u2,\"mesh-admins\"\n\
mallory-t,mallory,u4\n\
root-t,root,u5,\"system:masters\"\n\
bot-t,system:serviceaccount:linkerd-mcp:chatbot,u3\n";

/// The service under attack and the world around it.
struct Target {
    kube: KubeSim,
    _redis: Redis,
    grpc: u16,
    http: u16,
    admin: u16,
    client: MeshServiceClient<Channel>,
    web: reqwest::Client,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start() -> Self {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let kube = KubeSim::start(kube_sim::Config {
            tokens: KUBE_TOKENS.into(),
            seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
            with_linkerd_crds: true,
            ..kube_sim::Config::default()
        })
        .await
        .unwrap();
        kube.load_yaml(EDITORS).await.unwrap();
        let redis = Redis::start().await;
        let store = Arc::new(
            mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap(),
        );
        let mut publisher =
            mesh_collector::Publisher::start(store, mesh_model::MetricTolerance::default())
                .await
                .unwrap();
        let graph = meshsim::graph_as(
            &meshsim::builtin("booksapp").unwrap(),
            Duration::from_secs(60),
            SystemTime::now(),
            meshsim::LinkerdVersion::V2_20,
        );
        publisher.publish(graph).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokens.csv"), MCP_TOKENS).unwrap();
        std::fs::write(dir.path().join("kubeconfig"), kube.kubeconfig("mcp-token")).unwrap();
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let guard = ChildGuard::spawn(
            "mesh-mcp",
            Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
                .args(["--redis-url", &redis.url])
                .arg("--kubeconfig")
                .arg(dir.path().join("kubeconfig"))
                .arg("--token-file")
                .arg(dir.path().join("tokens.csv"))
                .args(["--delegator", BOT])
                .args([
                    "--delegate-group",
                    "devs",
                    "--delegate-group",
                    "mesh-admins",
                ])
                .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
                .args(["--http-listen", &format!("127.0.0.1:{http}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .env("MESH_LOG", "info"),
            &dir.path().join("mesh-mcp.log"),
        );
        let client = MeshServiceClient::new(
            Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect_lazy(),
        );
        let t = Self {
            kube,
            _redis: redis,
            grpc,
            http,
            admin,
            client,
            web: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            _guard: guard,
            _dir: dir,
        };
        let served = poll(Duration::from_secs(60), Duration::from_millis(200), || {
            let mut c = t.client.clone();
            async move {
                let g = c
                    .get_mesh_graph(with("alice-t", pb::GetMeshGraphRequest::default()))
                    .await
                    .ok()?;
                (!g.into_inner().edges.is_empty()).then_some(())
            }
        })
        .await;
        assert!(served.is_some(), "mesh-mcp never served the graph");
        t
    }

    /// Answers a health read (`/ready`) and a namespace's graph within [`BOUND`], or panics
    /// naming `after`.
    async fn still_answers(&self, after: &str) {
        let start = Instant::now();
        let ready = self
            .web
            .get(format!("http://127.0.0.1:{}/ready", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{after}: /ready");
        let g = self
            .client
            .clone()
            .get_mesh_graph(with(
                "alice-t",
                pb::GetMeshGraphRequest {
                    namespaces: vec!["booksapp".into()],
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        assert!(!g.into_inner().edges.is_empty(), "{after}");
        assert!(
            start.elapsed() < BOUND,
            "{after}: the health and graph reads took {:?}",
            start.elapsed()
        );
    }

    /// Asserts the cluster is as it was at `rv` and the service still answers.
    async fn nothing_changed(&self, rv: u64, after: &str) {
        assert_eq!(
            self.kube.resource_version().await,
            rv,
            "{after}: the cluster changed"
        );
        self.still_answers(after).await;
    }

    async fn apply(
        &self,
        r: Request<pb::ApplyRequest>,
    ) -> Result<pb::ApplyResponse, tonic::Status> {
        self.client
            .clone()
            .apply_authorization_policy(r)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Posts `body` to `/mcp` with `headers`; the answer.
    async fn mcp_send(&self, headers: &[(&str, &str)], body: String) -> reqwest::Response {
        let mut r = self
            .web
            .post(format!("http://127.0.0.1:{}/mcp", self.http))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(body).send().await.unwrap()
    }

    /// Posts `body` to `/mcp` with `headers`; the status and the body.
    async fn mcp_post(&self, headers: &[(&str, &str)], body: String) -> (u16, String) {
        let resp = self.mcp_send(headers, body).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

fn with<T>(token: &str, m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(20));
    r
}

fn manifest(text: &str, dry_run: bool) -> pb::ApplyRequest {
    pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(text.into())),
        dry_run,
        ..Default::default()
    }
}

fn initialize() -> String {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "hostile", "version": "0"}
        }
    })
    .to_string()
}

/// The JSON-RPC messages of an MCP answer (a JSON body, or the `data:` lines of an SSE stream).
fn rpc_messages(body: &str) -> Vec<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(body) {
        return vec![v];
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_changes_nothing_and_the_service_keeps_answering() {
    let t = Target::start().await;
    let rv = t.kube.resource_version().await;
    t.still_answers("start").await;

    // Authentication bypass: no credentials, empty, wrong, wrong scheme, wrong case, and a
    // token in the URL. Reads and writes alike are refused before any work.
    for header in [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("Basic Ym9iLXQ6"),
        Some("Token bob-t"),
        Some("Bearer BOB-T"),
        Some("Bearer bob-t bob-t"),
        Some("bob-t"),
    ] {
        let mut read = Request::new(pb::GetMeshGraphRequest::default());
        let mut write = Request::new(manifest(BOOKS_POLICY, false));
        if let Some(h) = header {
            read.metadata_mut()
                .insert("authorization", h.parse().unwrap());
            write
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        let e = t.client.clone().get_mesh_graph(read).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "read with {header:?}: {e}");
        let e = t.apply(write).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "write with {header:?}: {e}"
        );
        let mut req = t.web.get(format!("http://127.0.0.1:{}/v1/graph", t.http));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        assert_eq!(req.send().await.unwrap().status(), 401, "{header:?}");
    }
    for query in [
        "token=bob-t",
        "access_token=bob-t",
        "authorization=Bearer%20bob-t",
    ] {
        let r = t
            .web
            .get(format!("http://127.0.0.1:{}/v1/graph?{query}", t.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a token in the URL: {query}");
    }
    let (s, _) = t.mcp_post(&[], initialize()).await;
    assert_eq!(s, 401, "MCP without a token");
    t.nothing_changed(rv, "authentication bypass").await;

    // Delegation: only the bot may act for others, never as a system identity or with a
    // group outside the delegated ones, whatever the spelling.
    let mut as_other = manifest(BOOKS_POLICY, false);
    as_other.on_behalf_of = Some(pb::Identity {
        user: "alice".into(),
        groups: vec!["devs".into()],
    });
    let e = t.apply(with("bob-t", as_other)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "bob delegating: {e}");
    for (user, groups) in [
        ("system:admin", vec!["mesh-admins"]),
        ("system:kube-controller-manager", vec!["mesh-admins"]),
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            vec![],
        ),
        ("alice", vec!["system:masters"]),
        ("alice", vec!["mesh-admins", "system:masters"]),
        ("alice", vec!["System:Masters"]),
        ("alice", vec!["system:masters "]),
        ("alice", vec!["\u{0455}ystem:masters"]),
        ("alice", vec!["cluster-admins"]),
        ("", vec!["mesh-admins"]),
    ] {
        let mut r = manifest(BOOKS_POLICY, false);
        r.on_behalf_of = Some(pb::Identity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
        let e = t.apply(with("bot-t", r)).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::InvalidArgument),
            "delegating to {user:?} {groups:?}: {e}"
        );
    }
    t.nothing_changed(rv, "delegation abuse").await;

    // Smuggled kinds: a cluster administrator's ApplyAuthorizationPolicy carries only the
    // policy kinds it names, whatever else the manifest holds.
    let smuggled = [
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {name: pwn}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
         subjects: [{kind: User, name: mallory}]\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: booksapp}\nstringData: {a: b}\n",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s, namespace: booksapp}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: pwn}\n",
    ];
    for extra in smuggled {
        let doc = format!("{BOOKS_POLICY}---\n{extra}");
        let e = t
            .apply(with("root-t", manifest(&doc, false)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{extra}: {e}");
    }
    t.nothing_changed(rv, "smuggled kinds").await;

    // Hostile documents from a caller with no rights at all, three at once each, with reads
    // served meanwhile: nesting, block nesting, size and an alias bomb are refused before
    // parsing (or by the parser's repetition limit).
    let deep = format!("x: {}", "[".repeat(1_000_000));
    let block: String = (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let big = format!("{BOOKS_POLICY}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    let laughs: String = std::iter::once("a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_owned())
        .chain(('b'..='i').map(|c| {
            let prev = (c as u8 - 1) as char;
            format!("{c}: &{c} [{}]\n", vec![format!("*{prev}"); 10].join(", "))
        }))
        .collect();
    let cases: [(&str, &str); 4] = [
        (&deep, "nested more than 64 levels deep"),
        (&block, "nested more than 64 levels deep"),
        (&big, "at most 1048576 are accepted"),
        (&laughs, "repetition limit exceeded"),
    ];
    let mut attacks = Vec::new();
    for (doc, want) in cases {
        for _ in 0..3 {
            let (c, r) = (t.client.clone(), with("mallory-t", manifest(doc, true)));
            attacks.push(tokio::spawn(async move {
                (
                    want,
                    c.clone().apply_authorization_policy(r).await.unwrap_err(),
                )
            }));
        }
    }
    t.still_answers("hostile documents in flight").await;
    for a in attacks {
        let (want, e) = a.await.unwrap();
        assert_eq!(e.code(), Code::InvalidArgument, "{want}: {e}");
        assert!(e.message().contains(want), "{want}: {e}");
    }
    // A message past gRPC's 4 MiB limit is refused by the transport.
    let huge = format!("{BOOKS_POLICY}\n# {}\n", "x".repeat(5 * 1024 * 1024));
    let e = t
        .apply(with("mallory-t", manifest(&huge, true)))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "5 MiB: {e}"
    );
    t.nothing_changed(rv, "hostile documents").await;

    // Forged audit trail: only a delegator says who approved and why, and never with control
    // characters that would forge lines in Events and logs.
    for token in ["alice-t", "bob-t", "root-t"] {
        let mut r = manifest(BOOKS_POLICY, false);
        r.approved_by = "carol".into();
        let e = t.apply(with(token, r)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{token}: {e}");
        assert!(
            e.message().starts_with("approved_by: only a delegator"),
            "{e}"
        );
        let mut r = manifest(BOOKS_POLICY, false);
        r.reason = "approved in Slack by carol".into();
        let e = t.apply(with(token, r)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{token}: {e}");
        // A reason is judged once the approval gate has spoken; alice, who may not write
        // here at all, is refused for that first.
        let why = if token == "alice-t" {
            "alice may not"
        } else {
            "reason: only a delegator"
        };
        assert!(e.message().starts_with(why), "{e}");
    }
    for (field, value) in [
        ("approved_by", "carol\nINFO approved by admin"),
        ("reason", "ok\r\n{\"approved_by\":\"admin\"}"),
        ("reason", "bell\u{7}"),
    ] {
        let mut r = manifest(BOOKS_POLICY, false);
        r.on_behalf_of = Some(pb::Identity {
            user: "bob".into(),
            groups: vec!["mesh-admins".into()],
        });
        if field == "approved_by" {
            r.approved_by = value.into();
        } else {
            r.approved_by = "carol".into();
            r.reason = value.into();
        }
        let e = t.apply(with("bot-t", r)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field} {value:?}: {e}");
        assert!(e.message().contains(field), "{e}");
    }
    t.nothing_changed(rv, "forged approvals").await;

    // MCP over HTTP: DNS rebinding (a Host that is not this server), a page from another
    // site, an oversized body and a deeply nested one.
    let bearer = "Bearer bob-t";
    for host in [
        "evil.example.com",
        "127.0.0.1.evil.example.com",
        "localhost.evil",
    ] {
        let (s, b) = t
            .mcp_post(&[("authorization", bearer), ("host", host)], initialize())
            .await;
        assert_eq!(s, 403, "Host {host}: {b}");
    }
    for origin in [
        "https://evil.example.com",
        "http://localhost.evil.example",
        "null",
    ] {
        let (s, b) = t
            .mcp_post(
                &[("authorization", bearer), ("origin", origin)],
                initialize(),
            )
            .await;
        assert_eq!(s, 403, "Origin {origin}: {b}");
    }
    // Announced at 5 MiB: refused on the headers, before a byte of the body is read.
    let status = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", t.http))
            .await
            .unwrap();
        c.write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer}\r\n\
                 Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
                 Content-Length: {}\r\n\r\n{{",
                5 * 1024 * 1024
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(BOUND, c.read_exact(&mut head))
            .await
            .expect("an answer before the body")
            .unwrap();
        String::from_utf8_lossy(&head).into_owned()
    };
    assert_eq!(status, "HTTP/1.1 413", "a 5 MiB MCP body");
    let (s, b) = t
        .mcp_post(
            &[("authorization", bearer)],
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        )
        .await;
    assert!((400..500).contains(&s), "a deeply nested MCP body: {s} {b}");
    // A real MCP session, opened from a loopback page (which may use the endpoint), whose tool
    // call carries a nested manifest: the tool refuses it.
    let opened = t
        .mcp_send(
            &[
                ("authorization", bearer),
                ("origin", "http://localhost:6274"),
            ],
            initialize(),
        )
        .await;
    assert_eq!(opened.status(), 200, "a loopback page may use the endpoint");
    let session = opened
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("a session id");
    let session_headers = [
        ("authorization", bearer),
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (s, _) = t
        .mcp_post(
            &session_headers,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
        )
        .await;
    assert!(s == 202 || s == 200, "initialized: {s}");
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "plan_authorization_policy", "arguments": {"manifest": deep}}
    });
    let (s, b) = t.mcp_post(&session_headers, call.to_string()).await;
    assert_eq!(s, 200, "{}", &b[..b.len().min(300)]);
    let answer = rpc_messages(&b)
        .into_iter()
        .find(|m| m["id"] == 2)
        .expect("the tool's answer");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("nested more than 64 levels deep"),
        "{answer}"
    );
    t.nothing_changed(rv, "MCP attacks").await;

    // Connections that say nothing, on every port, do not starve real callers.
    let mut idle = Vec::new();
    for port in [t.grpc, t.http, t.admin] {
        for _ in 0..100 {
            idle.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
    }
    t.nothing_changed(rv, "300 silent connections").await;
    drop(idle);

    // And the same service does make a legitimate change: bob edits policy.
    let done = t
        .apply(with("bob-t", manifest(BOOKS_POLICY, false)))
        .await
        .unwrap();
    assert!(!done.audit_id.is_empty(), "{done:?}");
    assert!(
        t.kube.resource_version().await > rv,
        "the legitimate change was written"
    );
    t.still_answers("the legitimate change").await;
}
