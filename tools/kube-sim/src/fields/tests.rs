use serde_json::json;

use super::*;
use crate::resources::Registry;

fn configmaps() -> Resource {
    Registry::default()
        .find("", "v1", "configmaps")
        .unwrap()
        .clone()
}

fn deployments() -> Resource {
    Registry::default()
        .find("apps", "v1", "deployments")
        .unwrap()
        .clone()
}

#[test]
fn field_sets_round_trip_through_fields_v1() {
    let d = json!({"metadata": {"name": "x", "labels": {"app": "web"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "a"}]}}}});
    let set = fields_of(&d, &deployments(), "v1");
    let shown: Vec<String> = set.iter().map(|p| display(p)).collect();
    assert!(shown.contains(&".metadata.labels.app".to_owned()));
    assert!(
        shown.contains(&".spec.template.spec.containers[name=\"web\"].image".to_owned()),
        "{shown:?}"
    );
    assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
}

#[test]
fn keyed_lists_merge_by_key_and_atomic_ones_replace() {
    let r = deployments();
    let mut live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}, "strategy": {"x": [1, 2]}}});
    let applied = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}, "strategy": {"x": [3]}}});
    merge(&mut live, &applied, &r, "v1", &mut Vec::new());
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])
    );
    assert_eq!(live["spec"]["strategy"]["x"], json!([3]));
}

#[test]
fn updates_move_ownership_of_changed_fields() {
    let r = configmaps();
    let mut created = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "1"}});
    record_update(None, &mut created, "creator", &r, "v1", "t0");
    let mut changed = created.clone();
    changed["data"]["b"] = json!("2");
    record_update(Some(&created), &mut changed, "editor", &r, "v1", "t1");
    let e = entries(Some(&changed));
    let owner = |f: &str| {
        e.iter()
            .filter(|x| x.fields.iter().any(|p| display(p) == f))
            .map(|x| x.manager.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(owner(".data.a"), ["creator"]);
    assert_eq!(owner(".data.b"), ["editor"]);
}

#[test]
fn conflict_messages_read_like_the_real_server() {
    let mut c = Conflicts::new();
    c.insert(
        "kubectl".into(),
        (
            "v1".into(),
            vec![
                vec!["f:data".into(), "f:a".into()],
                vec!["f:data".into(), "f:b".into()],
            ],
        ),
    );
    let (msg, causes) = conflict_message(&c);
    assert_eq!(
        msg,
        "Apply failed with 2 conflicts: conflicts with \"kubectl\" using v1:\n- .data.a\n- .data.b"
    );
    assert_eq!(causes.len(), 2);
}
