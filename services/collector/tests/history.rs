//! The change log over real processes: `mesh-collector` watching kube-sim (the demo cluster)
//! and writing to a real redis-server. A first collector logs every object; it is killed; the
//! cluster changes while nobody leads; a second collector continues the log, and the log holds
//! each change once, in order, with nothing missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    time::Duration,
};

use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use mesh_policy::history::Record;
use mesh_store::{HistoryStore, RedisStore, STREAM_START};
use mesh_testkit::{ChildGuard, Redis, free_port, poll};

fn collector(redis: &Redis, kubeconfig: &std::path::Path, log: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        "mesh-collector",
        Command::new(env!("CARGO_BIN_EXE_mesh-collector"))
            // Nothing listens there: the cluster alone is logged.
            .args([
                "--prometheus-url",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .args(["--redis-url", &redis.url, "--interval", "1s"])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .env("KUBECONFIG", kubeconfig),
        log,
    )
}

async fn records(store: &RedisStore) -> Vec<Record> {
    store
        .changes_after(STREAM_START, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|c| serde_json::from_str(&c.record).unwrap())
        .collect()
}

fn logged(rs: &[Record], kind: &str, ns: &str, name: &str) -> Vec<String> {
    rs.iter()
        .filter(|r| r.kind == kind && r.namespace == ns && r.name == name)
        .map(|r| r.op.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_continues_the_log_without_duplicates_or_gaps() {
    let redis = Redis::start().await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "collector-token,system:serviceaccount:linkerd-mcp:collector,uid-c\n\
                 admin-token,admin,uid-a,\"system:masters\"\n"
            .into(),
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("collector-token")).unwrap();
    let store = RedisStore::new(&redis.url, "mesh:", 100, Duration::from_secs(2)).unwrap();

    let mut first = collector(&redis, &kubeconfig, &dir.path().join("first.log"));
    let initial = poll(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let rs = records(&store).await;
            (!logged(&rs, "Deployment", "emojivoto", "web").is_empty()
                && !logged(&rs, "Server", "emojivoto", "voting-grpc").is_empty())
            .then_some(rs)
        },
    )
    .await
    .expect("the first collector logs the cluster");
    assert!(
        initial.iter().all(|r| r.op == "listed"),
        "a new log starts with what exists, listed"
    );
    let start = store
        .history_start()
        .await
        .unwrap()
        .expect("the log's start");

    // The first collector dies; the cluster changes while nobody leads.
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(10)));
    let admin = kube::Client::try_from(kube.kube_config("admin-token")).unwrap();
    let deploys: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "emojivoto",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
    );
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let servers: Api<DynamicObject> = Api::namespaced_with(
        admin,
        "emojivoto",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "policy.linkerd.io",
            "v1beta3",
            "Server",
        )),
    );
    servers
        .delete("voting-grpc", &DeleteParams::default())
        .await
        .unwrap();

    let _second = collector(&redis, &kubeconfig, &dir.path().join("second.log"));
    let after = poll(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let rs = records(&store).await;
            (logged(&rs, "Server", "emojivoto", "voting-grpc").len() == 2).then_some(rs)
        },
    )
    .await
    .expect("the second collector logs what changed while nobody led");

    // Each object once per change: the first collector's creations are not logged again.
    assert_eq!(&after[..initial.len()], &initial[..]);
    let mut per_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &after {
        per_object
            .entry(format!("{} {}/{}", r.kind, r.namespace, r.name))
            .or_default()
            .push(r.op.clone());
    }
    for (object, ops) in &per_object {
        assert!(
            ops[0] == "listed" || ops[0] == "created",
            "{object}: {ops:?}"
        );
        assert!(
            ops.windows(2)
                .all(|w| w[0] != "deleted" || w[1] == "created"),
            "{object}: {ops:?}"
        );
        assert_eq!(
            ops.iter()
                .filter(|o| *o == "created" || *o == "listed")
                .count(),
            1,
            "{object}: {ops:?}"
        );
    }
    assert_eq!(
        logged(&after, "Deployment", "emojivoto", "web"),
        ["listed", "changed"]
    );
    let scaled = after
        .iter()
        .find(|r| r.name == "web" && r.op == "changed")
        .unwrap();
    assert_eq!(scaled.diff, ["spec.replicas: 1 -> 3"]);
    assert_eq!(
        logged(&after, "Server", "emojivoto", "voting-grpc"),
        ["listed", "deleted"]
    );
    // Nothing missing: undoing every change from the objects as last logged leaves nothing,
    // so each object there was logged from its creation on.
    let now: HashMap<String, String> = store.logged_objects().await.unwrap().into_iter().collect();
    assert!(now.contains_key("apps/Deployment/emojivoto/web"));
    assert!(!now.contains_key("policy.linkerd.io/Server/emojivoto/voting-grpc"));
    assert!(mesh_policy::history::objects_before(now, &after).is_empty());
    assert_eq!(
        store.history_start().await.unwrap(),
        Some(start),
        "one log, continued"
    );
}
