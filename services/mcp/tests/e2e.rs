//! End to end over real processes: meshsim -> Prometheus -> collector -> store -> mesh-mcp.
//! Every process is killed by PID when its guard drops, also when the test fails.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{net::SocketAddr, process::Command, sync::Arc, time::Duration};

use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use mesh_testkit::{ChildGuard, Prometheus, Redis, free_port, poll};
use tonic::Request;

/// vote-bot may not call voting: only web is authorized on voting's gRPC port.
const VOTING_POLICY: &str = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
    metadata: {name: voting-grpc, namespace: emojivoto}\n\
    spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: gRPC}\n---\n\
    apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
    metadata: {name: voting-clients, namespace: emojivoto}\n\
    spec: {identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]}\n---\n\
    apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
    metadata: {name: voting-policy, namespace: emojivoto}\n\
    spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}\n  \
    requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}]\n";

#[path = "e2e/console.rs"]
mod console;

const TOKENS: &str = "t0ken,alice,uid-1,\"devs\"\nadm1n,admin,uid-2,\"system:masters\"\n\
                      b0t,system:serviceaccount:linkerd-mcp:chatbot,uid-3\n";

async fn sim(t: meshsim::Topology) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    sim_as(t, meshsim::LinkerdVersion::V2_12).await
}

/// meshsim impersonating `version`'s proxies (2.20 adds the route families).
async fn sim_as(
    t: meshsim::Topology,
    version: meshsim::LinkerdVersion,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut s = meshsim::Sim::new(t, std::time::Instant::now());
    s.set_version(version);
    serve_sim(Arc::new(tokio::sync::Mutex::new(s))).await
}

/// Serves `sim` on a free loopback port until the returned sender is dropped.
async fn serve_sim(sim: meshsim::SharedSim) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(meshsim::serve_shared(l, sim, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// kube-sim with the Linkerd CRDs, emojivoto without its published policy, and the RBAC that
/// lets the collector's and mesh-mcp's identities (`collector-token`, `mcp-token`) watch it.
async fn emojivoto_cluster() -> kube_sim::KubeSim {
    let seed =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/kube-sim/seed/demo");
    let cluster = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n\
                 mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n"
            .into(),
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    for f in ["emojivoto.yaml", "linkerd-mcp-rbac.yaml"] {
        let text = std::fs::read_to_string(seed.join(f)).unwrap();
        cluster.load_yaml(&text).await.unwrap();
    }
    cluster
}

/// emojivoto, with vote-bot also calling voting (3/s, all successful).
fn emojivoto_with_vote_bot_calling_voting() -> meshsim::Topology {
    let mut t = meshsim::builtin("emojivoto").unwrap();
    let mut second = t
        .edges
        .iter()
        .find(|e| e.to == "emojivoto/voting")
        .unwrap()
        .clone();
    second.from = "emojivoto/vote-bot".into();
    second.rps = 3.0;
    second.success_rate = 1.0;
    t.edges.push(second);
    t
}

/// meshsim impersonating `version`'s proxies, refusing what `cluster`'s policy denies as they
/// would (it watches the cluster as the collector does).
async fn following_sim(
    t: meshsim::Topology,
    version: meshsim::LinkerdVersion,
    cluster: &kube_sim::KubeSim,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut s = meshsim::Sim::new(t, std::time::Instant::now());
    s.set_version(version);
    let sim = Arc::new(tokio::sync::Mutex::new(s));
    meshsim::authz::follow(
        sim.clone(),
        mesh_collector::watch::spawn(&kube_client(cluster, "collector-token")),
    );
    serve_sim(sim).await
}

struct Mcp {
    grpc: u16,
    http: u16,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

fn start_mcp(source: &[&str]) -> Mcp {
    start_mcp_with(source, None)
}

/// mesh-mcp with `kubeconfig` (text) as its kube configuration.
fn start_mcp_with(source: &[&str], kubeconfig: Option<String>) -> Mcp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.csv"), TOKENS).unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig");
    if let Some(text) = kubeconfig {
        std::fs::write(&kubeconfig_path, text).unwrap();
    }
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let guard = ChildGuard::spawn(
        "mesh-mcp",
        Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
            .args(source)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--token-file")
            .arg(dir.path().join("tokens.csv"))
            // No ambient cluster: without `kube`, mesh-mcp runs on Prometheus alone.
            .env("KUBECONFIG", &kubeconfig_path)
            .env("MESH_LOG", "info"),
        &dir.path().join("mesh-mcp.log"),
    );
    Mcp {
        grpc,
        http,
        _guard: guard,
        _dir: dir,
    }
}

/// mesh-mcp with its embedded collector on `prom` (10 s window, 1 s builds) and `kubeconfig`.
fn embedded_mcp(prom: &str, kubeconfig: Option<String>) -> Mcp {
    start_mcp_with(
        &[
            "--embedded-collector",
            "--prometheus-url",
            prom,
            "--window",
            "10s",
            "--interval",
            "1s",
        ],
        kubeconfig,
    )
}

/// Polls GetMeshGraph (bounded by `limit`) until the whole graph satisfies `check`.
async fn graph_until(
    c: &MeshServiceClient<tonic::transport::Channel>,
    limit: Duration,
    check: impl Fn(&pb::MeshGraph) -> bool,
) -> Option<pb::MeshGraph> {
    let check = &check;
    poll(limit, Duration::from_millis(500), || {
        let mut c = c.clone();
        async move {
            let g = c
                .get_mesh_graph(authed(pb::GetMeshGraphRequest::default()))
                .await
                .ok()?
                .into_inner();
            check(&g).then_some(g)
        }
    })
    .await
}

fn authed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

/// Polls GetMeshGraph until the edge set equals the topology's with rates within 10%.
async fn converges(port: u16, t: &meshsim::Topology) -> pb::MeshGraph {
    let got = poll(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async move {
            let mut c = MeshServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .ok()?;
            let g = c
                .get_mesh_graph(authed(pb::GetMeshGraphRequest::default()))
                .await
                .ok()?
                .into_inner();
            let ok = g.edges.len() == t.edges.len()
                && t.edges.iter().all(|e| {
                    g.edges.iter().any(|x| {
                        let (s, d) = (
                            x.src.clone().unwrap_or_default(),
                            x.dst.clone().unwrap_or_default(),
                        );
                        format!("{}/{}", s.namespace, s.name) == e.from
                            && format!("{}/{}", d.namespace, d.name) == e.to
                            && x.tls == pb::TlsStatus::Mtls as i32
                            && (x.metrics.unwrap_or_default().rps - e.rps).abs() <= 0.1 * e.rps
                    })
                });
            ok.then_some(g)
        },
    )
    .await;
    got.expect("the graph never matched the topology")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_collector_serves_the_prometheus_graph_over_grpc_and_http() {
    let t = meshsim::builtin("emojivoto").unwrap();
    let (addr, _stop) = sim(t.clone()).await;
    let prom = Prometheus::start(&[addr]).await;
    let mcp = embedded_mcp(&prom.url, None);
    let g = converges(mcp.grpc, &t).await;
    assert_eq!(g.sources[0].source, "prometheus");
    assert!(g.sources[0].ok);
    assert_eq!(g.sources[1].source, "kubernetes");
    assert!(!g.sources[1].ok);
    assert!(
        g.sources[1].error.contains("no Kubernetes configuration"),
        "{}",
        g.sources[1].error
    );

    // Without a token: UNAUTHENTICATED.
    let mut c = MeshServiceClient::connect(format!("http://127.0.0.1:{}", mcp.grpc))
        .await
        .unwrap();
    let e = c
        .get_mesh_graph(pb::GetMeshGraphRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // The same read as proto3 JSON over HTTP.
    let http = reqwest::Client::new();
    let url = format!(
        "http://127.0.0.1:{}/v1/graph?workload=emojivoto/voting",
        mcp.http
    );
    let r = http.get(&url).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["edges"].as_array().unwrap().len(), 1);
    assert_eq!(v["edges"][0]["tls"], "MTLS");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let bad = http
        .get(format!("http://127.0.0.1:{}/v1/graph?tls=maybe", mcp.http))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = http
        .get(format!(
            "http://127.0.0.1:{}/v1/graph?workload=emojivoto/nosuch",
            mcp.http
        ))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let why = missing.text().await.unwrap();
    assert!(
        why.contains("emojivoto/nosuch is not in the graph"),
        "{why}"
    );

    // Prometheus stopped: the graph is still served, marked stale.
    let mut prom = prom;
    prom.stop();
    let stale = graph_until(&c, Duration::from_secs(30), |g| {
        !g.sources[0].ok && g.edges.len() == 3
    })
    .await;
    let stale = stale.expect("Prometheus never reported stale");
    assert!(
        stale.sources[0].error.contains("cannot reach Prometheus"),
        "{}",
        stale.sources[0].error
    );
    assert!(stale.sources[0].last_success.is_some());

    // Restarted: fresh again.
    prom.restart().await;
    let fresh = graph_until(&c, Duration::from_secs(60), |g| g.sources[0].ok).await;
    let fresh = fresh.expect("Prometheus never reported fresh after its restart");
    assert!(fresh.sources[0].error.is_empty());
    assert_eq!(fresh.edges.len(), 3);
}

async fn kube() -> kube_sim::KubeSim {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n\
                 mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                 admin-token,admin,uid-a,\"system:masters\"\n"
            .into(),
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap()
}

fn kube_client(sim: &kube_sim::KubeSim, token: &str) -> kube::Client {
    kube::Client::try_from(sim.kube_config(token)).unwrap()
}

fn find<'a>(edges: &'a [pb::Edge], from: &str, to: &str) -> Option<&'a pb::Edge> {
    edges.iter().find(|e| {
        e.src.as_ref().is_some_and(|s| s.name == from)
            && e.dst.as_ref().is_some_and(|d| d.name == to)
    })
}

/// Reads the watch until an event satisfies `check`, within a bound.
async fn until_event(
    stream: &mut tonic::Streaming<pb::MeshGraphEvent>,
    what: &str,
    check: impl Fn(&pb::mesh_graph_event::Event) -> bool,
) -> pb::mesh_graph_event::Event {
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let ev = stream.message().await.unwrap().unwrap().event.unwrap();
            if check(&ev) {
                return ev;
            }
        }
    })
    .await;
    got.unwrap_or_else(|_| panic!("no event: {what}"))
}

/// A client of the gRPC port that connects on first use (the server may still be starting;
/// every call is bounded).
fn lazy_client(port: u16) -> MeshServiceClient<tonic::transport::Channel> {
    MeshServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy(),
    )
}

/// `ApplyAuthorizationPolicy` of `manifest` as the token file's admin.
fn admin_apply(
    c: &MeshServiceClient<tonic::transport::Channel>,
    manifest: &str,
    dry_run: bool,
) -> impl Future<Output = Result<tonic::Response<pb::ApplyResponse>, tonic::Status>> + use<> {
    let mut c = c.clone();
    let mut r = Request::new(pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(manifest.into())),
        dry_run,
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", "Bearer adm1n".parse().unwrap());
    r.set_timeout(Duration::from_secs(20));
    async move { c.apply_authorization_policy(r).await }
}

fn decision(e: &pb::Edge) -> pb::policy_verdict::Decision {
    e.policy.clone().unwrap_or_default().decision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_publishes_through_redis_to_mesh_mcp() {
    let t = meshsim::builtin("booksapp").unwrap();
    let (addr, _stop) = sim(t.clone()).await;
    let prom = Prometheus::start(&[addr]).await;
    let redis = Redis::start().await;
    let cluster = kube().await;
    let store = Arc::new(
        mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap(),
    );
    let source = mesh_prometheus::PrometheusSource::new(
        &prom.url,
        Duration::from_secs(10),
        Duration::from_secs(5),
    )
    .unwrap();
    let sources = mesh_collector::run::Sources {
        prometheus: source,
        kubernetes: mesh_collector::watch::spawn(&kube_client(&cluster, "collector-token")),
        history: mesh_store::Retention::default(),
    };
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(mesh_collector::run::run(
        sources,
        store,
        Duration::from_secs(1),
        mesh_collector::run::Metrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mcp = start_mcp_with(
        &["--redis-url", &redis.url],
        Some(cluster.kubeconfig("mcp-token")),
    );
    let g = converges(mcp.grpc, &t).await;
    assert!(g.version >= 1 && g.epoch >= 1);
    assert_eq!(g.sources[1].source, "kubernetes");
    assert!(g.sources[1].ok, "{}", g.sources[1].error);
    // Identities survive the trip: webapp calls authors as webapp.
    let e = find(&g.edges, "webapp", "authors").unwrap();
    assert_eq!(
        e.client_identity,
        "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local"
    );
    // Verdicts for the seeded policy: authors has per-route policy, so an edge (no path) cannot
    // be decided and says why; books has no Server, so the default policy admits everyone.
    let p = e.policy.clone().unwrap();
    assert_eq!(decision(e), pb::policy_verdict::Decision::Unknown);
    assert!(
        p.chain.iter().any(|c| c.contains("authors-get-route")),
        "{:?}",
        p.chain
    );
    let books = find(&g.edges, "webapp", "books").unwrap();
    assert_eq!(decision(books), pb::policy_verdict::Decision::Allowed);
    let bp = books.policy.clone().unwrap();
    assert!(bp.default_policy.contains("all-authenticated"), "{bp:?}");
    assert!(books.policy.clone().unwrap().observed_allow_rps.unwrap() > 0.0);

    let mut c = MeshServiceClient::connect(format!("http://127.0.0.1:{}", mcp.grpc))
        .await
        .unwrap();
    let watch = |c: &mut MeshServiceClient<tonic::transport::Channel>, resume| {
        let mut c = c.clone();
        async move {
            c.watch_mesh_graph(authed(pb::WatchMeshGraphRequest {
                namespaces: vec!["booksapp".into()],
                include_policies: true,
                resume_from: resume,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut stream = watch(&mut c, None).await;
    let first = until_event(&mut stream, "the first snapshot", |_| true).await;
    let pb::mesh_graph_event::Event::Snapshot(snap) = first else {
        panic!("a watch without a resume point starts with a snapshot: {first:?}");
    };

    // A policy change through mesh-mcp: only authors may call books. The dry-run predicts that
    // webapp -> books, observed now, would be denied; the apply makes it so, and the collector's
    // verdict delta arrives on the watch.
    let books_policy = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
        metadata: {name: books-server, namespace: booksapp}\n\
        spec: {podSelector: {matchLabels: {app: books}}, port: service, proxyProtocol: HTTP/1}\n---\n\
        apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
        metadata: {name: books-clients, namespace: booksapp}\n\
        spec: {identities: [authors.booksapp.serviceaccount.identity.linkerd.cluster.local]}\n---\n\
        apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
        metadata: {name: books-policy, namespace: booksapp}\n\
        spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: books-server}\n  \
        requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: books-clients}]\n";
    let apply = |dry_run: bool| admin_apply(&c, books_policy, dry_run);
    let what_if = poll(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            // mesh-mcp's own cluster view may still be listing.
            let r = apply(true).await.ok()?.into_inner();
            (!r.affected_edges.is_empty()).then_some(r)
        },
    )
    .await
    .expect("the dry-run never predicted an affected edge");
    let predicted = what_if
        .affected_edges
        .iter()
        .find(|a| a.edge.as_ref().unwrap().src.as_ref().unwrap().name == "webapp")
        .unwrap();
    assert_eq!(predicted.after(), pb::policy_verdict::Decision::Denied);
    assert!(predicted.rps > 0.0);
    let applied = apply(false).await.unwrap().into_inner();
    assert!(!applied.dry_run);
    assert!(!applied.audit_id.is_empty());
    let ev = until_event(&mut stream, "the verdict delta", |ev| {
        matches!(ev, pb::mesh_graph_event::Event::Delta(d)
            if find(&d.upserted_edges, "webapp", "books")
                .is_some_and(|e| decision(e) == pb::policy_verdict::Decision::Denied))
    })
    .await;
    let pb::mesh_graph_event::Event::Delta(d) = ev else {
        unreachable!()
    };
    let denied = find(&d.upserted_edges, "webapp", "books").unwrap();
    let p = denied.policy.clone().unwrap();
    assert_eq!(p.server, "booksapp/books-server");
    assert!(
        p.disagreement.contains("policy denies"),
        "{}",
        p.disagreement
    );
    assert!(d.upserted_policies.iter().any(|p| p.name == "books-server"));

    // Traffic changes: webapp -> books turns plaintext; the delta says exactly that.
    let mut t2 = t.clone();
    let i = t2
        .edges
        .iter()
        .position(|e| e.from == "booksapp/webapp" && e.to == "booksapp/books")
        .unwrap();
    t2.edges[i].tls = Some(false);
    let r = reqwest::Client::new()
        .put(format!("http://{addr}/topology"))
        .body(t2.to_yaml())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    until_event(&mut stream, "the plaintext delta", |ev| {
        matches!(ev, pb::mesh_graph_event::Event::Delta(d)
            if find(&d.upserted_edges, "webapp", "books")
                .is_some_and(|e| e.tls == pb::TlsStatus::Plaintext as i32))
    })
    .await;

    // Resuming from the first snapshot's version catches up with one delta; resuming from
    // another writer's epoch (continuity unprovable) gets a snapshot.
    let at = pb::GraphPosition {
        epoch: snap.epoch,
        version: snap.version,
    };
    let mut resumed = watch(&mut c, Some(at)).await;
    let ev = until_event(&mut resumed, "the catch-up", |_| true).await;
    let pb::mesh_graph_event::Event::Delta(d) = ev else {
        panic!("resume from a kept version starts with a delta: {ev:?}");
    };
    assert_eq!(d.from_version, snap.version);
    let e = find(&d.upserted_edges, "webapp", "books").unwrap();
    assert_eq!(e.tls, pb::TlsStatus::Plaintext as i32);
    assert_eq!(decision(e), pb::policy_verdict::Decision::Denied);
    let old = pb::GraphPosition {
        epoch: snap.epoch + 1,
        version: snap.version,
    };
    let mut from_scratch = watch(&mut c, Some(old)).await;
    let ev = until_event(&mut from_scratch, "the snapshot", |_| true).await;
    assert!(
        matches!(ev, pb::mesh_graph_event::Event::Snapshot(_)),
        "{ev:?}"
    );

    // MCP plans live in Redis: planned through this replica, applied through a second one,
    // once.
    let other = start_mcp_with(
        &["--redis-url", &redis.url],
        Some(cluster.kubeconfig("mcp-token")),
    );
    let other_client = lazy_client(other.grpc);
    graph_until(&other_client, Duration::from_secs(30), |g| {
        !g.edges.is_empty()
    })
    .await
    .expect("the second replica never served the graph");
    let spec = serde_json::json!({
        "namespace": "emojivoto", "name": "voting-from-emoji", "target_name": "voting-grpc",
        "service_accounts": ["emoji"],
    });
    let planned = python_mcp_client(&serde_json::json!({
        "http": format!("http://127.0.0.1:{}/mcp", mcp.http), "token": "adm1n",
        "calls": [["plan_authorization_policy", {"spec": spec}]],
    }))
    .await;
    let plan_id = planned["calls"][0]["structured"]["plan_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no plan: {}", planned["calls"][0]))
        .to_owned();
    let applied = python_mcp_client(&serde_json::json!({
        "http": format!("http://127.0.0.1:{}/mcp", other.http), "token": "adm1n",
        "calls": [["apply_plan", {"plan_id": plan_id}], ["apply_plan", {"plan_id": plan_id}]],
    }))
    .await;
    assert_eq!(
        applied["calls"][0]["is_error"], false,
        "{}",
        applied["calls"][0]
    );
    assert_eq!(applied["calls"][1]["is_error"], true, "single use");
    let policy = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        kube_client(&cluster, "admin-token"),
        "emojivoto",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "policy.linkerd.io",
            "v1alpha1",
            "AuthorizationPolicy",
        )),
    );
    assert!(policy.get_opt("voting-from-emoji").await.unwrap().is_some());

    let _ = stop_collector.send(());
    collector.await.unwrap();
}

/// Closing the loop: voting has two observed callers; a dry-run of a policy that admits only
/// web predicts that vote-bot's calls would be denied, and at what rate. After the apply,
/// meshsim (watching the same kube-sim, as the proxies watch the policy controller) refuses those
/// calls, and the deny rate the collector then observes through Prometheus matches the
/// prediction within 10%, while web's calls stay admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_prediction_matches_the_deny_rate_observed_after_the_apply() {
    // emojivoto without its published policy: the install default admits everyone.
    let cluster = emojivoto_cluster().await;
    let t = emojivoto_with_vote_bot_calling_voting();

    let (addr, _stop_sim) = following_sim(t, meshsim::LinkerdVersion::V2_12, &cluster).await;
    let prom = Prometheus::start(&[addr]).await;
    let mcp = embedded_mcp(&prom.url, Some(cluster.kubeconfig("mcp-token")));
    let c = lazy_client(mcp.grpc);
    // Both callers admitted, at their full rates (the window is full of scrapes).
    let admitted = |g: &pb::MeshGraph, from: &str, rps: f64| {
        find(&g.edges, from, "voting").is_some_and(|e| {
            let p = e.policy.clone().unwrap_or_default();
            decision(e) == pb::policy_verdict::Decision::Allowed
                && (e.metrics.unwrap_or_default().rps - rps).abs() <= 0.1 * rps
                && p.observed_allow_rps
                    .is_some_and(|r| (r - rps).abs() <= 0.1 * rps)
        })
    };
    graph_until(&c, Duration::from_secs(90), |g| {
        admitted(g, "web", 2.0) && admitted(g, "vote-bot", 3.0)
    })
    .await
    .expect("voting's two callers were never observed, admitted, at their rates");

    let policy = VOTING_POLICY;
    let apply = |dry_run: bool| {
        let sent = admin_apply(&c, policy, dry_run);
        async move { sent.await.unwrap().into_inner() }
    };
    let what_if = apply(true).await;
    let [predicted] = what_if.affected_edges.as_slice() else {
        panic!(
            "only vote-bot -> voting should change: {:?}",
            what_if.affected_edges
        );
    };
    let edge = predicted.edge.clone().unwrap();
    assert_eq!(edge.src.unwrap().name, "vote-bot");
    assert_eq!(edge.dst.unwrap().name, "voting");
    assert_eq!(predicted.before(), pb::policy_verdict::Decision::Allowed);
    assert_eq!(predicted.after(), pb::policy_verdict::Decision::Denied);
    assert!((predicted.rps - 3.0).abs() <= 0.3, "{predicted:?}");
    assert!(
        what_if.warnings.iter().any(|w| w.contains("vote-bot")),
        "{:?}",
        what_if.warnings
    );

    apply(false).await;
    let expected = predicted.rps;
    let within = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() <= 0.1 * expected);
    graph_until(&c, Duration::from_secs(90), |g| {
        let (Some(bot), Some(web)) = (
            find(&g.edges, "vote-bot", "voting"),
            find(&g.edges, "web", "voting"),
        ) else {
            return false;
        };
        let (b, w) = (
            bot.policy.clone().unwrap_or_default(),
            web.policy.clone().unwrap_or_default(),
        );
        decision(bot) == pb::policy_verdict::Decision::Denied
            && within(b.observed_deny_rps, expected)
            && within(b.observed_allow_rps, 0.0)
            && b.disagreement.is_empty()
            // Refused gRPC calls are PERMISSION_DENIED: failures, as Linkerd classifies them.
            && bot.metrics.unwrap_or_default().success_rate.is_some_and(|s| s <= 0.1)
            && decision(web) == pb::policy_verdict::Decision::Allowed
            && w.observed_allow_rps.is_some_and(|r| r > 0.0)
            && within(w.observed_deny_rps, 0.0)
            && w.disagreement.is_empty()
    })
    .await
    .expect("the observed deny rate never matched the prediction within 10%");
}

/// Rolling out policy audit-first, as Linkerd 2.18+ users do: a Server with `accessPolicy:
/// audit` and an AuthorizationPolicy admitting only web. The simulated proxies (following
/// kube-sim as real ones follow the policy controller) admit vote-bot's calls under the audit
/// authorization, and the graph shows that edge AUDIT with the rate enforcement would refuse,
/// read through Prometheus. The what-if of switching the Server to `deny` then predicts exactly
/// the edges the audit verdicts named, at their audit rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_names_what_enforcing_would_refuse_and_the_what_if_of_deny_agrees() {
    let cluster = emojivoto_cluster().await;
    let t = emojivoto_with_vote_bot_calling_voting();
    let (addr, _stop_sim) = following_sim(t, meshsim::LinkerdVersion::V2_20, &cluster).await;
    let prom = Prometheus::start(&[addr]).await;
    let mcp = embedded_mcp(&prom.url, Some(cluster.kubeconfig("mcp-token")));
    let c = lazy_client(mcp.grpc);
    let policy = |access: &str| {
        format!(
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
            metadata: {{name: voting-grpc, namespace: emojivoto}}\n\
            spec: {{podSelector: {{matchLabels: {{app: voting-svc}}}}, port: grpc, proxyProtocol: gRPC, accessPolicy: {access}}}\n---\n\
            apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
            metadata: {{name: voting-clients, namespace: emojivoto}}\n\
            spec: {{identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]}}\n---\n\
            apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
            metadata: {{name: voting-policy, namespace: emojivoto}}\n\
            spec:\n  targetRef: {{group: policy.linkerd.io, kind: Server, name: voting-grpc}}\n  \
            requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}}]\n"
        )
    };
    graph_until(&c, Duration::from_secs(90), |g| {
        find(&g.edges, "vote-bot", "voting").is_some() && find(&g.edges, "web", "voting").is_some()
    })
    .await
    .expect("voting's two callers were never observed");
    admin_apply(&c, &policy("audit"), false).await.unwrap();
    let audited = graph_until(&c, Duration::from_secs(90), |g| {
        let (Some(bot), Some(web)) = (
            find(&g.edges, "vote-bot", "voting"),
            find(&g.edges, "web", "voting"),
        ) else {
            return false;
        };
        let (b, w) = (
            bot.policy.clone().unwrap_or_default(),
            web.policy.clone().unwrap_or_default(),
        );
        decision(bot) == pb::policy_verdict::Decision::Audit
            // Settled: the whole window is after the switch to audit (the rate climbs to 3/s
            // as the window fills).
            && b.observed_audit_rps.is_some_and(|r| (r - 3.0).abs() <= 0.1)
            && b.chain
                .last()
                .is_some_and(|c| c.contains("accessPolicy audit") && c.contains("would be refused"))
            && b.disagreement.is_empty()
            && decision(web) == pb::policy_verdict::Decision::Allowed
            && w.observed_audit_rps.is_none()
            && w.observed_allow_rps.is_some_and(|r| r > 0.0)
    })
    .await
    .expect("vote-bot -> voting never showed AUDIT with its would-be-denied rate");
    let named: Vec<(String, f64)> = audited
        .edges
        .iter()
        .filter(|e| decision(e) == pb::policy_verdict::Decision::Audit)
        .map(|e| {
            (
                e.src.clone().unwrap().name,
                e.policy.clone().unwrap().observed_audit_rps.unwrap_or(0.0),
            )
        })
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");

    let what_if = admin_apply(&c, &policy("deny"), true)
        .await
        .unwrap()
        .into_inner();
    let predicted: Vec<(String, f64)> = what_if
        .affected_edges
        .iter()
        .map(|a| {
            assert_eq!(a.before(), pb::policy_verdict::Decision::Audit, "{a:?}");
            assert_eq!(a.after(), pb::policy_verdict::Decision::Denied, "{a:?}");
            (a.edge.clone().unwrap().src.unwrap().name, a.rps)
        })
        .collect();
    assert_eq!(
        predicted.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        named.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "the what-if of deny names exactly the audited edges"
    );
    for ((_, rps), (_, audit)) in predicted.iter().zip(&named) {
        assert!((rps - audit).abs() <= 0.1 * audit, "{rps} vs audit {audit}");
    }
}

/// The rollout's requester: alice, as a member of mesh-admins (who may edit Linkerd policy).
fn alice() -> pb::Identity {
    pb::Identity {
        user: "alice".into(),
        groups: vec!["mesh-admins".into()],
    }
}

/// A call as the chatbot (a delegator) makes it: with its own token, for alice.
fn as_bot<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("authorization", "Bearer b0t".parse().unwrap());
    r.set_timeout(Duration::from_secs(60));
    r
}

/// `action` on rollout `id` as the bot does it after bob approved (or a dry-run, unapproved).
async fn advance(
    c: &MeshServiceClient<tonic::transport::Channel>,
    id: &str,
    action: pb::advance_rollout_request::Action,
    dry_run: bool,
) -> Result<pb::AdvanceRolloutResponse, tonic::Status> {
    c.clone()
        .advance_rollout(as_bot(pb::AdvanceRolloutRequest {
            id: id.into(),
            action: action.into(),
            change: Some(pb::ApplyRequest {
                dry_run,
                on_behalf_of: Some(alice()),
                approved_by: if dry_run { String::new() } else { "bob".into() },
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// Polls GetRollout (bounded) until the rollout satisfies `check`.
async fn rollout_until(
    c: &MeshServiceClient<tonic::transport::Channel>,
    id: &str,
    limit: Duration,
    check: impl Fn(&pb::Rollout) -> bool,
) -> Option<pb::Rollout> {
    let check = &check;
    poll(limit, Duration::from_millis(1000), || {
        let mut c = c.clone();
        async move {
            let r = c
                .get_rollout(authed(pb::GetRolloutRequest { id: id.into() }))
                .await
                .ok()?
                .into_inner();
            check(&r).then_some(r)
        }
    })
    .await
}

fn gate_status(r: &pb::Rollout) -> pb::rollout_gate::Status {
    r.gate.clone().unwrap_or_default().status()
}

/// The zero-trust rollout, end to end over real processes: emojivoto with no policy, meshsim
/// following kube-sim as the proxies follow the policy controller, real Prometheus, the
/// collector publishing through Redis, and mesh-mcp on that Redis, called as the chatbot does
/// (for alice, approved by bob). The proposal admits exactly the three observed calls; audit
/// applies; a new caller appears and the gate names it and refuses to enforce; mesh-mcp
/// restarts mid-observation and the rollout is intact; the re-proposal adds the caller, the
/// observation passes, enforce applies; every observed caller is still admitted and a stranger
/// is denied; rollback returns to audit, and again withdraws what the rollout created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_goes_audit_first_and_enforces_only_after_a_clean_observation() {
    use pb::advance_rollout_request::Action as A;
    let cluster = emojivoto_cluster().await;
    cluster
        .load_yaml(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: policy-editor}\n\
             rules: [{apiGroups: [policy.linkerd.io], resources: ['*'], verbs: [get, list, watch, create, patch, update, delete]}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: policy-editors}\n\
             roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: policy-editor}\n\
             subjects: [{kind: Group, name: mesh-admins}]\n",
        )
        .await
        .unwrap();
    let mut t = meshsim::builtin("emojivoto").unwrap();
    let (addr, _stop_sim) =
        following_sim(t.clone(), meshsim::LinkerdVersion::V2_20, &cluster).await;
    let prom = Prometheus::start(&[addr]).await;
    let redis = Redis::start().await;
    let store = Arc::new(
        mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap(),
    );
    let sources = mesh_collector::run::Sources {
        prometheus: mesh_prometheus::PrometheusSource::new(
            &prom.url,
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .unwrap(),
        kubernetes: mesh_collector::watch::spawn(&kube_client(&cluster, "collector-token")),
        history: mesh_store::Retention::default(),
    };
    let _collector = tokio::spawn(mesh_collector::run::run(
        sources,
        store,
        Duration::from_secs(1),
        mesh_collector::run::Metrics::default(),
        std::future::pending(),
    ));
    let mcp_args = [
        "--redis-url",
        &redis.url,
        "--prometheus-url",
        &prom.url,
        "--delegator",
        "system:serviceaccount:linkerd-mcp:chatbot",
        "--delegate-group",
        "mesh-admins",
    ];
    let mcp = start_mcp_with(&mcp_args, Some(cluster.kubeconfig("mcp-token")));
    let c = lazy_client(mcp.grpc);
    graph_until(&c, Duration::from_secs(90), |g| {
        ["web", "emoji", "voting"].iter().all(|to| {
            g.edges.iter().any(|e| {
                e.dst.as_ref().is_some_and(|d| d.name == *to)
                    && e.metrics.is_some_and(|m| m.rps > 0.0)
            })
        })
    })
    .await
    .expect("emojivoto's three calls were never observed");

    // Started for alice: the plan admits exactly the observed calls, in audit form.
    let started = c
        .clone()
        .start_rollout(as_bot(pb::StartRolloutRequest {
            namespace: "emojivoto".into(),
            observe_for: Some(pbjson_types::Duration {
                seconds: 15,
                nanos: 0,
            }),
            on_behalf_of: Some(alice()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (started.phase.as_str(), started.requested_by.as_str()),
        ("proposed", "alice")
    );
    let admits = |r: &pb::Rollout, authn: &str| -> Vec<String> {
        let o = r.objects.iter().find(|o| o.name == authn).unwrap();
        let v: serde_json::Value = serde_json::from_str(&o.manifest_json).unwrap();
        v["spec"]["identityRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(started.objects.len(), 9, "{:#?}", started.objects);
    assert_eq!(
        admits(&started, "web-http-observed-clients"),
        ["default"],
        "vote-bot runs as default"
    );
    assert_eq!(admits(&started, "emoji-grpc-observed-clients"), ["web"]);
    assert_eq!(admits(&started, "voting-grpc-observed-clients"), ["web"]);
    assert!(
        started.needs_action.is_empty(),
        "{:?}",
        started.needs_action
    );
    assert!(
        started.notes.iter().all(|n| !n.contains("WOULD DENY")),
        "{:?}",
        started.notes
    );
    let id = started.id.clone();

    // Enforcing before auditing is refused; the audit dry-run shows what would be created and
    // that no observed call changes its verdict; approved, the audit phase applies.
    let early = advance(&c, &id, A::Enforce, false).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
    let dry = advance(&c, &id, A::Audit, true).await.unwrap();
    let change = dry.change.unwrap();
    assert!(
        change.objects.iter().all(|o| o.action == "would create"),
        "{:?}",
        change.objects
    );
    assert!(
        change.affected_edges.is_empty(),
        "{:?}",
        change.affected_edges
    );
    let audit = advance(&c, &id, A::Audit, false).await.unwrap();
    let r = audit.rollout.unwrap();
    assert_eq!(r.phase, "audit");
    let last = r.history.last().unwrap();
    assert_eq!(
        (
            last.by.as_str(),
            last.approved_by.as_str(),
            last.outcome.as_str()
        ),
        ("alice", "bob", "applied")
    );

    // Too early to enforce: the gate waits.
    let waiting = advance(&c, &id, A::Enforce, false).await.unwrap_err();
    assert_eq!(waiting.code(), tonic::Code::FailedPrecondition);
    assert!(
        waiting.message().contains("the gate has not passed"),
        "{waiting:?}"
    );

    // A new caller: vote-bot starts calling emoji. Audit admits it and reports it; the gate
    // names it and refuses to enforce.
    let mut newcomer = t
        .edges
        .iter()
        .find(|e| e.to == "emojivoto/emoji")
        .unwrap()
        .clone();
    newcomer.from = "emojivoto/vote-bot".into();
    newcomer.rps = 2.0;
    newcomer.success_rate = 1.0;
    t.edges.push(newcomer);
    let put = reqwest::Client::new()
        .put(format!("http://{addr}/topology"))
        .body(t.to_yaml())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let blocked = rollout_until(&c, &id, Duration::from_secs(90), |r| {
        gate_status(r) == pb::rollout_gate::Status::Blocked
    })
    .await
    .expect("the gate never saw the new caller");
    let g = blocked.gate.clone().unwrap();
    assert_eq!(g.would_be_denied.len(), 1, "{g:?}");
    assert_eq!(
        (
            g.would_be_denied[0].caller.as_str(),
            g.would_be_denied[0].callee.as_str()
        ),
        ("emojivoto/vote-bot", "emojivoto/emoji")
    );
    assert!(g.source.starts_with("Prometheus"), "{g:?}");
    assert!(
        blocked.next.contains(&"repropose".to_owned()),
        "{:?}",
        blocked.next
    );
    let refused = advance(&c, &id, A::Enforce, false).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("emojivoto/vote-bot -> emojivoto/emoji"),
        "{refused:?}"
    );

    // mesh-mcp restarts mid-observation: the rollout, its phase and history are in Redis.
    drop(mcp);
    let mcp = start_mcp_with(&mcp_args, Some(cluster.kubeconfig("mcp-token")));
    let c = lazy_client(mcp.grpc);
    let after_restart = rollout_until(&c, &id, Duration::from_secs(60), |r| r.phase == "audit")
        .await
        .expect("the rollout did not survive mesh-mcp's restart");
    assert_eq!(after_restart.revision, blocked.revision);
    assert_eq!(after_restart.history.len(), blocked.history.len());
    graph_until(&c, Duration::from_secs(60), |g| {
        find(&g.edges, "vote-bot", "emoji").is_some()
    })
    .await
    .expect("the restarted mesh-mcp never served the new call");

    // Re-proposed: emoji's authentication gains vote-bot's identity and keeps web's.
    let re = advance(&c, &id, A::Repropose, false).await.unwrap();
    assert!(
        re.summary
            .contains("changed MeshTLSAuthentication emoji-grpc-observed-clients"),
        "{}",
        re.summary
    );
    let r = re.rollout.unwrap();
    assert!(r.plan_pending);
    assert_eq!(
        admits(&r, "emoji-grpc-observed-clients"),
        ["default", "web"]
    );
    let pending = advance(&c, &id, A::Enforce, false).await.unwrap_err();
    assert!(pending.message().contains("not applied yet"), "{pending:?}");
    let reapplied = advance(&c, &id, A::Audit, false).await.unwrap();
    assert_eq!(reapplied.rollout.unwrap().phase, "audit");
    let open = rollout_until(&c, &id, Duration::from_secs(120), |r| {
        gate_status(r) == pb::rollout_gate::Status::Open
    })
    .await
    .expect("the observation never passed after the re-proposal");
    assert!(open.gate.unwrap().summary.contains("0 would-be denials"));

    // Enforced: the Servers deny; every observed call is still admitted, a stranger is not.
    let enforced = advance(&c, &id, A::Enforce, false).await.unwrap();
    assert_eq!(enforced.rollout.unwrap().phase, "enforced");
    assert!(
        enforced
            .change
            .unwrap()
            .objects
            .iter()
            .any(|o| o.kind == "Server" && o.action == "updated")
    );
    graph_until(&c, Duration::from_secs(60), |g| {
        g.edges.len() == 4
            && g.edges.iter().all(|e| {
                decision(e) == pb::policy_verdict::Decision::Allowed
                    && e.policy
                        .clone()
                        .unwrap_or_default()
                        .chain
                        .iter()
                        .any(|c| c.contains("-observed"))
            })
    })
    .await
    .expect("after enforcing, an observed call was not admitted");
    // mesh-mcp's cluster view catches up with the enforced Servers within its watch.
    let stranger = poll(Duration::from_secs(30), Duration::from_millis(500), || {
        let mut c = c.clone();
        async move {
            let v = c
                .explain_access(authed(pb::ExplainAccessRequest {
                    from: "emojivoto/voting".into(),
                    to: "emojivoto/web".into(),
                    ..Default::default()
                }))
                .await
                .ok()?
                .into_inner();
            (v.decision() != pb::policy_verdict::Decision::Audit).then_some(v)
        }
    })
    .await
    .expect("the stranger's verdict never left audit");
    assert_eq!(
        stranger.decision(),
        pb::policy_verdict::Decision::Denied,
        "{stranger:?}"
    );

    // An agent over MCP sees the rollout enforced, and a dry-run of its rollback.
    let out = python_mcp_client(&serde_json::json!({
        "http": format!("http://127.0.0.1:{}/mcp", mcp.http), "token": "adm1n",
        "calls": [
            ["get_rollout", {"id": id}],
            ["advance_rollout", {"id": id, "action": "rollback", "dry_run": true}],
        ],
    }))
    .await;
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{}", calls[0]);
    assert_eq!(calls[0]["structured"]["phase"], "enforced");
    assert_eq!(
        calls[0]["structured"]["history"].as_array().unwrap().len(),
        5
    );
    assert_eq!(calls[1]["is_error"], false, "{}", calls[1]);
    let change = &calls[1]["structured"]["change"];
    assert_eq!(change["dry_run"], true);
    assert!(
        change["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Server" && o["action"] == "would update"),
        "{change}"
    );
    assert_eq!(
        calls[1]["structured"]["phase"], "enforced",
        "a dry-run moves nothing"
    );

    // Rollback: back to audit; once more: withdrawn, what the rollout created deleted.
    let back = advance(&c, &id, A::Rollback, false).await.unwrap();
    assert_eq!(back.rollout.unwrap().phase, "audit");
    let gone = advance(&c, &id, A::Rollback, false).await.unwrap();
    let r = gone.rollout.unwrap();
    assert_eq!(r.phase, "withdrawn");
    let deleted: Vec<&str> = gone
        .change
        .as_ref()
        .unwrap()
        .objects
        .iter()
        .filter(|o| o.action == "deleted")
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(deleted.len(), 9, "{:?}", gone.change);
    assert!(r.next.is_empty());
    let finished = advance(&c, &id, A::Audit, false).await.unwrap_err();
    assert!(finished.message().contains("withdrawn"), "{finished:?}");
}

/// Linkerd 2.20's other two verdicts, end to end through real Prometheus: a Server with an
/// HTTPLocalRateLimitPolicy (3/s in total; vote-bot sends 4/s) names the policy and the 429 rate
/// its proxies answer, and traffic out through an EgressNetwork whose trafficPolicy is Deny is
/// an edge to the EgressNetwork, denied, at the rate the caller's proxy refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_egress_show_as_the_proxies_enforce_them() {
    let cluster = emojivoto_cluster().await;
    cluster
        .load_yaml(
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
             metadata: {name: web-http, namespace: emojivoto}\n\
             spec: {podSelector: {matchLabels: {app: web-svc}}, port: http, accessPolicy: all-unauthenticated}\n---\n\
             apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\n\
             metadata: {name: web-rl, namespace: emojivoto}\n\
             spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}\n  total: {requestsPerSecond: 3}\n---\n\
             apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n\
             metadata: {name: all-egress, namespace: emojivoto}\nspec: {trafficPolicy: Deny}\n",
        )
        .await
        .unwrap();
    let mut t = meshsim::builtin("emojivoto").unwrap();
    t.egress = vec![meshsim::EgressSpec {
        from: "emojivoto/web".into(),
        network: "emojivoto/all-egress".into(),
        protocol: "http".into(),
        port: 443,
        rps: 2.0,
        hostname: Some("api.github.com".into()),
        // The cluster's EgressNetwork decides: Deny.
        traffic_policy: "Allow".into(),
        routes: Vec::new(),
        latency_ms: meshsim::Latency::default(),
    }];
    let (addr, _stop_sim) = following_sim(t, meshsim::LinkerdVersion::V2_20, &cluster).await;
    let prom = Prometheus::start(&[addr]).await;
    let mcp = embedded_mcp(&prom.url, Some(cluster.kubeconfig("mcp-token")));
    let c = lazy_client(mcp.grpc);
    let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() <= 0.1 * want);
    let g = graph_until(&c, Duration::from_secs(90), |g| {
        let Some(bot) = find(&g.edges, "vote-bot", "web") else {
            return false;
        };
        let p = bot.policy.clone().unwrap_or_default();
        let egress = g
            .edges
            .iter()
            // Named by the EgressNetwork, and by the host the route metrics name.
            .find(|e| e.dst_authority == "EgressNetwork emojivoto/all-egress:443 (api.github.com)");
        decision(bot) == pb::policy_verdict::Decision::Allowed
            && p.rate_limit == "emojivoto/web-rl: total 3/s"
            && near(p.observed_rate_limited_rps, 1.0)
            && egress.is_some_and(|e| {
                let v = e.policy.clone().unwrap_or_default();
                decision(e) == pb::policy_verdict::Decision::Denied
                    && near(v.observed_deny_rps, 2.0)
                    && e.routes
                        .first()
                        .is_some_and(|r| r.route_name == "http-egress-deny")
            })
    })
    .await
    .expect("the rate-limited edge and the denied egress edge never showed as enforced");
    let bot = find(&g.edges, "vote-bot", "web").unwrap();
    let route = &bot.routes[0];
    assert!((route.rate_limited_rps - 1.0).abs() <= 0.1, "{route:?}");
    let p = bot.policy.clone().unwrap();
    assert!(
        p.chain
            .iter()
            .any(|c| c.contains("HTTPLocalRateLimitPolicy emojivoto/web-rl")),
        "{p:?}"
    );
    let egress = g
        .edges
        .iter()
        .find(|e| e.dst_authority.starts_with("EgressNetwork "))
        .unwrap();
    assert_eq!(egress.src.as_ref().unwrap().name, "web");
    let chain = egress.policy.clone().unwrap().chain;
    assert!(
        chain
            .iter()
            .any(|c| c.contains("trafficPolicy Deny refuses")),
        "{chain:?}"
    );

    // A proposal over a window longer than Prometheus keeps says so and uses what exists.
    let mut r = Request::new(pb::ProposePolicyRequest {
        namespace: "emojivoto".into(),
        since: Some(pbjson_types::Duration {
            seconds: 30 * 86_400,
            nanos: 0,
        }),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", "Bearer adm1n".parse().unwrap());
    let p = c.clone().propose_policy(r).await.unwrap().into_inner();
    assert!(
        p.notes[0]
            .starts_with("Prometheus keeps 15days of history, less than the 30days asked for"),
        "{:?}",
        p.notes
    );
    assert_eq!(p.window.unwrap().seconds, 15 * 86_400);
    assert!(
        p.objects
            .iter()
            .any(|o| o.kind == "Server" && o.name == "voting-grpc"),
        "{:?}",
        p.objects
    );
    assert!(p.newly_denied.is_empty(), "{:?}", p.newly_denied);
}

/// Redis is only a cache: while it is down mesh-mcp keeps answering from the graph it holds,
/// marked stale (a `store` source with its error and last success), and watch streams stay
/// open with heartbeats that say so; when an empty Redis comes back, the collector takes the
/// lease under a new epoch and republishes, and readers follow it without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_served_through_marked_stale_and_heals() {
    let t = meshsim::builtin("emojivoto").unwrap();
    let (addr, _stop) = sim(t.clone()).await;
    let prom = Prometheus::start(&[addr]).await;
    let mut redis = Redis::start().await;
    let store = Arc::new(
        mesh_store::RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(1)).unwrap(),
    );
    let source = mesh_prometheus::PrometheusSource::new(
        &prom.url,
        Duration::from_secs(10),
        Duration::from_secs(5),
    )
    .unwrap();
    let no_cluster = tokio::sync::watch::channel(Arc::new(
        mesh_policy::cluster::Cluster::unsynced("no cluster in this test"),
    ));
    let sources = mesh_collector::run::Sources {
        prometheus: source,
        kubernetes: no_cluster.1.clone(),
        history: mesh_store::Retention::default(),
    };
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(mesh_collector::run::run(
        sources,
        store,
        Duration::from_secs(1),
        mesh_collector::run::Metrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mcp = start_mcp(&["--redis-url", &redis.url]);
    let before = converges(mcp.grpc, &t).await;
    let c = lazy_client(mcp.grpc);
    let mut stream = c
        .clone()
        .watch_mesh_graph(authed(pb::WatchMeshGraphRequest::default()))
        .await
        .unwrap()
        .into_inner();
    until_event(&mut stream, "the first snapshot", |ev| {
        matches!(ev, pb::mesh_graph_event::Event::Snapshot(_))
    })
    .await;

    let down = std::time::Instant::now();
    redis.stop();
    let store_down = |sources: &[pb::SourceHealth]| {
        sources.iter().any(|s| {
            s.source == "store" && !s.ok && !s.error.is_empty() && s.last_success.is_some()
        })
    };
    let stale = graph_until(&c, Duration::from_secs(30), |g| store_down(&g.sources))
        .await
        .expect("the graph was never marked stale while Redis was down");
    assert_eq!(
        stale.edges.len(),
        t.edges.len(),
        "the held graph is still served"
    );
    until_event(
        &mut stream,
        "a heartbeat saying the store is down",
        |ev| matches!(ev, pb::mesh_graph_event::Event::Heartbeat(h) if store_down(&h.sources)),
    )
    .await;
    if let Some(rest) = Duration::from_secs(10).checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    redis.restart().await;
    let healed = graph_until(&c, Duration::from_secs(60), |g| {
        !g.sources.iter().any(|s| s.source == "store")
            && g.epoch > before.epoch
            && g.edges.len() == t.edges.len()
    })
    .await
    .expect("after Redis came back the graph never came back fresh under a new epoch");
    // The same stream carried on: it gets the new epoch as a snapshot.
    until_event(
        &mut stream,
        "the new epoch on the open stream",
        |ev| matches!(ev, pb::mesh_graph_event::Event::Snapshot(s) if s.epoch >= healed.epoch),
    )
    .await;

    let _ = stop_collector.send(());
    collector.await.unwrap();
}

/// The official MCP Python SDK (`make test` installs it in `.tools/mcp-venv`) driving mesh-mcp.
async fn python_mcp_client(plan: &serde_json::Value) -> serde_json::Value {
    mesh_testkit::python_mcp_client(plan).await
}

/// A real MCP client nobody here wrote, over streamable HTTP and over stdio: every read tool
/// on emojivoto checked against the topology and the seeded policy, a plan applied as the
/// caller and visible in kube-sim, a second apply of the plan refused, `--read-only` without
/// mutation tools, and no token refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_use_every_tool_over_http_and_stdio() {
    let t = meshsim::builtin("emojivoto").unwrap();
    // Linkerd 2.20 proxies: each edge also reports its (default) route.
    let (addr, _stop) = sim_as(t.clone(), meshsim::LinkerdVersion::V2_20).await;
    let prom = Prometheus::start(&[addr]).await;
    let cluster = kube().await;
    let mcp = embedded_mcp(&prom.url, Some(cluster.kubeconfig("mcp-token")));
    converges(mcp.grpc, &t).await;
    let url = format!("http://127.0.0.1:{}/mcp", mcp.http);
    let books_spec = serde_json::json!({
        "namespace": "booksapp", "name": "books-policy", "target_name": "books-server",
        "service_accounts": ["webapp"],
        "server": {"pod_selector": {"app": "books"}, "port": "service", "proxy_protocol": "HTTP/1"},
    });
    let out = python_mcp_client(&serde_json::json!({
        "http": url, "token": "adm1n",
        "calls": [
            ["get_mesh_graph", {}],
            ["get_workload", {"workload": "emojivoto/web"}],
            ["who_calls", {"workload": "emojivoto/voting"}],
            ["find_plaintext_edges", {}],
            ["find_failing_edges", {"threshold": 0.95}],
            ["explain_access", {"from": "emojivoto/vote-bot", "to": "emojivoto/voting"}],
            ["explain_access", {"from": "emojivoto/web", "to": "emojivoto/voting"}],
            ["list_policies", {"namespace": "emojivoto"}],
            ["get_mesh_graph", {"full": true, "max_edges": 2}],
            ["plan_authorization_policy", {"spec": books_spec}],
            ["apply_plan", {"plan_id": "$plan_id"}],
            ["apply_plan", {"plan_id": "$plan_id"}],
            ["find_failing_routes", {"threshold": 0.95}],
            ["propose_policy", {"namespace": "emojivoto"}],
            ["start_rollout", {"namespace": "emojivoto"}],
            ["get_rollout", {"id": "emojivoto-00000000"}],
            ["advance_rollout", {"id": "emojivoto-00000000", "action": "sideways"}],
            ["what_changed", {"since": "10m", "namespaces": ["booksapp"]}],
            ["get_mesh_graph", {"at": "-2s"}],
            ["what_changed", {"since": "10m", "from": "-1h"}],
        ],
    }))
    .await;
    assert_eq!(out["server"], "linkerd-mcp");
    let tools = out["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "advance_rollout",
            "apply_plan",
            "explain_access",
            "find_failing_edges",
            "find_failing_routes",
            "find_plaintext_edges",
            "get_approval",
            "get_mesh_graph",
            "get_rollout",
            "get_workload",
            "list_approvals",
            "list_policies",
            "plan_authorization_policy",
            "plan_http_route",
            "propose_policy",
            "start_rollout",
            "what_changed",
            "who_calls"
        ]
    );
    for (name, t) in tools {
        assert_eq!(t["schema"]["type"], "object", "{name}");
        let read = !name.starts_with("plan_")
            && !["apply_plan", "start_rollout", "advance_rollout"].contains(&name.as_str());
        assert_eq!(t["read_only"], read, "{name}");
    }
    assert_eq!(tools["apply_plan"]["destructive"], true);
    assert_eq!(tools["advance_rollout"]["destructive"], true);
    assert_eq!(tools["start_rollout"]["destructive"], false);
    assert_eq!(tools["plan_http_route"]["destructive"], false);

    let calls = out["calls"].as_array().unwrap();
    let call = |i: usize| &calls[i]["structured"];
    for (i, c) in calls.iter().enumerate().take(11) {
        assert_eq!(c["is_error"], false, "call {i}: {c}");
    }
    // The summary: 8 workloads (the cluster's emojivoto and booksapp), emojivoto's 3 edges, all
    // mTLS, two below 95%.
    assert_eq!(
        (call(0)["workloads"].as_u64(), call(0)["edges"].as_u64()),
        (Some(8), Some(3))
    );
    assert_eq!(call(0)["plaintext_edges"], 0);
    assert_eq!(call(0)["failing_edges"], 2);
    assert_eq!(call(0)["busiest"].as_array().unwrap().len(), 3);
    // web: called by vote-bot, calls emoji and voting.
    assert_eq!(call(1)["inbound"].as_array().unwrap().len(), 1);
    assert_eq!(call(1)["outbound"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(1)["identity"],
        "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    );
    // Each edge of web carries its route: Linkerd's default gRPC route on voting-svc.
    let to_voting = call(1)["outbound"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "emojivoto/voting")
        .unwrap();
    assert_eq!(
        to_voting["routes"][0]["route"], "[default grpc]",
        "{to_voting}"
    );
    assert_eq!(
        to_voting["routes"][0]["parent"],
        "Service emojivoto/voting-svc:8080"
    );
    let callers = call(2)["callers"].as_array().unwrap();
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0]["from"], "emojivoto/web");
    assert!((callers[0]["rps"].as_f64().unwrap() - 2.0).abs() <= 0.2);
    assert_eq!(call(3)["edges"].as_array().unwrap().len(), 0);
    let failing: Vec<&str> = call(4)["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        failing,
        ["emojivoto/voting", "emojivoto/web"],
        "worst first"
    );
    // The seeded policy: voting-grpc admits only web's service account.
    assert_eq!(call(5)["decision"], "denied", "{}", call(5));
    assert_eq!(call(5)["server"], "emojivoto/voting-grpc");
    assert_eq!(call(6)["decision"], "allowed", "{}", call(6));
    assert_eq!(call(6)["authorizations"][0], "emojivoto/internal-grpc");
    assert!(call(6)["chain"].as_array().unwrap().len() >= 2);
    let kinds: Vec<&str> = call(7)["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"Server") && kinds.contains(&"ServerAuthorization"),
        "{kinds:?}"
    );
    assert_eq!(call(8)["edge_list"].as_array().unwrap().len(), 2);
    assert!(
        call(8)["note"]
            .as_str()
            .unwrap()
            .contains("truncated to the 2 busiest of 3")
    );
    // The plan: a dry-run with objects and a diff; applied once, refused the second time.
    let plan = call(9);
    assert!(plan["plan_id"].as_str().unwrap().starts_with("plan-"));
    assert_eq!(plan["objects"].as_array().unwrap().len(), 3);
    assert!(plan["diff"].as_str().unwrap().contains("books-policy"));
    assert!(call(10)["audit_id"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(calls[11]["is_error"], true);
    // emojivoto's published policy already admits every observed caller: nothing to propose.
    assert_eq!(calls[13]["is_error"], false, "{}", calls[13]);
    assert_eq!(
        call(13)["objects"].as_array().unwrap().len(),
        0,
        "{}",
        call(13)
    );
    assert!(
        call(13)["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("already admitted by emojivoto/internal-grpc")),
        "{}",
        call(13)
    );
    // Rollouts: emojivoto's policy leaves nothing to roll out, and bad ids and actions are
    // refused naming them.
    for (i, want) in [
        (14, "nothing to roll out for emojivoto"),
        (15, "no rollout emojivoto-00000000"),
        (
            16,
            "\"sideways\" is not one of audit, enforce, rollback, repropose",
        ),
    ] {
        assert_eq!(calls[i]["is_error"], true, "{}", calls[i]);
        assert!(
            calls[i]["text"].as_str().unwrap().contains(want),
            "{}",
            calls[i]
        );
    }
    // The failing routes, worst first: voting's default gRPC route (85%), then web's (92.5%).
    assert_eq!(calls[12]["is_error"], false, "{}", calls[12]);
    let routes: Vec<(&str, &str)> = call(12)["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["to"].as_str().unwrap(), r["route"].as_str().unwrap()))
        .collect();
    assert_eq!(
        routes,
        [
            ("emojivoto/voting", "[default grpc]"),
            ("emojivoto/web", "[default http]")
        ],
        "{}",
        call(12)
    );
    assert!(
        calls[11]["text"]
            .as_str()
            .unwrap()
            .contains("applied already")
    );
    let applied = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        kube_client(&cluster, "admin-token"),
        "booksapp",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "policy.linkerd.io",
            "v1alpha1",
            "AuthorizationPolicy",
        )),
    )
    .get("books-policy")
    .await
    .unwrap();
    assert_eq!(
        applied.metadata.annotations.unwrap()["linkerd-mcp.io/requested-by"],
        "admin"
    );
    // What changed: the plan applied above, with who asked for it (the change log follows the
    // cluster within a rebuild, about a second, so `GET /v1/diff` is asked until it shows);
    // a graph of a moment ago, saying how it was made; a question with two starts, refused.
    assert_eq!(calls[17]["is_error"], false, "{}", calls[17]);
    assert!(call(17)["changes"].is_array(), "{}", call(17));
    let diff = format!(
        "http://127.0.0.1:{}/v1/diff?since=10m&namespaces=booksapp",
        mcp.http
    );
    let logged = poll(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let d: serde_json::Value = reqwest::Client::new()
                .get(&diff)
                .bearer_auth("adm1n")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            d["changes"]
                .as_array()?
                .iter()
                .find(|c| c["object"]["name"] == "books-policy")
                .cloned()
        },
    )
    .await
    .expect("the applied plan in the change log");
    assert_eq!(
        (
            logged["object"]["operation"].as_str(),
            logged["object"]["requestedBy"].as_str()
        ),
        (Some("created"), Some("admin")),
        "{logged}"
    );
    assert_eq!(calls[18]["is_error"], false, "{}", calls[18]);
    assert!(
        call(18)["point_in_time"]["metricsNote"]
            .as_str()
            .is_some_and(|n| n.contains("Prometheus")),
        "{}",
        call(18)
    );
    assert_eq!(calls[19]["is_error"], true);
    assert!(
        calls[19]["text"]
            .as_str()
            .unwrap()
            .contains("give since or from, not both")
    );
    assert_eq!(out["resources"][0], "mesh://graph");
    assert_eq!(out["graph_resource"]["edges"].as_array().unwrap().len(), 3);
    assert_eq!(out["prompts"][0], "audit-mesh");

    // A subscription to the graph: a change of the mesh (web -> voting turns plaintext) is
    // announced as `notifications/resources/updated`.
    let mut plaintext = t.clone();
    let i = plaintext
        .edges
        .iter()
        .position(|e| e.to == "emojivoto/voting")
        .unwrap();
    plaintext.edges[i].tls = Some(false);
    let out = python_mcp_client(&serde_json::json!({
        "http": url, "token": "t0ken", "calls": [],
        "subscribe": {
            "uri": "mesh://graph",
            "put": format!("http://{addr}/topology"),
            "body": plaintext.to_yaml(),
        },
    }))
    .await;
    assert!(
        out["updated"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "mesh://graph"),
        "no update of mesh://graph: {}",
        out["updated"]
    );

    // stdio, read-only, against the gRPC port with a token: no mutation tools, reads work.
    let out = python_mcp_client(&serde_json::json!({
        "stdio": [
            env!("CARGO_BIN_EXE_mesh-mcp"), "stdio",
            "--server", format!("127.0.0.1:{}", mcp.grpc), "--token", "t0ken", "--read-only",
        ],
        "calls": [["who_calls", {"workload": "emojivoto/web"}]],
    }))
    .await;
    let tools = out["tools"].as_object().unwrap();
    assert_eq!(tools.len(), 13, "{:?}", tools.keys());
    assert!(tools.contains_key("get_rollout") && !tools.contains_key("advance_rollout"));
    assert!(!tools.contains_key("apply_plan"));
    assert_eq!(
        out["calls"][0]["structured"]["callers"][0]["from"],
        "emojivoto/vote-bot"
    );

    // No token: 401 with a Bearer challenge, before any MCP handling.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_64() {
    for (args, want) in [
        (
            vec!["--insecure-no-auth"],
            "set --redis-url, or --embedded-collector",
        ),
        (
            vec!["--redis-url", "redis://127.0.0.1:1"],
            "set --token-file, --token-review or --oauth-issuer, or --insecure-no-auth for a demo",
        ),
        (
            vec!["--embedded-collector", "--insecure-no-auth"],
            "--embedded-collector needs --prometheus-url",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
            .args(&args)
            .env("MESH_LOG", "error")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim(), format!("mesh-mcp: {want}"), "{args:?}");
    }
}

/// A kubeconfig named on the command line that cannot be read is bad configuration (without
/// one, the service runs and says Kubernetes is missing).
#[test]
fn an_unreadable_kubeconfig_is_one_line_and_exit_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
        .args(["--embedded-collector", "--insecure-no-auth"])
        .args(["--prometheus-url", "http://127.0.0.1:1"])
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .env("MESH_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("mesh-mcp: --kubeconfig /nonexistent/kubeconfig: ")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn the_cli_reference_is_current() {
    let bin = env!("CARGO_BIN_EXE_mesh-mcp");
    mesh_testkit::check_cli_doc(bin, &[], "mesh-mcp");
    mesh_testkit::check_cli_doc(bin, &["stdio"], "mesh-mcp-stdio");
}

/// The approval policy file: checked whole at start (a broken one stops mesh-mcp with its
/// reason), reloaded on change; a broken edit is logged with its reason and the last good
/// policy stays in force until a good one replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_policy_file_is_checked_and_a_broken_edit_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("approval-policy.yaml");
    std::fs::write(
        &file,
        "version: 1\ndefault: { approvals: 1, approvers: { users: [\"system:admin\"] } }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
        .args(["--embedded-collector", "--insecure-no-auth"])
        .args(["--prometheus-url", "http://127.0.0.1:1"])
        .arg("--approval-policy")
        .arg(&file)
        .env("MESH_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().count() == 1
            && err.contains("default.approvers.users: \"system:admin\": system identities"),
        "{err}"
    );

    // emojivoto needs an approval; admin's dry-run says so, and its write is held back.
    let held = "version: 1\ndefault: { approvals: 0, approvers: { groups: [mesh-admins] } }\n\
                namespaces:\n  emojivoto: { approvals: 1 }\n";
    std::fs::write(&file, held).unwrap();
    let cluster = kube().await;
    let path = file.to_str().unwrap().to_owned();
    let mcp = start_mcp_with(
        &[
            "--embedded-collector",
            "--prometheus-url",
            "http://127.0.0.1:1",
            "--approval-policy",
            &path,
        ],
        Some(cluster.kubeconfig("mcp-token")),
    );
    let c = lazy_client(mcp.grpc);
    let manifest = "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
                    metadata: {name: reload-check, namespace: emojivoto}\n\
                    spec: {identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]}\n\
                    ---\napiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
                    metadata: {name: reload-check, namespace: emojivoto}\n\
                    spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}\n  \
                    requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: reload-check}]\n";
    // Whether admin's write would be held back now (its dry-run warns so).
    let held_back = || async {
        let r = admin_apply(&c, manifest, true).await.ok()?.into_inner();
        Some(
            r.warnings
                .iter()
                .any(|w| w.starts_with(mesh_mcp::apply::NEEDS_APPROVALS)),
        )
    };
    let first = poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { held_back().await },
    )
    .await;
    assert_eq!(first, Some(true), "mesh-mcp never answered the dry-run");
    let e = admin_apply(&c, manifest, false).await.unwrap_err();
    assert!(mesh_proto::needs_approval(&e), "{e:?}");

    // A broken edit: logged with why, and the write is still held back.
    std::fs::write(&file, held.replace("approvals: 1", "approvals: 11")).unwrap();
    let log = mcp._dir.path().join("mesh-mcp.log");
    let said = poll(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("approval policy not reloaded")
                .then_some(text)
        },
    )
    .await
    .expect("the broken edit was never reported");
    assert!(
        said.contains("namespaces.emojivoto.approvals: 11; at most 10"),
        "{said}"
    );
    assert_eq!(held_back().await, Some(true), "the last good policy stays");

    // A good edit takes over: emojivoto needs nobody now.
    std::fs::write(
        &file,
        held.replace("approvals: 1 }", "approvals: 0, ttl: 10m }"),
    )
    .unwrap();
    let freed = poll(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async { (held_back().await == Some(false)).then_some(()) },
    )
    .await;
    assert!(freed.is_some(), "the good edit was never loaded");
}
