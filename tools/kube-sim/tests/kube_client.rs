//! kube-sim through a real `kube::Client`: every behaviour our product relies on, checked the
//! way the product will use it.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::TokenReview,
    authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview},
    core::v1::{ConfigMap, Event, Namespace},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams, WatchEvent, WatchParams,
    },
    runtime::watcher,
};
use kube_sim::{Config, KubeSim};
use serde_json::{Value, json};

const TOKENS: &str = "admin-token,admin,uid-admin,\"system:masters\"\n\
alice-token,alice,uid-alice,\"devs\"\n\
bob-token,bob,uid-bob\n\
chatbot-token,system:serviceaccount:linkerd-mcp:chatbot,uid-bot\n";

const WIDGET_CRD: &str = include_str!("fixtures/widgets-crd.yaml");

async fn start(history: usize) -> KubeSim {
    let sim = KubeSim::start(Config {
        tokens: TOKENS.into(),
        history_limit: history,
        bookmark_interval: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .unwrap();
    sim.load_yaml(&format!(
        "{WIDGET_CRD}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: b}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n"
    ))
    .await
    .unwrap();
    sim
}

fn client_as(sim: &KubeSim, token: &str, impersonate: Option<(&str, &[&str])>) -> Client {
    let mut cfg = kube::Config::new(sim.url().parse().unwrap());
    cfg.auth_info.token = Some(token.to_owned().into());
    cfg.default_namespace = "default".into();
    cfg.read_timeout = Some(Duration::from_secs(10));
    if let Some((user, groups)) = impersonate {
        cfg.auth_info.impersonate = Some(user.to_owned());
        cfg.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    Client::try_from(cfg).unwrap()
}

fn admin(sim: &KubeSim) -> Client {
    client_as(sim, "admin-token", None)
}

fn widgets(c: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(c.clone(), ns, &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    let mut v =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}});
    v["spec"] = spec;
    serde_json::from_value(v).unwrap()
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_builtins_and_crds() {
    let sim = start(100).await;
    let d = kube::discovery::Discovery::new(admin(&sim))
        .run()
        .await
        .unwrap();
    assert!(d.has_group("apps"));
    let (ar, caps) = d
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .unwrap();
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let v = admin(&sim).apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn objects_get_identity_and_versions_from_one_counter() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    let one = api
        .create(&PostParams::default(), &cm("one", &[("k", "v")]))
        .await
        .unwrap();
    let two = api
        .create(&PostParams::default(), &cm("two", &[]))
        .await
        .unwrap();
    let m = &one.metadata;
    assert!(m.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(m.creation_timestamp.is_some());
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&two) > rv(&one));
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&two)
    );
    let err = status_of(
        api.create(&PostParams::default(), &cm("one", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"one\" already exists");
    let err = status_of(api.get("nope").await.unwrap_err());
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "configmaps \"nope\" not found")
    );
    // Generation moves with spec changes only.
    let w = widgets(&admin(&sim), "a");
    let made = w
        .create(
            &PostParams::default(),
            &widget("w", json!({"port": 80, "podSelector": {}})),
        )
        .await
        .unwrap();
    assert_eq!(made.metadata.generation, Some(1));
    let p = w
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    let p = w
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"port": 81}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
}

#[tokio::test]
async fn watch_replays_after_a_version_and_streams_live_changes() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    let first = api
        .create(&PostParams::default(), &cm("first", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("second", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("third", &[]))
        .await
        .unwrap();
    let from = first.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(c) => seen.push(c.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["second", "third"]);
    api.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(c) => assert_eq!(c.metadata.name.unwrap(), "second"),
        other => panic!("unexpected {other:?}"),
    }
    // Other namespaces are not seen by a namespaced watch.
    let other: Api<ConfigMap> = Api::namespaced(admin(&sim), "b");
    other
        .create(&PostParams::default(), &cm("elsewhere", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("fourth", &[]))
        .await
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.unwrap(), "fourth"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_sends_bookmarks_and_ends_after_its_timeout() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    let rv = sim.resource_version().await.to_string();
    let mut wp = WatchParams::default().timeout(2);
    wp.bookmarks = true;
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let mut bookmarks = 0;
    let started = std::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        if let WatchEvent::Bookmark(b) = ev {
            assert_eq!(b.metadata.resource_version, rv);
            bookmarks += 1;
        }
    }
    assert!(bookmarks >= 2, "{bookmarks} bookmarks");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stream did not end with timeoutSeconds"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let sim = start(3).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "2")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version: 2"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_sees_init_then_live_changes_without_relisting() {
    let sim = start(100).await;
    let w = widgets(&admin(&sim), "a");
    w.create(
        &PostParams::default(),
        &widget("pre", json!({"port": 1, "podSelector": {}})),
    )
    .await
    .unwrap();
    // Short server-side timeouts make the watcher re-watch often: it must resume, not re-list.
    let cfg = watcher::Config::default().timeout(1);
    let mut events = watcher(w.clone(), cfg).boxed();
    let mut kinds = Vec::new();
    let writer = {
        let w = w.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            w.create(
                &PostParams::default(),
                &widget("live", json!({"port": 2, "podSelector": {}})),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            w.delete("pre", &DeleteParams::default()).await.unwrap();
        })
    };
    // KUBE_SIM_SOAK_SECS=180 runs the same check for minutes (not in `make test`).
    let secs = std::env::var("KUBE_SIM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6u64)
        .max(6);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
        let label = match ev.unwrap() {
            watcher::Event::Init => "Init".to_owned(),
            watcher::Event::InitApply(o) => format!("InitApply {}", o.metadata.name.unwrap()),
            watcher::Event::InitDone => "InitDone".to_owned(),
            watcher::Event::Apply(o) => format!("Apply {}", o.metadata.name.unwrap()),
            watcher::Event::Delete(o) => format!("Delete {}", o.metadata.name.unwrap()),
        };
        kinds.push(label);
    }
    writer.await.unwrap();
    assert_eq!(
        kinds,
        [
            "Init",
            "InitApply pre",
            "InitDone",
            "Apply live",
            "Delete pre"
        ]
    );
    let log = sim.requests().await;
    let lists = log
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path.ends_with("/widgets") && !r.query.contains("watch=true")
        })
        .count();
    let watches = log
        .iter()
        .filter(|r| r.path.ends_with("/widgets") && r.query.contains("watch=true"))
        .count();
    assert_eq!(lists, 1, "the watcher re-listed: {log:#?}");
    assert!(watches as u64 >= secs / 2, "{watches} watches in {secs} s");
}

#[tokio::test]
async fn patches_by_content_type() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    api.create(&PostParams::default(), &cm("p", &[("a", "1")]))
        .await
        .unwrap();
    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2", "a": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("b".to_owned(), "2".to_owned())]
    );
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/c", "value": "3"}])).unwrap();
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["c"], "3");
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/c", "value": "nope"}]))
            .unwrap();
    let err = status_of(
        api.patch("p", &PatchParams::default(), &Patch::<()>::Json(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    // Strategic merge is refused for custom resources, as the real server does.
    let w = widgets(&admin(&sim), "a");
    w.create(
        &PostParams::default(),
        &widget("s", json!({"port": 1, "podSelector": {}})),
    )
    .await
    .unwrap();
    let err = status_of(
        w.patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"port": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    // PUT with a stale resourceVersion conflicts.
    let mut current = api.get("p").await.unwrap();
    current.metadata.resource_version = Some("1".into());
    let err = status_of(
        api.replace("p", &PostParams::default(), &current)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
}

fn labels(o: &DynamicObject) -> Vec<(String, String)> {
    o.metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn server_side_apply_owns_conflicts_removes_and_shares() {
    let sim = start(100).await;
    let w = widgets(&admin(&sim), "a");
    let ssa = |m: &str| PatchParams::apply(m);
    let obj = |spec: Value, labels: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x", "labels": labels}, "spec": spec});
    // Apply creates, with the manager recorded.
    let made = w
        .patch(
            "x",
            &ssa("alpha"),
            &Patch::Apply(obj(
                json!({"port": 80, "podSelector": {}, "tags": ["a"]}),
                json!({"team": "a", "tier": "web"}),
            )),
        )
        .await
        .unwrap();
    let mf = made.metadata.managed_fields.clone().unwrap();
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("alpha"), Some("Apply"))
    );
    // Another manager setting the same value shares it; a different value conflicts.
    w.patch(
        "x",
        &ssa("beta"),
        &Patch::Apply(obj(json!({"port": 80, "podSelector": {}}), json!({}))),
    )
    .await
    .unwrap();
    let err = status_of(
        w.patch(
            "x",
            &ssa("beta"),
            &Patch::Apply(obj(json!({"port": 81, "podSelector": {}}), json!({}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alpha\" using example.com/v1: .spec.port"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, ".spec.port");
    // Forced, beta takes the field.
    let forced = w
        .patch(
            "x",
            &ssa("beta").force(),
            &Patch::Apply(obj(json!({"port": 81, "podSelector": {}}), json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["port"], 81);
    // Alpha re-applies without `tier` and without `tags`: its own fields go; the shared selector
    // (beta owns it too) stays; alpha no longer owns port, so omitting it removes nothing.
    let after = w
        .patch(
            "x",
            &ssa("alpha").force(),
            &Patch::Apply(obj(json!({"podSelector": {}}), json!({"team": "a"}))),
        )
        .await
        .unwrap();
    assert_eq!(labels(&after), [("team".to_owned(), "a".to_owned())]);
    assert!(after.data["spec"].get("tags").is_none(), "{}", after.data);
    assert_eq!(after.data["spec"]["port"], 81);
    assert_eq!(after.data["spec"]["podSelector"], json!({}));
    // Keyed lists merge item by item across managers.
    w.patch(
        "x",
        &ssa("alpha").force(),
        &Patch::Apply(obj(
            json!({"podSelector": {}, "rules": [{"name": "r1", "value": "1"}]}),
            json!({"team": "a"}),
        )),
    )
    .await
    .unwrap();
    let both = w
        .patch(
            "x",
            &ssa("gamma"),
            &Patch::Apply(obj(
                json!({"rules": [{"name": "r2", "value": "2"}]}),
                json!({}),
            )),
        )
        .await
        .unwrap();
    let names: Vec<&str> = both.data["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r1", "r2"]);
    // Apply without a field manager is refused.
    let err = status_of(
        w.patch(
            "x",
            &PatchParams::default(),
            &Patch::Apply(obj(json!({}), json!({}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    let before = sim.resource_version().await;
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &before.to_string())
        .await
        .unwrap()
        .boxed();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let would = api.create(&pp, &cm("dry", &[("k", "v")])).await.unwrap();
    assert_eq!(would.data.unwrap()["k"], "v");
    assert_eq!(status_of(api.get("dry").await.unwrap_err()).code, 404);
    let w = widgets(&admin(&sim), "a");
    let mut ssa = PatchParams::apply("m");
    ssa.dry_run = true;
    let would = w
        .patch(
            "dry",
            &ssa,
            &Patch::Apply(widget("dry", json!({"port": 5, "podSelector": {}}))),
        )
        .await
        .unwrap();
    assert_eq!(would.data["spec"]["port"], 5);
    assert_eq!(status_of(w.get("dry").await.unwrap_err()).code, 404);
    assert_eq!(sim.resource_version().await, before);
    // No watch event either: the stream ends at its timeout with nothing but bookmarks.
    while let Some(ev) = stream.try_next().await.unwrap() {
        assert!(
            matches!(ev, WatchEvent::Bookmark(_)),
            "dry run produced {ev:?}"
        );
    }
    let log = sim.requests().await;
    assert!(log.iter().any(|r| r.method == "PATCH"
        && r.query.contains("dryRun=All")
        && r.query.contains("fieldManager=m")));
}

/// DeleteOptions as kube-rs sends them, in the body: `dryRun` deletes nothing, and a
/// precondition on a resourceVersion that moved is a 409 naming both values.
#[tokio::test]
async fn delete_options_in_the_body_are_honoured() {
    let sim = start(100).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&sim), "a");
    let made = api
        .create(&PostParams::default(), &cm("doomed", &[("k", "v")]))
        .await
        .unwrap();
    let rv = made.metadata.resource_version.clone().unwrap();
    let dry = kube::api::DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("doomed", &dry).await.unwrap();
    assert!(
        api.get_opt("doomed").await.unwrap().is_some(),
        "a dry run deleted"
    );
    let stale = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..Default::default()
    };
    let e = status_of(api.delete("doomed", &stale).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains(&format!(
            "Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: {rv}"
        )),
        "{}",
        e.message
    );
    assert!(api.get_opt("doomed").await.unwrap().is_some());
    let current = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some(rv),
            uid: made.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    api.delete("doomed", &current).await.unwrap();
    assert!(api.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn schema_violations_are_422_naming_the_field() {
    let sim = start(100).await;
    let w = widgets(&admin(&sim), "a");
    let err = |spec: Value| {
        let w = w.clone();
        async move {
            status_of(
                w.create(&PostParams::default(), &widget("bad", spec))
                    .await
                    .unwrap_err(),
            )
        }
    };
    let e = err(json!({"port": "http", "podSelector": {}})).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Widget.example.com \"bad\" is invalid: spec.port: Invalid value: \"string\": spec.port in body must be of type integer: \"string\""
    );
    assert_eq!(e.details.unwrap().causes[0].field, "spec.port");
    let e = err(json!({"podSelector": {}})).await;
    assert_eq!(
        e.message,
        "Widget.example.com \"bad\" is invalid: spec.port: Required value"
    );
    let e = err(json!({"port": 70000, "podSelector": {}, "protocol": "UDP", "name": "Nope"})).await;
    let mut fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    fields.sort();
    assert_eq!(fields, ["spec.name", "spec.port", "spec.protocol"]);
    let e = err(json!({"port": 1})).await;
    assert!(e.message.contains("spec: Invalid value: \"object\": must validate one and only one schema (oneOf). Found none valid"), "{}", e.message);
    let e = err(json!({"port": 1, "podSelector": {}, "externalSelector": {}})).await;
    assert!(
        e.message.contains("Found 2 valid alternatives"),
        "{}",
        e.message
    );
    // Unknown fields: pruned by default, refused with fieldValidation=Strict.
    let made = w
        .create(
            &PostParams::default(),
            &widget("ok", json!({"port": 1, "podSelector": {}, "colour": "red"})),
        )
        .await
        .unwrap();
    assert!(made.data["spec"].get("colour").is_none());
    let strict = w
        .patch(
            "ok",
            &PatchParams::apply("m").validation_strict(),
            &Patch::Apply(widget(
                "ok",
                json!({"port": 1, "podSelector": {}, "colour": "red"}),
            )),
        )
        .await
        .unwrap_err();
    let s = status_of(strict);
    assert_eq!(
        (s.code, s.message.as_str()),
        (400, "strict decoding error: unknown field \"spec.colour\"")
    );
}

fn role_yaml() -> &'static str {
    r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: a}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: devs-read, namespace: a}
subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: cm-reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: widget-patcher}
rules: [{apiGroups: [example.com], resources: [widgets], verbs: [patch, get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-patches}
subjects: [{kind: User, name: bob}]
roleRef: {kind: ClusterRole, name: widget-patcher, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonator}
rules:
  - {apiGroups: [""], resources: [users], verbs: [impersonate], resourceNames: [alice]}
  - {apiGroups: [""], resources: [groups], verbs: [impersonate], resourceNames: [devs]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: chatbot-impersonates}
subjects: [{kind: ServiceAccount, name: chatbot, namespace: linkerd-mcp}]
roleRef: {kind: ClusterRole, name: impersonator, apiGroup: rbac.authorization.k8s.io}
"#
}

#[tokio::test]
async fn rbac_allows_and_denies_with_real_messages() {
    let sim = start(100).await;
    sim.load_yaml(role_yaml()).await.unwrap();
    let alice = client_as(&sim, "alice-token", None);
    let in_a: Api<ConfigMap> = Api::namespaced(alice.clone(), "a");
    in_a.list(&ListParams::default()).await.unwrap();
    let e = status_of(
        Api::<ConfigMap>::namespaced(alice.clone(), "b")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"b\""
    );
    let e = status_of(
        in_a.create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"a\""
    );
    let e = status_of(
        Api::<Namespace>::all(alice.clone())
            .get("a")
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "namespaces \"a\" is forbidden: User \"alice\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope"
    );

    // Apply that would create needs `create` as well as `patch`.
    let bob = widgets(&client_as(&sim, "bob-token", None), "a");
    let e = status_of(
        bob.patch(
            "new",
            &PatchParams::apply("bob"),
            &Patch::Apply(widget("new", json!({"port": 1, "podSelector": {}}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "widgets.example.com \"new\" is forbidden: User \"bob\" cannot create resource \"widgets\" in API group \"example.com\" in the namespace \"a\""
    );
    widgets(&admin(&sim), "a")
        .create(
            &PostParams::default(),
            &widget("new", json!({"port": 1, "podSelector": {}})),
        )
        .await
        .unwrap();
    bob.patch(
        "new",
        &PatchParams::apply("bob").force(),
        &Patch::Apply(widget("new", json!({"port": 2, "podSelector": {}}))),
    )
    .await
    .unwrap();

    // SubjectAccessReview answers match what the requests got.
    let sar = |user: &str, groups: &[&str], verb: &str, ns: &str| -> SubjectAccessReview {
        serde_json::from_value(json!({"spec": {"user": user, "groups": groups, "resourceAttributes": {"verb": verb, "resource": "configmaps", "namespace": ns}}})).unwrap()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin(&sim));
    for (verb, ns, want) in [
        ("list", "a", true),
        ("list", "b", false),
        ("create", "a", false),
    ] {
        let r = reviews
            .create(&PostParams::default(), &sar("alice", &["devs"], verb, ns))
            .await
            .unwrap();
        assert_eq!(r.status.unwrap().allowed, want, "{verb} in {ns}");
    }
    // Without the group, alice has nothing.
    let r = reviews
        .create(&PostParams::default(), &sar("alice", &[], "list", "a"))
        .await
        .unwrap();
    assert!(!r.status.unwrap().allowed);
    let ssar: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {"resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": "a"}}})).unwrap();
    let r = Api::<SelfSubjectAccessReview>::all(alice)
        .create(&PostParams::default(), &ssar)
        .await
        .unwrap();
    assert!(r.status.unwrap().allowed);
}

#[tokio::test]
async fn impersonation_is_checked_for_the_caller() {
    let sim = start(100).await;
    sim.load_yaml(role_yaml()).await.unwrap();
    // The chatbot may act as alice in group devs: it then has alice's rights, no more.
    let as_alice = client_as(&sim, "chatbot-token", Some(("alice", &["devs"])));
    Api::<ConfigMap>::namespaced(as_alice.clone(), "a")
        .list(&ListParams::default())
        .await
        .unwrap();
    let e = status_of(
        Api::<ConfigMap>::namespaced(as_alice, "b")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("User \"alice\" cannot list"),
        "{}",
        e.message
    );
    // It may not become anyone else, or join another group.
    let e = status_of(
        Api::<ConfigMap>::namespaced(client_as(&sim, "chatbot-token", Some(("admin", &[]))), "a")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "users \"admin\" is forbidden: User \"system:serviceaccount:linkerd-mcp:chatbot\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    let e = status_of(
        Api::<ConfigMap>::namespaced(
            client_as(&sim, "chatbot-token", Some(("alice", &["system:masters"]))),
            "a",
        )
        .list(&ListParams::default())
        .await
        .unwrap_err(),
    );
    assert!(
        e.message
            .starts_with("groups \"system:masters\" is forbidden"),
        "{}",
        e.message
    );
    // Alice may not impersonate at all.
    let e = status_of(
        Api::<ConfigMap>::namespaced(client_as(&sim, "alice-token", Some(("bob", &[]))), "a")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    let log = sim.requests().await;
    assert!(
        log.iter()
            .any(|r| r.user == "system:serviceaccount:linkerd-mcp:chatbot"
                && r.impersonate_user == "alice"
                && r.impersonate_groups == ["devs"]
                && r.effective_user == "alice"
                && r.code == 200)
    );
}

#[tokio::test]
async fn token_reviews_and_anonymous_requests() {
    let sim = start(100).await;
    let reviews: Api<TokenReview> = Api::all(admin(&sim));
    let review =
        |t: &str| -> TokenReview { serde_json::from_value(json!({"spec": {"token": t}})).unwrap() };
    let r = reviews
        .create(&PostParams::default(), &review("alice-token"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(r.authenticated, Some(true));
    let u = r.user.unwrap();
    assert_eq!(
        (u.username.as_deref(), u.groups.unwrap()),
        (
            Some("alice"),
            vec!["devs".to_owned(), "system:authenticated".to_owned()]
        )
    );
    let r = reviews
        .create(&PostParams::default(), &review("stolen"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(r.authenticated, Some(false));
    let e = status_of(
        Api::<ConfigMap>::namespaced(client_as(&sim, "no-such-token", None), "a")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn events_can_be_created_and_listed() {
    let sim = start(100).await;
    let events: Api<Event> = Api::namespaced(admin(&sim), "a");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "linkerd-mcp-"},
        "involvedObject": {"kind": "AuthorizationPolicy", "namespace": "a", "name": "p"},
        "reason": "PolicyApplied", "message": "applied by alice, approved by bob", "type": "Normal",
    }))
    .unwrap();
    let made = events.create(&PostParams::default(), &ev).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("linkerd-mcp-"));
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].reason.as_deref(), Some("PolicyApplied"));
    let deploys: Api<Deployment> = Api::namespaced(admin(&sim), "a");
    assert!(
        deploys
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn demo_seeds_load_in_dependency_order() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seed/demo");
    let sim = KubeSim::start(Config {
        tokens: TOKENS.into(),
        seed_dirs: vec![seed],
        with_linkerd_crds: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let c = admin(&sim);
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "emojivoto");
    let mut names: Vec<String> = deploys
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| d.metadata.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["emoji", "vote-bot", "voting", "web"]);
    let webapp = Api::<Deployment>::namespaced(c.clone(), "booksapp")
        .get("webapp")
        .await
        .unwrap();
    assert_eq!(webapp.spec.replicas, Some(3));
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.linkerd.io", "v1beta3", "HTTPRoute"),
        "httproutes",
    );
    let routes = Api::<DynamicObject>::namespaced_with(c.clone(), "booksapp", &ar)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(routes.items.len(), 2);
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.linkerd.io", "v1beta3", "HTTPRoute"),
        "httproutes",
    );
    let routes = Api::<DynamicObject>::namespaced_with(c.clone(), "booksapp", &ar)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(routes.items.len(), 2);
    let ns = Api::<Namespace>::all(c).get("booksapp").await.unwrap();
    assert_eq!(
        ns.metadata.annotations.unwrap()["config.linkerd.io/default-inbound-policy"],
        "all-authenticated"
    );

    // A bad seed stops start-up with the file named.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n",
    )
    .unwrap();
    let err = KubeSim::start(Config {
        tokens: TOKENS.into(),
        seed_dirs: vec![dir.path().to_path_buf()],
        ..Config::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "seed {}: ConfigMap x: namespaces \"nowhere\" not found",
            dir.path().display()
        )
    );
}

#[tokio::test]
async fn linkerd_crds_load_and_refuse_invalid_policy() {
    let sim = KubeSim::start(Config {
        tokens: TOKENS.into(),
        with_linkerd_crds: true,
        ..Config::default()
    })
    .await
    .unwrap();
    sim.load_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: emojivoto}\n")
        .await
        .unwrap();
    let d = kube::discovery::Discovery::new(admin(&sim))
        .run()
        .await
        .unwrap();
    for (g, v, k) in [
        ("policy.linkerd.io", "v1beta3", "Server"),
        ("policy.linkerd.io", "v1alpha1", "AuthorizationPolicy"),
        ("policy.linkerd.io", "v1alpha1", "MeshTLSAuthentication"),
        ("policy.linkerd.io", "v1alpha1", "NetworkAuthentication"),
        ("policy.linkerd.io", "v1beta1", "ServerAuthorization"),
        ("policy.linkerd.io", "v1beta3", "HTTPRoute"),
        ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        ("gateway.networking.k8s.io", "v1", "GRPCRoute"),
        ("policy.linkerd.io", "v1alpha1", "EgressNetwork"),
        ("policy.linkerd.io", "v1alpha1", "HTTPLocalRateLimitPolicy"),
        ("gateway.networking.k8s.io", "v1alpha2", "TCPRoute"),
        ("gateway.networking.k8s.io", "v1alpha2", "TLSRoute"),
    ] {
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk(g, v, k)).is_some(),
            "{g}/{v} {k} not served"
        );
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.linkerd.io", "v1beta3", "Server"),
        "servers",
    );
    let servers: Api<DynamicObject> = Api::namespaced_with(admin(&sim), "emojivoto", &ar);
    let server = |spec: Value| -> DynamicObject {
        let mut v = json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server", "metadata": {"name": "voting-grpc"}});
        v["spec"] = spec;
        serde_json::from_value(v).unwrap()
    };
    servers
        .create(&PostParams::default(), &server(json!({"podSelector": {"matchLabels": {"app": "voting-svc"}}, "port": "grpc", "proxyProtocol": "gRPC"})))
        .await
        .unwrap();
    let e = status_of(
        servers
            .create(&PostParams::default(), &server(json!({"podSelector": {}, "externalWorkloadSelector": {}, "port": 8080, "proxyProtocol": "HTTP/3"})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let mut fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    fields.sort();
    // Linkerd's CRD declares proxyProtocol a free string: the API server refuses only the
    // selector oneOf, and Linkerd's admission webhook (not the schema) refuses `HTTP/3`.
    assert_eq!(fields, ["spec"], "{}", e.message);
}
