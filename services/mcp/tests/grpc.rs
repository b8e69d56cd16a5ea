//! The gRPC face over loopback: authentication, filters, watch deltas of the filtered view.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{sync::Arc, time::Duration};

use mesh_collector::Publisher;
use mesh_mcp::{Authenticator, GraphService, TokenAuth};
use mesh_model::{MeshGraph, MetricTolerance};
use mesh_proto::pb::{self, mesh_graph_event::Event, mesh_service_client::MeshServiceClient};
use mesh_store::MemoryStore;
use mesh_testkit::poll;
use tokio::sync::watch;
use tonic::{Code, Request, transport::Channel};

fn build(t: &meshsim::Topology) -> MeshGraph {
    meshsim::graph(
        t,
        Duration::from_secs(60),
        std::time::SystemTime::UNIX_EPOCH,
    )
}

struct Server {
    addr: std::net::SocketAddr,
    publisher: Publisher<Arc<MemoryStore>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(t: &meshsim::Topology) -> Server {
    let auth = TokenAuth::parse("good-token,alice,uid-1,\"devs\"\n").unwrap();
    start_with(t, auth.into()).await
}

async fn start_with(t: &meshsim::Topology, auth: Authenticator) -> Server {
    let store = Arc::new(MemoryStore::new(100));
    let mut publisher = Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .unwrap();
    publisher.publish(build(t)).await.unwrap();
    let (tx, rx) = watch::channel(None);
    let history = mesh_mcp::History::default();
    tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
    let routes = mesh_mcp::grpc_routes(
        GraphService::new(rx, history, Duration::from_millis(200)),
        Some(auth),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(mesh_mcp::incoming(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Server {
        addr,
        publisher,
        stop: Some(stop),
    }
}

async fn client(addr: std::net::SocketAddr) -> MeshServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    MeshServiceClient::new(ch)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", "Bearer good-token".parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn wait_for_graph(c: &mut MeshServiceClient<Channel>) -> pb::MeshGraph {
    for _ in 0..100 {
        match c
            .get_mesh_graph(authed(pb::GetMeshGraphRequest::default()))
            .await
        {
            Ok(g) => return g.into_inner(),
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("{s}"),
        }
    }
    panic!("no graph within 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_mesh_graph_needs_a_token_and_honours_filters() {
    let emojivoto = meshsim::builtin("emojivoto").unwrap();
    let s = start(&emojivoto).await;
    let mut c = client(s.addr).await;
    let g = wait_for_graph(&mut c).await;
    assert_eq!(g.edges.len(), 3);
    assert_eq!(g.epoch, s.publisher.epoch());
    let err = c
        .get_mesh_graph(pb::GetMeshGraphRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut bad = Request::new(pb::GetMeshGraphRequest::default());
    bad.metadata_mut()
        .insert("authorization", "Bearer stolen".parse().unwrap());
    assert_eq!(
        c.get_mesh_graph(bad).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let only_voting = pb::GetMeshGraphRequest {
        workload: "emojivoto/voting".into(),
        ..Default::default()
    };
    let g = c
        .get_mesh_graph(authed(only_voting))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.edges.len(), 1);
    let busy = pb::GetMeshGraphRequest {
        min_rps: 3.0,
        ..Default::default()
    };
    assert_eq!(
        c.get_mesh_graph(authed(busy))
            .await
            .unwrap()
            .into_inner()
            .edges
            .len(),
        2
    );
    let elsewhere = pb::GetMeshGraphRequest {
        namespaces: vec!["booksapp".into()],
        ..Default::default()
    };
    assert!(
        c.get_mesh_graph(authed(elsewhere))
            .await
            .unwrap()
            .into_inner()
            .edges
            .is_empty()
    );
    for bad in [
        pb::GetMeshGraphRequest {
            workload: "voting".into(),
            ..Default::default()
        },
        pb::GetMeshGraphRequest {
            min_rps: -1.0,
            ..Default::default()
        },
        pb::GetMeshGraphRequest {
            tls: 42,
            ..Default::default()
        },
    ] {
        let e = c.get_mesh_graph(authed(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }
    let e = c
        .get_mesh_graph(authed(pb::GetMeshGraphRequest {
            workload: "voting".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "workload \"voting\": want namespace/name");
    let e = c
        .get_mesh_graph(authed(pb::GetMeshGraphRequest {
            workload: "emojivoto/nosuch".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.message()
            .starts_with("workload emojivoto/nosuch is not in the graph"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_the_filtered_view_and_an_edge_leaving_it_as_a_removal() {
    let mut t = meshsim::builtin("emojivoto").unwrap();
    let mut s = start(&t).await;
    let mut c = client(s.addr).await;
    wait_for_graph(&mut c).await;
    let req = pb::WatchMeshGraphRequest {
        tls: pb::TlsStatus::Mtls as i32,
        ..Default::default()
    };
    let mut stream = c.watch_mesh_graph(authed(req)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(Event::Snapshot(snap)) = first.event else {
        panic!("expected a snapshot, got {first:?}")
    };
    assert_eq!(snap.edges.len(), 3);

    // web -> voting turns plaintext: under tls=MTLS it leaves the view.
    for e in &mut t.edges {
        if e.to == "emojivoto/voting" {
            e.tls = Some(false);
        }
    }
    s.publisher.publish(build(&t)).await.unwrap();
    let delta = loop {
        match stream.message().await.unwrap().unwrap().event {
            Some(Event::Delta(d)) => break d,
            Some(Event::Heartbeat(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(delta.removed_edges.len(), 1);
    assert_eq!(delta.removed_edges[0].dst.as_ref().unwrap().name, "voting");
    assert!(delta.upserted_edges.is_empty());

    // A version this stream does not see (the plaintext edge's traffic triples) sends nothing;
    // the next delta starts from the version the stream delivered, so a client can check that
    // it missed nothing, and heartbeats meanwhile say that same position.
    let delivered = delta.to_version;
    for e in t.edges.iter_mut().filter(|e| e.to == "emojivoto/voting") {
        e.rps *= 3.0;
    }
    s.publisher.publish(build(&t)).await.unwrap();
    // The service holds the unseen version; two heartbeats later (200 ms apart) the stream
    // has certainly handled it, and still names the version it delivered.
    let at = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = c.clone();
        async move {
            let g = c
                .get_mesh_graph(authed(pb::GetMeshGraphRequest::default()))
                .await
                .ok()?
                .into_inner();
            (g.version == delivered + 1).then_some(())
        }
    })
    .await;
    assert!(at.is_some(), "the unseen version was never served");
    let mut beats = 0;
    while beats < 2 {
        match stream.message().await.unwrap().unwrap().event {
            Some(Event::Heartbeat(h)) => {
                assert_eq!(h.position.unwrap().version, delivered, "heartbeat position");
                beats += 1;
            }
            other => panic!("nothing is sent for an unseen version: {other:?}"),
        }
    }
    for e in t.edges.iter_mut().filter(|e| e.to == "emojivoto/emoji") {
        e.rps *= 3.0;
    }
    s.publisher.publish(build(&t)).await.unwrap();
    let next = loop {
        match stream.message().await.unwrap().unwrap().event {
            Some(Event::Delta(d)) => break d,
            Some(Event::Heartbeat(h)) => {
                assert_eq!(h.position.unwrap().version, delivered, "heartbeat position");
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        (next.from_version, next.to_version),
        (delivered, delivered + 2),
        "the delta covers the unseen version"
    );
    assert_eq!(next.upserted_edges.len(), 1);
    assert_eq!(next.upserted_edges[0].dst.as_ref().unwrap().name, "emoji");

    // Resuming at the current position starts with a heartbeat, not a snapshot.
    let now = wait_for_graph(&mut c).await;
    let resume = pb::GraphPosition {
        epoch: now.epoch,
        version: now.version,
    };
    let req = pb::WatchMeshGraphRequest {
        resume_from: Some(resume),
        ..Default::default()
    };
    let mut resumed = c.watch_mesh_graph(authed(req)).await.unwrap().into_inner();
    let first = resumed.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Heartbeat(_))),
        "{first:?}"
    );
    // A resume point from the future is refused.
    let future = pb::GraphPosition {
        epoch: now.epoch,
        version: now.version + 10,
    };
    let e = c
        .watch_mesh_graph(authed(pb::WatchMeshGraphRequest {
            resume_from: Some(future),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let s = start(&meshsim::builtin("emojivoto").unwrap()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&s).await);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "linkerd.mcp.v1.MeshService".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        r.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection in both versions: clients that speak only v1alpha (Python's grpcio-reflection,
    // grpc_cli) see the API too.
    use tonic_reflection::pb::{v1, v1alpha};
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&s).await);
    let req = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
        ..Default::default()
    };
    let mut answers = alpha
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        answer.message_response
    else {
        panic!("{answer:?}");
    };
    assert!(
        l.service
            .iter()
            .any(|s| s.name == "linkerd.mcp.v1.MeshService"),
        "{l:?}"
    );
    let mut one = v1::server_reflection_client::ServerReflectionClient::new(channel(&s).await);
    let req = v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let answer = one
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{answer:?}").contains("linkerd.mcp.v1.MeshService"));
}

async fn channel(s: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(10));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_accepts_cluster_tokens_and_says_when_it_cannot_ask() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                 agent-token,system:serviceaccount:shop:agent,uid-a,\"system:serviceaccounts\"\n"
            .into(),
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let reviewer = kube::Client::try_from(kube.kube_config("mcp-token")).unwrap();
    let auth = Authenticator::new(
        TokenAuth::parse("good-token,alice,uid-1\n").unwrap(),
        Some(reviewer),
        None,
    );
    let t = meshsim::builtin("emojivoto").unwrap();
    let s = start_with(&t, auth).await;
    let mut c = client(s.addr).await;
    wait_for_graph(&mut c).await;
    let get = |token: &str| {
        let mut c = c.clone();
        let r = with_token(pb::GetMeshGraphRequest::default(), token);
        async move { c.get_mesh_graph(r).await }
    };
    // A service account token, reviewed by Kubernetes; a static token, without a round trip.
    get("agent-token").await.unwrap();
    get("good-token").await.unwrap();
    let e = get("forged").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("TokenReview"), "{}", e.message());
    let reviews = kube
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with("/tokenreviews"))
        .count();
    assert_eq!(reviews, 2, "one review per unknown token");

    // Kubernetes gone: a cached answer still holds; a new token cannot be checked, and says so.
    // (The client's pooled connection may outlive the server's shutdown by a moment: each try
    // uses a fresh token, since refusals are cached, until the server is really gone.)
    drop(kube);
    get("agent-token").await.unwrap();
    let mut last = None;
    for i in 0..50 {
        let e = get(&format!("another-{i}")).await.unwrap_err();
        let gone = e.code() == Code::Unavailable;
        last = Some(e);
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = last.unwrap();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("TokenReview"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_audience_only_tokens_minted_for_it_pass() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                 api-token,system:serviceaccount:shop:agent,uid-a\n\
                 bound-token,system:serviceaccount:shop:agent,uid-a\n"
            .into(),
        token_audiences: vec![("bound-token".into(), "linkerd-mcp".into())],
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let auth = Authenticator::new(
        TokenAuth::default(),
        Some(kube::Client::try_from(kube.kube_config("mcp-token")).unwrap()),
        Some("linkerd-mcp".into()),
    );
    let s = start_with(&meshsim::builtin("emojivoto").unwrap(), auth).await;
    let c = client(s.addr).await;
    let get = |token: &str| {
        let mut c = c.clone();
        let r = with_token(pb::GetMeshGraphRequest::default(), token);
        async move { c.get_mesh_graph(r).await }
    };
    let mut ok = None;
    for _ in 0..100 {
        match get("bound-token").await {
            Err(e) if e.code() == Code::Unavailable && e.message().contains("no graph") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => {
                ok = Some(other);
                break;
            }
        }
    }
    ok.expect("a graph within 2 s").unwrap();
    // A token for the API server, replayable there, is not one for mesh-mcp.
    let e = get("api-token").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("audience"), "{}", e.message());
}

/// gRPC connections are bounded before authentication: past the limit they are closed on
/// arrival, and one that sends nothing is closed at the first-bytes deadline; real clients
/// are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_excess_grpc_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let limits = mesh_telemetry::serve::ConnLimits {
        max_connections: 2,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_secs(5),
        ..mesh_telemetry::serve::ConnLimits::DEFAULT
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(mesh_mcp::incoming_with(l, limits)),
    );
    let closed = |mut s: tokio::net::TcpStream, within: Duration| async move {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(within, s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    };
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accepted in the order they arrive: the third is the one past the limit.
    let over = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed(over, Duration::from_millis(250)).await,
        "kept past the limit"
    );
    assert!(
        closed(a, Duration::from_secs(5)).await,
        "a silent connection was kept"
    );
    assert!(
        closed(b, Duration::from_secs(5)).await,
        "a silent connection was kept"
    );
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}
