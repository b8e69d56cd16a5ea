//! Policy changes: the dry-run and apply round trips through mesh-mcp's gRPC against kube-sim,
//! with the part spent outside kube-sim (its request log times its own handling), and the
//! validation + what-if of one manifest on a generated mesh of `n` workloads.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mesh_policy::cluster::Cluster;
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn policy(identity: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
         metadata: {{name: books-server, namespace: booksapp}}\n\
         spec: {{podSelector: {{matchLabels: {{app: books}}}}, port: service, proxyProtocol: HTTP/1}}\n---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
         metadata: {{name: books-clients, namespace: booksapp}}\n\
         spec: {{identities: [{identity}]}}\n---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: books-policy, namespace: booksapp}}\n\
         spec:\n  targetRef: {{group: policy.linkerd.io, kind: Server, name: books-server}}\n  \
         requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: books-clients}}]\n"
    )
}

/// Prints round trips (p50/p99, ours = total minus kube-sim's handling) and the what-if cost.
pub(crate) async fn run(n: usize) {
    // The requester is the mcp service account here: kube-sim's seed lets it do nothing, so the
    // bench grants it policy rights through system:masters in mesh-mcp's token file.
    let h = mcp_harness::McpHarness::start(mcp_harness::Options {
        kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n".into(),
        extra_seeds: Vec::new(),
        topology: meshsim::builtin("booksapp").expect("builtin"),
        delegation: mesh_mcp::apply::Delegation::default(),
        mcp_tokens: "tok,admin,u,\"system:masters\"\n".into(),
        heartbeat: Duration::from_secs(60),
        tweak: |a| a,
        prometheus_url: None,
    })
    .await;
    let (kube, addr) = (&h.kube, h.addr);
    let mut c = MeshServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let send = |manifest: String, dry_run: bool| {
        let mut r = tonic::Request::new(pb::ApplyRequest {
            source: Some(pb::apply_request::Source::Manifest(manifest)),
            dry_run,
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", "Bearer tok".parse().expect("header"));
        r
    };
    let ids = [
        "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local",
        "authors.booksapp.serviceaccount.identity.linkerd.cluster.local",
    ];
    // Warm up (connections, first create).
    c.apply_authorization_policy(send(policy(ids[0]), false))
        .await
        .expect("apply");
    let round = |dry: bool, runs: usize| {
        let mut c = c.clone();
        async move {
            let (mut total, mut ours) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let before = kube.requests().await.len();
                let start = Instant::now();
                c.apply_authorization_policy(send(policy(ids[i % 2]), dry))
                    .await
                    .expect("apply");
                let t = start.elapsed();
                let theirs: Duration = kube.requests().await[before..]
                    .iter()
                    .map(|r| r.handling)
                    .sum();
                total.push(t);
                ours.push(t.saturating_sub(theirs));
            }
            (total, ours)
        }
    };
    let (dry_total, dry_ours) = round(true, 100).await;
    let (apply_total, apply_ours) = round(false, 60).await;

    // Validation and what-if of one manifest on a generated mesh of n workloads.
    let t = meshsim::generate(n, 1).expect("valid topology");
    let cluster = Arc::new(
        Cluster::from_objects(crate::collector::objects(&t), Cluster::unsynced("").health).0,
    );
    let g = mesh_collector::run::join(
        &meshsim::graph(&t, Duration::from_secs(60), SystemTime::now()),
        &[],
        &cluster,
        &mut mesh_policy::overlay::Verdicts::default(),
        SystemTime::now(),
    );
    // ns-000's callers narrowed to its first workload: the namespace's other callers are denied.
    let first = t
        .workloads
        .iter()
        .find(|w| w.namespace == "ns-000")
        .expect("ns-000")
        .identity();
    let manifest = format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\n\
         metadata: {{name: neighbours, namespace: ns-000}}\nspec: {{identities: [{first}]}}\n---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: neighbours, namespace: ns-000}}\n\
         spec:\n  targetRef: {{group: policy.linkerd.io, kind: Server, name: app}}\n  \
         requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: neighbours}}]\n"
    );
    let mut what_if = Vec::new();
    let mut changed = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let (docs, problems) = mesh_policy::document::parse_text("bench", &manifest);
        let m = mesh_policy::Manifests::from_documents(docs, problems);
        assert!(m.validate().is_empty(), "{:?}", m.validate());
        let proposed = m.policy_set();
        let next = cluster.with_proposed(&proposed);
        let namespaces = cluster.namespaces_affected_by(&proposed);
        changed = g
            .edges
            .values()
            .filter(|e| {
                matches!(&e.key.dst, mesh_model::Destination::Workload(d) if namespaces.contains(&d.namespace))
            })
            .filter(|e| {
                mesh_policy::overlay::verdict_of(&cluster, e).decision
                    != mesh_policy::overlay::verdict_of(&next, e).decision
            })
            .count();
        what_if.push(start.elapsed());
    }
    let (d50, d99) = (pct(dry_total.clone(), 0.5), pct(dry_total, 0.99));
    let (do50, do99) = (pct(dry_ours.clone(), 0.5), pct(dry_ours, 0.99));
    let (a50, a99) = (pct(apply_total.clone(), 0.5), pct(apply_total, 0.99));
    let (ao50, ao99) = (pct(apply_ours.clone(), 0.5), pct(apply_ours, 0.99));
    println!(
        "dry_run_p50_ms={d50:.1} dry_run_p99_ms={d99:.1} ours_p50_ms={do50:.1} ours_p99_ms={do99:.1} \
         apply_p50_ms={a50:.1} apply_p99_ms={a99:.1} apply_ours_p50_ms={ao50:.1} apply_ours_p99_ms={ao99:.1} \
         what_if_edges={} what_if_changed={changed} what_if_p50_ms={:.1}",
        g.edges.len(),
        pct(what_if, 0.5),
    );
}
